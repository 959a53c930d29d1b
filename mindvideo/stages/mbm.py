"""Stage `mbm`: masked brain modelling, the MAE pretrained on the unpaired fMRI corpus.

Every volume of the corpus (SynthCC's simulated corpus subjects, or an HCP-style folder for real
data) restricted to the ROI mask is one training vector. Some corpus subjects are held out:
their masked-patch loss and the correlation between predicted and true hidden patches are
logged every epoch (with fixed masks, so epochs compare). Optimiser and schedule as MinD-Video:
AdamW (0.9, 0.95), weight decay 0.05 on matrices, linear warm-up then cosine decay, gradient
clipping; bf16 autocast on a GPU.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

if TYPE_CHECKING:
    pass

from mindvideo.data.hcp import open_corpus
from mindvideo.errors import ConfigError, DataError
from mindvideo.stages.base import Stage, StageContext, StageResult, dataset_root
from mindvideo.train.mbm import MBMConfig, OnDisk, evaluate, train_worker

SCRATCH = "corpus-scratch"  # the corpus volumes on disk while the stage trains


def work_units(cfg: MBMConfig) -> int:
    return cfg.epochs + 1


def load_corpus(cfg: MBMConfig, dataset: Path | None, scratch: Path) -> tuple[OnDisk, OnDisk, dict]:
    """(train volumes, held-out volumes), each (n, voxels) float32 written run by run to a raw
    file in `scratch` (memory holds one run at a time), and a summary."""
    if cfg.corpus_root:
        root = Path(cfg.corpus_root)
    elif dataset is not None:
        root = dataset / "hcp"
    else:
        raise DataError("mbm: no corpus: set data.corpus_root to an HCP-style folder")
    corpus = open_corpus(root, Path(cfg.corpus_mask) if cfg.corpus_mask else None)
    subjects = corpus.subjects()
    if len(subjects) <= cfg.holdout_subjects:
        raise DataError(
            f"{root}: {len(subjects)} corpus subjects; MBM holds out {cfg.holdout_subjects} for "
            "validation and needs at least one more to train on (mbm.holdout_subjects)"
        )
    held = set(subjects[-cfg.holdout_subjects :])
    scratch.mkdir(parents=True, exist_ok=True)
    paths = {"train": scratch / "train.f32", "val": scratch / "val.f32"}
    rows = {"train": 0, "val": 0}
    with open(paths["train"], "wb") as train, open(paths["val"], "wb") as val:
        for path in corpus.runs:
            part = "val" if path.parents[3].name in held else "train"
            run = np.ascontiguousarray(corpus.load_run(path, cfg.detrend_order), np.float32)
            (val if part == "val" else train).write(run.tobytes())
            rows[part] += len(run)
    for part, n in rows.items():
        if n == 0:
            which = "held-out" if part == "val" else "training"
            raise DataError(f"{root}: the {which} corpus subjects have no volumes")
    summary = {
        "corpus_subjects": len(subjects),
        "holdout_subjects": len(held),
        "voxels": corpus.n_voxels,
    }
    train_x, val_x = (OnDisk(str(paths[p]), rows[p], corpus.n_voxels) for p in ("train", "val"))
    return train_x, val_x, summary


def run(cfg: MBMConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext) -> StageResult:
    from mindvideo.distributed import launch
    from mindvideo.models.fmri_mae import save_mae, seeded_mae

    started = time.perf_counter()
    dataset = dataset_root(inputs["dataset"]) if "dataset" in inputs else None
    scratch = out / SCRATCH  # inside the stage's temporary folder; removed before publishing
    try:
        train, val, summary = load_corpus(cfg, dataset, scratch)
        ctx.progress(1, f"corpus: {train.rows} + {val.rows} volumes x {summary['voxels']} voxels")
        untrained = seeded_mae(cfg.model, ctx.seed)  # the model training starts from
        baseline = evaluate(untrained, val.open(), ctx.seed + 1, "cpu")
        payload = (cfg, train, val, ctx.seed, None)
        state, final = launch(
            train_worker, payload, ctx.processes, ctx.device, ctx.progress, ctx.log_metric
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    artifacts = save_mae(out, state, cfg.model)
    metrics = final | {
        "untrained_val_loss": baseline["val_loss"],
        "train_volumes": float(train.rows),
        "val_volumes": float(val.rows),
        "voxels": float(summary["voxels"]),
        "train_seconds": time.perf_counter() - started,
    }
    return StageResult(metrics=metrics, artifacts=artifacts)


class MBMSection(MBMConfig):
    """The profile's `mbm` section: the pretraining, and the optional fine-tune on each target
    subject (the mbm_finetune stage)."""

    finetune_epochs: int = Field(
        0,
        ge=0,
        le=10_000,
        description="MBM epochs on the subject's own training fMRI (0: no fine-tune)",
    )
    finetune_lr: float | None = Field(None, gt=0, le=100.0, description="None: mbm.lr")

    def pretraining(self, **update) -> MBMConfig:
        """The mbm stage's config (without the fine-tune fields)."""
        fields = self.model_dump(exclude={"finetune_epochs", "finetune_lr"})
        return MBMConfig(**(fields | update))


def uses_mbm(profile) -> bool:
    return profile.method == "mindvideo" and profile.encoder.init == "mbm"


def configure(profile, subject: str) -> MBMConfig:
    data = profile.data
    return profile.mbm.pretraining(
        corpus_root=data.corpus_root or profile.mbm.corpus_root,
        corpus_mask=data.corpus_mask or profile.mbm.corpus_mask,
        detrend_order=data.preprocess.detrend_order,
    )


def check_profile(profile) -> None:
    model_patch, data_patch = profile.mbm.model.patch_size, profile.data.preprocess.patch_size
    if model_patch != data_patch:  # the encoder patches by one, the windows pad by the other
        raise ConfigError(
            f"{profile.source}: mbm.model.patch_size {model_patch} but data.preprocess.patch_size "
            f"{data_patch}: the encoder cuts the voxels into patches of the first and the windows "
            "are padded for the second; make them equal"
        )


STAGE = Stage(
    name="mbm",
    run=run,
    config=MBMConfig,
    configure=configure,
    version=1,
    order=20,
    inputs=("dataset",),
    enabled=uses_mbm,
    sections={"mbm": MBMSection},
    reads=("data", "encoder"),
    # initialisation, batch order and masks draw from the run seed
    seeded=True,
    artifacts=("mae.safetensors", "mae_config.json"),  # models/fmri_mae.py
    work_units=work_units,
    local_paths=lambda profile: {"data.corpus_root": "dir", "data.corpus_mask": "file"},
    check_profile=check_profile,
)
