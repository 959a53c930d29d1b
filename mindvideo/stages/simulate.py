"""Stage `simulate`: write a SynthCC dataset (the synthetic stand-in for CC2017 + HCP)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mindvideo.data.synth.config import VAL_NEUTRAL, VERSION_NEUTRAL, SimulateConfig
from mindvideo.data.synth.simulate import FORMAT_VERSION, simulate, work_units
from mindvideo.stages.base import SYNTHCC_FOLDER, Stage, StageContext, StageResult


def run(
    cfg: SimulateConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    """Simulate into out/synthcc. The dataset's seed is cfg.seed (part of the config slice),
    so the stage key already pins it; ctx.seed is not used."""
    dataset = Path(out) / SYNTHCC_FOLDER
    summary = simulate(cfg, dataset, progress=ctx.progress)
    p = cfg.protocol
    metrics = {
        "subjects": float(len(summary["subjects"])),
        "train_clips_per_subject": float(p.train_segments * p.train_trs),
        "test_clips_per_subject": float(p.test_segments * p.test_trs),
        **({"val_clips_per_subject": p.val_segments * p.val_shape[0]} if p.val_segments else {}),
        "cortical_vertices": float(summary["cortical_vertices"]),
        "corpus_subjects": float(len(summary["corpus"]["subjects"])),
    }
    for name, value in metrics.items():
        ctx.log_metric(name, value, None)
    return StageResult(metrics=metrics, artifacts=[Path(SYNTHCC_FOLDER) / "dataset.json"])


def configure(profile, subject: str) -> SimulateConfig:
    return profile.data.synth


STAGE = Stage(
    name="simulate",
    run=run,
    config=SimulateConfig,
    configure=configure,
    version=FORMAT_VERSION,  # the dataset format's: a new format simulates again
    order=0,
    enabled=lambda profile: profile.data.source == "synth",
    provides="dataset",
    seeded=False,  # the dataset seed is data.synth.seed, part of the config slice
    artifacts=(SYNTHCC_FOLDER,),
    work_units=work_units,
    # options added after datasets were cached: out of the key while at these values
    key_neutral={
        **{("protocol", name): value for name, value in VAL_NEUTRAL.items()},
        **VERSION_NEUTRAL,
    },
)
