"""Loader for MinD-Video's preprocessed npy layout (the public release's data folder).

    fmri_train_{subject}.npy        float, (segments, trs, voxels) or (samples, voxels)
    fmri_test_{subject}.npy         same; test repeats already averaged
    video_train_{size}_{fps}hz.npy  uint8, (segments, trs, frames, H, W, 3)
                                    or (samples, frames, H, W, 3)
    video_test_{size}_{fps}hz.npy
    text_train_{size}_{fps}hz.npy   optional captions, str, (segments, trs) or (samples,)
    text_test_{size}_{fps}hz.npy

The fMRI is already preprocessed (selected voxels, z-scored); samples pair fMRI frame i with
clip i. The layout has no validation split: `hold_out` takes training segments for one
(`data.val_segments`: names seg{k}, counted from 1 in file order, or a count from the end).
Arrays are memory-mapped. Caption arrays must hold fixed-width strings: object arrays would
need pickle, which this loader refuses to run on user files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvideo.data.cc2017 import ValSegments, held_out_names
from mindvideo.data.paired import Samples
from mindvideo.data.preprocess import pad_to_patch
from mindvideo.data.windows import Edge, make_windows, window_indices
from mindvideo.errors import DataError

VIDEO_FILE = re.compile(r"^video_(?P<split>train|test)_(?P<size>\d+)_(?P<fps>\d+)hz\.npy$")


def _load(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower() or "python objects" in str(e).lower():
            raise DataError(
                f"{path}: stores Python objects (needs pickle, refused for safety); re-save it "
                "as a plain array, e.g. np.save(path, np.asarray(arr).astype(str))"
            ) from None
        raise DataError(f"{path}: cannot read ({e})") from None
    except Exception as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


@dataclass
class MindVideoSplit:
    """One split of one subject: per-sample fMRI, clips and captions (memory-mapped)."""

    fmri: np.ndarray  # (samples, voxels)
    video: np.ndarray  # (samples, frames, H, W, 3) uint8
    text: np.ndarray | None  # (samples,) str
    segments: int | None  # segments in the file, when it kept the segment axis
    segment_names: tuple[str, ...] | None = None  # None: seg1..segN in file order

    def __len__(self) -> int:
        return self.fmri.shape[0]


def _flatten(arr: np.ndarray, lead: int, path: Path, what: str) -> tuple[np.ndarray, int | None]:
    """Merge a leading (segments, trs) pair into samples; `lead` is the per-sample rank."""
    if arr.ndim == lead + 2:
        return arr.reshape((arr.shape[0] * arr.shape[1],) + arr.shape[2:]), int(arr.shape[0])
    if arr.ndim == lead + 1:
        return arr, None
    raise DataError(
        f"{path}: {what} must have shape (segments, trs{', ' if lead else ''}"
        f"{'...' if lead else ''}) or (samples{', ...' if lead else ''}), got {arr.shape}"
    )


def find_video_files(root: Path) -> dict[str, Path]:
    found = {}
    for p in sorted(Path(root).glob("video_*_*_*hz.npy")):
        m = VIDEO_FILE.match(p.name)
        if m:
            found.setdefault(m.group("split"), p)
    return found


def load_split(root: Path, subject: str, split: str) -> MindVideoSplit:
    """Load fMRI, video and (if present) captions of `split` for `subject`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    fmri_path = root / f"fmri_{split}_{subject}.npy"
    videos = find_video_files(root)
    if split not in videos:
        raise DataError(
            f"{root}: no video_{split}_<size>_<fps>hz.npy (e.g. video_{split}_256_3hz.npy)"
        )
    video_path = videos[split]
    fmri, n_seg = _flatten(_load(fmri_path), 1, fmri_path, "fMRI")
    if not np.issubdtype(fmri.dtype, np.floating):
        raise DataError(f"{fmri_path}: fMRI must be floating point, got {fmri.dtype}")
    video, _ = _flatten(_load(video_path), 4, video_path, "video")
    if video.shape[-1] != 3 or video.dtype != np.uint8:
        raise DataError(
            f"{video_path}: video must be uint8 (..., frames, H, W, 3), got {video.dtype} "
            f"{video.shape}"
        )
    if video.shape[0] != fmri.shape[0]:
        raise DataError(
            f"{fmri_path}: {fmri.shape[0]} fMRI samples but {video_path.name} has "
            f"{video.shape[0]} clips; they must pair one to one"
        )
    text = None
    text_path = root / video_path.name.replace("video_", "text_", 1)
    if text_path.exists():
        text, _ = _flatten(_load(text_path), 0, text_path, "captions")
        if text.dtype.kind not in "US":
            raise DataError(f"{text_path}: captions must be strings, got {text.dtype}")
        if text.shape[0] != fmri.shape[0]:
            raise DataError(
                f"{text_path}: {text.shape[0]} captions but {fmri.shape[0]} fMRI samples"
            )
    return MindVideoSplit(fmri=fmri, video=video, text=text, segments=n_seg)


def hold_out(
    train: MindVideoSplit, val_segments: ValSegments, trs_per_segment: int | None = None
) -> tuple[MindVideoSplit, MindVideoSplit]:
    """(train, val): the training segments `val_segments` names, or the last n, taken out of
    `train` as the validation split (names keep their file position: seg18 stays seg18)."""
    n = len(train)
    per = trs_per_segment or (n // train.segments if train.segments else None)
    if per is None or n % per:
        raise DataError(
            f"data.val_segments: the training file's {n} samples have no segment axis to hold "
            "segments out by; give trs_per_segment (240 for CC2017)"
        )
    names = list(train.segment_names or [f"seg{k + 1}" for k in range(n // per)])
    held = held_out_names(val_segments, names, "the training file")

    def part(segments: list[str]) -> MindVideoSplit:
        rows = np.concatenate([np.arange(per) + names.index(s) * per for s in segments])
        return MindVideoSplit(
            fmri=train.fmri[rows],
            video=train.video[rows],
            text=None if train.text is None else train.text[rows],
            segments=len(segments),
            segment_names=tuple(segments),
        )

    return part([s for s in names if s not in held]), part(held)


def check_finite(split: MindVideoSplit, path: Path, chunk: int = 512) -> None:
    """Raise if the fMRI holds NaN or Inf (scanned in chunks, memory stays flat)."""
    for start in range(0, len(split), chunk):
        block = np.asarray(split.fmri[start : start + chunk])
        if not np.isfinite(block).all():
            rows = start + np.nonzero(~np.isfinite(block).all(axis=1))[0]
            raise DataError(f"{path}: NaN/Inf in samples {rows[:5].tolist()}; repair the file")


def list_subjects(root: Path) -> list[str]:
    names = {
        m.group(1)
        for p in Path(root).glob("fmri_train_*.npy")
        if (m := re.match(r"^fmri_train_(.+)\.npy$", p.name))
    }
    return sorted(names)


def to_samples(
    split: MindVideoSplit,
    window: int,
    offset: int,
    edge: Edge,
    patch_size: int,
    trs_per_segment: int | None = None,
) -> Samples:
    """Window the split within each segment, as SynthCC/CC2017 samples are windowed.

    Windows never cross a segment boundary: files that kept the segment axis know their
    segments; flat files need `trs_per_segment` (240 in MinD-Video's CC2017 files).
    """
    n = len(split)
    per = trs_per_segment or (n // split.segments if split.segments else None)
    if per is None:
        if window > 1 or offset != 0:
            raise DataError(
                f"the fMRI file has no segment axis, so windows of {window} at offset {offset} "
                "would cross segments; give trs_per_segment (240 for CC2017)"
            )
        per = n
    if n % per:
        raise DataError(f"{n} samples do not split into segments of {per} TRs")
    fmri = np.asarray(split.fmri, dtype=np.float32).reshape(n // per, per, -1)
    clip_idx, vols = window_indices(per, window, offset, edge)
    blocks = [make_windows(seg, vols) for seg in fmri]
    rows = (np.arange(n // per)[:, None] * per + clip_idx[None]).ravel()
    return Samples(
        fmri=pad_to_patch(np.concatenate(blocks), patch_size),
        segment=np.repeat(
            list(split.segment_names or [f"seg{k + 1}" for k in range(n // per)]), len(clip_idx)
        ),
        clip=np.tile(clip_idx, n // per),
        repeat=np.full(len(rows), -1),
        caption=[str(t) for t in split.text[rows]] if split.text is not None else None,
    )
