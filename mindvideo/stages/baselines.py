"""Stage `baselines`: one baseline of `mindvideo.eval.baselines` (ridge retrieval, the
shuffled-fMRI control, random training clips, the autoencoder ceiling) decoding the scored split
for `evaluate`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mindvideo.data.paired import PAIRING_KEY_NEUTRAL, pairing
from mindvideo.errors import ConfigError
from mindvideo.eval.baselines import BaselineOptions, BaselinesConfig, decode_baselines
from mindvideo.stages.base import (
    NAMES,
    RECONSTRUCTIONS,
    Stage,
    StageContext,
    StageResult,
    dataset_root,
    scored_split,
    write_reconstructions,
)


def seeded(cfg: BaselinesConfig) -> bool:
    """Only the shuffled control and chance draw random numbers; ridge is deterministic."""
    return bool({"shuffled", "random-train-clip"} & set(cfg.methods))


def run(
    cfg: BaselinesConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    """Decode cfg.split with the single baseline of cfg.methods into out/ (clips.npy,
    names.txt, samples/*.gif), for the `evaluate` stage to score."""
    from mindvideo.eval.foundation import load_scorers

    if len(cfg.methods) != 1:
        raise ConfigError(
            f"stage baselines decodes one method per run, got methods={list(cfg.methods)}"
        )
    (method,) = cfg.methods
    dataset = dataset_root(inputs["dataset"])
    vae, clip_model = None, None
    if method == "autoencoder":
        from mindvideo.models.diffusion import load_vae, model_folder

        if "diffusion" not in inputs:
            raise ConfigError(
                "the autoencoder baseline needs the diffusion stage (the planner binds it)"
            )
        vae = load_vae(model_folder(inputs["diffusion"]), ctx.device)
    elif "clip" in cfg.features:
        clip_model = load_scorers(inputs["foundation"]).clip
    decoded = decode_baselines(
        dataset, cfg, clip_model, ctx.seed, ctx.progress, str(inputs["foundation"]), vae
    )
    artifacts = write_reconstructions(
        out, decoded.names, decoded.clips[method], fps=cfg.frames_per_clip / 2.0
    )
    metrics = {f"{cfg.split}_clips": float(len(decoded.names))}
    if decoded.ridge_alpha is not None and method != "random-train-clip":
        metrics["ridge_alpha"] = decoded.ridge_alpha
    for k, v in metrics.items():
        ctx.log_metric(k, v, None)
    return StageResult(metrics=metrics, artifacts=artifacts)


SEEDED = seeded


def configure(profile, subject: str) -> BaselinesConfig:
    return BaselinesConfig(
        **profile.baselines.model_dump(),
        **pairing(profile.data, subject),
        methods=(profile.method,),
        split=scored_split(profile),
    )


STAGE = Stage(
    name="baselines",
    run=run,
    config=BaselinesConfig,
    configure=configure,
    version=3,
    order=95,
    inputs=("dataset", "foundation", "diffusion"),
    # the autoencoder baseline's VAE
    optional_inputs=("diffusion",),
    enabled=lambda profile: profile.method != "mindvideo",
    provides="decode",  # evaluate scores its reconstructions
    sections={"baselines": BaselineOptions},
    reads=("data", "eval"),
    seeded=seeded,
    artifacts=(RECONSTRUCTIONS, NAMES),
    # Options added after results were cached: left out of the cache key while at these values.
    key_neutral={("split",): "test", **PAIRING_KEY_NEUTRAL},
    # Baselines renamed since results were cached, new name -> the name in the cache key: random
    # real training clips are a data baseline, not chance level (which is analytic; see
    # mindvideo/eval/protocols.py `chance_level`).
    key_renamed={("methods",): {"random-train-clip": "chance"}},
)
