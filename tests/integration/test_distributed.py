"""Training under torch.distributed: 2 CPU processes (gloo, spawned by
mindvideo.distributed.launch) train what one process trains, for MBM, the contrastive
alignment and the co-training; failures in a process reach the caller with their message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from mindvideo.distributed import launch
from mindvideo.errors import ConfigError, DataError
from mindvideo.models.encoder_config import EncoderConfig
from mindvideo.models.fmri_encoder import FmriEncoder
from mindvideo.models.fmri_mae import MAEConfig
from mindvideo.train import contrastive, mbm
from mindvideo.train.mbm import train_mbm

MAE = MAEConfig(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2)
CFG = mbm.MBMConfig(model=MAE, epochs=2, batch_size=16, warmup_epochs=0.5)


def volumes(seed: int, n: int, width: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, width))
    return (rng.normal(size=(n, 4)) @ basis / 2).astype(np.float32)


def close_weights(a: dict, b: dict, lr: float) -> None:
    diffs = {name: (a[name] - value).abs().max().item() for name, value in b.items()}
    # Attention is blind to the key bias, so its gradient is rounding noise that Adam scales
    # up to ~lr per step: those agree to lr; every other weight to float precision.
    assert max(diffs.values()) < lr
    worst = max(v for k, v in diffs.items() if not k.endswith("qkv.bias"))
    assert worst < 1e-5, diffs


@pytest.mark.slow  # co-training's match below runs the same launch and all-reduce
def test_mbm_two_gloo_processes_match_one(one_torch_thread):
    payload = (CFG, volumes(0, 128), volumes(1, 32), 3, None)
    single, single_metrics = mbm.train_worker(payload, "cpu", lambda *a: None)
    seen = []
    state, metrics = launch(
        mbm.train_worker,
        payload,
        processes=2,
        progress=lambda n, what: seen.append(("progress", what)),
        log_metric=lambda name, value, step=None: seen.append((name, step)),
    )
    close_weights(state, single, CFG.lr)
    assert metrics["train_loss"] == pytest.approx(single_metrics["train_loss"], 1e-4)
    assert metrics["val_loss"] == pytest.approx(single_metrics["val_loss"], 1e-4)
    # rank 0's progress and per-epoch metrics reach the caller, once each
    assert [s for n, s in seen if n == "val_corr"] == [0, 1]
    assert sum(n == "progress" for n, _ in seen) == CFG.epochs


@pytest.mark.slow  # co-training's match below runs the same launch and all-reduce
def test_contrastive_two_gloo_processes_match_one(one_torch_thread):
    cfg = contrastive.ContrastiveTraining(epochs=2, batch_size=16, warmup_epochs=0.5)
    shape = (MAE, EncoderConfig(cond_tokens=2, cond_dim=16), 96, 2, 8)
    torch.manual_seed(0)
    state = FmriEncoder(*shape).state_dict()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 2, 96)).astype(np.float32)
    targets = {}
    for m in ("image", "text"):
        t = rng.normal(size=(64, 8)).astype(np.float32)
        targets[m] = t / np.linalg.norm(t, axis=1, keepdims=True)
    payload = (cfg, shape, state, 2.0, x, targets, 5)
    single, single_scale, single_metrics = contrastive.train_worker(payload, "cpu", lambda *a: None)
    weights, scale, metrics = launch(contrastive.train_worker, payload, processes=2)
    close_weights(weights, single, cfg.lr)
    assert scale == pytest.approx(single_scale, abs=1e-6)
    assert metrics["train_loss"] == pytest.approx(single_metrics["train_loss"], 1e-5)
    assert not torch.equal(weights["to_cond.weight"], state["to_cond.weight"])  # it trained


@pytest.mark.slow  # 13 s of gloo processes
def test_cotrain_two_gloo_processes_match_one(one_torch_thread):
    import copy

    from conftest import toy_image_unet

    from mindvideo.models.diffusion import build_scheduler
    from mindvideo.models.diffusion_config import DiffusionConfig
    from mindvideo.stages import cotrain

    fresh = toy_image_unet(12)
    shape = (MAE, EncoderConfig(cond_tokens=3, cond_dim=12), 96, 2, None)
    torch.manual_seed(0)
    encoder = FmriEncoder(*shape)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 2, 96)).astype(np.float32)
    latents = torch.from_numpy(rng.normal(size=(8, 4, 3, 4, 4)).astype(np.float32))
    cfg = cotrain.CotrainConfig(epochs=2, batch_size=4, warmup_steps=1, val_clips=4)
    sched = dict(build_scheduler(DiffusionConfig()).config)
    payload = (cfg, encoder, fresh, sched, x, latents, x[:4], latents[:4], 1, None)
    single = cotrain.train_worker(copy.deepcopy(payload), "cpu", lambda *a: None)
    double = launch(cotrain.train_worker, payload, processes=2)
    close_weights(double[0], single[0], cfg.lr)  # the encoder
    close_weights(double[1], single[1], cfg.lr)  # the inflated UNet
    for key in ("train_loss", "val_loss", "val_loss_zero_cond"):
        assert double[2][key] == pytest.approx(single[2][key], rel=1e-4), key


def _fails_on_rank_one(payload, device, report):
    if dist.get_rank() == 1:
        raise DataError(f"{payload}: broken on rank 1")
    dist.barrier()  # rank 0 waits for a peer that never comes
    return "never"


def _returns_rank(payload, device, report):
    report("progress", 1, f"rank {dist.get_rank()}")
    return (dist.get_rank(), dist.get_world_size(), payload)


def _adds_rank(payload, device, report):
    payload.add_(dist.get_rank() + 1.0)  # in place, as an optimiser step would
    dist.barrier()
    return payload.clone()


def test_processes_own_their_copy_of_the_payload():
    weights = torch.zeros(3)
    assert launch(_adds_rank, weights, 2).tolist() == [1.0, 1.0, 1.0]  # not 1 + 2
    assert weights.tolist() == [0.0, 0.0, 0.0]  # the caller's tensor is untouched


@pytest.mark.slow  # 10 s of gloo processes
def test_launch_returns_rank_zero_and_raises_the_first_error():
    seen = []
    assert launch(_returns_rank, "p", 2, progress=lambda n, w: seen.append(w)) == (0, 2, "p")
    assert seen == ["rank 0"]
    with pytest.raises(DataError, match="file.npy: broken on rank 1"):
        launch(_fails_on_rank_one, "file.npy", 2)
    with pytest.raises(ConfigError, match="need at least 1"):
        launch(_returns_rank, "p", 0)


def test_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    with pytest.raises(ConfigError, match="mbm.batch_size 16 must be a multiple of the 3"):
        train_mbm(CFG, volumes(0, 64), volumes(1, 16), seed=0)
