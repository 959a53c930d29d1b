"""Stage `foundation`: the pre-trained models the pipeline measures with (and, later, builds on).

For SynthCC it trains the synthetic domain's CLIP and the frame and video judges on the
dataset's training segments; for real data it records the local paths of pre-trained judges
and a CLIP checkpoint instead of training anything. Either way `load_scorers(folder)` gives
the models back. The run seed is not used: every variant and seed of a suite is measured with
the same judges and CLIP (their own seeds are part of the config slice).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mindvideo.errors import ConfigError, DataError, typed_section
from mindvideo.eval.foundation import POINTERS
from mindvideo.eval.judge_config import JudgeConfig
from mindvideo.models.clip_config import ClipConfig
from mindvideo.stages.base import Stage, StageContext, StageResult, dataset_root


class FoundationConfig(BaseModel):
    """Train (SynthCC) or point at (real data) the judges and the CLIP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    synthetic: bool = True  # train on the dataset; False: load the paths below
    judges: JudgeConfig = JudgeConfig()
    clip: ClipConfig = ClipConfig()
    frame_judge: str | None = None  # a saved ViTForImageClassification folder
    video_judge: str | None = None  # a saved VideoMAEForVideoClassification folder
    clip_checkpoint: str | None = None  # an open_clip checkpoint file or folder
    clip_model: str | None = None  # its open_clip model name, e.g. ViT-L-14


def work_units(cfg: FoundationConfig) -> int | None:
    if not cfg.synthetic:
        return 1
    from mindvideo.eval.judge_config import work_units as judge_units
    from mindvideo.models.clip_config import work_units as clip_units

    return judge_units(cfg.judges) + clip_units(cfg.clip)


def run(
    cfg: FoundationConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    out = Path(out)
    if not cfg.synthetic:
        missing = [
            k for k in ("frame_judge", "video_judge", "clip_checkpoint") if not getattr(cfg, k)
        ]
        if missing:
            raise ConfigError(
                "real data needs pre-trained judges and a CLIP given by path: set "
                + ", ".join(f"eval.{k}" for k in missing)
                + " in the profile (or with --set)"
            )
        for key in ("frame_judge", "video_judge", "clip_checkpoint"):
            if not Path(getattr(cfg, key)).exists():
                raise DataError(f"eval.{key}: {getattr(cfg, key)} does not exist")
        pointers = cfg.model_dump(
            include={"frame_judge", "video_judge", "clip_checkpoint", "clip_model"}
        )
        (out / POINTERS).write_text(json.dumps(pointers, indent=1) + "\n")
        ctx.progress(1, "pre-trained models recorded")
        return StageResult(metrics={}, artifacts=[Path(POINTERS)])

    from mindvideo.train.clip import train_domain_clip
    from mindvideo.train.judges import train_synth_judges

    dataset = dataset_root(inputs["dataset"])
    judge_metrics = train_synth_judges(dataset, cfg.judges, ctx.progress, out=out / "judges")
    clip_metrics = train_domain_clip(dataset, cfg.clip, ctx.progress, out=out / "clip")
    metrics = {
        f"judges.{k}": float(v)
        for k, v in judge_metrics.items()
        if isinstance(v, int | float) and k not in ("seed", "version")
    } | {
        f"clip.{k.removeprefix('clip_')}": float(v)
        for k, v in clip_metrics.items()
        if isinstance(v, int | float) and k not in ("seed", "version")
    }
    for k, v in metrics.items():
        ctx.log_metric(k, v, None)
    return StageResult(
        metrics=metrics, artifacts=[Path("judges/metrics.json"), Path("clip/metrics.json")]
    )


def configure(profile, subject: str) -> FoundationConfig:
    ev = profile.eval
    return FoundationConfig(
        synthetic=profile.data.source == "synth",
        judges=typed_section(profile, "eval.judges", JudgeConfig),
        clip=typed_section(profile, "eval.clip", ClipConfig),
        frame_judge=ev.frame_judge,
        video_judge=ev.video_judge,
        clip_checkpoint=ev.clip_checkpoint,
        clip_model=ev.clip_model,
    )


def local_paths(profile) -> dict[str, str]:
    return {
        "eval.frame_judge": "dir:config.json",  # a transformers save_pretrained folder
        "eval.video_judge": "dir:config.json",
        "eval.clip_checkpoint": "any",  # a checkpoint file, or an open_clip folder
        "eval.clip_model": "name",
    }


STAGE = Stage(
    name="foundation",
    run=run,
    config=FoundationConfig,
    configure=configure,
    version=1,
    order=10,
    inputs=("dataset",),
    reads=("eval",),
    seeded=False,
    artifacts=(POINTERS,),
    work_units=work_units,
    # The judges' and the CLIP's accuracies on the test stimuli (no fMRI): not to tune on.
    test_split_metrics=("judges.", "clip."),
    local_paths=local_paths,
)
