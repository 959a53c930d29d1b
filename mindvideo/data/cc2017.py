"""Loader for the CC2017 layout (Wen et al. 2018), real or SynthCC.

Real release (video_fmri_dataset/):
    subject{1,2,3}/fmri/seg{1..18}/cifti/seg{k}_{1,2}_Atlas.dtseries.nii      training, 2 viewings
    subject{1,2,3}/fmri/test{1..5}/cifti/test{k}_{1..10}_Atlas.dtseries.nii  test, 10 viewings
    stimuli/seg{k}.mp4, stimuli/test{k}.mp4
SynthCC writes the same fMRI paths and stores stimuli as stimuli/{segment}.npy frames with
{segment}_frames.csv / _clips.csv annotations, and may have validation segments val{k}.
MinD-Video's preprocessed arrays, converted by `mvbench data prepare mindvideo-npy`, are runs
subject{n}/fmri/{segment}/npy/{segment}_1.npy (volumes, voxels) beside
subject{n}/fmri/preprocessed.json ({"tr": 2.0, ...}): already cleaned and voxel-selected, so
they are read as they are (no detrending, z-scoring or selection). A
dataset without them can hold out training segments as validation (`data.val_segments`: names,
or a count taken from the end of the training list). `root` may be the folder holding subject*/
or its parent holding video_fmri_dataset/.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BeforeValidator

from mindvideo.data.cifti import DtseriesInfo, dtseries_info, read_cortical, surface_points
from mindvideo.errors import DataError

RUN_FILE = re.compile(
    r"^(?P<segment>(?P<kind>seg|test|val)(?P<index>\d+))_(?P<repeat>\d+)_Atlas"
    r"\.dtseries\.nii$"
)
NPY_RUN_FILE = re.compile(
    r"^(?P<segment>(?P<kind>seg|test|val)(?P<index>\d+))_(?P<repeat>\d+)\.npy$"
)
PREPROCESSED = "preprocessed.json"  # subject{n}/fmri/preprocessed.json: runs read as they are
SPLIT_OF_KIND = {"seg": "train", "test": "test", "val": "val"}
SPLITS = ("train", "val", "test")  # val: never trained on, seen like test (repeats averaged)
# What data.val_segments holds: training segment names (one name alone is a list of one), or
# how many to take from the end.
ValSegments = Annotated[
    tuple[str, ...] | int, BeforeValidator(lambda v: (v,) if isinstance(v, str) else v)
]


def resolve_root(root: Path) -> Path:
    """The folder that holds subject*/ (accepts its parent video_fmri_dataset/ too)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; give the folder holding subject*/")
    if any(root.glob("subject*/fmri")):
        return root
    inner = root / "video_fmri_dataset"
    if inner.is_dir() and any(inner.glob("subject*/fmri")):
        return inner
    raise DataError(
        f"{root}: no subject*/fmri/ folder inside; expected the CC2017 layout "
        "subject1/fmri/seg1/cifti/seg1_1_Atlas.dtseries.nii (see README, 'Data layout')"
    )


def holds_preprocessed(root: Path) -> bool:
    """Whether the dataset's runs are MinD-Video's preprocessed arrays (converted by `mvbench
    data prepare mindvideo-npy`): its `data.source` is then mindvideo_npy."""
    subjects = list_subjects(root)
    return bool(subjects) and (resolve_root(root) / subjects[0] / "fmri" / PREPROCESSED).exists()


def _natural(name: str) -> tuple[str, int]:
    m = re.match(r"^(\D+)(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def list_subjects(root: Path) -> list[str]:
    root = resolve_root(root)
    return sorted((p.parent.name for p in root.glob("subject*/fmri")), key=_natural)


def clip_frame_offsets(n_frames: int, frames_per_tr: int) -> np.ndarray:
    """Which of a TR's rendered frames a clip of `n_frames` takes: evenly spaced from the
    first (12 frames per TR, 6 per clip: every other one)."""
    return (np.arange(n_frames) * frames_per_tr) // n_frames


@dataclass
class Recording:
    """All fMRI runs of one subject, opened lazily: split -> segment -> files by repeat."""

    subject: str
    root: Path
    runs: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    # preprocessed runs (.npy, MinD-Video's arrays): their TR, from fmri/preprocessed.json;
    # None: CIFTI runs, cleaned and selected by the pipeline
    preprocessed_tr: float | None = None
    _info: dict[Path, DtseriesInfo] = field(default_factory=dict, repr=False)

    @property
    def preprocessed(self) -> bool:
        """Runs already cleaned and voxel-selected: read as they are, every column kept."""
        return self.preprocessed_tr is not None

    def segments(self, split: str) -> list[str]:
        return sorted(self.runs.get(split, {}), key=_natural)

    def repeats(self, split: str, segment: str) -> int:
        return len(self.runs[split][segment])

    def info(self, path: Path) -> DtseriesInfo:
        if path not in self._info:
            if self.preprocessed_tr is not None:
                shape = _npy_run(path).shape
                self._info[path] = DtseriesInfo(path, shape[0], self.preprocessed_tr, shape[1])
            else:
                self._info[path] = dtseries_info(path)
        return self._info[path]

    def check(self) -> tuple[float, int]:
        """Validate headers of every run: same TR and cortex size, same length per segment.

        Returns (TR seconds, cortical vertices). Reads headers only.
        """
        tr: float | None = None
        n_cortical: int | None = None
        first: Path | None = None
        for split in SPLITS:
            for seg in self.segments(split):
                paths = self.runs[split][seg]
                lengths = {}
                for p in paths:
                    inf = self.info(p)
                    if tr is None:
                        tr, n_cortical, first = inf.tr, inf.n_cortical, p
                    if abs(inf.tr - tr) > 1e-6:
                        raise DataError(
                            f"{p}: TR is {inf.tr:g} s but {first} has {tr:g} s; all runs of a "
                            "subject must share one TR"
                        )
                    if inf.n_cortical != n_cortical:
                        raise DataError(
                            f"{p}: {inf.n_cortical} cortical vertices but {first} has "
                            f"{n_cortical}; all runs must be on the same surface mesh"
                        )
                    lengths[p] = inf.n_volumes
                if len(set(lengths.values())) > 1:
                    desc = ", ".join(f"{p.name}: {n}" for p, n in lengths.items())
                    raise DataError(
                        f"{self.root / self.subject}: repeats of segment {seg} have different "
                        f"numbers of volumes ({desc}); trim them to a common length"
                    )
        if tr is None or n_cortical is None:
            raise DataError(f"{self.root / self.subject}: no fMRI runs found")
        return tr, n_cortical

    def load(self, split: str, segment: str) -> np.ndarray:
        """All repeats of one segment: (repeats, volumes, cortical vertices) float32."""
        paths = self.runs[split][segment]
        # every run's columns in the order of the subject's first run (the same vertices)
        first = next(
            p for by_segment in self.runs.values() for ps in by_segment.values() for p in ps
        )
        if self.preprocessed:
            arrays = [np.asarray(_npy_run(p), dtype=np.float32) for p in paths]
        else:
            arrays = [_aligned_columns(read_cortical(p), p, first) for p in paths]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            desc = ", ".join(
                f"{p.name}: {a.shape[0]} volumes" for p, a in zip(paths, arrays, strict=True)
            )
            raise DataError(
                f"{paths[0].parent}: repeats of {segment} differ in length ({desc}); trim them "
                "to a common length"
            )
        return np.stack(arrays)


def _npy_run(path: Path) -> np.ndarray:
    """A preprocessed run: (volumes, voxels) floats, memory-mapped."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(
            f"{path}: a preprocessed run must be a (volumes, voxels) float array, got "
            f"{arr.dtype} {arr.shape}; convert MinD-Video's arrays with mvbench data prepare "
            "mindvideo-npy"
        )
    return arr


def _preprocessed_tr(fmri: Path) -> float:
    """The TR of a subject's preprocessed runs, from fmri/preprocessed.json."""
    path = fmri / PREPROCESSED
    if not path.exists():
        raise DataError(
            f"{fmri}: .npy runs without {PREPROCESSED} (which gives their TR); write them with "
            "mvbench data prepare mindvideo-npy"
        )
    try:
        tr = json.loads(path.read_text(encoding="utf-8")).get("tr")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise DataError(f"{path}: not a JSON object ({type(e).__name__}: {e})") from None
    if not isinstance(tr, int | float) or tr <= 0:
        raise DataError(f'{path}: "tr" must be the runs\' TR in seconds (> 0), got {tr!r}')
    return float(tr)


def _aligned_columns(data: np.ndarray, path: Path, reference: Path) -> np.ndarray:
    """A run's cortical columns in the order of `reference`'s, matched by surface structure
    and mesh vertex (a run written in another order gives the same vertices in the same
    columns); runs on other vertices are refused."""
    if path == reference:
        return data
    here, there = surface_points(path), surface_points(reference)
    if np.array_equal(here.vertex, there.vertex) and np.array_equal(
        here.structure, there.structure
    ):
        return data
    position = {
        (s, int(v)): i for i, (s, v) in enumerate(zip(here.structure, here.vertex, strict=True))
    }
    wanted = [(s, int(v)) for s, v in zip(there.structure, there.vertex, strict=True)]
    missing = [key for key in wanted if key not in position]
    if missing or len(position) != len(wanted):
        raise DataError(
            f"{path}: its cortical grayordinates are not those of {reference.name} "
            f"({len(position)} vs {len(wanted)}; e.g. {missing[:1] or 'extra vertices'}); "
            "all runs of a subject must be on the same surface mesh"
        )
    return data[:, [position[key] for key in wanted]]


def open_subject(root: Path, subject: str, val_segments: ValSegments = ()) -> Recording:
    """Find every run of `subject`; checks that repeats are numbered 1..n without gaps.

    `val_segments` (data.val_segments) moves training segments to the `val` split: the
    named ones, or the last n in training order."""
    root = resolve_root(root)
    fmri = root / subject / "fmri"
    if not fmri.is_dir():
        have = ", ".join(list_subjects(root)) or "none"
        raise DataError(f"{fmri}: subject folder not found (subjects present: {have})")
    rec = Recording(subject=subject, root=root)
    found: dict[tuple[str, str], dict[int, Path]] = {}
    cifti, npy = sorted(fmri.glob("*/cifti/*.dtseries.nii")), sorted(fmri.glob("*/npy/*.npy"))
    if cifti and npy:
        raise DataError(
            f"{fmri}: holds both CIFTI runs ({cifti[0].relative_to(fmri)}) and preprocessed .npy "
            f"runs ({npy[0].relative_to(fmri)}); keep one kind per subject"
        )
    if npy:
        rec.preprocessed_tr = _preprocessed_tr(fmri)
    for path in npy or cifti:
        m = (NPY_RUN_FILE if npy else RUN_FILE).match(path.name)
        if not m:
            continue
        if m.group("segment") != path.parent.parent.name:
            raise DataError(
                f"{path}: file names segment {m.group('segment')} but sits in folder "
                f"{path.parent.parent.name}/; move or rename it"
            )
        split = SPLIT_OF_KIND[m.group("kind")]
        found.setdefault((split, m.group("segment")), {})[int(m.group("repeat"))] = path
    if not found:
        raise DataError(
            f"{fmri}: no runs named like seg1/cifti/seg1_1_Atlas.dtseries.nii, "
            "test1/cifti/test1_1_Atlas.dtseries.nii or val1/cifti/val1_1_Atlas.dtseries.nii"
        )
    for (split, seg), by_rep in found.items():
        expected = list(range(1, max(by_rep) + 1))
        missing = sorted(set(expected) - set(by_rep))
        if missing:
            raise DataError(
                f"{fmri / seg / 'cifti'}: repeat(s) {missing} of {seg} are missing "
                f"(found {sorted(by_rep)}); restore the files"
            )
        rec.runs.setdefault(split, {})[seg] = [by_rep[r] for r in expected]
    if val_segments:
        hold_out(rec, val_segments)
    return rec


def hold_out(rec: Recording, val_segments: ValSegments) -> None:
    """Move the training segments `val_segments` names (or the last n of them) to `val`."""
    where = rec.root / rec.subject
    train = rec.segments("train")
    if rec.segments("val"):
        raise DataError(
            f"data.val_segments: {_shown(val_segments)}, but {where} has validation segments of "
            f"its own ({', '.join(rec.segments('val'))}); remove data.val_segments"
        )
    for name in held_out_names(val_segments, train, str(where), rec.segments("test")):
        rec.runs.setdefault("val", {})[name] = rec.runs["train"].pop(name)


def held_out_names(
    val_segments: ValSegments, train: list[str], where: str, test: list[str] = ()
) -> list[str]:
    """The training segments `val_segments` names, or the last n of `train`; DataError (naming
    `where`, the data's folder or file) when they are not training segments or leave none."""
    if isinstance(val_segments, int):
        if not 0 < val_segments < len(train):
            raise DataError(
                f"data.val_segments: {val_segments}: {where} has {len(train)} training segments; "
                f"hold out between 1 and {len(train) - 1} of them"
            )
        return train[-val_segments:]
    names = list(val_segments)
    unknown = [n for n in names if n not in train]
    if unknown:
        other = [n for n in unknown if n in test]
        why = f" ({', '.join(other)}: test segments)" if other else ""
        raise DataError(
            f"data.val_segments: {', '.join(unknown)} not among the training segments of "
            f"{where}{why}; name some of: {', '.join(train)} (or give a count, e.g. "
            "data.val_segments: 1 for the last one)"
        )
    if len(names) >= len(train):
        raise DataError(
            f"data.val_segments: {_shown(val_segments)} holds out every training segment "
            f"of {where}; leave at least one to train on"
        )
    return names


def _shown(val_segments: ValSegments) -> str:
    return str(val_segments) if isinstance(val_segments, int) else f"[{', '.join(val_segments)}]"


@dataclass
class Stimuli:
    """Stimulus frames and annotations of a CC2017-layout dataset, loaded lazily."""

    folder: Path
    fps: float
    frames_per_tr: int

    def frames(self, segment: str) -> np.ndarray:
        """(F, H, W, 3) uint8 frames, memory-mapped."""
        path = self.folder / f"{segment}.npy"
        if not path.exists():
            raise DataError(
                f"{path}: stimulus frames not found; convert stimuli/{segment}.mp4 to an "
                "(F, H, W, 3) uint8 .npy at the dataset's frame rate"
            )
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise DataError(
                f"{path}: expected uint8 frames of shape (F, H, W, 3), got {arr.dtype} {arr.shape}"
            )
        return arr

    def check_length(self, segment: str, n_volumes: int) -> None:
        """Refuse frames that cannot be aligned with the segment's `n_volumes` fMRI volumes at
        `frames_per_tr`: too few, or half as many again (frames at another rate than the one
        the stimuli are read at, which would let the clips drift out of line with the fMRI). A
        few trailing frames past the last volume are allowed (movies often have them)."""
        n_frames = self.frames(segment).shape[0]
        path = self.folder / f"{segment}.npy"
        expected = n_volumes * self.frames_per_tr
        if n_frames < expected:
            raise DataError(
                f"{path}: {n_frames} frames cover fewer than the {n_volumes} volumes of "
                f"{segment} ({self.frames_per_tr} frames per TR)"
            )
        per_tr = n_frames / n_volumes
        if per_tr >= 1.5 * self.frames_per_tr:
            raise DataError(
                f"{path}: {n_frames} frames for {n_volumes} volumes is {per_tr:.1f} frames per "
                f"TR, but the stimuli are read at {self.frames_per_tr} per TR ({self.fps:g} "
                "fps): the clips would drift out of line with the fMRI. If the frames are at "
                f"another rate, say so in {self.folder / STIMULI_META} (e.g. "
                f'{{"fps": {self.fps * round(per_tr) / self.frames_per_tr:g}, '
                f'"frames_per_tr": {round(per_tr)}}}), or resample them'
            )

    def clip(self, segment: str, clip: int, n_frames: int) -> np.ndarray:
        """The clip at TR `clip` as `n_frames` evenly spaced frames: (n_frames, H, W, 3).

        A 2 s clip rendered at 6 fps has 12 frames; n_frames=6 takes every other one (3 fps,
        the paper's rate), n_frames=12 all of them. n_frames cannot exceed frames_per_tr.
        """
        if not 1 <= n_frames <= self.frames_per_tr:
            raise DataError(
                f"{self.folder}: {n_frames} frames per clip requested but the stimuli have "
                f"{self.frames_per_tr} per TR ({self.fps:g} fps); choose at most "
                f"{self.frames_per_tr} (data.frames_per_clip)"
            )
        frames = self.frames(segment)
        start = clip * self.frames_per_tr
        if start + self.frames_per_tr > frames.shape[0]:
            raise DataError(
                f"{self.folder / (segment + '.npy')}: clip {clip} ends after the last frame "
                f"({frames.shape[0]} frames)"
            )
        return np.asarray(frames[start + clip_frame_offsets(n_frames, self.frames_per_tr)])

    def clips(self, segment: str) -> pd.DataFrame | None:
        """Per-clip annotation table (video_class, scene_cut, caption, ...), if present."""
        path = self.folder / f"{segment}_clips.csv"
        return pd.read_csv(path) if path.exists() else None

    def frame_labels(self, segment: str) -> pd.DataFrame | None:
        path = self.folder / f"{segment}_frames.csv"
        return pd.read_csv(path) if path.exists() else None


STIMULI_META = "stimuli.json"  # real data's frame rate: {"fps": 3, "frames_per_tr": 6}


def open_stimuli(root: Path) -> Stimuli | None:
    """The stimuli/ folder with its frame rate, or None if absent. The rate comes from
    dataset.json (SynthCC), else stimuli/stimuli.json (real data: the rate the movies were
    converted at), else the release's movies taken at 3 fps (6 frames per 2 s TR)."""
    root = resolve_root(root)
    folder = root / "stimuli"
    if not folder.is_dir():
        return None
    meta = read_metadata(root)
    if "fps" not in meta and (folder / STIMULI_META).exists():
        meta = _stimuli_meta(folder / STIMULI_META)
    fps = float(meta.get("fps", 3))
    return Stimuli(folder=folder, fps=fps, frames_per_tr=int(meta.get("frames_per_tr", 6)))


def _stimuli_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a JSON object ({type(e).__name__}: {e})") from None
    fps, per_tr = meta.get("fps") if isinstance(meta, dict) else None, None
    if isinstance(meta, dict):
        per_tr = meta.get("frames_per_tr")
    ok = isinstance(fps, int | float) and fps > 0 and isinstance(per_tr, int) and per_tr >= 1
    if not ok or set(meta) - {"fps", "frames_per_tr"}:
        raise DataError(
            f'{path}: expected {{"fps": <frames per second>, "frames_per_tr": <whole frames per '
            f"TR>}}, got {json.dumps(meta)[:200]}"
        )
    return meta


def read_metadata(root: Path) -> dict:
    """dataset.json if the dataset has one (SynthCC does; the real release does not)."""
    path = Path(root) / "dataset.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); re-simulate or delete it") from None
