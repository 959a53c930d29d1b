"""Frame arrays: resizing (..., H, W, 3) uint8 frames."""

from __future__ import annotations

import numpy as np


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear, antialiased resize of (..., H, W, 3) uint8 frames."""
    if frames.shape[-3:-1] == (height, width):
        return frames
    import torch  # here, so that naming a protocol does not load torch
    import torch.nn.functional as F

    lead = frames.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, *frames.shape[-3:])
    x = x.permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    y = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return y.reshape(*lead, height, width, 3)
