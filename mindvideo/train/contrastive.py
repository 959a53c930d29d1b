"""Contrastive learning of the fMRI encoder against frozen CLIP embeddings: the profile's
`contrastive` section, the symmetric InfoNCE loss and the training recipe (on `loop.fit`),
written for one process or W processes under torch.distributed."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

    from mindvideo.models.fmri_encoder import FmriEncoder

from mindvideo.distributed import callbacks, cpu_weights
from mindvideo.train.loop import fit_epochs, steps_per_epoch
from mindvideo.train.schedules import warmup_cosine_pi_first

MAX_LOGIT_SCALE = math.log(100.0)

Modality = Literal["image", "text"]


class ContrastiveTraining(BaseModel):
    """The contrastive training itself: the profile's `contrastive` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    modalities: tuple[Modality, ...] = ("image", "text")
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=2, le=65_536)
    lr: float = Field(1e-3, gt=0, le=100.0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1, ge=0, le=10_000)
    grad_clip: float | None = Field(1.0, gt=0)
    logit_scale_init: float = Field(math.log(1 / 0.07), description="log inverse temperature")
    retrieval_n: int = Field(50, ge=2, le=100_000, description="candidates per retrieval trial")


def info_nce(emb: torch.Tensor, target: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of two L2-normalised (n, d) batches."""
    import torch
    import torch.nn.functional as F

    logits = log_scale.clamp(max=MAX_LOGIT_SCALE).exp() * emb @ target.T
    labels = torch.arange(len(emb), device=emb.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def train_contrastive(
    cfg: ContrastiveTraining,
    encoder: FmriEncoder,
    log_scale: torch.nn.Parameter,
    x_train: np.ndarray,
    targets: dict[str, np.ndarray],
    seed: int,
    device: str = "cpu",
    progress=None,
    log_metric=None,
) -> dict[str, float]:
    """The contrastive loop (AdamW, warm-up then cosine, gradient clipping), in place.

    Under torch.distributed each of the W processes embeds its 1/W slice of every batch; the
    embeddings are gathered (with their gradients) so that every process scores the whole
    batch against all its negatives, and DistributedDataParallel averages the gradients: the
    updates of one process with the whole batch, up to float rounding.
    """
    import torch

    from mindvideo.distributed import all_gather_with_grad, check_divisible, wrap_ddp

    tick = progress or (lambda n, what: None)
    log = log_metric or (lambda name, value, step=None: None)
    rank, world, local = check_divisible(cfg.batch_size, "contrastive.batch_size")
    aligner = _aligner(encoder, log_scale).to(device)
    net = wrap_ddp(aligner, device)
    params = list(aligner.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([seed, 2])
    per_epoch = steps_per_epoch(len(x_train), cfg.batch_size)
    total, warmup = cfg.epochs * per_epoch, int(round(cfg.warmup_epochs * per_epoch))
    tensors = {m: torch.from_numpy(targets[m]).to(device) for m in cfg.modalities}
    x_all = torch.from_numpy(x_train).to(device)
    mine = slice(rank * local, (rank + 1) * local)

    def batch_loss(batch: np.ndarray):
        idx = torch.from_numpy(batch).to(device)
        emb, scale = net(x_all[idx[mine]])
        if world > 1:
            emb = all_gather_with_grad(emb)  # the global batch, in order
        return sum(info_nce(emb, tensors[m][idx], scale) for m in tensors) / len(tensors)

    def end_epoch(epoch: int, loss: float) -> None:
        log("train_loss", loss, epoch)
        tick(1, f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.3f}")

    def lr_at(step: int, peak: float) -> float:
        return peak * warmup_cosine_pi_first(step, total, warmup)

    loss = fit_epochs(
        opt, batch_loss, rng, len(x_train), cfg, lr_at=lr_at, params=params, end=end_epoch
    )
    return {"train_loss": loss}


def _aligner(encoder: FmriEncoder, log_scale: torch.nn.Parameter) -> torch.nn.Module:
    """One module (for DDP) holding the encoder and the logit scale: fMRI -> (CLIP-space
    embedding, log scale)."""
    import torch

    class Aligner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.log_scale = encoder, log_scale

        def forward(self, x):
            return self.encoder.clip_embedding(self.encoder.condition(x)), self.log_scale

    return Aligner()


def train_worker(payload, device: str, report) -> tuple[dict, float, dict[str, float]]:
    """train_contrastive for mindvideo.distributed.launch. payload: (cfg, encoder shape args,
    initial weights, initial log scale, train fMRI, train targets, seed); returns the weights
    (on the CPU), the log scale and the final metrics."""
    import torch

    from mindvideo.models.fmri_encoder import FmriEncoder

    cfg, shape, state, log_scale, x_train, targets, seed = payload
    encoder = FmriEncoder(*shape)
    encoder.load_state_dict(state)
    scale = torch.nn.Parameter(torch.tensor(float(log_scale)))
    metrics = train_contrastive(
        cfg,
        encoder,
        scale,
        x_train,
        targets,
        seed,
        device,
        *callbacks(report),
    )
    return cpu_weights(encoder), float(scale.detach()), metrics
