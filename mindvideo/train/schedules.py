"""Learning-rate schedules: the factor of the peak rate at a step (or the rate itself).

Every trained model here warms up linearly over its first steps, then decays along a cosine.
Two roundings of the same schedule exist while cached weights depend on them: `warmup_cosine`
(MBM, the synthetic-domain CLIP) and `warmup_cosine_pi_first` (contrastive learning, the judges)
compute pi * (step - warmup) / span in a different order, which differs in the last bit at
about one step in four. Co-training's `warmup_then_cosine` (the cosine over all steps, times the
warm-up) and the image diffusion model's `warmup_cosine_floor` (a 10% floor) are variants of
the same shape. They merge when those stages' versions are next bumped (the SynthCC v2
recompute); until then each stays bit for bit what its stage has always computed.
"""

from __future__ import annotations

import math

import numpy as np


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """(step + 1) / warmup during the warm-up, then cosine decay from 1 to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine_pi_first(step: int, total: int, warmup: int) -> float:
    """warmup_cosine, rounded as contrastive learning and the judges have always computed it."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def warmup_then_cosine(step: int, total: int, warmup: int) -> float:
    """min(1, (step + 1) / warmup) (1 without warm-up) times a cosine from 1 to 0 over all
    `total` steps: co-training's schedule."""
    factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
    factor *= 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
    return factor


def warmup_cosine_floor(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """The rate itself (not a factor): linear warm-up over `warmup` steps, then a cosine from
    `peak` down to 10% of it at `total`: the image diffusion model's VAE and UNet."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.45 * (1 + np.cos(np.pi * min(1.0, progress))))
