"""Ridge regression from fMRI windows to clip features, and retrieval of the nearest clips."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean) / std


class RidgeDecoder:
    """Multi-output ridge in its dual (kernel) form; alpha chosen by grouped cross-validation.

    Fit on (samples, voxels x window) inputs and (samples, features) targets; the score that
    picks alpha is the mean correlation between predicted and true features over held-out
    groups (whole segments, so neighbouring TRs never straddle a fold).
    """

    def __init__(self, alphas: Sequence[float] = (1e1, 1e2, 1e3, 1e4, 1e5), folds: int = 4):
        self.alphas = tuple(float(a) for a in alphas)
        self.folds = folds
        self.alpha: float | None = None
        self.cv_scores: dict[float, float] = {}

    @staticmethod
    def _solve(x: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> list[np.ndarray]:
        """Primal weights (d, f) for each alpha from one eigendecomposition of X X^T."""
        evals, evecs = np.linalg.eigh(x @ x.T)  # (n,), (n, n)
        evals = np.clip(evals, 0, None)
        uty = evecs.T @ y  # (n, f)
        return [x.T @ (evecs @ (uty / (evals + a)[:, None])) for a in alphas]

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> RidgeDecoder:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-8
        self.y_mean, self.y_std = y.mean(0), y.std(0) + 1e-8
        xs = _standardise(x, self.x_mean, self.x_std)
        ys = _standardise(y, self.y_mean, self.y_std)
        unique = np.unique(groups)
        n_folds = min(self.folds, len(unique))
        fold_of_group = {g: i % n_folds for i, g in enumerate(unique)}
        fold = np.array([fold_of_group[g] for g in groups])
        scores = np.zeros(len(self.alphas))
        if n_folds >= 2:
            for f in range(n_folds):
                tr, te = fold != f, fold == f
                for a, w in enumerate(self._solve(xs[tr], ys[tr], self.alphas)):
                    scores[a] += _mean_column_corr(xs[te] @ w, ys[te]) / n_folds
        self.cv_scores = dict(zip(self.alphas, scores.tolist(), strict=True))
        self.alpha = self.alphas[int(np.argmax(scores))]
        self.weights = self._solve(xs, ys, [self.alpha])[0]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        xs = _standardise(np.asarray(x, dtype=np.float64), self.x_mean, self.x_std)
        return (xs @ self.weights) * self.y_std + self.y_mean


def _mean_column_corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0)) + 1e-12
    return float(np.mean((a * b).sum(0) / den))


def retrieve(query: np.ndarray, bank: np.ndarray, top_k: int) -> np.ndarray:
    """Indices (m, top_k) of the bank rows most correlated with each query row, best first."""
    q = query - query.mean(1, keepdims=True)
    b = bank - bank.mean(1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    sim = q @ b.T  # (m, n)
    k = min(top_k, bank.shape[0])
    part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
