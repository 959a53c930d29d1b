"""Learning-rate schedules: the factor of the peak rate at a step.

Every trained model here warms up linearly over its first steps, then decays along a cosine.
Two roundings of the same schedule exist while cached weights depend on them: `warmup_cosine`
(MBM, the synthetic-domain CLIP) and `warmup_cosine_pi_first` (contrastive learning, the judges)
compute pi * (step - warmup) / span in a different order, which differs in the last bit at
about one step in four. They merge when those stages' versions are next bumped (the SynthCC
v2 recompute), as do co-training's and the image diffusion model's variants (cosine over all
steps times the warm-up; a 10% floor).
"""

from __future__ import annotations

import math


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
