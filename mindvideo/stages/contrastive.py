"""Stage `contrastive`: align the spatiotemporal fMRI encoder with CLIP's image-text space.

For one subject: the encoder (initialised from the `mbm` stage, or from scratch) reads windows of
fMRI; its condition, pooled by the CLIP head, is pulled towards the frozen CLIP embeddings of the
clip it saw: the mean image embedding of its frames and the text embedding of its caption
(captions of a clip spanning a scene cut are joined with "Then"). Loss: the mean over the chosen
modalities of the symmetric InfoNCE with a learnable logit scale (0.5 text + 0.5 image with
both, as MinD-Video). `enabled: false` keeps the encoder as initialised (the "no contrastive"
ablation). Either way the stage reports test-set retrieval: fMRI -> its clip among 50
candidates from other scenes, by image and by text (chance 0.02).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

    from mindvideo.models.fmri_encoder import FmriEncoder

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.data.paired import (
    PAIRING_KEY_NEUTRAL,
    PairingConfig,
    clip_video,
    pairing,
    subject_windows,
)
from mindvideo.distributed import callbacks, cpu_weights
from mindvideo.errors import ConfigError, DataError
from mindvideo.eval.metrics import retrieval_top1
from mindvideo.models.encoder_config import EncoderConfig, MAEConfig
from mindvideo.stages.base import Stage, StageContext, StageResult, dataset_root
from mindvideo.train.loop import fit
from mindvideo.train.schedules import warmup_cosine_pi_first

HEADLINE_METRICS = ("retrieval50_image_top1", "retrieval50_text_top1")  # at the default n


def headline_metrics(cfg: ContrastiveConfig) -> tuple[str, ...]:
    """The retrieval metrics logged without the stage prefix, named by the configured n."""
    return tuple(f"retrieval{cfg.retrieval_n}_{m}_top1" for m in ("image", "text"))


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


class ContrastiveConfig(ContrastiveTraining, PairingConfig):
    """The encoder, its training, and the subject's data."""

    model: MAEConfig = MAEConfig()  # the encoder's transformer: the MBM's sizes
    encoder: EncoderConfig = EncoderConfig()
    voxels: Literal["roi", "selected"] = Field(
        "roi",
        description="roi: the MBM corpus's ROI mask (the space MBM learned); selected: the "
        "reproducibility selection of data.preprocess",
    )
    roi_mask: str | None = Field(None, description="ROI mask file (None: the corpus's own)")


def work_units(cfg: ContrastiveConfig) -> int:
    return 3 + (cfg.epochs if cfg.enabled else 0)


def clip_targets(clip_model, stimuli, samples, frames_per_clip: int) -> dict[str, np.ndarray]:
    """Frozen CLIP embeddings per sample: mean image embedding of its frames, caption text."""
    if samples.caption is None:
        raise DataError(
            "contrastive learning needs a caption per clip (stimuli/<segment>_clips.csv, column "
            "caption)"
        )
    clips = clip_video(stimuli, samples, frames_per_clip)  # (n, F, H, W, 3)
    n, f = clips.shape[:2]
    image = clip_model.image_embeddings(clips.reshape(n * f, *clips.shape[2:]))
    image = image.reshape(n, f, -1).mean(axis=1)
    image /= np.linalg.norm(image, axis=1, keepdims=True) + 1e-8
    text = clip_model.text_embeddings(list(samples.caption))
    return {"image": image.astype(np.float32), "text": text.astype(np.float32)}


def info_nce(emb: torch.Tensor, target: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of two L2-normalised (n, d) batches."""
    import torch
    import torch.nn.functional as F

    logits = log_scale.clamp(max=MAX_LOGIT_SCALE).exp() * emb @ target.T
    labels = torch.arange(len(emb), device=emb.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def scene_groups(samples) -> np.ndarray:
    """A group id per sample: segment and caption. Clips of one scene share their caption and
    are near copies, so retrieval draws its distractors from other groups."""
    return np.array([f"{s}/{c}" for s, c in zip(samples.segment, samples.caption, strict=True)])


def embed(encoder: FmriEncoder, x: np.ndarray, device: str, batch_size: int = 128) -> np.ndarray:
    """The encoder's CLIP-space embeddings of (n, window, voxels) fMRI: (n, clip_dim)."""
    import torch

    encoder.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            cond = encoder.condition(torch.from_numpy(x[i : i + batch_size]).to(device))
            out.append(encoder.clip_embedding(cond).float().cpu().numpy())
    encoder.train()
    return np.concatenate(out)


def retrieval(emb: np.ndarray, targets: dict[str, np.ndarray], n_way: int, groups) -> dict:
    return {
        f"retrieval{n_way}_{m}_top1": float(retrieval_top1(emb @ t.T, n_way, groups).mean())
        for m, t in targets.items()
    }


def run(
    cfg: ContrastiveConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    import torch

    from mindvideo.distributed import launch
    from mindvideo.eval.foundation import load_foundation_clip
    from mindvideo.models.fmri_encoder import FmriEncoder, save_encoder
    from mindvideo.models.fmri_mae import load_mbm

    started = time.perf_counter()
    out = Path(out)
    if cfg.encoder.init == "mbm" and "mbm" not in inputs:
        raise ConfigError("encoder.init: mbm needs the mbm stage's output (the planner binds it)")
    if cfg.enabled and not cfg.modalities:
        raise ConfigError("contrastive.modalities: name at least one of image, text")
    dataset = dataset_root(inputs["dataset"])
    stimuli = open_stimuli(dataset)
    fmri, train, test = subject_windows(dataset, cfg, stimuli)
    ctx.progress(1, f"{cfg.subject}: {len(train)} train / {len(test)} test windows")
    clip_model = load_foundation_clip(inputs["foundation"], ctx.device)  # not the judges
    targets = {
        split: clip_targets(clip_model, stimuli, s, cfg.frames_per_clip)
        for split, s in (("train", train), ("test", test))
    }
    ctx.progress(1, "CLIP targets embedded")

    n_voxels = train.fmri.shape[-1]
    shape = (cfg.model, cfg.encoder, n_voxels, cfg.window, clip_model.embed_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        encoder = FmriEncoder(*shape)
    if cfg.encoder.init == "mbm":
        encoder.load_mbm(load_mbm(inputs["mbm"]))
    log_scale = float(cfg.logit_scale_init)

    metrics: dict[str, float] = {}
    if cfg.enabled:
        payload = (cfg, shape, encoder.state_dict(), log_scale, train.fmri, targets["train"])
        state, log_scale, trained = launch(
            train_worker,
            payload + (ctx.seed,),
            ctx.processes,
            ctx.device,
            ctx.progress,
            ctx.log_metric,
        )
        encoder.load_state_dict(state)
        metrics |= trained
    encoder.to(ctx.device)
    groups = scene_groups(test)
    metrics |= retrieval(
        embed(encoder, test.fmri, ctx.device), targets["test"], cfg.retrieval_n, groups
    )
    metrics |= {
        "train_windows": float(len(train)),
        "test_windows": float(len(test)),
        "voxels": float(n_voxels),
        "logit_scale": math.exp(min(log_scale, MAX_LOGIT_SCALE)),
        "train_seconds": time.perf_counter() - started,
    }
    shown = ", ".join(
        f"{m} {metrics[f'retrieval{cfg.retrieval_n}_{m}_top1']:.3f}" for m in targets["test"]
    )
    ctx.progress(1, f"{cfg.retrieval_n}-way retrieval: {shown}")

    return StageResult(metrics=metrics, artifacts=save_encoder(out, encoder, fmri.selected))


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
    steps_per_epoch = max(1, len(x_train) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    tensors = {m: torch.from_numpy(targets[m]).to(device) for m in cfg.modalities}
    x_all = torch.from_numpy(x_train).to(device)
    mine = slice(rank * local, (rank + 1) * local)
    order: list[np.ndarray] = []

    def new_order(epoch: int) -> None:
        order[:] = [rng.permutation(len(x_train))]

    def loss_at(step: int):
        b = step % steps_per_epoch
        idx = torch.from_numpy(order[0][b * cfg.batch_size : (b + 1) * cfg.batch_size])
        idx = idx.to(device)
        emb, scale = net(x_all[idx[mine]])
        if world > 1:
            emb = all_gather_with_grad(emb)  # the global batch, in order
        return sum(info_nce(emb, tensors[m][idx], scale) for m in tensors) / len(tensors)

    def end_epoch(epoch: int, loss: float) -> None:
        log("train_loss", loss, epoch)
        tick(1, f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.3f}")

    loss_epoch = fit(
        opt,
        loss_at,
        steps=total,
        period=steps_per_epoch,
        lr_at=lambda step, peak: peak * warmup_cosine_pi_first(step, total, warmup),
        grad_clip=cfg.grad_clip,
        params=params,
        begin=new_order,
        end=end_epoch,
    )
    return {"train_loss": loss_epoch}


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


class EncoderSection(EncoderConfig):
    """The profile's `encoder` section: the spatiotemporal encoder's switches (its transformer
    sizes are `mbm.model`)."""

    voxels: Literal["roi", "selected"] = "roi"


def configure(profile, subject: str) -> ContrastiveConfig:
    encoder = profile.encoder.model_dump(exclude={"voxels"})
    return ContrastiveConfig(
        **profile.contrastive.model_dump(),
        **pairing(profile.data, subject),
        model=profile.mbm.model,
        encoder=encoder,
        voxels=profile.encoder.voxels,
        roi_mask=profile.data.corpus_mask,
    )


STAGE = Stage(
    name="contrastive",
    run=run,
    config=ContrastiveConfig,
    configure=configure,
    version=2,
    order=30,
    inputs=("dataset", "foundation", "mbm"),
    # only with encoder.init: mbm
    optional_inputs=("mbm",),
    enabled=lambda profile: profile.method == "mindvideo",
    sections={"contrastive": ContrastiveTraining, "encoder": EncoderSection},
    reads=("data", "mbm"),
    seeded=True,
    headline=headline_metrics,
    artifacts=("encoder.safetensors", "encoder.json", "voxels.npy"),  # models/fmri_encoder.py
    work_units=work_units,
    # options added after results were cached
    key_neutral=dict(PAIRING_KEY_NEUTRAL),
    # Metrics computed on the test split whatever eval.split says: a search must not optimise them.
    test_split_metrics=("retrieval",),
    local_paths=lambda profile: (
        {"data.corpus_mask": "file"} if profile.encoder.voxels == "roi" else {}
    ),
)
