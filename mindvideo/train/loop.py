"""The one training loop every trained model here steps through.

`fit` runs `steps` optimiser steps, grouped in periods (an epoch, or a logging interval of
a step-based recipe). Before each period `begin(period)` runs (a new batch order, say); at each
step `loss_at(step)` gives the batch's loss (drawing its own random numbers, in order; under
`autocast_device`, inside `mindvideo.precision.autocast`), then every parameter group's
learning rate is set to `lr_at(step, peak)` from the rate it was created with, gradients are
zeroed, the loss backpropagated, clipped to a norm of `grad_clip` (0: no clipping), applied,
and `after_step()` runs (a clamp, say). After each whole period `end(period, mean_loss)` runs
with the mean loss over the period's steps (and, under torch.distributed, over processes).

The recipes keep their own loss functions, random streams and schedules (`schedules.py`); the
loop is the same for all, so a change to how a step is taken (precision, clipping, DDP) is made
once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

LossAt = Callable[[int], torch.Tensor]
LrAt = Callable[[int, float], float]  # (step, the group's peak rate) -> its rate at that step


def fit(
    optimiser: torch.optim.Optimizer,
    loss_at: LossAt,
    *,
    steps: int,
    period: int,
    lr_at: LrAt,
    grad_clip: float = 0.0,
    params: Iterable[torch.nn.Parameter] | None = None,
    begin: Callable[[int], None] | None = None,
    end: Callable[[int, float], None] | None = None,
    after_step: Callable[[], None] | None = None,
    autocast_device: str | None = None,
) -> float:
    """Train for `steps` steps; returns the mean loss of the last whole period (NaN if none).
    `params` are the parameters whose gradient norm is clipped (needed with `grad_clip`)."""
    import torch.distributed as dist

    from mindvideo.precision import autocast

    if period < 1:
        raise ValueError(f"fit: period {period}; give 1 or more steps per period")
    if grad_clip and params is None:
        raise ValueError("fit: grad_clip needs the parameters to clip")
    clipped = list(params) if params is not None else []
    peaks = [group["lr"] for group in optimiser.param_groups]
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    running = torch.zeros((), dtype=torch.float64)
    mean = math.nan
    for step in range(steps):
        index, within = divmod(step, period)
        if within == 0:
            running = torch.zeros((), dtype=torch.float64)
            if begin is not None:
                begin(index)
        if autocast_device is None:
            loss = loss_at(step)
        else:
            with autocast(autocast_device):
                loss = loss_at(step)
        for group, peak in zip(optimiser.param_groups, peaks, strict=True):
            group["lr"] = lr_at(step, peak)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(clipped, grad_clip)
        optimiser.step()
        if after_step is not None:
            after_step()
        running += loss.detach().double().cpu()
        if within == period - 1:
            if world > 1:
                dist.all_reduce(running)
                running /= world
            mean = float(running) / period
            if end is not None:
                end(index, mean)
    return mean


def fit_epochs(
    optimiser: torch.optim.Optimizer,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    rng: np.random.Generator,
    n: int,
    cfg,
    ragged: bool = False,
    **options,
) -> float:
    """`fit` over `cfg.epochs` epochs of `n` examples in batches of `cfg.batch_size`, clipped
    to `cfg.grad_clip` where the recipe has one: each epoch draws a new order
    (`rng.permutation(n)`) and each step's `batch_loss(indices)` gets the next batch of it.
    An epoch is `steps_per_epoch(n, cfg.batch_size, ragged)` steps. `options` are `fit`'s
    (lr_at, params, end, ...); returns the last epoch's mean loss."""
    per_epoch = steps_per_epoch(n, cfg.batch_size, ragged)
    order: list[np.ndarray] = []

    def new_order(epoch: int) -> None:
        order[:] = [rng.permutation(n)]

    def loss_at(step: int) -> torch.Tensor:
        start = (step % per_epoch) * cfg.batch_size
        return batch_loss(order[0][start : start + cfg.batch_size])

    options.setdefault("grad_clip", getattr(cfg, "grad_clip", None) or 0.0)
    return fit(
        optimiser,
        loss_at,
        steps=cfg.epochs * per_epoch,
        period=per_epoch,
        begin=new_order,
        **options,
    )


def steps_per_epoch(n: int, batch_size: int, ragged: bool = False) -> int:
    """Batches an epoch of `n` examples takes: whole batches only (at least one), or with a
    ragged last batch (`ragged`)."""
    return math.ceil(n / batch_size) if ragged else max(1, n // batch_size)
