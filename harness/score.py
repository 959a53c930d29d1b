"""`mvbench score` and `mvbench data export`: pair reconstructions with ground truth and score."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvideo.data.cc2017 import Stimuli, open_stimuli, read_metadata
from mindvideo.errors import DataError
from mindvideo.eval.protocols import ScoreReport
from mindvideo.eval.video_io import read_clip_set, write_clip_set

CLIP_NAME = re.compile(r"^(?P<segment>(seg|test|val)\d+)_(?P<clip>\d+)$")
SOURCE_FILE = "source.json"  # written by export: which dataset the clips came from
SCENE_CUTS_FILE = "scene_cuts.txt"


def clip_name(segment: str, clip: int) -> str:
    return f"{segment}_{clip:03d}"


def is_dataset(folder: Path) -> bool:
    return (folder / "dataset.json").exists() or any(folder.glob("subject*/fmri"))


def export_clips(root: Path, split: str, out: Path, fmt: str, n_frames: int) -> int:
    """Write the ground-truth clips of a split as <segment>_<clip> files; returns the count."""
    meta = read_metadata(root)
    stimuli = open_stimuli(root)
    if stimuli is None or "segments" not in meta:
        raise DataError(
            f"{root}: no stimuli/ folder or dataset.json; export needs a SynthCC "
            "dataset (or CC2017 with stimuli/<segment>.npy and dataset.json)"
        )
    if split not in meta["segments"]:
        raise DataError(f"{root}: no split {split!r}; splits: {', '.join(meta['segments'])}")
    names, clips, cuts = [], [], []
    for seg in meta["segments"][split]:
        n_clips = stimuli.frames(seg).shape[0] // stimuli.frames_per_tr
        table = stimuli.clips(seg)
        for t in range(n_clips):
            names.append(clip_name(seg, t))
            clips.append(stimuli.clip(seg, t, n_frames))
            if table is not None and bool(table.loc[t, "scene_cut"]):
                cuts.append(names[-1])
    fps = n_frames / float(meta.get("tr", 2.0))
    write_clip_set(out, names, clips, fmt=fmt, fps=fps)
    (out / SCENE_CUTS_FILE).write_text("".join(f"{n}\n" for n in cuts))
    (out / SOURCE_FILE).write_text(
        json.dumps({"dataset": str(Path(root).resolve()), "split": split, "frames": n_frames})
    )
    return len(names)


@dataclass
class Truth:
    names: list[str]
    clips: list[np.ndarray]
    scene_cut: np.ndarray | None
    dataset: Path | None  # the SynthCC dataset the truth comes from, if known


def _truth_from_dataset(root: Path, names: list[str], n_frames: int | None) -> Truth:
    stimuli: Stimuli | None = open_stimuli(root)
    if stimuli is None:
        raise DataError(f"{root}: the dataset has no stimuli/ folder to take ground truth from")
    clips, cuts = [], []
    tables: dict[str, object] = {}
    for name in names:
        m = CLIP_NAME.match(name)
        if not m:
            raise DataError(
                f"prediction {name!r}: against a dataset, name each clip <segment>_<clip>, e.g. "
                "test1_005 (the clip at TR 5 of segment test1)"
            )
        seg, t = m.group("segment"), int(m.group("clip"))
        if seg not in tables:
            tables[seg] = stimuli.clips(seg)
        clips.append(stimuli.clip(seg, t, n_frames or stimuli.frames_per_tr))
        table = tables[seg]
        cuts.append(bool(table.loc[t, "scene_cut"]) if table is not None else False)
    return Truth(names, clips, np.array(cuts), root)


def load_pair(pred_dir: Path, truth_dir: Path, n_frames: int | None):
    """Read predictions and their ground truth, paired by sample name."""
    names, pred = read_clip_set(pred_dir)
    if is_dataset(truth_dir):
        truth = _truth_from_dataset(truth_dir, names, n_frames)
        return names, pred, truth
    t_names, t_clips = read_clip_set(truth_dir)
    missing = sorted(set(t_names) - set(names))
    extra = sorted(set(names) - set(t_names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} ground-truth clips have no prediction "
                f"(e.g. {', '.join(missing[:5])})"
            )
        if extra:
            parts.append(
                f"{len(extra)} predictions have no ground truth (e.g. {', '.join(extra[:5])})"
            )
        raise DataError(
            f"{pred_dir} vs {truth_dir}: "
            + "; ".join(parts)
            + "; name prediction files like the ground truth's"
        )
    by_name = dict(zip(t_names, t_clips, strict=True))
    cuts_file = truth_dir / SCENE_CUTS_FILE
    cut_names = set(cuts_file.read_text().split()) if cuts_file.exists() else None
    scene_cut = None if cut_names is None else np.array([n in cut_names for n in names])
    source = truth_dir / SOURCE_FILE
    dataset = Path(json.loads(source.read_text())["dataset"]) if source.exists() else None
    return names, pred, Truth(names, [by_name[n] for n in names], scene_cut, dataset)


def format_report(report: ScoreReport) -> str:
    lines = [
        f"protocol {report.protocol}: {report.n_samples} clips scored"
        + (
            f" ({report.excluded_scene_cuts} spanning a scene cut excluded)"
            if report.excluded_scene_cuts
            else ""
        )
    ]
    base = [k for k in report.metrics if not k.endswith(("_se", "_ci_low", "_ci_high"))]
    width = max(len(k) for k in base) if base else 10
    for k in base:
        m = report.metrics
        se = m.get(f"{k}_se")
        ci = (m.get(f"{k}_ci_low"), m.get(f"{k}_ci_high"))
        text = f"  {k.ljust(width)}  {m[k]:.4f}"
        if se is not None:
            text += f" +- {se:.4f}"
        if ci[0] is not None:
            text += f"   95% CI [{ci[0]:.4f}, {ci[1]:.4f}]"
        lines.append(text)
    for k, why in report.skipped.items():
        lines.append(f"  {k.ljust(width)}  skipped: {why}")
    return "\n".join(lines)


def foundation_folder(dataset: Path, judges, clip, store: Path, quiet: bool = True) -> Path:
    """The judges and CLIP of a SynthCC dataset folder, as the `foundation` stage trains them
    (`judges`, `clip`: their JudgeConfig and ClipConfig), from the store's stage cache: the
    same entry a suite on this dataset folder uses, trained once."""
    from harness.cache import StageCache, StageNode, digest, stage_key
    from harness.runner import compute_stage
    from mindvideo.stages.registry import get_stage

    stage = get_stage("foundation")
    cfg = stage.config(synthetic=True, judges=judges, clip=clip)
    root = Path(dataset).resolve()
    inputs = {"dataset": digest({"external": str(root)})}  # as the planner keys a folder
    node = StageNode(stage.name, stage_key(stage, cfg, inputs, None), cfg, inputs, None)
    cache = StageCache(store)
    compute_stage(cache, node, {"dataset": root}, quiet=quiet)
    return cache.path(node)


def track_scores(
    store: Path,
    command: str,
    rows: list[tuple[str, dict[str, str], dict[str, float]]],
    report: Path | None = None,
) -> str:
    """Record a `mvbench score` / `mvbench baselines` call in the store's MLflow, as
    `mvbench run` records a suite: an experiment named mvbench-<command>, a parent run for the
    call and a finished child run per row (its name, params and finite metrics); `report`, a
    file, goes with the parent. Returns the parent run's id."""
    import math

    from harness.tracking import Tracker

    tracker = Tracker(store)
    exp = tracker.experiment(f"mvbench-{command}")
    parent = tracker.start_parent(exp, {"mvbench.command": command}, what=command)
    for name, params, metrics in rows:
        child = tracker.start_child(exp, parent, name, {"mvbench.command": command})
        values = [(k, v, 0) for k, v in metrics.items() if math.isfinite(v)]
        tracker.log_metrics(child, values, params)
        tracker.end(child, "FINISHED")
    if report is not None:
        tracker.log_artifact(parent, report)
    tracker.end(parent, "FINISHED")
    return parent
