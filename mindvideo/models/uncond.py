"""The generator's unconditional branch: what condition dropout puts in place of the fMRI.

MinD-Video's training code is not public, so how its co-training dropped the condition is
unknown; it decides what plain (classifier-free) guidance pushes away from. Three choices:

- `zero_embedding`: the encoder's output is replaced by zeros (the UNet learns zeros as "no
  condition"), as the SD 1.5 stand-in does with captions;
- `zero_fmri`: the fMRI window is replaced by zeros before the encoder (with z-scored runs,
  about the mean volume);
- `mean_fmri`: the window is replaced by the mean training window before the encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

Uncond = Literal["zero_embedding", "zero_fmri", "mean_fmri"]
UNCONDS = ("zero_embedding", "zero_fmri", "mean_fmri")


def fill_window(uncond: Uncond, train_fmri: np.ndarray) -> np.ndarray | None:
    """The fMRI window that stands for "no condition" (1, window, voxels), or None for
    `zero_embedding` (which replaces the encoder's output instead)."""
    if uncond == "zero_embedding":
        return None
    window, voxels = train_fmri.shape[1:]
    if uncond == "zero_fmri":
        return np.zeros((1, window, voxels), np.float32)
    if uncond == "mean_fmri":
        mean = train_fmri.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)
        return np.broadcast_to(mean, (1, window, voxels)).copy()
    raise ValueError(f"uncond {uncond!r}: use one of {', '.join(UNCONDS)}")


def conditions(encoder, x: torch.Tensor, keep: torch.Tensor, fill: torch.Tensor | None):
    """The encoder's conditions of windows x (n, window, voxels) with the dropped ones (keep
    0) replaced: by zeros after the encoder when `fill` is None, else by `fill` before it.
    Returns (n, tokens, dim)."""
    if fill is None:
        return encoder(x) * keep[:, None, None]
    kept = keep[:, None, None].to(x.dtype)
    return encoder(x * kept + fill.to(x.dtype) * (1 - kept))


def unconditional(encoder, fill: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The unconditional condition (1, tokens, dim); `like` is one window (1, window, voxels)."""
    import torch

    if fill is None:
        return torch.zeros_like(encoder(like))
    return encoder(fill.to(like.device, like.dtype))
