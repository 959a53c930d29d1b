"""`MindVideoPipeline`: fMRI condition -> video, with adversarial guidance.

A diffusers `DiffusionPipeline` over the inflated UNet, the autoencoder and any diffusers
scheduler (DDIM by default). At each step the condition and the negative condition are
denoised in ONE batched UNet call and combined as
    eps = eps(z, c_neg) + s * (eps(z, c) - eps(z, c_neg)),
the negative being the mean test fMRI's embedding (MinD-Video), the training mean, or zeros.
The number of frames is free (any frame rate over the 2 s clip); the generator is seeded by
the caller; on a GPU the UNet runs under bf16 (or fp16) autocast with SDPA attention.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline

from mindvideo.errors import ConfigError
from mindvideo.models.diffusion import to_frames
from mindvideo.precision import autocast


def make_scheduler(name: str, config: dict):
    """A diffusers scheduler by class name ("DDIMScheduler", "DPMSolverMultistepScheduler",
    ...) from a training scheduler's config."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config") or not name.endswith("Scheduler"):
        raise ConfigError(
            f"decode.scheduler: {name!r} is not a diffusers scheduler; e.g. DDIMScheduler, "
            "PNDMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler"
        )
    return cls.from_config(config)


class MindVideoPipeline(DiffusionPipeline):
    """Denoise clips (batch, channels, frames, h, w) from conditions (batch, tokens, dim)."""

    def __init__(self, vae, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)
        self.set_progress_bar_config(disable=True)
        self.timings: dict[str, float] = {}  # seconds in the UNet loop and the VAE, last call

    @classmethod
    def with_ddim(cls, vae, unet, train_scheduler_config: dict) -> MindVideoPipeline:
        return cls(vae, unet, DDIMScheduler.from_config(train_scheduler_config))

    def _eps(self, latents, t, condition, negative, scale: float, batched: bool):
        if scale == 1.0:
            return self.unet(latents, t, condition)
        if batched:  # one UNet call for both branches
            both = self.unet(torch.cat([latents, latents]), t, torch.cat([negative, condition]))
            eps_neg, eps_cond = both.chunk(2)
        else:
            eps_neg = self.unet(latents, t, negative)
            eps_cond = self.unet(latents, t, condition)
        return eps_neg + scale * (eps_cond - eps_neg)

    @torch.no_grad()
    def __call__(
        self,
        condition: torch.Tensor,
        negative: torch.Tensor | None = None,
        frames: int = 6,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 12.5,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        batched_guidance: bool = True,
        autocast_dtype: torch.dtype | None = torch.bfloat16,
        output_type: str = "np",
        noise_share: float = 0.0,
    ) -> np.ndarray | torch.Tensor:
        """Clips as uint8 (batch, frames, H, W, 3) (output_type "np") or the final latents
        (batch, channels, frames, h, w) ("latent"). `negative` (batch or 1, tokens, dim):
        None means zeros. `generator` draws the initial noise (and DDIM's with eta > 0)."""
        if frames < 1:
            raise ConfigError(f"decode.frames: {frames}; need at least 1 frame per clip")
        device = self._execution_device
        vae, unet = self.vae, self.unet
        batch = len(condition)
        condition = condition.to(device)
        if negative is None:
            negative = torch.zeros_like(condition)
        negative = negative.to(device).expand_as(condition)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        height = height or vae.config.sample_size
        width = width or vae.config.sample_size
        shape = (batch, unet.config.in_channels, frames, height // factor, width // factor)
        latents = video_noise(shape, generator, noise_share, "decode.noise_share")
        latents = latents.to(device) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        on_gpu = torch.device(device).type == "cuda"
        extra = {"eta": eta, "generator": generator} if "eta" in _step_args(self.scheduler) else {}
        started = time.perf_counter()
        with autocast(device, autocast_dtype):
            for t in self.progress_bar(self.scheduler.timesteps):
                x = self.scheduler.scale_model_input(latents, t)
                eps = self._eps(x, t, condition, negative, guidance_scale, batched_guidance)
                latents = self.scheduler.step(eps.float(), t, latents, **extra).prev_sample
        if on_gpu:
            torch.cuda.synchronize()
        self.timings = {"unet": time.perf_counter() - started}
        if output_type == "latent":
            return latents
        started = time.perf_counter()
        b, c, f, h, w = latents.shape
        z = latents.transpose(1, 2).reshape(b * f, c, h, w) / vae.config.scaling_factor
        z = z.to(vae.dtype)  # a VAE kept in half precision
        pixels = torch.cat([vae.decode(z[i : i + 32]).sample for i in range(0, len(z), 32)])
        pixels = pixels.float()
        out = to_frames(pixels).reshape(b, f, *pixels.shape[-2:], 3)  # (b, f, H, W, 3)
        self.timings["vae"] = time.perf_counter() - started
        return out


def video_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, share: float = 0.0, key: str = ""
) -> torch.Tensor:
    """Gaussian noise (batch, channels, frames, h, w) whose `share` of the variance is common to
    all frames of a clip (0: independent frames). At 0 the draws are exactly torch.randn's."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if share:
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{key or 'noise_share'}: {share}; give a share in [0, 1]")
        common = torch.randn((*shape[:2], 1, *shape[3:]), generator=generator)
        noise = share**0.5 * common + (1 - share) ** 0.5 * noise
    return noise


def _step_args(scheduler) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)
