"""Stage `decode`: reconstruct the test (or validation) clips of one subject from its fMRI.

The encoder (co-trained, or as the contrastive stage left it when co-training is off) turns
each test window into a condition; `MindVideoPipeline` denoises a clip from it with the
inflated UNet (co-trained, or as the video_pretrain stage left it, or freshly inflated from
the image model) and adversarial guidance:
the negative condition is the encoder's embedding of the mean test fMRI (`test_mean`, as
MinD-Video), of the mean training fMRI, or zeros. Any number of frames per clip, any diffusers
scheduler. Writes clips.npy, names.txt and sample GIFs for the `evaluate` stage, and how the
time splits between the UNet, the VAE and the rest. `decode.condition: caption` decodes from
the test captions' CLIP token states instead (the foundation CLIP's, which the align stage and
the SynthCC diffusion model read): the generator's ceiling, the negative is then the mean
caption condition of the test or training set, or zeros. `split: val` (eval.split) decodes
the validation clips instead, for tuning: the test set above is then the validation set
throughout, the negative `test_mean` included (the mean of the split decoded).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.data.paired import PAIRING_KEY_NEUTRAL, PairingConfig, pairing
from mindvideo.models.clip_config import check_condition_width
from mindvideo.models.diffusion_config import (
    GENERATOR_KEY_NEUTRAL,
    DecodeOptions,
    GeneratorConfig,
    GuidanceConfig,
)
from mindvideo.models.uncond import Uncond, fill_window, unconditional
from mindvideo.stages.base import (
    NAMES,
    RECONSTRUCTIONS,
    Stage,
    StageContext,
    StageResult,
    dataset_root,
    decodes_fmri,
    scored_split,
)


class DecodeConfig(PairingConfig):
    generator: GeneratorConfig = GeneratorConfig()
    guidance: GuidanceConfig = GuidanceConfig()
    decode: DecodeOptions = DecodeOptions()
    # the co-training's unconditional branch (cotrain.uncond), which `guidance.negative: zeros`
    # stands for
    uncond: Uncond = "zero_embedding"
    split: Literal["val", "test"] = Field("test", description="the clips decoded (eval.split)")


def work_units(cfg: DecodeConfig) -> int:
    return 2


def negative_condition(
    encoder, which: str, train_fmri, test_fmri, device: str, uncond: Uncond = "zero_embedding"
):
    """(1, tokens, dim): the encoder's embedding of the mean fMRI volume (repeated over the
    window) of the split decoded (`test_mean`: `test_fmri`, the validation fMRI when that is
    decoded) or of the training set, or (`zeros`) the unconditional branch the generator was
    co-trained with (`uncond`: zeros, or the encoder's embedding of a zero or mean window)."""
    import torch

    with torch.no_grad():
        probe = torch.from_numpy(test_fmri[:1]).to(device)
        if which == "zeros":
            fill = fill_window(uncond, train_fmri)
            return unconditional(encoder, None if fill is None else torch.from_numpy(fill), probe)
        source = test_fmri if which == "test_mean" else train_fmri
        mean = source.mean(axis=(0, 1))  # (voxels,)
        window = np.broadcast_to(mean, (1, source.shape[1], mean.shape[0])).copy()
        return encoder(torch.from_numpy(window.astype(np.float32)).to(device))


def run(cfg: DecodeConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext) -> StageResult:
    import torch
    from safetensors.torch import load_file

    from mindvideo.data.paired import subject_windows
    from mindvideo.models.diffusion import load_diffusion
    from mindvideo.models.fmri_encoder import load_encoder
    from mindvideo.models.inflated_unet import (
        UNET_WEIGHTS,
        check_compatible,
        inflate,
        load_pretrained,
    )
    from mindvideo.models.pipeline import MindVideoPipeline, make_scheduler
    from mindvideo.stages.base import write_reconstructions

    started = time.perf_counter()
    device = ctx.device
    trained = inputs.get("cotrain")
    encoder, voxels = load_encoder(trained or inputs["contrastive"], device)
    model = load_diffusion(inputs["diffusion"], device)
    check_compatible(encoder, model, cfg)
    unet = inflate(model.unet, cfg.generator, ctx.seed)
    if trained is not None:
        unet.load_state_dict(load_file(str(Path(trained) / UNET_WEIGHTS), device="cpu"))
    elif "video_pretrain" in inputs:
        unet.load_state_dict(load_pretrained(inputs["video_pretrain"], cfg.generator))
    unet.to(device).eval()
    dataset = dataset_root(inputs["dataset"])
    stimuli = open_stimuli(dataset)
    _, train, test = subject_windows(dataset, cfg, stimuli, voxels=voxels, split=cfg.split)
    scheduler = make_scheduler(cfg.decode.scheduler, model.scheduler.config)
    pipe = MindVideoPipeline(model.vae, unet, scheduler)
    if cfg.decode.condition == "caption":
        conditions, negative = caption_conditions(cfg, inputs, train, test, model.cond_dim, device)
    else:
        conditions = None
        negative = negative_condition(
            encoder, cfg.guidance.negative, train.fmri, test.fmri, device, cfg.uncond
        )
    frames = cfg.decode.frames or cfg.frames_per_clip
    height, width = stimuli.frames(test.segment[0]).shape[1:3]
    ctx.progress(1, f"{cfg.subject}: decoding {len(test)} clips x {frames} frames")
    fmri = test.fmri
    if cfg.decode.shuffle_fmri:  # the shuffled-fMRI control (or shuffled captions)
        order = np.random.default_rng([ctx.seed, 7]).permutation(len(fmri))
        fmri = fmri[order]
        conditions = None if conditions is None else conditions[order]
    g = torch.Generator().manual_seed(ctx.seed)
    clips, unet_s, vae_s = [], 0.0, 0.0
    loop_started = time.perf_counter()
    for i in range(0, len(test), cfg.decode.batch_size):
        with torch.no_grad():
            if conditions is not None:
                cond = conditions[i : i + cfg.decode.batch_size].to(device)
            else:
                cond = encoder(torch.from_numpy(fmri[i : i + cfg.decode.batch_size]).to(device))
        clips.append(
            pipe(
                cond,
                negative,
                frames=frames,
                height=height,
                width=width,
                num_inference_steps=cfg.decode.steps,
                guidance_scale=cfg.guidance.scale,
                eta=cfg.decode.eta,
                generator=g,
                noise_share=cfg.decode.noise_share,
            )
        )
        unet_s += pipe.timings["unet"]
        vae_s += pipe.timings["vae"]
    loop = time.perf_counter() - loop_started
    clips = np.concatenate(clips)  # (n, frames, H, W, 3) uint8
    names = [f"{s}_{c:03d}" for s, c in zip(test.segment, test.clip, strict=True)]
    artifacts = write_reconstructions(out, names, clips, frames / 2.0, cfg.decode.samples)
    ctx.progress(1, f"{len(clips)} clips decoded")
    metrics = {
        f"{cfg.split}_clips": float(len(clips)),
        "frames_per_second": float(clips.shape[0] * clips.shape[1] / loop),
        "unet_share": unet_s / loop,
        "vae_share": vae_s / loop,
        "decode_seconds": time.perf_counter() - started,
    }
    return StageResult(metrics=metrics, artifacts=artifacts)


def caption_conditions(cfg: DecodeConfig, inputs, train, test, width: int, device: str):
    """(conditions of the split decoded (n, context, width), negative (1, context, width)) from
    the captions' token states of the foundation CLIP."""
    import torch

    from mindvideo.errors import ConfigError, DataError
    from mindvideo.eval.foundation import load_foundation_clip
    from mindvideo.models.clip import caption_tokens

    if "foundation" not in inputs:
        raise ConfigError(
            "decode.condition: caption needs the foundation stage (the planner binds it)"
        )
    if test.caption is None:
        raise DataError(f"decode.condition: caption needs a caption per {cfg.split} clip")
    clip = load_foundation_clip(inputs["foundation"], device)
    conditions = torch.from_numpy(caption_tokens(clip, test.caption))
    if conditions.shape[-1] != width:
        raise ConfigError(
            f"decode.condition: caption: the CLIP's token states are {conditions.shape[-1]} wide, "
            f"the UNet reads {width}; the foundation CLIP must be the generator's text encoder"
        )
    which = cfg.guidance.negative
    if which == "zeros":
        negative = torch.zeros_like(conditions[:1])
    elif which == "test_mean":
        negative = conditions.mean(dim=0, keepdim=True)
    else:
        negative = torch.from_numpy(caption_tokens(clip, train.caption)).mean(dim=0, keepdim=True)
    return conditions, negative.to(device)


def configure(profile, subject: str) -> DecodeConfig:
    check_condition_width(profile)
    return DecodeConfig(
        **pairing(profile.data, subject),
        generator=profile.generator,
        guidance=profile.guidance,
        decode=profile.decode,
        uncond=profile.cotrain.uncond if profile.cotrain.enabled else "zero_embedding",
        split=scored_split(profile),
    )


def uses(profile) -> tuple[str, ...]:
    """The co-trained and video-pretrained UNets where they exist; the foundation's CLIP only
    to decode from captions (the generator's ceiling)."""
    caption = ("foundation",) if profile.decode.condition == "caption" else ()
    return ("cotrain", "video_pretrain", *caption)


STAGE = Stage(
    name="decode",
    run=run,
    config=DecodeConfig,
    configure=configure,
    version=1,
    order=90,
    inputs=(
        "dataset",
        "contrastive",
        "diffusion",
        "cotrain",
        "foundation",
        "video_pretrain",
    ),
    # cotrain: absent with cotrain.enabled: false; foundation: only with decode.condition: caption;
    # video_pretrain: only with video_pretrain.enabled (its UNet is decoded when cotrain is off)
    optional_inputs=("cotrain", "foundation", "video_pretrain"),
    enabled=decodes_fmri,
    uses=uses,
    sections={"generator": GeneratorConfig, "guidance": GuidanceConfig, "decode": DecodeOptions},
    reads=("data", "cotrain", "align", "encoder", "eval"),
    # the initial noise
    seeded=True,
    artifacts=(RECONSTRUCTIONS, NAMES),
    work_units=work_units,
    # Options added after results were cached: left out of the cache key while at these values, so
    # the entries computed before them stay valid.
    key_neutral={
        ("decode", "noise_share"): 0.0,
        ("uncond",): "zero_embedding",
        ("split",): "test",
        **PAIRING_KEY_NEUTRAL,
        **GENERATOR_KEY_NEUTRAL,
    },
)
