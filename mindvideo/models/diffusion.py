"""The image diffusion model the generator inflates: a Stable Diffusion 1.5 folder, or a small
autoencoder + text-to-image UNet trained on the synthetic domain.

Both live in the same folder layout (diffusers' `save_pretrained`: vae/, unet/, scheduler/), so
one loader serves the real weights and ours. Frames are uint8 (n, H, W, 3); the autoencoder
works on pixels in [-1, 1]; latents are multiplied by the VAE's `scaling_factor` (SD: 0.18215;
ours: 1 / the latents' standard deviation) before diffusion.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from mindvideo.errors import DataError
from mindvideo.models.diffusion_config import DiffusionConfig, UNetConfig, VAEConfig

Progress = Callable[[int, str], None]
LogMetric = Callable[[str, float, int | None], None]


@dataclass
class ImageDiffusion:
    """An autoencoder, a conditional UNet over its latents and the noise schedule."""

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: DDPMScheduler

    @property
    def cond_dim(self) -> int:
        """The width of the condition tokens the UNet's cross-attention reads."""
        return int(self.unet.config.cross_attention_dim)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        self.vae.save_pretrained(folder / "vae")
        self.unet.save_pretrained(folder / "unet")
        self.scheduler.save_pretrained(folder / "scheduler")

    def to(self, device: str) -> ImageDiffusion:
        self.vae.to(device)
        self.unet.to(device)
        return self


def load_image_diffusion(folder: Path | str, device: str = "cpu") -> ImageDiffusion:
    """An SD-format folder (vae/, unet/, scheduler/) as saved by diffusers."""
    folder = Path(folder)
    missing = [p for p in ("vae", "unet", "scheduler") if not (folder / p).is_dir()]
    if missing:
        raise DataError(
            f"{folder}: not a Stable Diffusion folder (no {', '.join(missing)}/); give the "
            "folder of a diffusers SD 1.5 model (model_index.json, vae/, unet/, scheduler/)"
        )
    try:
        vae = AutoencoderKL.from_pretrained(folder / "vae", low_cpu_mem_usage=False)
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False)
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{folder}: cannot load the diffusion model ({e})") from None
    return ImageDiffusion(vae.eval(), unet.eval(), scheduler).to(device)


def load_vae(folder: Path | str, device: str = "cpu") -> AutoencoderKL:
    """Only the autoencoder of an SD-format folder (for the autoencoder baseline)."""
    folder = Path(folder)
    if not (folder / "vae").is_dir():
        raise DataError(
            f"{folder}: no vae/; give the folder of a diffusers SD 1.5 model (vae/, unet/, ...)"
        )
    try:
        vae = AutoencoderKL.from_pretrained(folder / "vae", low_cpu_mem_usage=False)
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{folder / 'vae'}: cannot load the autoencoder ({e})") from None
    return vae.eval().to(device)


@torch.no_grad()
def round_trip(vae: AutoencoderKL, clips: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """uint8 clips (n, F, H, W, 3) through the autoencoder (the latent mean, decoded), at the
    autoencoder's own resolution (`sample_size`): the pixel ceiling of a latent generator."""
    from mindvideo.data.frames import resize_frames

    n, f = clips.shape[:2]
    size = int(vae.config.sample_size)
    frames = clips.reshape(n * f, *clips.shape[2:])
    frames = resize_frames(frames, size, size)
    out = decode(vae, encode(vae, frames, batch_size), batch_size)
    return out.reshape(n, f, *out.shape[1:])


def to_pixels(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames))
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_frames(pixels: torch.Tensor) -> np.ndarray:
    """float (n, 3, H, W) in [-1, 1] -> uint8 (n, H, W, 3)."""
    x = ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def build_vae(cfg: VAEConfig, image_size: int) -> AutoencoderKL:
    levels = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=image_size,
    )


def build_unet(cfg: UNetConfig, latent_channels: int, cond_dim: int, size: int):
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attention_levels)
    up = tuple(
        "CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.cross_attention_levels)
    )
    return UNet2DConditionModel(
        sample_size=size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cond_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
    )


def build_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        clip_sample=False,
        prediction_type="epsilon",
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-image PSNR (dB) of uint8 images."""
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(err, 1e-10))))


@torch.no_grad()
def encode(vae: AutoencoderKL, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """Unscaled latent means (n, c, h, w) of uint8 frames, on the CPU."""
    device = next(vae.parameters()).device
    out = []
    for i in range(0, len(frames), batch_size):
        x = to_pixels(frames[i : i + batch_size]).to(device)
        out.append(vae.encode(x).latent_dist.mode().float().cpu())
    return torch.cat(out)


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """uint8 frames (n, H, W, 3) of unscaled latents (n, c, h, w)."""
    device = next(vae.parameters()).device
    out = []
    for i in range(0, len(latents), batch_size):
        out.append(to_frames(vae.decode(latents[i : i + batch_size].to(device)).sample))
    return np.concatenate(out)


def diffusion_loss(
    unet,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    cond: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Noise-prediction MSE at a uniform random timestep per sample. latents (n, c, ...) are
    scaled; cond (n, tokens, dim); `unet(noisy, t, cond)` returns the predicted noise."""
    n = len(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    t, noise = t.to(latents.device), noise.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    return F.mse_loss(unet(noisy, t, cond), noise)


@torch.no_grad()
def validation_loss(
    unet, scheduler: DDPMScheduler, latents: torch.Tensor, cond: torch.Tensor, seed: int
) -> float:
    """Noise-prediction MSE on held-out scaled latents with fixed timesteps and noise."""
    g = torch.Generator().manual_seed(seed)
    device = next(unet.parameters()).device

    def predict(noisy, t, c):
        return unet(noisy, t, encoder_hidden_states=c).sample

    losses = []
    for i in range(0, len(latents), 64):
        x, c = latents[i : i + 64].to(device), cond[i : i + 64].to(device)
        losses.append(diffusion_loss(predict, scheduler, x, c, g).item() * len(x))
    return float(sum(losses) / len(latents))


MODEL = "model"  # diffusers layout: model/vae, model/unet, model/scheduler


POINTER = "pretrained.json"  # real data: {"path": the SD folder}


def model_folder(folder: Path) -> Path:
    """The SD-format folder a diffusion stage trained (or pointed at)."""
    folder = Path(folder)
    if (folder / POINTER).exists():
        return Path(json.loads((folder / POINTER).read_text())["path"])
    if not (folder / MODEL).is_dir():
        raise DataError(f"{folder}: no {MODEL}/; run the diffusion stage first")
    return folder / MODEL


def load_diffusion(folder: Path, device: str = "cpu"):
    """The image diffusion model a diffusion stage trained (or pointed at)."""
    from mindvideo.models.diffusion import load_image_diffusion

    return load_image_diffusion(model_folder(folder), device)
