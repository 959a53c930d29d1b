"""The validation split: SynthCC's val segments (train and test untouched), real data's held-out
training segments, eval.split: val through decode/baselines/evaluate, the cache keys of
existing configs unchanged, and searches that score on val unless told otherwise."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cc2017

from harness.cache import key_config
from harness.plan import build_plan, stage_config
from harness.profiles import load_profile
from harness.spec import load_spec
from mindvideo.data.cc2017 import open_subject
from mindvideo.data.paired import make_samples, prepare_fmri
from mindvideo.data.preprocess import PreprocessConfig, SelectionConfig
from mindvideo.data.synth.config import SimulateConfig
from mindvideo.data.synth.simulate import simulate
from mindvideo.errors import ConfigError, DataError
from mindvideo.stages.registry import get_stage

REPO = Path(__file__).resolve().parents[2]

# A dataset of a fraction of a second: 1 subject, 2 + 1 segments of 8 TRs, 16 x 16 frames.
SMALL = {
    "world": {"height": 16, "width": 16, "fps": 2},
    "brain": {"sheet_side": 8, "subcortical_voxels": 2},
    "protocol": {
        "subjects": 1,
        "train_segments": 2,
        "train_trs": 8,
        "test_segments": 1,
        "test_trs": 8,
        "test_repeats": 2,
    },
    "corpus": {"subjects": 1, "trs": 8},
}


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


# SynthCC ------------------------------------------------------------------------------------


def test_val_segments_leave_train_and_test_byte_identical(tmp_path):
    plain = SimulateConfig.model_validate(SMALL)
    protocol = SMALL["protocol"] | {"val_segments": 2, "val_trs": 10}
    with_val = SimulateConfig.model_validate(SMALL | {"protocol": protocol})
    simulate(plain, tmp_path / "a")
    meta = simulate(with_val, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a < b
    added = {str(p) for p in b - a}
    assert added and all("val1" in p or "val2" in p for p in added)
    differ = [str(p) for p in a if not filecmp.cmp(tmp_path / "a" / p, tmp_path / "b" / p, False)]
    assert differ == ["dataset.json"]  # stimuli, fMRI, truth and corpus: the same bytes
    assert meta["segments"]["val"] == ["val1", "val2"]
    assert meta["trs_per_segment"]["val"] == 10 and meta["repeats"]["val"] == 2  # test's
    frames = np.load(tmp_path / "b" / "stimuli" / "val1.npy")
    assert frames.shape[0] == 10 * 2 * 2  # val_trs x tr x fps
    # without validation segments dataset.json does not name them at all (as before them)
    plain_meta = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert "val" not in plain_meta["segments"]
    assert "val_segments" not in plain_meta["config"]["protocol"]
    from mindvideo.data.synth.simulate import config_record

    assert plain_meta["config"] == config_record(plain)  # how `data simulate` sees it is done
    assert meta["config"] == config_record(with_val)
    assert meta["config"]["protocol"] == with_val.protocol.model_dump(mode="json")


def test_val_segments_are_a_split_of_their_own(tmp_path):
    protocol = SMALL["protocol"] | {"val_segments": 1, "val_repeats": 3}
    simulate(SimulateConfig.model_validate(SMALL | {"protocol": protocol}), tmp_path / "d")
    rec = open_subject(tmp_path / "d", "subject1")
    assert rec.segments("train") == ["seg1", "seg2"]
    assert rec.segments("val") == ["val1"] and rec.repeats("val", "val1") == 3
    fmri = prepare_fmri(rec, PreprocessConfig(), voxels=np.arange(20))
    assert fmri.segments["val"]["val1"].shape[0] == 1  # averaged, as test repeats are
    val = make_samples(fmri, "val", 2, 2, "drop", 16)
    assert set(val.segment) == {"val1"}
    assert not {"val1"} & set(make_samples(fmri, "train", 2, 2, "drop", 16).segment)
    from mindvideo.data.inspect import inspect_dataset

    entry = inspect_dataset(tmp_path / "d", validate=False)["subjects"]["subject1"]
    assert entry["val"]["segments"] == 1 and entry["val"]["repeats"] == [3]


# Real data: held-out training segments ------------------------------------------------------


def test_held_out_training_segments_become_val(tmp_path):
    train = [(f"seg{k}", 2) for k in (1, 2, 3, 10)]
    make_cc2017(tmp_path, train=train, test=[("test1", 3)])
    by_name = open_subject(tmp_path, "subject1", ("seg2",))
    assert by_name.segments("train") == ["seg1", "seg3", "seg10"]
    assert by_name.segments("val") == ["seg2"] and by_name.segments("test") == ["test1"]
    by_count = open_subject(tmp_path, "subject1", 2)  # the last two in training order
    assert by_count.segments("val") == ["seg3", "seg10"]
    assert open_subject(tmp_path, "subject1").segments("train") == ["seg1", "seg2", "seg3", "seg10"]


@pytest.mark.parametrize(
    "val, message",
    [
        (("seg19",), r"data.val_segments: seg19 not among the training segments .*seg1, seg2"),
        (("test1",), r"test1 not among the training segments .*\(test1: test segments\)"),
        (2, r"data.val_segments: 2: .* has 2 training segments; hold out between 1 and 1"),
        (("seg1", "seg2"), r"holds out every training segment"),
    ],
)
def test_held_out_segments_that_do_not_fit_are_named(tmp_path, val, message):
    make_cc2017(tmp_path)
    with pytest.raises(DataError, match=message):
        open_subject(tmp_path, "subject1", val)


def test_mindvideo_npy_holds_out_training_segments(tmp_path):
    from conftest import write_layout

    from mindvideo.data.mindvideo_npy import hold_out, load_split, to_samples

    write_layout(tmp_path, n_seg=3, n_tr=5, voxels=20)
    full = load_split(tmp_path, "subject1", "train")
    train, val = hold_out(full, ("seg2",))
    assert len(train) == 10 and len(val) == 5 and val.text[0] == "clip 1 0"
    np.testing.assert_array_equal(val.fmri, np.load(tmp_path / "fmri_train_subject1.npy")[1])
    assert set(to_samples(val, 2, 0, "drop", 16).segment) == {"seg2"}
    assert list(dict.fromkeys(to_samples(train, 2, 0, "drop", 16).segment)) == ["seg1", "seg3"]
    assert hold_out(full, 1)[1].segment_names == ("seg3",)
    with pytest.raises(DataError, match=r"data.val_segments: seg7 not among .*seg1, seg2, seg3"):
        hold_out(full, ("seg7",))


def test_voxel_selection_treats_val_like_test(tmp_path):
    """Selection reads the held-out repeats wherever it read the test repeats: moving seg3 from
    train to val selects the same voxels under the default splits; listing train alone, the
    held-out segment leaves the statistics."""
    train = [(f"seg{k}", 2) for k in (1, 2, 3)]
    make_cc2017(tmp_path, train=train, test=[("test1", 3)])
    loose = SelectionConfig(p_threshold=0.5, correction="none", keep_fraction=1.0)
    cfg = PreprocessConfig(selection=loose)
    before = prepare_fmri(open_subject(tmp_path, "subject1"), cfg)
    after = prepare_fmri(open_subject(tmp_path, "subject1", ("seg3",)), cfg)
    assert after.stats.n_segments == before.stats.n_segments == 4
    assert np.array_equal(after.selected, before.selected)
    only_train = cfg.model_copy(
        update={"selection": loose.model_copy(update={"splits": ("train",)})}
    )
    assert (
        prepare_fmri(open_subject(tmp_path, "subject1", ("seg3",)), only_train).stats.n_segments
        == 2
    )


def test_val_segments_config_errors():
    with pytest.raises(
        ConfigError, match=r"data.val_segments holds out .*set data.synth.protocol.val_segments"
    ):
        load_profile("smoke", {"data.val_segments": ["seg1"]})
    with pytest.raises(ConfigError, match=r"data.val_segments: .*segments repeat"):
        load_profile("smoke", {"data.val_segments": ["seg1", "seg1"]})


# Cache keys ---------------------------------------------------------------------------------


def test_committed_run_keys_are_planned_unchanged():
    """Every run committed under results/ (its run key names all its stage keys) is planned
    with the same key by the current code: the new options are neutral at their defaults."""
    recorded = sorted(REPO.glob("results/*/runs.json"))
    assert recorded
    for path in recorded:
        runs = json.loads(path.read_text())
        spec = REPO / "experiments" / "suites" / Path(runs["spec"]).name
        plan = build_plan(load_spec(spec))
        missing = set(runs["runs"]) - {r.key for r in plan.runs}
        assert not missing, f"{path}: {len(missing)} committed runs have new keys"


STAGES = ("simulate", "contrastive", "align", "cotrain", "interpret", "decode", "baselines")


@pytest.mark.parametrize("name", [*STAGES, "evaluate", "mbm_finetune"])
def test_new_options_are_key_neutral_at_their_defaults_only(name):
    """A stage's key config has none of the new fields at their defaults, and changes as soon
    as one is set."""
    method = "ridge" if name == "baselines" else "mindvideo"
    finetune = {"mbm.finetune_epochs": 2} if name == "mbm_finetune" else {}
    profile = load_profile("tiny", {"method": method, **finetune})
    cfg = stage_config(name, profile, "subject1")
    neutral = get_stage(name).key_neutral
    dumped = key_config(cfg, neutral)
    for field in ("val_segments", "split"):
        assert field not in dumped
    assert not {"val_segments", "val_trs", "val_repeats"} & set(dumped.get("protocol", {}))
    if name == "simulate":
        update = {"protocol": cfg.protocol.model_copy(update={"val_segments": 1})}
    elif "split" in type(cfg).model_fields:
        update = {"split": "val"}
    else:
        update = {"val_segments": ("seg12",)}
    assert key_config(cfg.model_copy(update=update), neutral) != dumped


# eval.split -----------------------------------------------------------------------------------


def test_val_split_without_val_segments_names_the_key_to_set():
    from mindvideo.stages.base import scored_split

    quickstart = load_spec(REPO / "experiments" / "suites" / "quickstart.yaml")
    with pytest.raises(
        ConfigError, match=r"eval.split: val, but .*set data.synth.protocol.val_segments"
    ):
        build_plan(quickstart, {"eval.split": "val"})
    plan = build_plan(quickstart, {"eval.split": "val", "data.synth.protocol.val_segments": 1})
    assert {run.profile.eval.split for run in plan.runs} == {"val"}  # in each run's profile
    decode = next(n for n in plan.nodes.values() if n.name == "decode")
    assert decode.config.split == "val"
    paper = load_profile("paper", {"eval.split": "val"})
    with pytest.raises(ConfigError, match=r"set data.val_segments \(training segments to hold out"):
        scored_split(paper)
    assert (
        scored_split(load_profile("paper", {"eval.split": "val", "data.val_segments": 1})) == "val"
    )


def test_val_split_decodes_the_val_clips(smoke_dataset, smoke_profile):
    """What decode and the baselines read under eval.split: val: the validation windows (and
    the held-out loss of co-training takes them too); evaluate's ground truth follows names."""
    from harness.plan import stage_config
    from mindvideo.data.cc2017 import open_stimuli
    from mindvideo.data.paired import subject_windows
    from mindvideo.eval.baselines import decode_baselines
    from mindvideo.stages.evaluate import ground_truth

    assert smoke_profile.data.synth.protocol.val_segments == 2
    profile = load_profile("smoke", {"method": "ridge", "eval.split": "val"})
    cfg = stage_config("baselines", profile, "subject1")
    cfg = cfg.model_copy(update={"features": ("labels",), "alphas": (10.0,), "folds": 2})
    decoded = decode_baselines(smoke_dataset, cfg, None, seed=0)
    segments = {name.rsplit("_", 1)[0] for name in decoded.names}
    assert segments == {"val1", "val2"} and len(decoded.names) == 2 * (20 - 3)
    truth, _ = ground_truth(smoke_dataset, decoded.names, 6)
    assert np.array_equal(truth, decoded.truth)
    decode = stage_config("decode", profile.model_copy(update={"method": "mindvideo"}), "subject1")
    stimuli = open_stimuli(smoke_dataset)
    voxels = np.arange(64)
    _, train, val = subject_windows(smoke_dataset, decode, stimuli, voxels, split=decode.split)
    assert set(val.segment) == {"val1", "val2"} and not set(train.segment) & {"val1", "val2"}
    _, _, held = subject_windows(smoke_dataset, decode, stimuli, voxels, split="held_out")
    assert set(held.segment) == {"val1", "val2"}


def test_negative_test_mean_is_the_mean_of_the_split_decoded():
    import torch

    from mindvideo.stages.decode import negative_condition

    def encoder(x):  # the window's mean volume as a one-token condition
        return x.mean(dim=1, keepdim=True)

    train = np.zeros((4, 2, 3), np.float32)
    held = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    negative = negative_condition(encoder, "test_mean", train, held, "cpu")
    assert torch.allclose(negative[0, 0], torch.from_numpy(held.mean(axis=(0, 1))))
    assert negative_condition(encoder, "train_mean", train, held, "cpu").abs().sum() == 0


# Searches -----------------------------------------------------------------------------------

GUIDANCE = REPO / "experiments" / "search" / "guidance.yaml"


def test_searches_score_on_val_and_refuse_test_unless_allowed(tmp_path):
    import yaml
    from conftest import write_spec

    from harness.search.spec import load_search_spec
    from harness.search.trials import check_plan

    shipped = load_search_spec(GUIDANCE)
    assert shipped.spec.overrides["eval.split"] == "val"  # the default, the file says nothing
    plan = check_plan(shipped, {})
    assert {run.profile.eval.split for run in plan.runs} == {"val"}
    with pytest.raises(
        ConfigError,
        match=r"test set: .*video_2way_top1 is scored on eval.split: test.*--allow-test-objective",
    ):
        check_plan(shipped, {"eval.split": "test"})
    allowed = check_plan(shipped, {"eval.split": "test"}, allow_test_objective=True)
    assert {run.profile.eval.split for run in allowed.runs} == {"test"}
    # a profile without validation segments: the key to set, before any trial runs
    tiny = load_search_spec(GUIDANCE, "tiny")
    with pytest.raises(ConfigError, match=r"set data.synth.protocol.val_segments"):
        check_plan(tiny, {})
    # a stage metric computed on test, whatever eval.split says
    for metric, stage in (
        ("retrieval50_image_top1", "contrastive"),  # logged without its prefix
        ("foundation.judges.frame_judge_top1", "foundation"),
    ):
        raw = yaml.safe_load(GUIDANCE.read_text())
        raw["search"]["objective"] = {metric: "maximize"}
        loaded = load_search_spec(write_spec(tmp_path, yaml.safe_dump(raw), "r.yaml"))
        with pytest.raises(
            ConfigError, match=rf"{metric} is computed on the test split by stage {stage}"
        ):
            check_plan(loaded, {})
    # the spec's own eval.split: test is taken as written, and refused the same way
    raw = yaml.safe_load(GUIDANCE.read_text()) | {"overrides": {"eval.split": "test"}}
    own = load_search_spec(write_spec(tmp_path, yaml.safe_dump(raw), "t.yaml"))
    assert own.spec.overrides == {"eval.split": "test"}
    with pytest.raises(ConfigError, match=r"would tune on the test set"):
        check_plan(own, {})


def test_search_cli_refuses_a_test_objective_before_any_work(tmp_path, capsys):
    from harness.cli import main

    store = tmp_path / "store"
    assert main(["search", str(GUIDANCE), "--store", str(store), "--set", "eval.split=test"]) == 2
    err = capsys.readouterr().err
    assert "would tune on the test set" in err and "--allow-test-objective" in err
    assert not (store / "optuna").exists() and not (store / "cache").exists()
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    assert "--allow-test-objective" in capsys.readouterr().out


VAL_SUITE = """
suite: smoke-val
profile: smoke
seeds: [0]
subjects: [subject1]
overrides: {eval.split: val, baselines.features: [labels], baselines.alphas: [10.0, 1000.0],
            baselines.folds: 2}
baselines: [ridge]
reference: ridge
report: {metrics: [video_2way_top1]}
"""


def test_a_suite_on_eval_split_val_scores_the_val_clips(harness_run, tmp_path):
    """Through `mvbench run` (the smoke dataset and judges from the session's store): the
    baseline decodes the validation clips and evaluate scores them, and says so."""
    from conftest import run_suite, seed_cache, write_spec

    store = tmp_path / "store"
    seed_cache(harness_run[1], store)
    run_suite(write_spec(tmp_path, VAL_SUITE), store)
    (scores,) = (store / "cache" / "evaluate").glob("*/scores.json")
    assert json.loads(scores.read_text())["split"] == "val"
    names = np.load(scores.parent / "per_sample.npz")["__names__"]
    assert len(names) and {str(n).rsplit("_", 1)[0] for n in names} <= {"val1", "val2"}
    (decoded,) = (store / "cache" / "baselines").glob("*/names.txt")
    assert decoded.read_text().split()[0] == "val1_000"


def test_a_training_fraction_moves_the_subjects_stages_only():
    """data.train_fraction is neutral at 1 and, set, gives new keys to the stages that read the
    subject's training runs, never to the dataset, MBM on the corpus or the generator's
    pretraining; every such stage's config carries it."""
    quickstart = load_spec(REPO / "experiments" / "suites" / "quickstart.yaml")
    full = build_plan(quickstart, {})
    part = build_plan(quickstart, {"data.train_fraction": 0.25})
    assert build_plan(quickstart, {"data.train_fraction": 1.0}).nodes.keys() == full.nodes.keys()
    by_name = {}
    for plan in (full, part):
        for key, node in plan.nodes.items():
            by_name.setdefault(node.name, []).append(key)
    for name in ("simulate", "foundation", "mbm", "diffusion"):
        assert len(set(by_name[name])) == len(by_name[name]) // 2, name
    for name in ("contrastive", "cotrain", "decode", "evaluate"):
        assert len(set(by_name[name])) == len(by_name[name]), name
    cotrain = next(n for n in part.nodes.values() if n.name == "cotrain")
    assert cotrain.config.train_fraction == 0.25
    with pytest.raises(ConfigError, match="train_fraction"):
        build_plan(quickstart, {"data.train_fraction": 1.5})
