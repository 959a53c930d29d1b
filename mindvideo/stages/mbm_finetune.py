"""Stage `mbm_finetune`: the pretrained MAE, fine-tuned on the target subject's own fMRI.

MinD-Vis adapts the corpus-pretrained MAE to each subject with the same masked-patch objective
before any paired training; MinD-Video inherits the step. Only the subject's training-split
volumes are used (no stimulus, no validation or test data); the masked-patch loss and
correlation on its validation-split volumes (test-split where it has none) are logged per
epoch, before and after, to show how far the subject's signal sits from the corpus. The output
has the mbm stage's format, so the contrastive stage reads either. On with
`mbm.finetune_epochs > 0` (and `encoder.init: mbm`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mindvideo.data.cc2017 import ValSegments
from mindvideo.data.paired import (
    PAIRING_KEY_NEUTRAL,
    TrainFraction,
    check_val_segments,
    encoder_voxels,
    held_out_split,
    open_training,
    prepare_fmri,
)
from mindvideo.data.preprocess import PreprocessConfig
from mindvideo.errors import DataError
from mindvideo.stages.base import Stage, StageContext, StageResult, dataset_root
from mindvideo.train.mbm import MBMConfig, evaluate, train_worker


class FinetuneConfig(BaseModel):
    """The subject, its voxels (as the contrastive stage reads them), and the training: the
    mbm section's optimiser with finetune_epochs and finetune_lr."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = "subject1"
    preprocess: PreprocessConfig = PreprocessConfig()
    voxels: Literal["roi", "selected"] = "roi"
    roi_mask: str | None = None
    training: MBMConfig = Field(MBMConfig(), description="epochs, lr, batch, schedule, model")
    val_segments: ValSegments = Field((), description="data.val_segments: never trained on")
    train_fraction: TrainFraction = Field(1.0, description="data.train_fraction")

    @field_validator("val_segments")
    @classmethod
    def _val_segments(cls, value: ValSegments) -> ValSegments:
        return check_val_segments(value)


def work_units(cfg: FinetuneConfig) -> int:
    return cfg.training.epochs + 1


def subject_volumes(dataset: Path, cfg: FinetuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """The subject's cleaned (train, held-out) volumes on the encoder's voxels, as (n, V);
    held out: the validation segments where the data have them, else the test segments."""

    rec = open_training(dataset, cfg.subject, cfg.val_segments, cfg.train_fraction)
    voxels = encoder_voxels(dataset, cfg, rec)
    fmri = prepare_fmri(rec, cfg.preprocess, voxels=voxels)
    split = {}
    for name in ("train", held_out_split(fmri)):
        runs = fmri.segments.get(name, {})
        if not runs:
            raise DataError(f"{dataset / cfg.subject}: no {name} fMRI to fine-tune MBM on")
        split[name] = np.concatenate([v.reshape(-1, v.shape[-1]) for v in runs.values()]).astype(
            np.float32
        )
    return tuple(split.values())


def run(
    cfg: FinetuneConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    from mindvideo.distributed import launch
    from mindvideo.models.fmri_mae import load_mbm, save_mae

    started = time.perf_counter()
    dataset = dataset_root(inputs["dataset"])
    train, test = subject_volumes(dataset, cfg)
    pretrained = load_mbm(inputs["mbm"])
    if pretrained.cfg != cfg.training.model:
        raise DataError(
            f"{inputs['mbm']}: the pretrained MAE's sizes differ from mbm.model; re-run the mbm "
            "stage with this profile"
        )
    before = evaluate(pretrained, test, ctx.seed + 1, "cpu")
    ctx.progress(1, f"{cfg.subject}: {len(train)} volumes x {train.shape[1]} voxels")
    init = {k: v.detach().cpu() for k, v in pretrained.state_dict().items()}
    state, final = launch(
        train_worker,
        (cfg.training, train, test, ctx.seed, init),
        ctx.processes,
        ctx.device,
        ctx.progress,
        ctx.log_metric,
    )
    artifacts = save_mae(out, state, cfg.training.model)
    metrics = final | {
        "pretrained_val_loss": before["val_loss"],
        "pretrained_val_corr": before["val_corr"],
        "train_volumes": float(len(train)),
        "train_seconds": time.perf_counter() - started,
    }
    return StageResult(metrics=metrics, artifacts=artifacts)


def configure(profile, subject: str) -> FinetuneConfig:
    mbm, data = profile.mbm, profile.data
    # the mbm section's optimiser, for finetune_epochs (warm-up at most a quarter of them)
    training = mbm.pretraining(
        epochs=mbm.finetune_epochs,
        lr=mbm.finetune_lr or mbm.lr,
        warmup_epochs=min(mbm.warmup_epochs, mbm.finetune_epochs / 4),
        corpus_root=None,
        corpus_mask=None,
    )
    return FinetuneConfig(
        subject=subject,
        preprocess=data.preprocess,
        voxels=profile.encoder.voxels,
        roi_mask=data.corpus_mask,
        training=training,
        val_segments=data.val_segments,
        train_fraction=data.train_fraction,
    )


def roi_mask_path(profile) -> dict[str, str]:
    return {"data.corpus_mask": "file"} if profile.encoder.voxels == "roi" else {}


STAGE = Stage(
    name="mbm_finetune",
    run=run,
    config=FinetuneConfig,
    configure=configure,
    version=1,
    order=25,
    inputs=("dataset", "mbm"),
    enabled=lambda profile: (
        profile.method == "mindvideo"
        and profile.encoder.init == "mbm"
        and bool(profile.mbm.finetune_epochs)
    ),
    provides="mbm",  # the fine-tuned MAE in the mbm stage's format
    reads=("data", "encoder", "mbm"),
    # batch order and masks
    seeded=True,
    artifacts=("mae.safetensors", "mae_config.json"),
    work_units=work_units,
    # options added after results were cached
    key_neutral=dict(PAIRING_KEY_NEUTRAL),
    # On the validation volumes where the data have them, else on test: see subject_volumes.
    held_out_metrics=("val_", "pretrained_val_"),
    local_paths=roi_mask_path,
)
