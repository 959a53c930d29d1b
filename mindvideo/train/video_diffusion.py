"""Video diffusion fine-tuning: the inflated UNet (and the fMRI encoder) trained on clips, the
loop of the cotrain and video_pretrain stages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch
from mindvideo.errors import ConfigError
from mindvideo.models.uncond import Uncond, conditions, fill_window, unconditional


class CotrainTraining(BaseModel):
    """The co-training itself: the profile's `cotrain` section (less `enabled`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(4, ge=1, le=10_000)
    batch_size: int = Field(8, ge=1, le=4096, description="clips per step")
    lr: float = Field(1e-4, gt=0, le=100.0, description="UNet learning rate")
    encoder_lr: float | None = Field(None, gt=0, le=100.0, description="None: lr")
    train_unet: Literal["attention", "all", "none"] = Field(
        "attention", description="attention: self-, cross- and temporal attention layers"
    )
    train_encoder: bool = True
    cond_dropout: float = Field(0.1, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    warmup_steps: int = Field(50, ge=0, le=1_000_000)
    val_clips: int = Field(
        64, ge=1, le=100_000, description="clips of the held-out loss (validation, else test clips)"
    )
    noise_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="the share of each training clip's noise common to all its frames "
        "(decode.noise_share's counterpart in training); 0: independent frames (MinD-Video)",
    )
    frame_change_loss: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="weight of a second loss on the frame-to-frame change of the noise "
        "prediction's error (consecutive frames' errors differenced), added to the plain one: "
        "errors that differ between frames (flicker, motion the wrong way) cost more than "
        "errors a clip's frames share; 0: the plain noise-prediction loss (MinD-Video)",
    )
    uncond: Uncond = Field(
        "zero_embedding",
        description="what condition dropout puts in place of the fMRI: zeros for the encoder's "
        "output (zero_embedding), or a zero (zero_fmri) or mean training (mean_fmri) window "
        "before the encoder; decoding's `guidance.negative: zeros` uses the same",
    )


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

    from mindvideo.distributed import check_divisible, wrap_ddp
    from mindvideo.models.pipeline import video_noise
    from mindvideo.train.loop import fit_epochs, steps_per_epoch
    from mindvideo.train.schedules import warmup_then_cosine

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
    params = [p for g in groups for p in g["params"]]
    rng = np.random.default_rng([seed, 6])
    g = torch.Generator().manual_seed(seed)
    total = cfg.epochs * steps_per_epoch(len(x), cfg.batch_size)
    x_all, lat_all = torch.from_numpy(x), latents
    mine = slice(rank * local, (rank + 1) * local)

    def batch_loss(batch: np.ndarray):
        idx = torch.from_numpy(batch)
        keep = torch.from_numpy(rng.random(len(idx)) >= cfg.cond_dropout).float()
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=g)
        noise = video_noise((len(idx), *lat_all.shape[1:]), g, cfg.noise_share)
        idx, keep, t, noise = idx[mine], keep[mine], t[mine], noise[mine]
        noisy = scheduler.add_noise(lat_all[idx], noise, t)
        eps = net(x_all[idx].to(device), keep.to(device), noisy.to(device), t.to(device))
        return noise_loss(eps.float(), noise.to(device), cfg.frame_change_loss)

    def end_epoch(epoch: int, loss: float) -> None:
        log("train_loss", loss, epoch)
        tick(1, f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f}")

    def lr_at(step: int, peak: float) -> float:
        return peak * warmup_then_cosine(step, total, cfg.warmup_steps)

    loss_epoch = fit_epochs(
        opt,
        batch_loss,
        rng,
        len(x),
        cfg,
        lr_at=lr_at,
        params=params,
        end=end_epoch,
        autocast_device=device,
    )
    model.eval()
    return {"train_loss": loss_epoch, "trainable_parameters": float(sum(p.numel() for p in params))}


def noise_loss(eps: torch.Tensor, noise: torch.Tensor, frame_change: float = 0.0):
    """Mean squared error of predicted noise (n, channels, frames, h, w), plus `frame_change`
    times the mean squared frame-to-frame difference of the error (no term at 0)."""
    import torch.nn.functional as F

    loss = F.mse_loss(eps, noise)
    if frame_change and eps.shape[2] > 1:
        loss = loss + frame_change * (eps - noise).diff(dim=2).pow(2).mean()
    return loss


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
