"""Stage `evaluate`: score a decoding stage's test (or validation) reconstructions under a
metric protocol."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.errors import DataError
from mindvideo.stages.base import (
    BLOCKS_KEY,
    NAMES,
    NAMES_KEY,
    PER_SAMPLE,
    RECONSTRUCTIONS,
    Stage,
    StageContext,
    StageResult,
    dataset_root,
    scored_split,
)

SCORES = "scores.json"  # the protocol's report: metrics, skipped metrics, per-position scores
SAMPLES = "samples.npz"  # truth and reconstruction of the first few test clips, with names


class EvaluateConfig(BaseModel):
    """Which protocol scores the reconstructions, and how many samples are kept for figures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: str = "mindvideo"
    frames: int | None = Field(
        None, ge=1, le=1000, description="frames per clip scored (protocol's)"
    )
    trials: int | None = Field(
        None, ge=1, le=1_000_000, description="N-way trials per sample (protocol's)"
    )
    exclude_scene_cuts: bool | None = None
    samples: int = Field(
        4, ge=0, le=1000, description="test clips kept for GIFs and the contact sheet"
    )
    extra_metrics: tuple[str, ...] = Field((), description="scored besides the protocol's")
    split: Literal["val", "test"] = Field(
        "test", description="the split the decoding stage decoded (eval.split), as recorded"
    )

    @field_validator("extra_metrics")
    @classmethod
    def _as_a_set(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        """Order and repeats do not change the scores, so they do not change the cache key."""
        return tuple(sorted(set(names)))


def work_units(cfg: EvaluateConfig) -> int:
    return 2


def ground_truth(
    dataset: Path, names: list[str], n_frames: int, need_cuts: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The test clips named <segment>_<clip:03d>, and their scene-cut flags (False where the
    segment's clips.csv has no scene_cut column; an error then if `need_cuts`).

    Returns (n, F, H, W, 3) uint8 and (n,) bool."""
    stimuli = open_stimuli(dataset)
    if stimuli is None:
        raise DataError(f"{dataset}: no stimuli/ folder to take the ground truth from")
    clips, cuts, tables = [], [], {}
    for name in names:
        segment, _, clip = name.rpartition("_")
        if not segment or not clip.isdigit():
            raise DataError(f"{NAMES}: {name!r} is not <segment>_<clip>")
        t = int(clip)
        clips.append(stimuli.clip(segment, t, n_frames))
        if segment not in tables:  # the segment's clips.csv, where it flags scene cuts
            table = stimuli.clips(segment)
            flagged = table is not None and "scene_cut" in table.columns
            if need_cuts and not flagged:
                raise DataError(
                    f"{stimuli.folder / (segment + '_clips.csv')}: no scene_cut column, so clips "
                    "spanning a scene cut cannot be excluded (eval.exclude_scene_cuts); add it"
                )
            tables[segment] = table if flagged else None
        table = tables[segment]
        cuts.append(bool(table.loc[t, "scene_cut"]) if table is not None else False)
    return np.stack(clips), np.asarray(cuts, dtype=bool)


def scene_blocks(dataset: Path, names: list[str]) -> list[str] | None:
    """Each clip's scene as "<segment>/<scene>", from the segments' clips.csv `scene` column
    (SynthCC has it; real CC2017 does not): the stimulus blocks of the report's paired tests.
    None when any segment lacks it."""
    stimuli = open_stimuli(dataset)
    tables, out = {}, []
    for name in names:
        segment, _, clip = name.rpartition("_")
        if segment not in tables:
            table = stimuli.clips(segment) if stimuli is not None else None
            tables[segment] = table if table is not None and "scene" in table.columns else None
        if tables[segment] is None:
            return None
        out.append(f"{segment}/{tables[segment].loc[int(clip), 'scene']}")
    return out


def read_reconstructions(folder: Path) -> tuple[list[str], np.ndarray]:
    folder = Path(folder)
    for f in (RECONSTRUCTIONS, NAMES):
        if not (folder / f).exists():
            raise DataError(f"{folder}: no {f}; the decoding stage did not write its output")
    names = (folder / NAMES).read_text().split()
    clips = np.load(folder / RECONSTRUCTIONS)
    if len(names) != len(clips):
        raise DataError(f"{folder}: {len(names)} names but {len(clips)} clips")
    return names, clips


def sample_indices(n: int, k: int) -> list[int]:
    """The k test clips kept for figures, evenly spread over the n in test order (the first
    few would all show one scene); the same for every run of a subject."""
    k = min(k, n)
    if k == 0:
        return []
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)}) if k > 1 else [0]


def run(
    cfg: EvaluateConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    from mindvideo.eval.foundation import load_scorers
    from mindvideo.eval.protocols import get_protocol, normalise, score

    out = Path(out)
    protocol = get_protocol(
        cfg.protocol,
        cfg.extra_metrics,
        n_frames=cfg.frames,
        trials=cfg.trials,
        exclude_scene_cuts=cfg.exclude_scene_cuts,
    )
    names, pred = read_reconstructions(inputs["decode"])
    n_frames = protocol.n_frames or int(pred.shape[1])
    truth, scene_cut = ground_truth(
        dataset_root(inputs["dataset"]), names, n_frames, protocol.exclude_scene_cuts
    )
    scorers = load_scorers(inputs["foundation"], ctx.device)
    ctx.progress(1, "models loaded")
    report = score(list(pred), list(truth), protocol, scorers, scene_cut, ctx.seed)
    ctx.progress(1, f"{report.n_samples} clips scored")

    scores = report.to_json() | ({"split": cfg.split} if cfg.split != "test" else {})
    (out / SCORES).write_text(json.dumps(scores, indent=1) + "\n")
    scored = [
        n
        for n, cut in zip(names, scene_cut, strict=True)
        if not (protocol.exclude_scene_cuts and cut)
    ]
    # the names let the report pair runs sample by sample, and the scenes resample them by
    # stimulus block (harness/report/stats.py)
    meta = {NAMES_KEY: np.array(scored)}
    blocks = scene_blocks(dataset_root(inputs["dataset"]), scored)
    if blocks is not None:
        meta[BLOCKS_KEY] = np.array(blocks)
    np.savez_compressed(out / PER_SAMPLE, **report.per_sample, **meta)
    kept = sample_indices(len(names), cfg.samples)
    height, width = truth.shape[2:4]
    np.savez_compressed(
        out / SAMPLES,
        names=np.array([names[i] for i in kept]),
        truth=truth[kept],
        reconstruction=normalise([pred[i] for i in kept], n_frames, height, width),
    )
    metrics = {name: float(v) for name, v in report.metrics.items()}
    metrics["n_samples"] = float(report.n_samples)
    for name, value in metrics.items():
        ctx.log_metric(name, value, None)
    return StageResult(metrics=metrics, artifacts=[Path(SCORES), Path(PER_SAMPLE), Path(SAMPLES)])


def configure(profile, subject: str) -> EvaluateConfig:
    from mindvideo.eval.protocols import get_protocol

    ev = profile.eval
    get_protocol(ev.protocol, ev.extra_metrics)  # unknown names fail here, before any work
    return EvaluateConfig(
        protocol=ev.protocol,
        extra_metrics=ev.extra_metrics,
        frames=ev.frames,
        trials=ev.trials,
        exclude_scene_cuts=ev.exclude_scene_cuts,
        samples=ev.samples,
        split=scored_split(profile),
    )


STAGE = Stage(
    name="evaluate",
    run=run,
    config=EvaluateConfig,
    configure=configure,
    # 2: the kept samples are spread over the test set
    version=2,
    order=100,
    inputs=("dataset", "foundation", "decode"),
    enabled=lambda profile: profile.method != "mindvideo" or profile.stop_after is None,
    reads=("data", "eval"),
    # the N-way trials and the bootstrap draw from the run seed
    seeded=True,
    artifacts=(SCORES, PER_SAMPLE, SAMPLES),
    work_units=work_units,
    # Options added after results were cached: left out of the cache key while at these values, so
    # the entries computed before them stay valid.
    key_neutral={("extra_metrics",): [], ("split",): "test"},
)
