"""MBM under torch.distributed: 2 CPU processes (gloo) train what one process trains."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mindvideo.errors import ConfigError
from mindvideo.models.fmri_mae import MAEConfig
from mindvideo.stages.mbm import MBMConfig, train_mbm

CFG = MBMConfig(
    model=MAEConfig(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2),
    epochs=2,
    batch_size=16,
    warmup_epochs=0.5,
)


def volumes(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, 96))
    return (rng.normal(size=(n, 4)) @ basis / 2).astype(np.float32)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, metrics = train_mbm(CFG, volumes(0, 128), volumes(1, 32), seed=3)
        if rank == 0:
            torch.save({"state": model.state_dict(), "metrics": metrics}, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one(tmp_path, one_torch_thread):
    single, single_metrics = train_mbm(CFG, volumes(0, 128), volumes(1, 32), seed=3)
    out = tmp_path / "ddp.pt"
    mp.start_processes(
        _worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="fork"
    )
    result = torch.load(out, weights_only=True)
    diffs = {
        name: (result["state"][name] - value).abs().max().item()
        for name, value in single.state_dict().items()
    }
    # Attention is blind to the key bias, so its gradient is rounding noise that Adam scales
    # up to ~lr per step: those agree to lr; every other weight to float precision.
    assert max(diffs.values()) < CFG.lr
    assert max(v for k, v in diffs.items() if not k.endswith("qkv.bias")) < 1e-6
    assert result["metrics"]["train_loss"] == pytest.approx(single_metrics["train_loss"], 1e-4)
    assert result["metrics"]["val_loss"] == pytest.approx(single_metrics["val_loss"], 1e-4)


def test_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    with pytest.raises(ConfigError, match="multiple of the 3 processes"):
        train_mbm(CFG, volumes(0, 64), volumes(1, 16), seed=0)
