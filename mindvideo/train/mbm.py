"""Masked brain modelling: the MAE training loop of the mbm and mbm_finetune stages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from mindvideo.models.fmri_mae import FmriMAE
from mindvideo.distributed import callbacks, cpu_weights
from mindvideo.models.encoder_config import MAEConfig
from mindvideo.train.loop import fit_epochs, steps_per_epoch
from mindvideo.train.schedules import warmup_cosine


class MBMConfig(BaseModel):
    """MBM pretraining (the profile's `mbm` section plus the corpus location)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: MAEConfig = MAEConfig()
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=100.0, description="peak learning rate (paper: 2.5e-4)")
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: float = Field(
        2, ge=0, le=10_000, description="linear warm-up (paper: 40 epochs)"
    )
    grad_clip: float | None = Field(0.8, gt=0)
    holdout_subjects: int = Field(
        2, ge=1, le=10_000, description="corpus subjects kept for validation"
    )
    corpus_root: str | None = Field(None, description="None: the SynthCC dataset's hcp/")
    corpus_mask: str | None = Field(None, description="None: the corpus's roi_mask")
    detrend_order: int = Field(4, ge=0, le=16)


@dataclass(frozen=True)
class OnDisk:
    """(rows, cols) float32 volumes in a raw file: what the training processes receive instead
    of the array (a paper-scale corpus does not fit in memory, nor pickles to each process)."""

    path: str
    rows: int
    cols: int

    def open(self) -> np.ndarray:
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.rows, self.cols))


def volumes(x: np.ndarray | OnDisk) -> np.ndarray:
    return x.open() if isinstance(x, OnDisk) else x


def _param_groups(model, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "mask_token" not in name else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def evaluate(
    model: FmriMAE, x: np.ndarray, seed: int, device: str, batch_size: int = 256
) -> dict[str, float]:
    """Masked-patch loss and the Pearson correlation of predicted vs true hidden voxels (per
    volume, averaged), with masks fixed by `seed`."""
    import torch

    with torch.no_grad():
        return _evaluate(model, x, seed, device, batch_size)


def _evaluate(model, x, seed, device, batch_size) -> dict[str, float]:
    import torch

    model.eval()
    g = torch.Generator().manual_seed(seed)
    losses, corrs, counts = [], [], []
    for i in range(0, len(x), batch_size):
        batch = torch.from_numpy(np.array(x[i : i + batch_size])).to(device)
        loss, pred, mask = model(batch, generator=g)
        target = model.patchify(batch)
        hidden = mask.bool()[..., None].expand_as(pred)  # (n, p, patch)
        for j in range(len(batch)):
            a, b = pred[j][hidden[j]].float(), target[j][hidden[j]].float()
            a, b = a - a.mean(), b - b.mean()
            corrs.append(float((a * b).sum() / (a.norm() * b.norm() + 1e-8)))
        losses.append(float(loss) * len(batch))
        counts.append(len(batch))
    model.train()
    return {"val_loss": sum(losses) / sum(counts), "val_corr": float(np.mean(corrs))}


def train_mbm(
    cfg: MBMConfig,
    train: np.ndarray,
    val: np.ndarray,
    seed: int,
    device: str = "cpu",
    progress=None,
    log_metric=None,
    init: Mapping | None = None,
) -> tuple[FmriMAE, dict[str, float]]:
    """Pretrain the MAE on (n, voxels) volumes (from `init`, a state dict, when given);
    returns the model and final metrics.

    Under torch.distributed (mindvideo.distributed.launch, torchrun, or a process group the
    caller set up: gloo on CPU, nccl on GPUs) each of the W processes computes its 1/W slice of
    every batch, masks included, and DistributedDataParallel averages the gradients: the same
    updates as one process with the whole batch, up to float rounding.
    """
    import torch

    from mindvideo.distributed import check_divisible, wrap_ddp
    from mindvideo.models.fmri_mae import n_patches, seeded_mae

    tick = progress or (lambda n, what: None)
    log = log_metric or (lambda name, value, step=None: None)
    rank, world, local = check_divisible(cfg.batch_size, "mbm.batch_size")
    model = seeded_mae(cfg.model, seed)
    if init is not None:
        model.load_state_dict(init)
    model.to(device)
    net = wrap_ddp(model, device)
    opt = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas)
    )
    rng = np.random.default_rng([seed, 1])  # batch order
    masks = torch.Generator().manual_seed(int(rng.integers(2**31)))
    patches = n_patches(train.shape[1], cfg.model.patch_size)
    mine = slice(rank * local, (rank + 1) * local)
    per_epoch = steps_per_epoch(len(train), cfg.batch_size)
    total, warmup = cfg.epochs * per_epoch, int(round(cfg.warmup_epochs * per_epoch))
    metrics: dict[str, float] = {}

    def batch_loss(idx: np.ndarray):
        noise = torch.rand(len(idx), patches, generator=masks)  # the global batch's masks
        loss, _, _ = net(torch.from_numpy(train[idx[mine]]).to(device), noise=noise[mine])
        return loss

    def end_epoch(epoch: int, train_loss: float) -> None:
        metrics.clear()
        metrics.update({"train_loss": train_loss} | evaluate(model, val, seed + 1, device))
        for name, value in metrics.items():
            log(name, value, epoch)
        tick(1, f"epoch {epoch + 1}/{cfg.epochs} val loss {metrics['val_loss']:.3f}")

    def lr_at(step: int, peak: float) -> float:
        return peak * warmup_cosine(step, total, warmup)

    fit_epochs(
        opt,
        batch_loss,
        rng,
        len(train),
        cfg,
        lr_at=lr_at,
        params=model.parameters(),
        end=end_epoch,
        autocast_device=device,
    )
    return model, metrics


def train_worker(payload, device: str, report) -> tuple[dict, dict[str, float]]:
    """train_mbm for mindvideo.distributed.launch: payload (cfg, train, val, seed, init), the
    volumes as arrays or OnDisk; returns the weights (on the CPU) and the final metrics."""
    cfg, train, val, seed, init = payload
    model, metrics = train_mbm(
        cfg,
        volumes(train),
        volumes(val),
        seed,
        device,
        *callbacks(report),
        init,
    )
    return cpu_weights(model), metrics
