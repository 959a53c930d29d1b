"""CIFTI-2 dense time series (dtseries) and masks: writing and checked, lazy reading."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import cifti2

from mindvideo.errors import DataError


@dataclass(frozen=True)
class SurfaceModel:
    """One cortical surface in a file: its structure name, mesh size and data-column vertices."""

    structure: str  # e.g. "CORTEX_LEFT"
    n_mesh_vertices: int
    vertices: np.ndarray  # (n,) mesh vertex index of each data column, in column order


def brain_axis(surfaces: Sequence[SurfaceModel], n_subcortical: int = 0) -> cifti2.BrainModelAxis:
    """Grayordinates: the surfaces in order, then `n_subcortical` voxels of a small volume."""
    axis = None
    for s in surfaces:
        part = cifti2.BrainModelAxis.from_surface(s.vertices, s.n_mesh_vertices, s.structure)
        axis = part if axis is None else axis + part
    if n_subcortical:
        side = int(np.ceil(n_subcortical ** (1 / 3)))
        mask = np.zeros((side, side, side), dtype=bool)
        mask.reshape(-1)[:n_subcortical] = True
        vol = cifti2.BrainModelAxis.from_mask(mask, name="thalamus_left", affine=np.eye(4))
        axis = vol if axis is None else axis + vol
    if axis is None:
        raise ValueError("a CIFTI file needs at least one brain model")
    return axis


def write_dtseries(path: Path, data: np.ndarray, tr: float, axis: cifti2.BrainModelAxis) -> None:
    """Write (volumes, grayordinates) float32 data as a CIFTI-2 dtseries with step = TR."""
    series = cifti2.SeriesAxis(start=0.0, step=float(tr), size=data.shape[0], unit="SECOND")
    img = cifti2.Cifti2Image(np.asarray(data, dtype=np.float32), header=(series, axis))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(str(path))


def write_dscalar(path: Path, values: np.ndarray, axis: cifti2.BrainModelAxis, name: str) -> None:
    """Write one map of per-grayordinate values as a CIFTI-2 dscalar (e.g. an ROI mask)."""
    scalar = cifti2.ScalarAxis([name])
    img = cifti2.Cifti2Image(np.asarray(values, dtype=np.float32)[None], header=(scalar, axis))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(str(path))


def _open(path: Path) -> cifti2.Cifti2Image:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(str(path), mmap=True)
    except Exception as e:  # nibabel raises many types for broken files
        raise DataError(
            f"{path}: cannot read it as CIFTI-2 ({type(e).__name__}: {e}); the file may be "
            "truncated or in another format: re-download or re-export it"
        ) from None
    if not isinstance(img, cifti2.Cifti2Image):
        raise DataError(
            f"{path}: is a {type(img).__name__}, not a CIFTI-2 file; CC2017 fMRI must be "
            "*_Atlas.dtseries.nii (grayordinates x time)"
        )
    return img


def _cortical_columns(path: Path, axis: object) -> np.ndarray | slice:
    if not isinstance(axis, cifti2.BrainModelAxis):
        raise DataError(f"{path}: the second CIFTI axis is {type(axis).__name__}, not brain models")
    cols = np.nonzero(axis.surface_mask)[0]
    if cols.size == 0:
        raise DataError(f"{path}: has no cortical surface grayordinates (CORTEX_LEFT/RIGHT)")
    if cols[-1] - cols[0] + 1 == cols.size:
        return slice(int(cols[0]), int(cols[-1]) + 1)
    return cols


@dataclass(frozen=True)
class DtseriesInfo:
    """What a dtseries header says, read without loading the data."""

    path: Path
    n_volumes: int
    tr: float
    n_cortical: int


def dtseries_info(path: Path) -> DtseriesInfo:
    img = _open(path)
    series = img.header.get_axis(0)
    if not isinstance(series, cifti2.SeriesAxis):
        raise DataError(
            f"{path}: the first CIFTI axis is {type(series).__name__}, not a time series; "
            "expected a dtseries file"
        )
    cols = _cortical_columns(path, img.header.get_axis(1))
    n_cortical = cols.stop - cols.start if isinstance(cols, slice) else len(cols)
    tr = float(series.step)
    if str(series.unit).upper() in ("MILLISECOND", "MSEC"):
        tr /= 1000.0
    return DtseriesInfo(path=path, n_volumes=int(series.size), tr=tr, n_cortical=n_cortical)


def read_cortical(path: Path) -> np.ndarray:
    """Cortical grayordinates of a dtseries: (volumes, cortical vertices) float32, checked.

    Only surface vertices are kept (the first 59,412 entries in CC2017's files); subcortical
    volume voxels are dropped. Truncated files and NaN/Inf values are reported with the path.
    """
    img = _open(path)
    cols = _cortical_columns(path, img.header.get_axis(1))
    try:
        data = np.asarray(img.dataobj[:, cols], dtype=np.float32)
    except Exception as e:
        raise DataError(
            f"{path}: the data block cannot be read ({type(e).__name__}: {e}); the file is "
            "probably truncated: re-download or re-export it"
        ) from None
    bad = ~np.isfinite(data)
    if bad.any():
        vox = np.nonzero(bad.any(axis=0))[0]
        vols = np.nonzero(bad.any(axis=1))[0]
        raise DataError(
            f"{path}: {int(bad.sum())} NaN/Inf values in {vox.size} cortical vertices "
            f"(first vertex columns {vox[:5].tolist()}, volumes {vols[:5].tolist()}); "
            "repair or re-export the file (e.g. replace them by interpolation) before loading"
        )
    return data


def read_mask(path: Path, n_cortical: int | None = None) -> np.ndarray:
    """A boolean mask over cortical grayordinates from a .npy vector or a CIFTI dscalar/dlabel."""
    if path.suffix == ".npy":
        if not path.exists():
            raise DataError(f"{path}: mask file not found")
        try:
            mask = np.load(path, allow_pickle=False)
        except Exception as e:
            raise DataError(f"{path}: cannot read the mask ({type(e).__name__}: {e})") from None
        mask = np.asarray(mask).reshape(-1) != 0
    else:
        img = _open(path)
        cols = _cortical_columns(path, img.header.get_axis(1))
        try:
            mask = np.asarray(img.dataobj[0, cols]) != 0
        except Exception as e:
            raise DataError(f"{path}: cannot read the mask ({type(e).__name__}: {e})") from None
    if n_cortical is not None and mask.shape[0] != n_cortical:
        raise DataError(
            f"{path}: the mask has {mask.shape[0]} entries but the fMRI files have {n_cortical} "
            "cortical grayordinates; use a mask made on the same surface mesh"
        )
    if not mask.any():
        raise DataError(f"{path}: the mask selects no grayordinate")
    return mask
