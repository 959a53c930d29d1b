"""Stage `video_pretrain`: text-to-video pretraining of the SynthCC generator (opt-in).

Stable Diffusion is an image model, and MinD-Video inflates it and learns motion from one
subject's fMRI-video pairs in co-training. Our `tiny` stand-in learns far less from those pairs
than SD brings, so this stage gives it what a video foundation model would have: the image
UNet, inflated as `generator` says, trained text-to-video on `clips` fresh clips of the
stimulus world (rendered here, never shown to any subject) with their captions as the
foundation CLIP's token states, and a share of zero conditions for guidance. Co-training and
decoding then start from it instead of the freshly inflated image UNet.

It reports the held-out noise-prediction loss of fresh clips with their captions and with the
zero condition, and of the same clips played backwards under the same noise and timesteps:
`direction_gap` (backwards minus forwards) is above 0 when the model reads the direction of
motion from the caption. The run seed is not used: one model serves every run (its seed is
config). SynthCC only (`video_pretrain.enabled: true`); real data inflates SD 1.5 directly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mindvideo.data.synth.config import WorldConfig
from mindvideo.errors import ConfigError, DataError
from mindvideo.models.diffusion_config import GENERATOR_KEY_NEUTRAL, GeneratorConfig
from mindvideo.stages.base import Stage, StageContext, StageResult, decodes_fmri

NAME = "video_pretrain"
INPUTS: tuple[str, ...] = ("foundation", "diffusion")
VERSION = 1
SEEDED = False
_TRAIN, _HELD_OUT = 1, 2  # random streams of the rendered clips


class VideoPretrainTraining(BaseModel):
    """How many clips and how they train: the profile's `video_pretrain` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clips: int = Field(
        8192, ge=1, le=10_000_000, description="fresh clips of the stimulus world to train on"
    )
    epochs: int = Field(4, ge=1, le=10_000)
    batch_size: int = Field(8, ge=1, le=4096, description="clips per step")
    lr: float = Field(5e-4, gt=0, le=100.0)
    train_unet: Literal["attention", "all"] = Field(
        "all", description="attention: self-, cross- and temporal attention layers only"
    )
    cond_dropout: float = Field(0.1, ge=0, lt=1, description="share of zero conditions")
    grad_clip: float | None = Field(1.0, gt=0)
    warmup_steps: int = Field(100, ge=0, le=1_000_000)
    noise_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="the share of each clip's training noise common to its frames (as "
        "cotrain.noise_share)",
    )
    frame_change_loss: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="weight of the loss on the frame-to-frame change of the noise prediction's "
        "error (as cotrain.frame_change_loss); 0: the plain loss",
    )
    val_clips: int = Field(
        64, ge=1, le=100_000, description="fresh held-out clips of the loss and gap"
    )
    seed: int = 0


class VideoPretrainConfig(VideoPretrainTraining):
    """The training, the world the clips come from, and the inflation."""

    world: WorldConfig = WorldConfig()
    tr: float = Field(2.0, gt=0, description="seconds per clip")
    frames_per_clip: int = Field(6, ge=1, le=1000)
    generator: GeneratorConfig = GeneratorConfig()


CONFIG = VideoPretrainConfig


def work_units(cfg: VideoPretrainConfig) -> int:
    return cfg.epochs + 2


def render_latents(vae, clip, n: int, seed: int, stream: int, cfg, scale: float):
    """`n` fresh clips as scaled VAE latents (n, channels, frames, h, w), and their captions'
    token states (distinct captions, context, width) with each clip's index into them."""
    import torch

    from mindvideo.data.synth.world import sample_clips
    from mindvideo.models.diffusion import encode

    rng = np.random.default_rng([seed, stream])
    latents, captions = [], []
    for frames, text in sample_clips(rng, n, cfg.tr, cfg.frames_per_clip, cfg.world):
        k, f = frames.shape[:2]
        z = encode(vae, frames.reshape(k * f, *frames.shape[2:])) * scale  # (k*f, c, h, w)
        latents.append(z.reshape(k, f, *z.shape[1:]).transpose(1, 2))
        captions += text
    unique, index = np.unique(np.asarray(captions), return_inverse=True)
    tokens = torch.from_numpy(clip.text_tokens(list(unique)))
    return torch.cat(latents).contiguous(), tokens, index.astype(np.int64)


def caption_lookup(tokens):
    """A frozen module: caption indices (n,) -> their token states (n, context, width). It
    stands where co-training has the fMRI encoder, so that one training loop serves both."""
    import torch

    class CaptionLookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("tokens", tokens)

        def forward(self, index):
            return self.tokens[index]

    return CaptionLookup()


def run(
    cfg: VideoPretrainConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    from safetensors.torch import save_file

    from mindvideo.distributed import launch
    from mindvideo.eval.foundation import load_foundation_clip
    from mindvideo.models.diffusion import load_diffusion
    from mindvideo.models.inflated_unet import GENERATOR_FILE, UNET_WEIGHTS, save_generator_file

    started = time.perf_counter()
    out = Path(out)
    model = load_diffusion(inputs["diffusion"])
    clip = load_foundation_clip(inputs["foundation"])
    scale = model.scaling_factor
    try:
        train = render_latents(model.vae, clip, cfg.clips, cfg.seed, _TRAIN, cfg, scale)
        held = render_latents(model.vae, clip, cfg.val_clips, cfg.seed, _HELD_OUT, cfg, scale)
    except ValueError as e:
        raise DataError(f"video_pretrain: {e}; set data.frames_per_clip accordingly") from None
    if train[1].shape[-1] != model.cond_dim:
        raise DataError(
            f"video_pretrain: the foundation CLIP's token states are {train[1].shape[-1]} wide, "
            f"the UNet reads {model.cond_dim}; the foundation CLIP must be the generator's text "
            "encoder"
        )
    ctx.progress(1, f"{cfg.clips} fresh clips rendered and encoded")
    payload = (cfg, model.unet, dict(model.scheduler.config), train, held)
    unet_state, metrics = launch(
        train_worker, payload, ctx.processes, ctx.device, ctx.progress, ctx.log_metric
    )
    save_file(unet_state, str(out / UNET_WEIGHTS))
    save_generator_file(out, cfg.generator)
    metrics |= {
        "train_clips": float(cfg.clips),
        "train_captions": float(len(train[1])),
        "train_seconds": time.perf_counter() - started,
    }
    ctx.progress(1, f"held-out loss {metrics['val_loss']:.4f}, gap {metrics['direction_gap']:.4f}")
    return StageResult(metrics=metrics, artifacts=[Path(UNET_WEIGHTS), Path(GENERATOR_FILE)])


def train_worker(payload, device: str, report):
    """For mindvideo.distributed.launch: (the inflated UNet's weights on the CPU, metrics)."""
    from diffusers import DDPMScheduler

    from mindvideo.distributed import callbacks, cpu_weights
    from mindvideo.models.inflated_unet import inflate
    from mindvideo.train.video_diffusion import CotrainTraining, train_cotrain

    cfg, unet, scheduler_config, (latents, tokens, index), held = payload
    inflated = inflate(unet, cfg.generator, cfg.seed)
    scheduler = DDPMScheduler.from_config(scheduler_config)
    training = CotrainTraining(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        train_unet=cfg.train_unet,
        train_encoder=False,
        cond_dropout=cfg.cond_dropout,
        grad_clip=cfg.grad_clip,
        warmup_steps=cfg.warmup_steps,
        noise_share=cfg.noise_share,
        frame_change_loss=cfg.frame_change_loss,
    )
    lookup = caption_lookup(tokens)
    metrics = train_cotrain(
        training, lookup, inflated, scheduler, index, latents, cfg.seed, device, *callbacks(report)
    )
    metrics |= direction_losses(inflated, scheduler, held, cfg.seed + 1, device, cfg.noise_share)
    return cpu_weights(inflated), metrics


def direction_losses(inflated, scheduler, held, seed: int, device: str, noise_share: float):
    """Held-out losses with the caption and the zero condition, and with the caption on the
    clip played backwards (same noise and timesteps); direction_gap = backwards - forwards."""
    from mindvideo.train.video_diffusion import held_out_loss

    latents, tokens, index = held
    lookup = caption_lookup(tokens).to(device)
    inflated.to(device).eval()
    args = (seed, device, noise_share)
    out = held_out_loss(lookup, inflated, scheduler, index, latents, *args)
    backwards = latents.flip(2)  # (n, c, frames, h, w): the frames in reverse order
    reverse = held_out_loss(lookup, inflated, scheduler, index, backwards, *args)
    out["val_loss_backwards"] = reverse["val_loss"]
    out["direction_gap"] = out["val_loss_backwards"] - out["val_loss"]
    return out


class VideoPretrainSection(VideoPretrainTraining):
    """The profile's `video_pretrain` section."""

    enabled: bool = Field(
        False,
        description="true: pretrain the inflated SynthCC UNet text-to-video on fresh clips "
        "before co-training (the video_pretrain stage); false: inflate the image UNet "
        "(MinD-Video)",
    )


def configure(profile, subject: str) -> VideoPretrainConfig:
    data = profile.data
    if data.source != "synth":
        raise ConfigError(
            f"{profile.source}: video_pretrain.enabled: true, but video pretraining renders "
            f"SynthCC clips and the data are {data.source}; set video_pretrain.enabled: false "
            "(real data inflates Stable Diffusion 1.5 as MinD-Video does)"
        )
    return VideoPretrainConfig(
        **profile.video_pretrain.model_dump(exclude={"enabled"}),
        world=data.synth.world,
        tr=data.synth.protocol.tr,
        frames_per_clip=data.frames_per_clip,
        generator=profile.generator,
    )


STAGE = Stage(
    name=NAME,
    run=run,
    config=CONFIG,
    configure=configure,
    version=VERSION,
    order=50,
    inputs=INPUTS,
    enabled=lambda profile: decodes_fmri(profile) and profile.video_pretrain.enabled,
    sections={"video_pretrain": VideoPretrainSection, "generator": GeneratorConfig},
    reads=("data",),
    seeded=SEEDED,
    artifacts=("unet.safetensors", "generator.json"),  # models/inflated_unet.py
    work_units=work_units,
    # options added after results were cached: out of the key while at these values
    key_neutral={
        ("world", "motion"): "capped",
        ("frame_change_loss",): 0.0,
        **GENERATOR_KEY_NEUTRAL,
    },
)
