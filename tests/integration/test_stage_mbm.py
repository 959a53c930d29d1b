"""Stage `mbm`: pretraining on the SynthCC corpus, logged curves, determinism, loading, errors."""

from __future__ import annotations

import pytest
import torch

from mindvideo.errors import DataError
from mindvideo.models.fmri_mae import MAEConfig, load_mbm
from mindvideo.stages import mbm
from mindvideo.stages.base import StageContext

SMALL = mbm.MBMConfig(
    model=MAEConfig(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2),
    epochs=3,
    batch_size=32,
    holdout_subjects=1,
)


def run_stage(dataset, out, cfg=SMALL, seed=0):
    logged = []
    ctx = StageContext(seed=seed, log_metric=lambda n, v, s=None: logged.append((n, v, s)))
    out.mkdir(parents=True, exist_ok=True)
    return mbm.run(cfg, {"dataset": dataset.parent}, out, ctx), logged


def test_pretrains_logs_curves_and_saves(smoke_dataset, tmp_path, one_torch_thread):
    result, logged = run_stage(smoke_dataset, tmp_path / "a")
    m = result.metrics
    assert m["train_volumes"] == 2 * 60 and m["val_volumes"] == 60  # 3 corpus subjects x 60 TRs
    assert m["val_loss"] < m["untrained_val_loss"]  # it learned something
    assert [s for n, _, s in logged if n == "val_corr"] == [0, 1, 2]
    assert {n for n, _, _ in logged} == {"train_loss", "val_loss", "val_corr"}
    model = load_mbm(tmp_path / "a")
    assert model.cfg == SMALL.model
    assert not (tmp_path / "a" / mbm.SCRATCH).exists()  # the on-disk corpus is not published
    again, _ = run_stage(smoke_dataset, tmp_path / "b")
    assert again.metrics["val_loss"] == m["val_loss"]  # same seed, same numbers
    other = load_mbm(tmp_path / "b")
    for (k, v), w in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    third, _ = run_stage(smoke_dataset, tmp_path / "c", seed=1)
    assert third.metrics["val_loss"] != m["val_loss"]


def test_corpus_errors(smoke_dataset, tmp_path):
    cfg = SMALL.model_copy(update={"holdout_subjects": 3})
    with pytest.raises(DataError, match="3 corpus subjects; MBM holds out 3"):
        run_stage(smoke_dataset, tmp_path / "x", cfg)
    cfg = SMALL.model_copy(update={"corpus_root": str(tmp_path / "none")})
    with pytest.raises(DataError, match="corpus folder not found"):
        run_stage(smoke_dataset, tmp_path / "y", cfg)
    with pytest.raises(DataError, match="run the mbm stage first"):
        load_mbm(tmp_path)


def test_finetune_on_the_subject(smoke_dataset, tmp_path, one_torch_thread):
    from mindvideo.stages import mbm_finetune

    run_stage(smoke_dataset, tmp_path / "mbm")
    cfg = mbm_finetune.FinetuneConfig(
        subject="subject1", training=SMALL.model_copy(update={"epochs": 2, "warmup_epochs": 0})
    )
    logged = []
    ctx = StageContext(seed=0, log_metric=lambda n, v, s=None: logged.append((n, v, s)))
    inputs = {"dataset": smoke_dataset.parent, "mbm": tmp_path / "mbm"}
    (tmp_path / "ft").mkdir()
    m = mbm_finetune.run(cfg, inputs, tmp_path / "ft", ctx).metrics
    train, test = mbm_finetune.subject_volumes(smoke_dataset, cfg)
    assert m["train_volumes"] == len(train) and train.shape[1] == test.shape[1]
    assert m["val_loss"] < m["pretrained_val_loss"]  # adapted to the subject's own signal
    assert [s for n, _, s in logged if n == "val_loss"] == [0, 1]
    tuned, pretrained = load_mbm(tmp_path / "ft"), load_mbm(tmp_path / "mbm")
    assert tuned.cfg == pretrained.cfg
    assert not torch.equal(
        tuned.state_dict()["blocks.0.mlp.0.weight"],
        pretrained.state_dict()["blocks.0.mlp.0.weight"],
    )
    other = cfg.model_copy(update={"training": SMALL.model_copy(update={"model": MAEConfig()})})
    with pytest.raises(DataError, match="sizes differ from mbm.model"):
        mbm_finetune.run(other, inputs, tmp_path / "ft", ctx)


@pytest.mark.slow  # two gloo processes; the one-process stage stays in the default run
def test_stage_in_two_processes_matches_one(smoke_dataset, tmp_path, one_torch_thread):
    one, logged_one = run_stage(smoke_dataset, tmp_path / "one")
    logged = []
    ctx = StageContext(
        seed=0, processes=2, log_metric=lambda n, v, s=None: logged.append((n, v, s))
    )
    (tmp_path / "two").mkdir()
    two = mbm.run(SMALL, {"dataset": smoke_dataset.parent}, tmp_path / "two", ctx)
    for name in ("train_loss", "val_loss", "val_corr"):
        assert two.metrics[name] == pytest.approx(one.metrics[name], rel=1e-4), name
    assert [(n, s) for n, _, s in logged] == [(n, s) for n, _, s in logged_one]


def test_corpus_on_disk_equals_the_runs_in_memory(smoke_dataset, tmp_path):
    """The corpus is written run by run to raw files (a paper-scale corpus does not fit in
    memory): the same volumes, in the same order, as the runs loaded whole."""
    import numpy as np

    from mindvideo.data.hcp import open_corpus

    root = mbm.dataset_root(smoke_dataset.parent)
    train, val, summary = mbm.load_corpus(SMALL, root, tmp_path / "scratch")
    corpus = open_corpus(root / "hcp", None)
    held = corpus.subjects()[-1]
    runs = {"train": [], "val": []}
    for path in corpus.runs:
        part = "val" if path.parents[3].name == held else "train"
        runs[part].append(corpus.load_run(path, SMALL.detrend_order).astype(np.float32))
    assert np.array_equal(train.open(), np.concatenate(runs["train"]))
    assert np.array_equal(val.open(), np.concatenate(runs["val"]))
    assert (train.cols, summary["voxels"]) == (corpus.n_voxels, corpus.n_voxels)
