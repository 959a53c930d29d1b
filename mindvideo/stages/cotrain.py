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

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.data.paired import PAIRING_KEY_NEUTRAL, PairingConfig, clip_video
from mindvideo.distributed import callbacks, cpu_weights
from mindvideo.errors import ConfigError, DataError
from mindvideo.models.diffusion_config import GeneratorConfig
from mindvideo.models.uncond import Uncond, conditions, fill_window, unconditional
from mindvideo.stages.base import StageContext, StageResult, dataset_root

NAME = "cotrain"
INPUTS: tuple[str, ...] = ("dataset", "contrastive", "diffusion", "video_pretrain")
OPTIONAL_INPUTS: tuple[str, ...] = ("video_pretrain",)  # only with video_pretrain.enabled
VERSION = 1
SEEDED = True
UNET_WEIGHTS = "unet.safetensors"  # the inflated UNet's state dict (unet.* and temporal layers)
GENERATOR_FILE = "generator.json"


class CotrainTraining(BaseModel):
    """The co-training itself: the profile's `cotrain` section (less `enabled`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(4, ge=1)
    batch_size: int = Field(8, ge=1, description="clips per step")
    lr: float = Field(1e-4, gt=0, description="UNet learning rate")
    encoder_lr: float | None = Field(None, gt=0, description="None: lr")
    train_unet: Literal["attention", "all", "none"] = Field(
        "attention", description="attention: self-, cross- and temporal attention layers"
    )
    train_encoder: bool = True
    cond_dropout: float = Field(0.1, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    warmup_steps: int = Field(50, ge=0)
    val_clips: int = Field(
        64, ge=1, description="clips of the held-out loss (validation, else test clips)"
    )
    noise_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="the share of each training clip's noise common to all its frames "
        "(decode.noise_share's counterpart in training); 0: independent frames (MinD-Video)",
    )
    uncond: Uncond = Field(
        "zero_embedding",
        description="what condition dropout puts in place of the fMRI: zeros for the encoder's "
        "output (zero_embedding), or a zero (zero_fmri) or mean training (mean_fmri) window "
        "before the encoder; decoding's `guidance.negative: zeros` uses the same",
    )


class CotrainConfig(CotrainTraining, PairingConfig):
    """Co-training, the subject's data and the inflation."""

    generator: GeneratorConfig = GeneratorConfig()


CONFIG = CotrainConfig
# On the validation clips where the data have them, else on test: see subject_windows.
HELD_OUT_METRICS = ("val_loss",)
# added later: at these values, the keys cached before them hold
KEY_NEUTRAL = {("noise_share",): 0.0, ("uncond",): "zero_embedding", **PAIRING_KEY_NEUTRAL}


def work_units(cfg: CotrainConfig) -> int:
    return cfg.epochs + 2


def video_latents(vae, stimuli, samples, frames: int, scale: float) -> torch.Tensor:
    """Scaled VAE latents of the samples' clips: (n, channels, frames, h, w)."""
    from mindvideo.models.diffusion import encode

    clips = clip_video(stimuli, samples, frames)  # (n, F, H, W, 3)
    n = len(clips)
    z = encode(vae, clips.reshape(n * frames, *clips.shape[2:])) * scale  # (n*F, c, h, w)
    return z.reshape(n, frames, *z.shape[1:]).transpose(1, 2).contiguous()


def inflate(unet, cfg: GeneratorConfig, seed: int):
    """The inflated UNet, its new temporal layers initialised from `seed`."""
    import torch

    from mindvideo.models.inflated_unet import InflatedUNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return InflatedUNet(unet, cfg.frame_attention, cfg.temporal_layers, cfg.temporal_heads)


def trainable_unet_parameters(inflated, which: str) -> list:
    if which == "none":
        return []
    if which == "all":
        return list(inflated.parameters())
    return [
        p
        for n, p in inflated.named_parameters()
        if ".attn1." in n or ".attn2." in n or ".temporal." in n
    ]


def evenly(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))


def run(
    cfg: CotrainConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    from safetensors.torch import save_file

    from mindvideo.distributed import launch
    from mindvideo.stages.contrastive import load_encoder, save_encoder, subject_windows
    from mindvideo.stages.diffusion import load_diffusion
    from mindvideo.stages.video_pretrain import load_pretrained

    started = time.perf_counter()
    out = Path(out)
    pretrained = None
    if "video_pretrain" in inputs:
        pretrained = load_pretrained(inputs["video_pretrain"], cfg.generator)
    encoder, voxels = load_encoder(inputs["contrastive"])
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
    (out / GENERATOR_FILE).write_text(
        json.dumps({"generator": cfg.generator.model_dump(mode="json")}, indent=1) + "\n"
    )
    metrics |= {
        "train_clips": float(len(train)),
        "train_seconds": time.perf_counter() - started,
    }
    ctx.progress(1, f"held-out loss {metrics['val_loss']:.4f}")
    return StageResult(metrics=metrics, artifacts=[*artifacts, Path(UNET_WEIGHTS)])


def check_compatible(encoder, model, cfg) -> None:
    if encoder.adapter is not None and encoder.cond_shape[1] != model.cond_dim:
        raise ConfigError(
            f"the align stage mapped the condition onto {encoder.cond_shape[1]}-wide CLIP token "
            f"states but the diffusion UNet reads {model.cond_dim}-wide conditions: the "
            "foundation CLIP must be the generator's text encoder (SD 1.5: ViT-L/14), or set "
            "align.enabled: false"
        )
    if encoder.cond_shape[1] != model.cond_dim:
        raise ConfigError(
            f"the encoder's condition is {encoder.cond_shape[1]} wide but the diffusion UNet reads "
            f"{model.cond_dim}-wide conditions (SD 1.5: 768; SynthCC: eval.clip.text_width); "
            "make encoder.cond_dim equal, or enable the align stage (align.enabled)"
        )
    if encoder.window != cfg.window:
        raise DataError(
            f"the encoder reads windows of {encoder.window} frames, the config asks for "
            f"{cfg.window}; re-run the contrastive stage with this profile"
        )


def train_worker(payload, device: str, report):
    """train_cotrain for mindvideo.distributed.launch; returns (encoder weights, inflated UNet
    weights, metrics), weights on the CPU."""
    from diffusers import DDPMScheduler

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


def _conditioned(encoder, inflated, fill=None):
    """One module (for DDP): (fMRI, keep mask, noisy latents, t) -> predicted noise; `fill`
    (1, window, voxels) or None: what stands in for a dropped condition (models/uncond.py)."""
    import torch

    class Conditioned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.unet = encoder, inflated
            self.register_buffer("fill", None if fill is None else torch.from_numpy(fill))

        def forward(self, x, keep, noisy, t):
            cond = conditions(self.encoder, x, keep, self.fill)  # (n, tokens, dim)
            return self.unet(noisy, t, cond)

    return Conditioned()


def train_cotrain(
    cfg: CotrainTraining,
    encoder,
    inflated,
    scheduler,
    x: np.ndarray,
    latents: torch.Tensor,
    seed: int,
    device: str = "cpu",
    progress=None,
    log_metric=None,
) -> dict[str, float]:
    """The co-training loop, in place: AdamW, warm-up then cosine, gradient clipping, bf16
    autocast on a GPU. Timesteps, noise and condition dropout are drawn for the whole batch,
    so W processes make the updates of one."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from mindvideo.distributed import check_divisible, wrap_ddp
    from mindvideo.models.pipeline import video_noise
    from mindvideo.precision import autocast

    tick = progress or (lambda n, what: None)
    log = log_metric or (lambda name, value, step=None: None)
    rank, world, local = check_divisible(cfg.batch_size, "cotrain.batch_size")
    for p in inflated.parameters():
        p.requires_grad_(False)
    unet_params = trainable_unet_parameters(inflated, cfg.train_unet)
    for p in unet_params:
        p.requires_grad_(True)
    encoder.requires_grad_(cfg.train_encoder)
    groups = [{"params": unet_params, "lr": cfg.lr}] if unet_params else []
    if cfg.train_encoder:
        groups.append({"params": list(encoder.parameters()), "lr": cfg.encoder_lr or cfg.lr})
    if not groups:
        raise ConfigError("cotrain trains nothing: set cotrain.train_unet or train_encoder")
    model = _conditioned(encoder, inflated, fill_window(cfg.uncond, x)).to(device).train()
    net = wrap_ddp(model, device)
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    peaks = [g["lr"] for g in opt.param_groups]
    params = [p for g in groups for p in g["params"]]
    rng = np.random.default_rng([seed, 6])
    g = torch.Generator().manual_seed(seed)
    n = len(x)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    x_all, lat_all = torch.from_numpy(x), latents
    mine = slice(rank * local, (rank + 1) * local)
    step, loss_epoch = 0, math.nan
    for epoch in range(cfg.epochs):
        order = rng.permutation(n)
        running = torch.zeros((), dtype=torch.float64)
        for b in range(steps_per_epoch):
            idx = torch.from_numpy(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            keep = torch.from_numpy(rng.random(len(idx)) >= cfg.cond_dropout).float()
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=g)
            noise = video_noise((len(idx), *lat_all.shape[1:]), g, cfg.noise_share)
            idx, keep, t, noise = idx[mine], keep[mine], t[mine], noise[mine]
            noisy = scheduler.add_noise(lat_all[idx], noise, t)
            factor = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
            factor *= 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
            for group, peak in zip(opt.param_groups, peaks, strict=True):
                group["lr"] = peak * factor
            with autocast(device):
                eps = net(x_all[idx].to(device), keep.to(device), noisy.to(device), t.to(device))
            loss = F.mse_loss(eps.float(), noise.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            running += loss.detach().double().cpu()
            step += 1
        if world > 1:
            dist.all_reduce(running)
            running /= world
        loss_epoch = float(running) / steps_per_epoch
        log("train_loss", loss_epoch, epoch)
        tick(1, f"epoch {epoch + 1}/{cfg.epochs} loss {loss_epoch:.4f}")
    model.eval()
    return {"train_loss": loss_epoch, "trainable_parameters": float(sum(p.numel() for p in params))}


def held_out_loss(
    encoder,
    inflated,
    scheduler,
    x,
    latents,
    seed: int,
    device: str,
    noise_share: float = 0.0,
    fill: np.ndarray | None = None,
) -> dict:
    """Noise-prediction loss on held-out clips with fixed timesteps and noise: with the
    encoder's condition, and with the unconditional one (`fill`: models/uncond.py; None: the
    zero embedding)."""
    import torch
    import torch.nn.functional as F

    from mindvideo.models.pipeline import video_noise

    out = {}
    with torch.no_grad():
        for name, zero in (("val_loss", False), ("val_loss_zero_cond", True)):
            g = torch.Generator().manual_seed(seed)
            total = 0.0
            for i in range(0, len(x), 16):
                xb, lb = torch.from_numpy(x[i : i + 16]).to(device), latents[i : i + 16]
                t = torch.randint(0, scheduler.config.num_train_timesteps, (len(xb),), generator=g)
                noise = video_noise(tuple(lb.shape), g, noise_share)
                noisy = scheduler.add_noise(lb, noise, t).to(device)
                if zero:
                    like = xb[:1]
                    fill_t = None if fill is None else torch.from_numpy(fill)
                    cond = unconditional(encoder, fill_t, like).expand(len(xb), -1, -1)
                else:
                    cond = encoder(xb)
                eps = inflated(noisy, t.to(device), cond)
                total += F.mse_loss(eps.float(), noise.to(device)).item() * len(xb)
            out[name] = total / len(x)
    return out
