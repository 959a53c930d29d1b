"""Stage `contrastive` and the retrieval metric: exact values, switches, end to end on smoke."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tracked_runs

from mindvideo.errors import ConfigError
from mindvideo.eval.metrics import retrieval_top1
from mindvideo.stages.contrastive import check_retrieval_n, scene_groups
from mindvideo.train.contrastive import info_nce


def test_retrieval_top1_exact_values():
    s = np.array([[1.0, 0.5, 2.0, 0.1], [0.0, 1.0, 0.2, 0.3], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    p = retrieval_top1(s, 2)  # one distractor among the 3 others
    # row 0: one of 3 others beats it -> 2/3; rows 1-3: none beats -> 1
    np.testing.assert_allclose(p, [2 / 3, 1, 1, 1])
    # groups: rows 0 and 2 are the same scene, so 2 is no distractor for 0
    np.testing.assert_allclose(retrieval_top1(s, 2, groups=[0, 1, 0, 2])[0], 1.0)
    assert retrieval_top1(s, 3)[0] == pytest.approx(1 / 3)  # C(2,2) / C(3,2)
    with pytest.raises(ValueError, match="only 1 candidates"):
        retrieval_top1(s, 3, groups=[0, 0, 0, 1])


def test_retrieval_top1_chance_and_sampling_agree():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(1500, 1500))
    assert retrieval_top1(s, 50).mean() == pytest.approx(0.02, abs=0.003)
    i, trials = 7, 20000
    others = np.delete(np.arange(1500), i)
    hits = [s[i, i] > s[i, rng.choice(others, 49, replace=False)].max() for _ in range(trials)]
    assert retrieval_top1(s, 50)[i] == pytest.approx(np.mean(hits), abs=0.01)


def test_info_nce_known_value():
    emb = torch.eye(3)
    loss = info_nce(emb, emb, torch.tensor(0.0))  # scale 1: logits = identity
    expected = -math.log(math.e / (math.e + 2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    shuffled = info_nce(emb, emb[[1, 2, 0]], torch.tensor(math.log(10.0)))
    assert shuffled.item() > loss.item()


def test_scene_groups_join_clips_of_a_caption():
    class S:
        segment = np.array(["a", "a", "a", "b"])
        caption = ["x", "x", "y", "x"]

    g = scene_groups(S)
    assert g[0] == g[1] and g[1] != g[2] and g[0] != g[3]


def test_too_few_test_scenes_for_the_retrieval_are_refused_before_training():
    """The retrieval's distractors come from other scenes: a test set too small for
    contrastive.retrieval_n fails before the encoder trains, saying how far to lower it."""
    groups = np.array(["t/a", "t/a", "t/a", "t/b"])  # 3 + 1 windows
    check_retrieval_n(2, groups, "subject1")
    with pytest.raises(ConfigError, match=r"retrieval_n 4.*1 candidates.*at most 2.*nothing"):
        check_retrieval_n(4, groups, "subject1")
    check_retrieval_n(4, np.array(["a", "b", "c", "d"]), "subject1")


@pytest.fixture(scope="module")
def suite_store(tmp_path_factory, harness_run):
    """Three encoder runs (full, no-contrastive, image-only) at smoke scale, through `mvbench run`,
    ending at the contrastive stage as the encoder suite does."""
    from conftest import run_suite, seed_cache, write_spec

    folder = tmp_path_factory.mktemp("encoder")
    spec = write_spec(
        folder,
        """
suite: enc
profile: smoke
overrides: {stop_after: contrastive}
seeds: [0]
subjects: [subject1]
variants: {full: {}, no-contrastive: {contrastive.enabled: false}, image-only:
  {contrastive.modalities: [image]}}
reference: full
report: {metrics: [retrieval50_image_top1, retrieval50_text_top1], samples: 0}
""",
    )
    store = folder / "store"
    seed_cache(harness_run[1], store)
    run_suite(spec, store)
    return spec, store


def test_encoder_runs_are_tracked_with_retrieval_and_curves(suite_store, capsys):
    from harness.cli import main

    spec, store = suite_store
    client, runs = tracked_runs(store, "enc")
    assert set(runs) == {"full", "no-contrastive", "image-only"}
    full = runs["full"].data.metrics
    assert 0 <= full["retrieval50_image_top1"] <= 1 and "retrieval50_text_top1" in full
    assert "contrastive.train_loss" in full and "mbm.val_corr" in full
    history = client.get_metric_history(runs["full"].info.run_id, "mbm.val_loss")
    assert sorted(m.step for m in history) == [0, 0, 1]  # final value (step 0) + 2 epochs
    assert "contrastive.train_loss" not in runs["no-contrastive"].data.metrics
    assert main(["report", str(spec), "--store", str(store), "--out", str(spec.parent / "r")]) == 0
    assert "Retrieval 50-way (image)" in (spec.parent / "r" / "table.md").read_text()


def test_contrastive_needs_modalities_and_mbm(smoke_dataset, tmp_path):
    from mindvideo.stages import contrastive as C
    from mindvideo.stages.base import StageContext

    cfg = C.ContrastiveConfig(modalities=())
    with pytest.raises(ConfigError, match="name at least one"):
        C.run(cfg, {"dataset": smoke_dataset, "mbm": tmp_path}, tmp_path, StageContext())
    with pytest.raises(ConfigError, match="needs the mbm stage"):
        C.run(C.ContrastiveConfig(), {"dataset": smoke_dataset}, tmp_path, StageContext())
