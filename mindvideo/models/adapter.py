"""A linear map from the fMRI encoder's condition to the token states the generator reads.

The contrastive stage aligns the encoder with CLIP only through the condition's pooled
projection; the condition tokens themselves stay outside the subspace of the caption token
states a text-to-image UNet's cross-attention was trained on. Measured on tiny SynthCC (subject1,
seed 0, the diffusion stand-in's 2D UNet, 20 DDIM steps, guidance 3 against the mean test
condition): frames generated from the encoder's own condition tokens show the clip's colour in 6%
of test clips (chance about 10%, real captions 40%); through this adapter, fitted by ridge
regression onto the caption token states of the training clips, 31% (12% with the fMRI
shuffled).

The map is ridge regression in the span of the top `rank` principal components of the training
conditions: cond -> ((cond - in_mean) @ basis) @ coef + out_mean, with basis (in, rank) and coef
(rank, out); with rank >= the number of training samples it is exact ridge regression, and
its size stays (in + out) x rank at Stable Diffusion's 77 x 768 conditions. It is a module like
any other: co-training fine-tunes it with the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class ConditionAdapter(nn.Module):
    """(batch, *in_shape) -> (batch, *out_shape) through a rank-`rank` linear map."""

    def __init__(self, in_shape: tuple[int, int], out_shape: tuple[int, int], rank: int):
        super().__init__()
        self.in_shape, self.out_shape, self.rank = tuple(in_shape), tuple(out_shape), rank
        d_in, d_out = int(np.prod(in_shape)), int(np.prod(out_shape))
        self.in_mean = nn.Parameter(torch.zeros(d_in))
        self.basis = nn.Parameter(torch.zeros(d_in, rank))
        self.coef = nn.Parameter(torch.zeros(rank, d_out))
        self.out_mean = nn.Parameter(torch.zeros(d_out))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        if tuple(cond.shape[1:]) != self.in_shape:
            raise ValueError(
                f"adapter reads conditions {self.in_shape}, got {tuple(cond.shape[1:])}"
            )
        flat = cond.reshape(len(cond), -1) - self.in_mean
        return ((flat @ self.basis) @ self.coef + self.out_mean).reshape(len(cond), *self.out_shape)

    def spec(self) -> dict:
        return {
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "rank": self.rank,
        }


@dataclass(frozen=True)
class AdapterFit:
    adapter: ConditionAdapter
    alpha: float  # the chosen ridge penalty, relative to the mean squared singular value
    val_r2: dict[float, float]  # held-out R^2 per relative penalty


class _Ridge:
    """Ridge regression y ~ x in x's top `rank` principal components, decomposed once so that
    every penalty costs one small product. Penalties are relative to the mean of the kept
    squared singular values."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rank: int):
        self.in_mean, self.out_mean = x.mean(dim=0), y.mean(dim=0)
        u, s, vh = torch.linalg.svd(x - self.in_mean, full_matrices=False)
        r = min(rank, len(s))
        self.basis, self.s = vh[:r].T, s[:r]  # (in, r), (r,)
        self.uty = u[:, :r].T @ (y - self.out_mean)  # (r, out)

    def coef(self, alpha: float) -> torch.Tensor:
        penalty = alpha * float((self.s**2).mean())
        return (self.s / (self.s**2 + penalty))[:, None] * self.uty

    def predict(self, x: torch.Tensor, alpha: float) -> torch.Tensor:
        return (x - self.in_mean) @ self.basis @ self.coef(alpha) + self.out_mean


def r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    """1 - SSE / SST over all elements, SST around y's mean per element."""
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean(dim=0)) ** 2).sum())


def fit_adapter(
    cond: np.ndarray,
    targets: np.ndarray,
    rank: int,
    alphas: tuple[float, ...],
    val_fraction: float,
) -> AdapterFit:
    """Fit on (n, *in_shape) conditions and (n, *out_shape) targets: the penalty with the best
    R^2 on the last `val_fraction` of the samples (fitted on the rest), then refitted on all."""
    n = len(cond)
    x = torch.from_numpy(np.ascontiguousarray(cond.reshape(n, -1), dtype=np.float64))
    y = torch.from_numpy(np.ascontiguousarray(targets.reshape(n, -1), dtype=np.float64))
    cut = n - max(1, int(round(n * val_fraction)))
    if cut < 2:
        raise ValueError(f"align: {n} training samples; need at least 3 to fit the adapter")
    held = _Ridge(x[:cut], y[:cut], rank)
    scores = {alpha: r2(held.predict(x[cut:], alpha), y[cut:]) for alpha in alphas}
    best = max(scores, key=scores.get)
    full = _Ridge(x, y, rank)
    adapter = ConditionAdapter(cond.shape[1:], targets.shape[1:], full.basis.shape[1])
    with torch.no_grad():
        for name, value in (
            ("in_mean", full.in_mean),
            ("basis", full.basis),
            ("coef", full.coef(best)),
            ("out_mean", full.out_mean),
        ):
            getattr(adapter, name).copy_(value.float())
    return AdapterFit(adapter, best, scores)
