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

The pipeline's stages read the CC2017 layout: `convert` (`mvbench data prepare mindvideo-npy`)
writes the arrays into it, as preprocessed runs that are read as they are (cc2017.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mindvideo.data.cc2017 import PREPROCESSED, ValSegments, held_out_names
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


# ---------------------------------------------------------------------------------------------
# `mvbench data prepare mindvideo-npy SRC --out DEST`: the arrays in the CC2017 layout the
# pipeline's stages read

RECORD = ".mindvideo_npy.json"  # DEST/.mindvideo_npy.json: what DEST was converted from, and how
SPLIT_SEGMENT = {"train": "seg", "test": "test"}


@dataclass
class Converted:
    """What a conversion did, for its summary."""

    subjects: list[str]
    segments: dict[str, int]  # split -> segments
    voxels: dict[str, int]  # subject -> voxels
    written: int = 0  # files written by this call
    skipped: int = 0  # files an earlier call wrote
    captioned: list[str] | None = None  # splits with captions
    fps: float = 0.0
    frames_per_tr: int = 0

    def write(self, path: Path, make) -> None:
        """Write `make()` to `path` unless an earlier call did (counted either way)."""
        wrote = _write_atomic(path, make)
        self.written += wrote
        self.skipped += not wrote


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, int(stat.st_mtime)]


def _write_atomic(path: Path, make) -> bool:
    """Write the array (.npy) or table (.csv) `make()` returns to `path` through a temporary
    file moved into place; False, without calling `make`, if it exists already (a file in
    place is complete: an interrupted write leaves only the temporary file)."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        value = make()
        if isinstance(value, pd.DataFrame):
            value.to_csv(tmp, index=False)
        else:
            with tmp.open("wb") as f:
                np.save(f, value)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _segments_of(split: MindVideoSplit, path: Path, trs_per_segment: int) -> tuple[int, int]:
    """(segments, TRs per segment) of a split: its segment axis, else `trs_per_segment`."""
    if split.segments:
        return split.segments, len(split) // split.segments
    if len(split) % trs_per_segment:
        raise DataError(
            f"{path}: {len(split)} samples without a segment axis do not split into segments of "
            f"{trs_per_segment} TRs; give --trs-per-segment (CC2017: 240)"
        )
    return len(split) // trs_per_segment, trs_per_segment


def convert(
    src: Path, out: Path, tr: float = 2.0, trs_per_segment: int = 240, progress=None
) -> Converted:
    """Write MinD-Video's arrays under `src` into `out` in the CC2017 layout: per subject,
    subject{n}/fmri/{segment}/npy/{segment}_1.npy (volumes, voxels) float32 and
    fmri/preprocessed.json; shared stimuli/{segment}.npy frames, {segment}_clips.csv captions
    (where the arrays have them) and stimuli/stimuli.json. Training segments are seg1..segN and
    test segments test1..testN, in file order; each array holds one viewing (MinD-Video
    averaged the repeats). Files are written through temporary files, so a second call (or one
    after a crash) writes only what is missing; `out` remembers its source and settings."""
    tick = progress or (lambda n, what: None)
    src, out = Path(src), Path(out)
    subjects = list_subjects(src) if src.is_dir() else []
    if not subjects:
        raise DataError(
            f"{src}: no fmri_train_<subject>.npy; give MinD-Video's preprocessed data folder"
        )
    if out.resolve() == src.resolve():
        raise DataError(f"--out {out}: give a folder other than the arrays' own")
    videos = find_video_files(src)
    record = {
        "source": str(src.resolve()),
        "tr": tr,
        "trs_per_segment": trs_per_segment,
        "files": {
            p.name: _stamp(p)
            for p in sorted(src.glob("*.npy"))
            if p.name.startswith(("fmri_", "video_", "text_"))
        },
    }
    record_path = out / RECORD
    if record_path.exists():
        old = json.loads(record_path.read_text(encoding="utf-8"))
        if old != record:
            changed = [k for k in record if old.get(k) != record[k]]
            raise DataError(
                f"{out}: converted earlier from other arrays or settings ({', '.join(changed)} "
                "differ); give another --out, or remove the folder to convert again"
            )
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"--out {out}: folder exists and is not a conversion; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    done = Converted(subjects=subjects, segments={}, voxels={}, captioned=[])
    stimuli = out / "stimuli"
    for split, kind in SPLIT_SEGMENT.items():
        if split not in videos:
            raise DataError(f"{src}: no video_{split}_<size>_<fps>hz.npy")
        video_path = videos[split]
        fps = float(VIDEO_FILE.match(video_path.name).group("fps"))
        frames = load_split(src, subjects[0], split).video.shape[1]
        if abs(frames - fps * tr) > 1e-6:  # before anything of the split is written
            raise DataError(
                f"{video_path}: {frames} frames per clip at {fps:g} Hz span "
                f"{frames / fps:g} s, but the TR is {tr:g} s; give the data's TR (--tr)"
            )
        shown = None
        for subject in subjects:
            data = load_split(src, subject, split)
            fmri_path = src / f"fmri_{split}_{subject}.npy"
            n_seg, per = _segments_of(data, fmri_path, trs_per_segment)
            if shown is not None and (n_seg, per) != shown[:2]:
                raise DataError(
                    f"{fmri_path}: {n_seg} segments of {per} TRs, but {shown[2]} has "
                    f"{shown[0]} of {shown[1]}; the subjects saw the same stimuli"
                )
            shown = (n_seg, per, fmri_path.name)
            done.voxels[subject] = int(data.fmri.shape[1])
            folder = out / subject / "fmri"
            for k in range(n_seg):
                name = f"{kind}{k + 1}"
                rows = slice(k * per, (k + 1) * per)
                done.write(
                    folder / name / "npy" / f"{name}_1.npy",
                    lambda rows=rows, d=data: np.asarray(d.fmri[rows], dtype=np.float32),
                )
                tick(1, f"{subject} {name}")
        n_seg, per, _ = shown
        done.segments[split] = n_seg
        done.fps, done.frames_per_tr = fps, frames
        for k in range(n_seg):
            name = f"{kind}{k + 1}"
            rows = slice(k * per, (k + 1) * per)
            done.write(
                stimuli / f"{name}.npy",
                lambda rows=rows, d=data: np.asarray(d.video[rows]).reshape(
                    (-1,) + d.video.shape[2:]
                ),
            )
            if data.text is not None:
                done.write(
                    stimuli / f"{name}_clips.csv",
                    lambda rows=rows, d=data: pd.DataFrame(
                        {"caption": [str(t) for t in d.text[rows]]}
                    ),
                )
        if data.text is not None:
            done.captioned.append(split)
    runs = {"tr": tr, "from": str(src.resolve()), "preprocessed": "MinD-Video"}
    for subject in subjects:
        (out / subject / "fmri" / PREPROCESSED).write_text(
            json.dumps(runs) + "\n", encoding="utf-8"
        )
    meta = {"fps": done.fps, "frames_per_tr": done.frames_per_tr}
    (stimuli / "stimuli.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return done
