"""Stage `align`: fit the condition adapter that maps the encoder's condition onto the caption
token states the generator reads.

For one subject: the contrastive stage's encoder turns each training window into its condition;
the caption of the clip, through the CLIP text tower (the synthetic CLIP on SynthCC, whose token
states the diffusion stand-in was trained on; for Stable Diffusion 1.5 the foundation CLIP must
be ViT-L/14, SD's text encoder), gives the (context, width) token states; a ridge regression in
the conditions' top principal components maps one onto the other (mindvideo.models.adapter). The
penalty is chosen on the last `val_fraction` of the training windows, then the map is refitted
on all of them. The encoder is written back with the adapter attached, so co-training fine-tunes
both and decoding reads the adapted condition. Reported: the chosen penalty, the held-out R^2
per penalty, and the test-set R^2 of the adapted condition against the test captions' token
states. `align.enabled: false` feeds the encoder's condition to the generator as it is
(MinD-Video: `encoder.cond_tokens` x `cond_dim` must then be the generator's shape).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.data.paired import PAIRING_KEY_NEUTRAL, PairingConfig, pairing
from mindvideo.errors import DataError
from mindvideo.stages.base import Stage, StageContext, StageResult, dataset_root, decodes_fmri


class AlignOptions(BaseModel):
    """The adapter's fit: the profile's `align` section (less `enabled`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(
        256, ge=1, le=100_000, description="principal components of the conditions kept"
    )
    alphas: tuple[float, ...] = Field(
        (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
        min_length=1,
        description="ridge penalties tried, relative to the mean squared singular value",
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="training windows held out")


class AlignConfig(AlignOptions, PairingConfig):
    """The fit and the subject's data."""


def work_units(cfg: AlignConfig) -> int:
    return 3


def conditions(encoder, fmri: np.ndarray, device: str, batch: int = 128) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate(
            [
                encoder(torch.from_numpy(fmri[i : i + batch]).to(device)).float().cpu().numpy()
                for i in range(0, len(fmri), batch)
            ]
        )


def run(cfg: AlignConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext) -> StageResult:
    import torch

    from mindvideo.data.paired import subject_windows
    from mindvideo.eval.foundation import load_foundation_clip
    from mindvideo.models.adapter import fit_adapter, r2
    from mindvideo.models.clip import caption_tokens
    from mindvideo.models.fmri_encoder import load_encoder, save_encoder

    started = time.perf_counter()
    encoder, voxels = load_encoder(inputs["contrastive"], ctx.device)
    if encoder.adapter is not None:
        raise DataError(f"{inputs['contrastive']}: this encoder already has an adapter")
    dataset = dataset_root(inputs["dataset"])
    stimuli = open_stimuli(dataset)
    _, train, test = subject_windows(dataset, cfg, stimuli, voxels=voxels)
    if train.caption is None:
        raise DataError(
            "align needs a caption per clip (stimuli/<segment>_clips.csv, column caption)"
        )
    clip = load_foundation_clip(inputs["foundation"], ctx.device)
    targets = caption_tokens(clip, train.caption)
    ctx.progress(1, f"{cfg.subject}: {len(train)} caption token states {targets.shape[1:]}")
    fit = fit_adapter(
        conditions(encoder, train.fmri, ctx.device), targets, cfg.rank, cfg.alphas, cfg.val_fraction
    )
    encoder.adapter = fit.adapter.to(ctx.device)
    ctx.progress(1, f"adapter fitted (penalty {fit.alpha})")
    test_targets = torch.from_numpy(caption_tokens(clip, test.caption)).double()
    adapted = torch.from_numpy(conditions(encoder, test.fmri, ctx.device)).double()
    metrics = {
        "alpha": fit.alpha,
        "val_r2": fit.val_r2[fit.alpha],
        "test_r2": r2(adapted, test_targets),
        "rank": float(fit.adapter.rank),
        "train_seconds": time.perf_counter() - started,
    }
    for i, (alpha, score) in enumerate(sorted(fit.val_r2.items())):
        ctx.log_metric("val_r2_by_alpha", score, i)
        ctx.log_metric("alpha_tried", alpha, i)
    ctx.progress(1, f"test R^2 {metrics['test_r2']:.3f}")
    return StageResult(metrics=metrics, artifacts=save_encoder(out, encoder.cpu(), voxels))


class AlignSection(AlignOptions):
    """The profile's `align` section."""

    enabled: bool = Field(
        True,
        description="false: the generator reads the encoder's condition as it is (MinD-Video)",
    )


def configure(profile, subject: str) -> AlignConfig:
    return AlignConfig(
        **profile.align.model_dump(exclude={"enabled"}), **pairing(profile.data, subject)
    )


STAGE = Stage(
    name="align",
    run=run,
    config=AlignConfig,
    configure=configure,
    version=1,
    order=60,
    inputs=("dataset", "foundation", "contrastive"),
    enabled=lambda profile: decodes_fmri(profile) and profile.align.enabled,
    provides="contrastive",  # the encoder with its adapter, as cotrain and decode read it
    sections={"align": AlignSection},
    reads=("data",),
    # deterministic given the encoder, which is per seed
    seeded=True,
    artifacts=("encoder.safetensors", "encoder.json", "voxels.npy"),
    work_units=work_units,
    # options added after results were cached
    key_neutral=dict(PAIRING_KEY_NEUTRAL),
    # on the test split whatever eval.split says
    test_split_metrics=("test_",),
)
