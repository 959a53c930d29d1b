"""CIFTI-2 dense time series (dtseries), masks and label maps (dlabel): writing and checked,
lazy reading."""

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
    # Left hemisphere first, as HCP's files store them: a file written right before left is
    # read in the same order as the others (a stable sort keeps each surface's vertex order).
    names = np.asarray(axis.name[cols]).astype(str)
    rank = np.where(np.char.endswith(names, "CORTEX_LEFT"), 0, 1)
    rank[~np.char.endswith(names, "CORTEX_LEFT") & ~np.char.endswith(names, "CORTEX_RIGHT")] = 2
    cols = cols[np.argsort(rank, kind="stable")]
    if (np.diff(cols) == 1).all():
        return slice(int(cols[0]), int(cols[-1]) + 1)
    return cols


def _read_columns(dataobj, rows, cols: np.ndarray | slice) -> np.ndarray:
    """dataobj[rows, cols] for a (memory-mapped) CIFTI data block, which reads slices only:
    the span of the columns, then those columns in the order asked for."""
    if isinstance(cols, slice):
        return np.asarray(dataobj[rows, cols])
    lo, hi = int(cols.min()), int(cols.max()) + 1
    return np.asarray(dataobj[rows, lo:hi])[..., cols - lo]


@dataclass(frozen=True)
class DtseriesInfo:
    """What a dtseries header says, read without loading the data."""

    path: Path
    n_volumes: int
    tr: float
    n_cortical: int


def _first_axis(path: Path, img, kind: type, want: str):
    """The file's first (row) axis, refused unless it is a `kind`; `want` says what it should be."""
    axis = img.header.get_axis(0)
    if not isinstance(axis, kind):
        raise DataError(f"{path}: the first CIFTI axis is {type(axis).__name__}, not {want}")
    return axis


def dtseries_info(path: Path) -> DtseriesInfo:
    img = _open(path)
    series = _first_axis(path, img, cifti2.SeriesAxis, "a time series; expected a dtseries file")
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
        data = _read_columns(img.dataobj, slice(None), cols).astype(np.float32, copy=False)
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
            mask = _read_columns(img.dataobj, 0, cols) != 0
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


def write_dlabel(
    path: Path,
    keys: np.ndarray,
    axis: cifti2.BrainModelAxis,
    names: dict[int, str],
    map_name: str = "parcellation",
) -> None:
    """Write one label map as a CIFTI-2 dlabel: an integer key per grayordinate and the table
    key -> name (key 0 transparent, as the unlabelled "???" of Workbench files)."""
    table = {}
    for i, (k, name) in enumerate(names.items()):
        hue = i / max(1, len(names))
        table[int(k)] = (str(name), (0.0, 0.0, 0.0, 0.0) if k == 0 else (hue, 0.5, 1 - hue, 1.0))
    label = cifti2.LabelAxis([map_name], [table])
    img = cifti2.Cifti2Image(np.asarray(keys, dtype=np.int32)[None], header=(label, axis))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(str(path))


@dataclass(frozen=True)
class SurfacePoints:
    """The cortical grayordinates of a CIFTI file, in column order: the surface structure and
    mesh vertex of each."""

    structure: np.ndarray  # (n,) e.g. "CIFTI_STRUCTURE_CORTEX_LEFT"
    vertex: np.ndarray  # (n,) mesh vertex index

    def __len__(self) -> int:
        return len(self.vertex)


def _surface_points(path: Path, axis: object) -> SurfacePoints:
    cols = _cortical_columns(path, axis)
    return SurfacePoints(np.asarray(axis.name[cols]), np.asarray(axis.vertex[cols]))


def surface_points(path: Path) -> SurfacePoints:
    """Where a CIFTI file's cortical columns lie on the surface meshes (header only)."""
    img = _open(path)
    return _surface_points(path, img.header.get_axis(1))


@dataclass(frozen=True)
class Parcellation:
    """One label map of a CIFTI dlabel over the cortical grayordinates."""

    path: Path
    names: dict[int, str]  # label key -> name, as the file's label table has them
    keys: np.ndarray  # (n,) label key of each cortical grayordinate, in column order
    points: SurfacePoints

    def on(self, points: SurfacePoints, data: Path | str) -> np.ndarray:
        """The label key of each of `points` (the fMRI's cortical grayordinates, read from
        `data`), matched by surface structure and mesh vertex, so a parcellation over the whole
        mesh (medial wall included) serves data without the medial wall."""
        if len(points) == len(self.points) and (
            np.array_equal(points.vertex, self.points.vertex)
            and np.array_equal(points.structure, self.points.structure)
        ):
            return self.keys
        where = {
            (s, int(v)): i
            for i, (s, v) in enumerate(zip(self.points.structure, self.points.vertex, strict=True))
        }
        index = np.array(
            [
                where.get((s, int(v)), -1)
                for s, v in zip(points.structure, points.vertex, strict=True)
            ]
        )
        missing = int((index < 0).sum())
        if missing:
            raise DataError(
                f"{self.path}: the parcellation has {len(self.points)} cortical grayordinates but "
                f"the fMRI ({data}) has {len(points)}, {missing} of them on vertices the "
                "parcellation does not label; give a parcellation on the fMRI's surface mesh "
                "(CC2017: 32k fs_LR, 59,412 cortical grayordinates)"
            )
        return self.keys[index]


def read_dlabel(path: Path, map_index: int = 0) -> Parcellation:
    """A label map of a CIFTI-2 dlabel (`.dlabel.nii`), e.g. the Yeo 2011 networks: the label
    table and the key of every cortical grayordinate."""
    path = Path(path)
    img = _open(path)
    want = "labels; a parcellation must be a dlabel file (.dlabel.nii)"
    labels = _first_axis(path, img, cifti2.LabelAxis, want)
    if not 0 <= map_index < len(labels):
        raise DataError(f"{path}: has {len(labels)} label maps, no map {map_index}")
    axis = img.header.get_axis(1)
    points = _surface_points(path, axis)
    cols = _cortical_columns(path, axis)
    try:
        keys = np.asarray(img.dataobj[map_index, cols])
    except Exception as e:
        raise DataError(f"{path}: cannot read the labels ({type(e).__name__}: {e})") from None
    if not np.all(np.isfinite(keys)) or not np.all(keys == np.round(keys)):
        raise DataError(f"{path}: label keys must be integers")
    keys = keys.astype(np.int64)
    names = {int(k): str(v[0]) for k, v in labels.label[map_index].items()}
    unknown = sorted(set(np.unique(keys).tolist()) - set(names))
    if unknown:
        raise DataError(
            f"{path}: keys {unknown[:5]} label grayordinates but are not in the label table "
            f"(it has {sorted(names)})"
        )
    return Parcellation(path, names, keys, points)
