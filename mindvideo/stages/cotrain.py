"""Stage `cotrain`: fine-tune the fMRI encoder and the inflated UNet together on fMRI-video pairs.

For one subject: the encoder from the contrastive stage turns each training window into the
condition; the image UNet of the diffusion stage, inflated to video (frame attention and
temporal layers as `generator`), learns to predict the noise added to the VAE latents of the
clip the subject saw. In `cond_dropout` of the samples the condition is dropped, so that
guidance has an unconditional branch: `uncond` says how (mindvideo/models/uncond.py: zeros for
the encoder's output, the default, or a zero or mean fMRI window before the encoder). Which
UNet parameters train is configurable: `attention` (self-, cross- and temporal attention:
MinD-Video's choice) or `all`; the encoder trains too unless `train_encoder: false`. Logged: the
training loss per epoch and the held-out loss on validation clips (test clips where the data
have no validation split) with the condition and with the unconditional one (their gap is what
the fMRI tells the generator). Under torch.distributed each process takes a slice of every batch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

if TYPE_CHECKING:
    import torch

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.data.paired import PAIRING_KEY_NEUTRAL, PairingConfig, clip_video, pairing
from mindvideo.distributed import callbacks, cpu_weights
from mindvideo.models.clip_config import check_condition_width
from mindvideo.models.diffusion_config import GENERATOR_KEY_NEUTRAL, GeneratorConfig
from mindvideo.models.uncond import fill_window
from mindvideo.stages.base import Stage, StageContext, StageResult, dataset_root, decodes_fmri
from mindvideo.train.video_diffusion import CotrainTraining, held_out_loss, train_cotrain


class CotrainConfig(CotrainTraining, PairingConfig):
    """Co-training, the subject's data and the inflation."""

    generator: GeneratorConfig = GeneratorConfig()
    encoder_checkpointing: bool = Field(
        False, description="the profile's encoder.checkpoint_activations, for the encoder here"
    )


def work_units(cfg: CotrainConfig) -> int:
    return cfg.epochs + 2


def video_latents(vae, stimuli, samples, frames: int, scale: float) -> torch.Tensor:
    """Scaled VAE latents of the samples' clips: (n, channels, frames, h, w)."""
    from mindvideo.models.diffusion import encode

    clips = clip_video(stimuli, samples, frames)  # (n, F, H, W, 3)
    n = len(clips)
    z = encode(vae, clips.reshape(n * frames, *clips.shape[2:])) * scale  # (n*F, c, h, w)
    return z.reshape(n, frames, *z.shape[1:]).transpose(1, 2).contiguous()


def evenly(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))


def run(
    cfg: CotrainConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    from safetensors.torch import save_file

    from mindvideo.data.paired import subject_windows
    from mindvideo.distributed import launch
    from mindvideo.models.diffusion import load_diffusion
    from mindvideo.models.fmri_encoder import load_encoder, save_encoder
    from mindvideo.models.inflated_unet import (
        UNET_WEIGHTS,
        check_compatible,
        load_pretrained,
        save_generator_file,
    )

    started = time.perf_counter()
    out = Path(out)
    pretrained = None
    if "video_pretrain" in inputs:
        pretrained = load_pretrained(inputs["video_pretrain"], cfg.generator)
    encoder, voxels = load_encoder(inputs["contrastive"])
    encoder.cfg = encoder.cfg.model_copy(
        update={"checkpoint_activations": cfg.encoder_checkpointing}
    )
    model = load_diffusion(inputs["diffusion"])
    check_compatible(encoder, model, cfg)
    dataset = dataset_root(inputs["dataset"])
    stimuli = open_stimuli(dataset)
    _, train, test = subject_windows(dataset, cfg, stimuli, voxels=voxels, split="held_out")
    scale = model.scaling_factor
    latents = video_latents(model.vae, stimuli, train, cfg.frames_per_clip, scale)
    held = evenly(len(test), cfg.val_clips)  # of the validation clips where the data have them
    val_latents = video_latents(model.vae, stimuli, test.subset(held), cfg.frames_per_clip, scale)
    ctx.progress(1, f"{cfg.subject}: {len(train)} training clips encoded")
    payload = (
        cfg,
        encoder,
        model.unet,
        dict(model.scheduler.config),
        train.fmri,
        latents,
        test.fmri[held],
        val_latents,
        ctx.seed,
        pretrained,
    )
    encoder_state, unet_state, metrics = launch(
        train_worker, payload, ctx.processes, ctx.device, ctx.progress, ctx.log_metric
    )
    encoder.load_state_dict(encoder_state)
    artifacts = save_encoder(out, encoder, voxels)
    save_file(unet_state, str(out / UNET_WEIGHTS))
    save_generator_file(out, cfg.generator)
    metrics |= {
        "train_clips": float(len(train)),
        "train_seconds": time.perf_counter() - started,
    }
    ctx.progress(1, f"held-out loss {metrics['val_loss']:.4f}")
    return StageResult(metrics=metrics, artifacts=[*artifacts, Path(UNET_WEIGHTS)])


def train_worker(payload, device: str, report):
    """train_cotrain for mindvideo.distributed.launch; returns (encoder weights, inflated UNet
    weights, metrics), weights on the CPU."""
    from diffusers import DDPMScheduler

    from mindvideo.models.inflated_unet import inflate

    cfg, encoder, unet, scheduler_config, x, latents, x_val, val_latents, seed, pretrained = payload
    inflated = inflate(unet, cfg.generator, seed)
    if pretrained is not None:  # the video_pretrain stage's UNet, inflated the same way
        inflated.load_state_dict(pretrained)
    scheduler = DDPMScheduler.from_config(scheduler_config)
    metrics = train_cotrain(
        cfg,
        encoder,
        inflated,
        scheduler,
        x,
        latents,
        seed,
        device,
        *callbacks(report),
    )
    fill = fill_window(cfg.uncond, x)
    metrics |= held_out_loss(
        encoder, inflated, scheduler, x_val, val_latents, seed + 1, device, cfg.noise_share, fill
    )
    return cpu_weights(encoder), cpu_weights(inflated), metrics


class CotrainSection(CotrainTraining):
    """The profile's `cotrain` section."""

    enabled: bool = Field(True, description="false: the encoder as trained so far, UNet frozen")


def configure(profile, subject: str) -> CotrainConfig:
    check_condition_width(profile)
    return CotrainConfig(
        **profile.cotrain.model_dump(exclude={"enabled"}),
        **pairing(profile.data, subject),
        generator=profile.generator,
        encoder_checkpointing=profile.encoder.checkpoint_activations,
    )


STAGE = Stage(
    name="cotrain",
    run=run,
    config=CotrainConfig,
    configure=configure,
    version=1,
    order=70,
    inputs=("dataset", "contrastive", "diffusion", "video_pretrain"),
    # only with video_pretrain.enabled
    optional_inputs=("video_pretrain",),
    enabled=lambda profile: decodes_fmri(profile) and profile.cotrain.enabled,
    sections={"cotrain": CotrainSection, "generator": GeneratorConfig},
    reads=("data", "align", "encoder", "eval"),
    seeded=True,
    artifacts=("unet.safetensors", "generator.json"),  # models/inflated_unet.py
    work_units=work_units,
    # added later: at these values, the keys cached before them hold
    key_neutral={
        ("noise_share",): 0.0,
        ("frame_change_loss",): 0.0,
        ("uncond",): "zero_embedding",
        **PAIRING_KEY_NEUTRAL,
        **GENERATOR_KEY_NEUTRAL,
    },
    key_ignored=(("encoder_checkpointing",),),
    # On the validation clips where the data have them, else on test: see subject_windows.
    held_out_metrics=("val_loss",),
)
