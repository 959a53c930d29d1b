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
from pydantic import Field

if TYPE_CHECKING:
    from mindvideo.models.fmri_encoder import FmriEncoder

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.data.paired import (
    PAIRING_KEY_NEUTRAL,
    PairingConfig,
    clip_video,
    pairing,
    subject_windows,
)
from mindvideo.errors import ConfigError, DataError
from mindvideo.eval.metrics import retrieval_top1
from mindvideo.models.encoder_config import EncoderConfig, MAEConfig
from mindvideo.stages.base import Stage, StageContext, StageResult, dataset_root
from mindvideo.train.contrastive import (
    MAX_LOGIT_SCALE,
    ContrastiveTraining,
    train_worker,
)

HEADLINE_METRICS = ("retrieval50_image_top1", "retrieval50_text_top1")  # at the default n


def headline_metrics(cfg: ContrastiveConfig) -> tuple[str, ...]:
    """The retrieval metrics logged without the stage prefix, named by the configured n."""
    return tuple(f"retrieval{cfg.retrieval_n}_{m}_top1" for m in ("image", "text"))


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


def scene_groups(samples) -> np.ndarray:
    """A group id per sample: segment and caption. Clips of one scene share their caption and
    are near copies, so retrieval draws its distractors from other groups."""
    return np.array([f"{s}/{c}" for s, c in zip(samples.segment, samples.caption, strict=True)])


def check_retrieval_n(n_way: int, groups: np.ndarray, subject: str) -> None:
    """Before any training: every test window needs n_way - 1 candidates from other scenes."""
    n = len(groups)
    largest = int(np.unique(groups, return_counts=True)[1].max()) if n else 0
    if n - largest < n_way - 1:
        raise ConfigError(
            f"contrastive.retrieval_n {n_way}: {subject}'s {n} test windows lie in scenes of up "
            f"to {largest} windows, so a window has {n - largest} candidates from other scenes "
            f"and {n_way}-way retrieval needs {n_way - 1}; set contrastive.retrieval_n to at "
            f"most {max(n - largest + 1, 2)} or score more test windows (checked before "
            "training: nothing was computed)"
        )


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
    groups = scene_groups(test)
    check_retrieval_n(cfg.retrieval_n, groups, cfg.subject)
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
    key_ignored=(("encoder", "checkpoint_activations"),),
    # Metrics computed on the test split whatever eval.split says: a search must not optimise them.
    test_split_metrics=("retrieval",),
    local_paths=lambda profile: (
        {"data.corpus_mask": "file"} if profile.encoder.voxels == "roi" else {}
    ),
)
