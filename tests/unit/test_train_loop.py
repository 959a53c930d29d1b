"""The one training loop (mindvideo/train/loop.py): what it calls when, the rates it sets, the
losses it reports, and the same weights as the hand-written loop it replaced."""

from __future__ import annotations

import math

import pytest
import torch

from mindvideo.train.loop import fit
from mindvideo.train.schedules import warmup_cosine


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(64, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Linear(5, 1)
    return x, y, model


def test_fit_takes_the_same_steps_as_a_hand_written_loop():
    steps, period, clip = 12, 4, 0.5
    x, y, model = _problem()
    x2, y2, reference = _problem()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    opt_ref = torch.optim.AdamW(reference.parameters(), lr=0.05)

    def loss_at(step):
        b = step % 8
        return torch.nn.functional.mse_loss(model(x[b * 8 : b * 8 + 8]), y[b * 8 : b * 8 + 8])

    last = fit(
        opt,
        loss_at,
        steps=steps,
        period=period,
        lr_at=lambda step, peak: peak * warmup_cosine(step, steps, 2),
        grad_clip=clip,
        params=model.parameters(),
    )
    losses = []
    for step in range(steps):
        b = step % 8
        loss = torch.nn.functional.mse_loss(reference(x2[b * 8 : b * 8 + 8]), y2[b * 8 : b * 8 + 8])
        for group in opt_ref.param_groups:
            group["lr"] = 0.05 * warmup_cosine(step, steps, 2)
        opt_ref.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), clip)
        opt_ref.step()
        losses.append(loss.item())
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)
    assert last == sum(losses[-period:]) / period


def test_callbacks_come_per_period_and_a_partial_period_is_not_reported():
    x, y, model = _problem(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    events: list[tuple] = []

    def loss_at(step):
        events.append(("step", step))
        return torch.nn.functional.mse_loss(model(x), y)

    last = fit(
        opt,
        loss_at,
        steps=7,
        period=3,
        lr_at=lambda step, peak: peak,
        begin=lambda p: events.append(("begin", p)),
        end=lambda p, loss: events.append(("end", p)),
        after_step=lambda: events.append(("after",)),
    )
    kinds = [e[0] for e in events]
    assert kinds.count("begin") == 3 and kinds.count("end") == 2  # 3 + 3 + 1 steps
    assert kinds.count("step") == kinds.count("after") == 7
    assert events[:3] == [("begin", 0), ("step", 0), ("after",)]
    assert events.index(("end", 0)) < events.index(("begin", 1))
    assert math.isfinite(last)
    assert math.isnan(fit(opt, loss_at, steps=0, period=3, lr_at=lambda s, p: p))


def test_each_group_runs_its_own_peak_along_the_schedule():
    x, y, model = _problem(2)
    opt = torch.optim.SGD(
        [{"params": [model.weight], "lr": 1.0}, {"params": [model.bias], "lr": 0.01}]
    )
    seen = []

    def loss_at(step):
        seen.append([g["lr"] for g in opt.param_groups])  # the rates of the previous step
        return torch.nn.functional.mse_loss(model(x), y)

    fit(opt, loss_at, steps=3, period=1, lr_at=lambda step, peak: peak / (step + 1))
    assert seen[1] == [1.0, 0.01] and seen[2] == [0.5, 0.005]
    assert [g["lr"] for g in opt.param_groups] == [1.0 / 3, 0.01 / 3]


def test_bad_arguments_are_refused():
    x, y, model = _problem(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_at(step):
        return torch.nn.functional.mse_loss(model(x), y)

    with pytest.raises(ValueError, match="period 0"):
        fit(opt, loss_at, steps=2, period=0, lr_at=lambda s, p: p)
    with pytest.raises(ValueError, match="grad_clip needs the parameters"):
        fit(opt, loss_at, steps=2, period=1, lr_at=lambda s, p: p, grad_clip=1.0)
