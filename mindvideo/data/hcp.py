"""Loader for an HCP-style unpaired fMRI corpus (dtseries runs plus an ROI mask) for MBM.

HCP naming: {subject}/MNINonLinear/Results/{run}/{run}_Atlas_MSMAll.dtseries.nii, e.g.
rfMRI_REST1_LR or tfMRI_MOTOR_RL; any *_Atlas*.dtseries.nii under a Results/ folder counts.
The ROI mask (a .npy vector or a CIFTI dscalar/dlabel; non-zero = keep) lives on the same
surface mesh as the runs and picks the grayordinates the model sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvideo.data.cifti import dtseries_info, read_cortical, read_mask
from mindvideo.data.preprocess import detrend, zscore
from mindvideo.errors import DataError


def find_runs(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: corpus folder not found")
    runs = sorted(root.glob("*/MNINonLinear/Results/*/*_Atlas*.dtseries.nii"))
    if not runs:
        raise DataError(
            f"{root}: no runs named like <subject>/MNINonLinear/Results/rfMRI_REST1_LR/"
            "rfMRI_REST1_LR_Atlas_MSMAll.dtseries.nii"
        )
    return runs


def default_mask(root: Path) -> Path | None:
    for name in ("roi_mask.npy", "roi_mask.dscalar.nii", "roi_mask.dlabel.nii"):
        if (Path(root) / name).exists():
            return Path(root) / name
    return None


@dataclass
class Corpus:
    """Runs of the unpaired corpus, read one at a time (never all in memory)."""

    runs: list[Path]
    mask: np.ndarray  # (cortical vertices,) bool

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())

    def subjects(self) -> list[str]:
        return sorted({p.parents[3].name for p in self.runs})

    def volumes(self) -> int:
        return sum(dtseries_info(p).n_volumes for p in self.runs)

    def load_run(self, path: Path, detrend_order: int = 4) -> np.ndarray:
        """One run on the ROI: detrended and z-scored, (volumes, roi voxels) float32."""
        data = read_cortical(path)
        if data.shape[1] != self.mask.shape[0]:
            raise DataError(
                f"{path}: {data.shape[1]} cortical vertices but the ROI mask has "
                f"{self.mask.shape[0]}; use runs and mask on the same surface mesh"
            )
        return zscore(detrend(data[:, self.mask], detrend_order))

    def __iter__(self) -> Iterator[np.ndarray]:
        for p in self.runs:
            yield self.load_run(p)


def open_corpus(root: Path, mask: Path | None = None) -> Corpus:
    """The corpus under `root`; the mask defaults to root/roi_mask.npy if present, else all."""
    runs = find_runs(root)
    n_cortical = dtseries_info(runs[0]).n_cortical
    mask_path = mask or default_mask(root)
    if mask_path is None:
        roi = np.ones(n_cortical, dtype=bool)
    else:
        roi = read_mask(Path(mask_path), n_cortical)
    return Corpus(runs=runs, mask=roi)
