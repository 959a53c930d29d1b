"""Mixed precision: the training and decoding loops compute in bf16 under autocast on a GPU,
and in float32 on a CPU.

`autocast(device)` is the one switch. Tests set `AUTOCAST_ON_CPU` to run the GPU's bf16 code
paths on a CPU (torch has bf16 autocast for CPUs too), so dtype errors that would only show on
a GPU fail in CI instead.
"""

from __future__ import annotations

import torch

AUTOCAST_ON_CPU = False


def autocast(device: str | torch.device, dtype: torch.dtype | None = torch.bfloat16):
    """A torch.autocast context: `dtype` (None: float32 throughout) on a CUDA device; float32
    on a CPU unless AUTOCAST_ON_CPU."""
    kind = torch.device(device).type
    enabled = dtype is not None and (kind == "cuda" or (kind == "cpu" and AUTOCAST_ON_CPU))
    return torch.autocast(
        kind if kind == "cuda" else "cpu", dtype=dtype or torch.bfloat16, enabled=enabled
    )
