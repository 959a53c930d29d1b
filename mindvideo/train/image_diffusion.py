"""Training recipes of the image diffusion model on the synthetic domain: the autoencoder
(L2 reconstruction + KL) and the text-to-image UNet over its latents, step-based (a batch drawn
with replacement each step), on `mindvideo.train.loop`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from mindvideo.models.diffusion import build_unet, build_vae, diffusion_loss, encode, to_pixels
from mindvideo.models.diffusion_config import UNetConfig, VAEConfig
from mindvideo.train.loop import fit
from mindvideo.train.schedules import warmup_cosine_floor

Progress = Callable[[int, str], None]
LogMetric = Callable[[str, float, int | None], None]


def _fit_steps(model, loss_at, cfg, name: str, progress, log_metric, **options) -> None:
    """`fit` for `cfg.steps` steps of AdamW (peak `cfg.lr`, warm-up then cosine to a 10%
    floor), the mean loss logged as `<name>_train_loss` every tenth of the steps."""
    tick = progress or (lambda n, what: None)
    log = log_metric or (lambda name, value, step=None: None)
    every = max(1, cfg.steps // 10)

    def report(period: int, loss: float) -> None:
        step = (period + 1) * every
        log(f"{name}_train_loss", loss, step)
        tick(every, f"{name} step {step}/{cfg.steps} loss {loss:.4f}")

    if options.get("grad_clip"):
        options["params"] = model.parameters()
    fit(
        torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01),
        loss_at,
        steps=cfg.steps,
        period=every,
        lr_at=lambda step, peak: warmup_cosine_floor(step, cfg.steps, peak),
        end=report,
        **options,
    )


def train_vae(
    frames: np.ndarray,
    cfg: VAEConfig,
    seed: int,
    device: str = "cpu",
    progress: Progress | None = None,
    log_metric: LogMetric | None = None,
) -> AutoencoderKL:
    """L2 reconstruction + KL on uint8 frames (n, H, W, 3); sets the latents' scaling factor."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = build_vae(cfg, frames.shape[1])
    vae.to(device).train()
    rng = np.random.default_rng([seed, 3])
    noise = torch.Generator(device=device).manual_seed(seed)

    def loss_at(step: int) -> torch.Tensor:
        idx = np.sort(rng.choice(len(frames), size=min(cfg.batch_size, len(frames)), replace=False))
        x = to_pixels(frames[idx])
        if cfg.crop and cfg.crop < min(x.shape[-2:]):  # the autoencoder is convolutional
            top, left = (int(rng.integers(0, d - cfg.crop + 1)) for d in x.shape[-2:])
            x = x[..., top : top + cfg.crop, left : left + cfg.crop]
        x = x.to(device)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=noise)).sample
        return F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()

    _fit_steps(vae, loss_at, cfg, "vae", progress, log_metric)
    vae.eval()
    latents = encode(vae, frames[rng.choice(len(frames), min(512, len(frames)), replace=False)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std().clamp_min(1e-6)))
    return vae


def train_unet(
    latents: torch.Tensor,
    cond_index: torch.Tensor,
    cond_tokens: torch.Tensor,
    cfg: UNetConfig,
    scheduler: DDPMScheduler,
    seed: int,
    device: str = "cpu",
    progress: Progress | None = None,
    log_metric: LogMetric | None = None,
) -> UNet2DConditionModel:
    """Text-to-image training: scaled latents (n, c, h, w), each with the row of cond_tokens
    (captions, tokens, dim) it shows; the zero condition replaces it in `cond_dropout` of
    the samples (the unconditional branch of guidance)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(cfg, latents.shape[1], cond_tokens.shape[-1], latents.shape[-1])
    unet.to(device).train()
    rng = np.random.default_rng([seed, 4])
    g = torch.Generator().manual_seed(seed)

    def predict(noisy, t, cond):
        return unet(noisy, t, encoder_hidden_states=cond).sample

    def loss_at(step: int) -> torch.Tensor:
        idx = torch.from_numpy(rng.choice(len(latents), size=cfg.batch_size, replace=True))
        cond = cond_tokens[cond_index[idx]]
        keep = torch.from_numpy(rng.random(len(idx)) >= cfg.cond_dropout).float()
        cond = (cond * keep[:, None, None]).to(device)
        return diffusion_loss(predict, scheduler, latents[idx].to(device), cond, g)

    _fit_steps(unet, loss_at, cfg, "unet", progress, log_metric, grad_clip=1.0)
    return unet.eval()
