"""fMRI preprocessing: detrending, z-scoring, repeat-reproducibility voxel selection, padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.polynomial import legendre
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from mindvideo.errors import DataError


class SelectionConfig(BaseModel):
    """Voxel selection by reproducibility across repeated viewings (Wen et al. 2018)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p_threshold: float = Field(0.01, gt=0, le=1, description="family-wise significance level")
    correction: Literal["bonferroni", "none"] = "bonferroni"
    keep_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="keep at most this fraction of all cortical voxels, most significant first",
    )
    splits: tuple[Literal["train", "val", "test"], ...] = Field(
        ("train", "test"),
        description="which segments' repeats enter the statistics; test brings the validation "
        "segments too (held-out segments are treated alike), val alone only them",
    )


class PreprocessConfig(BaseModel):
    """How raw runs become model inputs (the `data.preprocess` slice of a profile)."""

    # Sizes are bounded 10-100x beyond any sane value (paper: 16 voxels per patch, order 4) so
    # that a typo fails at validation; bounds only validate, so no cache key changes.

    model_config = ConfigDict(extra="forbid", frozen=True)

    detrend_order: int = Field(4, ge=0, le=10, description="polynomial order removed per run")
    zscore: bool = True
    selection: SelectionConfig = SelectionConfig()
    train_repeats: Literal["average", "separate"] = "average"
    test_repeats: Literal["average", "separate"] = "average"
    patch_size: int = Field(
        16, ge=1, le=1024, description="pad the voxel vector to a multiple of this"
    )


def detrend(x: np.ndarray, order: int = 4) -> np.ndarray:
    """Remove a polynomial of `order` from each voxel's time course: x is (time, voxels)."""
    n = x.shape[0]
    if order < 0 or n <= order + 1:
        return x - x.mean(axis=0) if n else x
    t = np.linspace(-1.0, 1.0, n)
    basis = legendre.legvander(t, order)  # (time, order+1), well conditioned
    coef, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
    return (x - basis @ coef).astype(np.float32)


def zscore(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit std per voxel over time; constant voxels become 0."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def clean_run(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Detrend then (optionally) z-score one run: (time, voxels)."""
    y = detrend(x, cfg.detrend_order)
    return zscore(y) if cfg.zscore else y


def _column_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per column of two (time, voxels) arrays."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1.0), 0.0)


def segment_reproducibility(runs: np.ndarray) -> np.ndarray:
    """Mean Fisher-z correlation between all pairs of repeats: runs (repeats, time, voxels)."""
    n = runs.shape[0]
    if n < 2:
        raise ValueError("reproducibility needs at least two repeats of a segment")
    zs = []
    for i in range(n):
        for j in range(i + 1, n):
            r = np.clip(_column_corr(runs[i], runs[j]), -0.999999, 0.999999)
            zs.append(np.arctanh(r))
    return np.mean(zs, axis=0)


@dataclass
class Reproducibility:
    """Per-voxel statistics of the one-sample t-test across segments."""

    z: np.ndarray  # (segments, voxels) mean Fisher z per segment
    t: np.ndarray  # (voxels,)
    p: np.ndarray  # (voxels,) one-sided: reproducibility > 0

    @property
    def n_segments(self) -> int:
        return self.z.shape[0]


def reproducibility(per_segment_z: Sequence[np.ndarray]) -> Reproducibility:
    """One-sample t-test (one-sided, H1: mean z > 0) of per-segment Fisher z across segments."""
    z = np.stack(per_segment_z)
    if z.shape[0] < 2:
        raise DataError(
            f"voxel selection needs at least 2 segments with repeated viewings, got {z.shape[0]}; "
            "add segments or set data.preprocess.selection.splits to include test segments"
        )
    mean = z.mean(axis=0)
    sd = z.std(axis=0, ddof=1)
    se = sd / np.sqrt(z.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, np.where(mean > 0, np.inf, 0.0))
    p = stats.t.sf(t, df=z.shape[0] - 1)
    return Reproducibility(z=z, t=t, p=p)


def select_voxels(rep: Reproducibility, cfg: SelectionConfig) -> np.ndarray:
    """Indices (ascending) of significant voxels, at most keep_fraction of all, best first cut."""
    n = rep.p.shape[0]
    alpha = cfg.p_threshold / n if cfg.correction == "bonferroni" else cfg.p_threshold
    significant = np.nonzero(rep.p < alpha)[0]
    cap = int(np.floor(cfg.keep_fraction * n))
    if significant.size > cap:
        # Most significant first: smallest p, ties broken by larger t.
        order = np.lexsort((-rep.t[significant], rep.p[significant]))
        significant = significant[order[:cap]]
    return np.sort(significant)


def pad_to_patch(x: np.ndarray, patch_size: int) -> np.ndarray:
    """Wrap-pad the last axis to a multiple of patch_size (the first voxels repeat at the end)."""
    n = x.shape[-1]
    if n == 0:
        raise DataError("no voxels to pad: the voxel selection is empty")
    extra = (-n) % patch_size
    if extra == 0:
        return x
    reps = int(np.ceil(extra / n))
    tail = np.concatenate([x] * reps, axis=-1)[..., :extra]
    return np.concatenate([x, tail], axis=-1)
