"""From a subject's raw runs to (fMRI window, clip) samples: clean, select, average, window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mindvideo.data.cc2017 import SPLITS, Recording, Stimuli, ValSegments, open_subject
from mindvideo.data.preprocess import (
    PreprocessConfig,
    Reproducibility,
    clean_run,
    pad_to_patch,
    reproducibility,
    segment_reproducibility,
    select_voxels,
)
from mindvideo.data.windows import Edge, make_windows, window_indices
from mindvideo.errors import ConfigError, DataError

Progress = Callable[[int, str], None]
# The per-clip annotation columns of stimuli/<segment>_clips.csv a sample carries, and types.
ANNOTATIONS = {"scene_cut": bool, "video_class": np.int64, "frame_class": np.int64, "caption": str}


def check_val_segments(value: ValSegments) -> ValSegments:
    """A count >= 0 (0: none, as ()) or distinct segment names."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"give a count >= 0 or segment names, got {value}")
        return value or ()
    if len(set(value)) != len(value):
        raise ValueError(f"segments repeat: {list(value)}")
    return value


# val_segments as a config field reads it: checked once, wherever it is declared
CheckedValSegments = Annotated[ValSegments, AfterValidator(check_val_segments)]

# The window and frame counts, bounded alike here and in the profile's `data` section (which
# fills them in). Bounds sit 10-100x beyond any sane value (paper: window 2, offset 2, 6 frames
# per 2 s clip; 60 fps would be 120) so that a typo fails at validation; they only validate,
# so no cache key changes.
Window = Annotated[int, Field(ge=1, le=16)]
# The share of the training segments whose (fMRI, clip) pairs a run has: a data-regime knob
TrainFraction = Annotated[float, Field(gt=0, le=1)]
WindowOffset = Annotated[int, Field(ge=-8, le=16)]
FramesPerClip = Annotated[int, Field(ge=1, le=1000)]


class PairingConfig(BaseModel):
    """One subject's (fMRI window, clip) pairs: cleaning and voxels, window, frames per clip.

    The part of a stage's config slice that the profile's `data` section fills in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = "subject1"
    preprocess: PreprocessConfig = PreprocessConfig()
    window: Window = 2
    window_offset: WindowOffset = 2
    window_edge: Literal["drop", "clamp"] = "drop"
    frames_per_clip: FramesPerClip = 6
    val_segments: CheckedValSegments = Field(
        (),
        description="real data: training segments held out as the validation split (names, "
        "or a count from the end of the training list); (): none",
    )
    train_fraction: TrainFraction = Field(
        1.0,
        description="the share of the training segments the subject has (the first ones, "
        "nested: 0.25's are among 0.5's); their scans and pairs only, everywhere",
    )


# Fields added after results were cached, at the values that behave as before: every stage whose
# config is a PairingConfig leaves them out of its cache key (its KEY_NEUTRAL).
PAIRING_KEY_NEUTRAL = {("val_segments",): [], ("train_fraction",): 1.0}


def pairing(data: Any, subject: str) -> dict[str, Any]:
    """The PairingConfig fields of a stage's config slice: the run's subject and the profile's
    `data` settings."""
    fields = set(PairingConfig.model_fields) - {"subject"}
    return {"subject": subject, **{k: getattr(data, k) for k in fields}}


@dataclass
class SubjectFMRI:
    """One subject's cleaned fMRI on the selected voxels, per split and segment."""

    subject: str
    tr: float
    n_cortical: int
    selected: np.ndarray  # (V_sel,) indices into cortical vertices
    stats: Reproducibility | None  # None where the voxels were given (an ROI), not selected
    # split -> segment -> (repeats, T, V_sel); repeats == 1 where they were averaged
    segments: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def prepare_fmri(
    rec: Recording,
    cfg: PreprocessConfig,
    progress: Progress | None = None,
    voxels: np.ndarray | None = None,
) -> SubjectFMRI:
    """Detrend and z-score every run, select reproducible voxels, average repeats.

    Two passes over the files (statistics, then data) so that memory holds only the
    selected voxels, whatever the size of the cortex. `voxels` (indices into the cortical
    vertices, e.g. an ROI shared with the MBM corpus) replaces the selection.
    """
    tick = progress or (lambda n, what: None)
    tr, n_cortical = rec.check()
    if rec.preprocessed:  # MinD-Video's arrays: cleaned and selected already, read as they are
        every = np.arange(n_cortical)
        return _load_segments(rec, cfg, SubjectFMRI(rec.subject, tr, n_cortical, every, None), tick)
    if voxels is not None:
        voxels = np.asarray(voxels)
        if voxels.size == 0 or voxels.min() < 0 or voxels.max() >= n_cortical:
            raise DataError(
                f"{rec.root / rec.subject}: the given voxels must index its {n_cortical} "
                "cortical vertices (is the ROI mask on the same mesh?)"
            )
        return _load_segments(
            rec, cfg, SubjectFMRI(rec.subject, tr, n_cortical, voxels, None), tick
        )
    zs = []
    for split in selection_splits(cfg):
        for seg in rec.segments(split):
            if rec.repeats(split, seg) < 2:
                continue
            runs = rec.load(split, seg)
            cleaned = np.stack([clean_run(r, cfg) for r in runs])
            zs.append(segment_reproducibility(cleaned))
            tick(1, f"{rec.subject} statistics {seg}")
    if len(zs) < 2:
        raise DataError(
            f"{rec.root / rec.subject}: voxel selection needs >= 2 segments with >= 2 repeats "
            f"among splits {list(cfg.selection.splits)}, found {len(zs)}; add the missing runs "
            "or change data.preprocess.selection.splits"
        )
    stats = reproducibility(zs)
    selected = select_voxels(stats, cfg.selection)
    if selected.size == 0:
        raise NoVoxelSelected(
            f"{rec.root / rec.subject}: no voxel passes the reproducibility test "
            f"(p < {cfg.selection.p_threshold}, correction {cfg.selection.correction}, "
            f"{stats.n_segments} segments); raise data.preprocess.selection.p_threshold or set "
            "correction: none"
        )
    return _load_segments(rec, cfg, SubjectFMRI(rec.subject, tr, n_cortical, selected, stats), tick)


class NoVoxelSelected(DataError):
    """The reproducibility test kept no voxel (too few segments or repeats for its threshold)."""


def selection_splits(cfg: PreprocessConfig) -> list[str]:
    """The splits whose repeats enter voxel selection: those listed, and validation wherever
    test is listed (held-out segments are treated alike)."""
    listed = set(cfg.selection.splits) | ({"val"} if "test" in cfg.selection.splits else set())
    return [split for split in SPLITS if split in listed]


def _load_segments(
    rec: Recording, cfg: PreprocessConfig, out: SubjectFMRI, tick: Progress
) -> SubjectFMRI:
    """Clean every run on out.selected and keep (or average) its repeats."""
    selected = out.selected
    for split in SPLITS:  # validation segments are kept as test segments are
        how = cfg.train_repeats if split == "train" else cfg.test_repeats
        for seg in rec.segments(split):
            runs = rec.load(split, seg)
            if rec.preprocessed:
                cleaned = runs[:, :, selected]
            else:
                cleaned = np.stack([clean_run(r, cfg)[:, selected] for r in runs])
            if how == "average":
                cleaned = cleaned.mean(axis=0, keepdims=True)
            out.segments.setdefault(split, {})[seg] = cleaned
            tick(1, f"{rec.subject} {seg}")
    return out


@dataclass
class Samples:
    """Paired samples of one split. Labels are None where the dataset has no annotations."""

    fmri: np.ndarray  # (n, window, V_padded) float32
    segment: np.ndarray  # (n,) segment name
    clip: np.ndarray  # (n,) clip (TR) index in its segment
    repeat: np.ndarray  # (n,) viewing (0-based), -1 where repeats were averaged
    scene_cut: np.ndarray | None = None  # (n,) clip spans a scene cut
    video_class: np.ndarray | None = None
    frame_class: np.ndarray | None = None
    caption: list[str] | None = None

    def __len__(self) -> int:
        return len(self.clip)

    def subset(self, index: np.ndarray) -> Samples:
        """The samples at `index`, in that order."""
        index = np.asarray(index)
        return Samples(
            fmri=self.fmri[index],
            segment=self.segment[index],
            clip=self.clip[index],
            repeat=self.repeat[index],
            scene_cut=None if self.scene_cut is None else self.scene_cut[index],
            video_class=None if self.video_class is None else self.video_class[index],
            frame_class=None if self.frame_class is None else self.frame_class[index],
            caption=None if self.caption is None else [self.caption[i] for i in index],
        )


def make_samples(
    fmri: SubjectFMRI,
    split: str,
    window: int,
    offset: int,
    edge: Edge,
    patch_size: int,
    stimuli: Stimuli | None = None,
) -> Samples:
    """Window every segment of `split` and attach the clip annotations: each column of
    stimuli/<segment>_clips.csv (scene_cut, video_class, frame_class, caption) that every
    segment has; SynthCC has them all, real data at least the captions."""
    blocks, segs, clips, reps = [], [], [], []
    found: dict[str, list] = {column: [] for column in ANNOTATIONS}
    annotated = stimuli is not None
    for seg, runs in fmri.segments.get(split, {}).items():
        n_rep, n_tr, _ = runs.shape
        clip_idx, vols = window_indices(n_tr, window, offset, edge)
        table = stimuli.clips(seg) if stimuli is not None else None
        if table is None:
            annotated = False
        elif len(table) < n_tr:
            raise DataError(
                f"{stimuli.folder / (seg + '_clips.csv')}: {len(table)} clips but the fMRI has "
                f"{n_tr} volumes; stimuli and fMRI of {seg} do not match"
            )
        for r in range(n_rep):
            blocks.append(make_windows(runs[r], vols))
            segs.append(np.full(len(clip_idx), seg))
            clips.append(clip_idx)
            reps.append(np.full(len(clip_idx), -1 if n_rep == 1 else r))
            if table is not None:
                rows = table.iloc[clip_idx]
                for column, dtype in ANNOTATIONS.items():
                    has = column in rows.columns
                    found[column].append(rows[column].to_numpy(dtype) if has else None)
    if not blocks and split == "val" and not fmri.segments.get("val"):
        raise DataError(
            f"subject {fmri.subject}: the data have no validation segments; set "
            "data.synth.protocol.val_segments (SynthCC) or data.val_segments (real data: training "
            "segments to hold out), or score on test (eval.split: test)"
        )
    if not blocks:
        raise DataError(
            f"subject {fmri.subject}: no {split} samples (no runs, or windows of "
            f"{window} at offset {offset} do not fit any segment)"
        )
    data = pad_to_patch(np.concatenate(blocks).astype(np.float32), patch_size)

    def column(name: str) -> np.ndarray | None:
        parts = found[name]
        if not annotated or any(p is None for p in parts):
            return None
        return np.concatenate(parts)

    caption = column("caption")
    return Samples(
        fmri=data,
        segment=np.concatenate(segs),
        clip=np.concatenate(clips),
        repeat=np.concatenate(reps),
        scene_cut=column("scene_cut"),
        video_class=column("video_class"),
        frame_class=column("frame_class"),
        caption=None if caption is None else caption.tolist(),
    )


def clip_video(stimuli: Stimuli, samples: Samples, n_frames: int) -> np.ndarray:
    """The ground-truth clips of `samples`: (n, n_frames, H, W, 3) uint8."""
    return np.stack(
        [
            stimuli.clip(seg, int(c), n_frames)
            for seg, c in zip(samples.segment, samples.clip, strict=True)
        ]
    )


def roi_voxels(dataset: Path, cfg, n_cortical: int) -> np.ndarray:
    """Indices of the ROI's cortical vertices (the MBM corpus's mask by default)."""
    from mindvideo.data.cifti import read_mask

    return np.nonzero(read_mask(_roi_mask(dataset, cfg), n_cortical))[0]


def _roi_mask(dataset: Path, cfg) -> Path:
    from mindvideo.data.hcp import default_mask

    path = Path(cfg.roi_mask) if cfg.roi_mask else default_mask(dataset / "hcp")
    if path is None:
        raise ConfigError(
            f"{dataset}: no ROI mask for encoder.voxels: roi; give data.corpus_mask (the mask "
            "the MBM corpus uses) or set encoder.voxels: selected"
        )
    return path


def encoder_voxels(dataset: Path, cfg, rec: Recording) -> np.ndarray | None:
    """The voxels the encoder reads when cfg.voxels names an ROI: its indices, or None where
    the runs are preprocessed arrays (their columns are the ROI already, in the order the MBM
    corpus was masked in; checked by count, the one thing the arrays say about it)."""
    if cfg.voxels != "roi":
        return None
    if not rec.preprocessed:
        return roi_voxels(dataset, cfg, rec.check()[1])
    from mindvideo.data.cifti import read_mask

    mask = _roi_mask(dataset, cfg)
    n_columns = rec.check()[1]
    n_roi = int(np.count_nonzero(read_mask(mask)))
    if n_roi != n_columns:
        raise DataError(
            f"{rec.root / rec.subject}: its preprocessed runs have {n_columns} voxels but the ROI "
            f"mask {mask} keeps {n_roi}: MinD-Video's arrays must hold the MBM corpus's ROI "
            "voxels, in the mask's order; give the mask they were made with "
            "(data.corpus_mask), or set encoder.voxels: selected to train on the arrays' "
            "voxels without the corpus's encoder"
        )
    return None


def open_training(
    dataset: Path, subject: str, val_segments: ValSegments = (), train_fraction: float = 1.0
) -> Recording:
    """The subject's runs as a run sees them: validation segments held out, then only the
    first round(train_fraction x n) of the n training segments left (at least one), as if
    the subject had been scanned on those alone (voxel selection included)."""
    rec = open_subject(dataset, subject, val_segments)
    if train_fraction < 1.0:
        train = rec.segments("train")
        keep = max(1, int(train_fraction * len(train) + 0.5))
        rec.runs["train"] = {seg: rec.runs["train"][seg] for seg in train[:keep]}
    return rec


def held_out_split(fmri: SubjectFMRI) -> str:
    """Where a stage measures its held-out loss: validation when the data have it, else test."""
    return "val" if fmri.segments.get("val") else "test"


def sample_counts(dataset: Path, cfg) -> dict[str, int]:
    """Samples per split that `cfg` (PairingConfig) pairs for its subject, from the runs'
    headers only (no fMRI is read): the windows each segment yields at its length, once per
    segment where repeats are averaged, once per viewing where they are kept."""
    rec = open_training(dataset, cfg.subject, cfg.val_segments, cfg.train_fraction)
    rec.check()
    windows = (cfg.window, cfg.window_offset, cfg.window_edge)
    return {
        split: split_samples(rec, split, *windows, cfg.preprocess)
        for split in SPLITS
        if rec.segments(split)
    }


def split_samples(
    rec: Recording, split: str, window: int, offset: int, edge: Edge, cfg: PreprocessConfig
) -> int:
    """Samples one split of `rec` pairs (headers only): each segment's windows at its length,
    once where its repeats are averaged (cfg), once per viewing where they are kept."""
    how = cfg.train_repeats if split == "train" else cfg.test_repeats
    n = 0
    for seg in rec.segments(split):
        n_tr = rec.info(rec.runs[split][seg][0]).n_volumes
        clips, _ = window_indices(n_tr, window, offset, edge)
        n += len(clips) * (1 if how == "average" else rec.repeats(split, seg))
    return n


def subject_windows(
    dataset: Path, cfg, stimuli, voxels: np.ndarray | None = None, split: str = "test"
):
    """(SubjectFMRI, train Samples, Samples of `split`) of cfg.subject on the encoder's voxels
    (`voxels`, or the ROI / selection cfg.voxels names), windowed as cfg (PairingConfig).
    `split`: test, val, or held_out (val when the data have it, else test)."""
    rec = open_training(dataset, cfg.subject, cfg.val_segments, cfg.train_fraction)
    if voxels is None:
        voxels = encoder_voxels(dataset, cfg, rec)
    fmri = prepare_fmri(rec, cfg.preprocess, voxels=voxels)
    pad = 1  # the encoder wrap-pads to its patch size itself
    edge, offset = cfg.window_edge, cfg.window_offset
    if split == "held_out":
        split = held_out_split(fmri)
    if stimuli is not None:  # frames at the rate they are read at, before any clip is cut
        for name in ("train", split):
            for seg in rec.segments(name):
                stimuli.check_length(seg, rec.info(rec.runs[name][seg][0]).n_volumes)
    train = make_samples(fmri, "train", cfg.window, offset, edge, pad, stimuli)
    held = make_samples(fmri, split, cfg.window, offset, edge, pad, stimuli)
    return fmri, train, held
