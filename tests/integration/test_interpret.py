"""Stage `interpret`: attention mass per brain region (known values), the dlabel reader, the
planner's bindings, the stage end to end on smoke through `mvbench run`, and the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import small_axis, write_spec

from harness.plan import pipeline, stage_config
from harness.profiles import load_profile
from mindvideo.data.cifti import SurfaceModel, brain_axis, read_dlabel, surface_points, write_dlabel
from mindvideo.errors import ConfigError, DataError
from mindvideo.models.encoder_config import EncoderConfig, MAEConfig
from mindvideo.models.fmri_encoder import FmriEncoder
from mindvideo.stages import interpret
from mindvideo.stages.interpret import key_mass, patch_shares, region_mass

# --- the computation --------------------------------------------------------------------------


def test_region_mass_of_a_hand_made_attention_matrix():
    # 6 voxels in patches of 2: patch 0 = region 0, patch 1 = region 1, patch 2 = region 2
    shares = patch_shares(np.array([0, 0, 1, 1, 2, 2]), 3, 2)
    np.testing.assert_array_equal(shares, np.eye(3))
    weights = torch.tensor(
        [
            [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.4, 0.0]],  # head 1: queries x keys
            [[0.3, 0.3, 0.4], [0.9, 0.1, 0.0], [0.5, 0.2, 0.3]],  # head 2
        ]
    )[None]  # (batch 1, heads 2, queries 3, keys 3)
    mass = key_mass(weights).numpy()
    np.testing.assert_allclose(mass, [(2.1 + 1.7) / 6, (0.9 + 0.6) / 6, 0.7 / 6])
    found = region_mass(mass, shares)
    np.testing.assert_allclose(found.mass, mass)
    np.testing.assert_allclose(found.input_fraction, [1 / 3] * 3)
    np.testing.assert_allclose(found.enrichment, 3 * mass)  # mass / (1/3)
    assert found.enrichment[0] == pytest.approx(1.9)
    uniform = region_mass(key_mass(torch.full((4, 2, 3, 3), 1 / 3)).numpy(), shares)
    np.testing.assert_allclose(uniform.enrichment, 1.0)


def test_a_patch_of_two_regions_splits_its_mass_by_voxel_share():
    # patches of 3: [r0, r1, r1] and [r1, r2, r2]
    shares = patch_shares(np.array([0, 1, 1, 1, 2, 2]), 3, 3)
    np.testing.assert_allclose(shares, [[1 / 3, 2 / 3, 0], [0, 1 / 3, 2 / 3]])
    found = region_mass(np.array([0.6, 0.4]), shares)
    np.testing.assert_allclose(found.mass, [0.2, 0.4 + 0.4 / 3, 0.8 / 3])
    np.testing.assert_allclose(found.input_fraction, [1 / 6, 1 / 2, 1 / 3])
    np.testing.assert_allclose(found.enrichment, [1.2, (0.4 + 0.4 / 3) * 2, 0.8])
    # 5 voxels in patches of 2: the vector wraps, so voxel 0 (region 0) fills the last slot
    wrapped = patch_shares(np.array([0, 1, 1, 2, 2]), 3, 2)
    np.testing.assert_allclose(wrapped, [[0.5, 0.5, 0], [0, 0.5, 0.5], [0.5, 0, 0.5]])
    assert region_mass(np.array([0.0, 0.0, 1.0]), wrapped).enrichment[1] == 0.0


def test_attention_weights_are_the_ones_forward_applies():
    torch.manual_seed(0)
    encoder = FmriEncoder(MAEConfig(embed_dim=16, depth=2, num_heads=2), EncoderConfig(), 50, 2)
    attn = encoder.blocks[0].attn
    x = torch.randn(3, 5, 16)
    w = attn.weights(x)  # (3, 2, 5, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 5))
    v = attn.qkv(x).reshape(3, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)[2]
    out = attn.proj((w @ v).transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(out, attn(x), rtol=1e-5, atol=1e-6)

    fmri = np.random.default_rng(0).standard_normal((7, 2, 50)).astype(np.float32)
    spatial, temporal = interpret.attention_mass(encoder, fmri, 3, "cpu")
    assert spatial.shape == (2, 4) and temporal.shape == (2, 2)  # 50 voxels: 4 patches of 16
    np.testing.assert_allclose(spatial.sum(axis=1), 1.0)
    np.testing.assert_allclose(temporal.sum(axis=1), 1.0)
    # by hand, layer 1: the first block's input for every (window, frame)
    with torch.no_grad():
        tokens = encoder.patch_embed(torch.from_numpy(fmri).reshape(14, 50))
        tokens = tokens + interpret_positions(tokens)
        expected = key_mass(attn.weights(encoder.blocks[0].norm1(tokens))).numpy()
    np.testing.assert_allclose(spatial[0], expected, rtol=1e-5)
    assert encoder.training  # left as it was
    batched, _ = interpret.attention_mass(encoder, fmri, 7, "cpu")
    np.testing.assert_allclose(batched, spatial, rtol=1e-5)  # batch size changes nothing


def interpret_positions(tokens):
    from mindvideo.models.fmri_mae import sincos_positions

    return sincos_positions(tokens.shape[1], tokens.shape[2])


def test_region_names_are_metric_safe():
    assert interpret.metric_name("7Networks_1") == "7Networks_1"
    assert interpret.metric_name("V1 (left).x") == "V1_left_x"
    assert interpret.metric_name("???", 0) == "unlabelled"
    assert interpret.metric_name("???", 5) == "label5"


# --- the parcellation ---------------------------------------------------------------------------


def test_dlabel_reader_and_matching_by_vertex(tmp_path):
    from conftest import write_run

    keys = np.array([0, 1, 1, 2] * 10 + [0] * 4)  # 40 cortical + 4 volume grayordinates
    names = {0: "???", 1: "Visual", 2: "Default Mode"}
    write_dlabel(tmp_path / "net.dlabel.nii", keys, small_axis(), names)
    parc = read_dlabel(tmp_path / "net.dlabel.nii")
    assert parc.names == names
    np.testing.assert_array_equal(parc.keys, keys[:40])
    data = write_run(tmp_path / "run.dtseries.nii", np.ones((3, 44)))
    np.testing.assert_array_equal(parc.on(surface_points(data), data), keys[:40])

    # a parcellation over the whole mesh (25 vertices a hemisphere, "medial wall" included)
    # labels data that has 20 of them: matched by vertex
    full = brain_axis(
        [
            SurfaceModel("CORTEX_LEFT", 25, np.arange(25)),
            SurfaceModel("CORTEX_RIGHT", 25, np.arange(25)),
        ]
    )
    mesh_keys = np.concatenate([np.arange(25) % 3, (np.arange(25) + 1) % 3])
    write_dlabel(tmp_path / "mesh.dlabel.nii", mesh_keys, full, names)
    matched = read_dlabel(tmp_path / "mesh.dlabel.nii").on(surface_points(data), data)
    np.testing.assert_array_equal(matched, np.concatenate([mesh_keys[:20], mesh_keys[25:45]]))

    # fewer grayordinates than the data: the error names the file and both counts
    small = brain_axis(
        [
            SurfaceModel("CORTEX_LEFT", 25, np.arange(15)),
            SurfaceModel("CORTEX_RIGHT", 25, np.arange(15)),
        ]
    )
    write_dlabel(tmp_path / "small.dlabel.nii", np.ones(30, dtype=int), small, {1: "Visual"})
    with pytest.raises(
        DataError, match=r"small\.dlabel\.nii: the parcellation has 30 cortical .* has 40"
    ):
        read_dlabel(tmp_path / "small.dlabel.nii").on(surface_points(data), data)
    with pytest.raises(DataError, match=r"run\.dtseries\.nii: the first CIFTI axis .* not labels"):
        read_dlabel(data)

    # the stage's regions of a CC2017-layout subject: metric-safe names, index per vertex
    from conftest import make_cc2017

    from mindvideo.data.cc2017 import open_subject

    rec = open_subject(make_cc2017(tmp_path / "cc2017"), "subject1")
    regions = interpret.parcellation_regions(tmp_path / "net.dlabel.nii", rec)
    assert regions.names == ["unlabelled", "Visual", "Default_Mode"]
    np.testing.assert_array_equal(regions.label, keys[:40])
    cfg = interpret.InterpretConfig(
        synthetic=False, parcellation=str(tmp_path / "small.dlabel.nii")
    )
    with pytest.raises(DataError, match=r"small\.dlabel\.nii: the parcellation has 30"):
        interpret.subject_regions(cfg, tmp_path / "cc2017", rec, 40)


def test_real_data_without_parcellation_names_the_key(tmp_path):
    profile = tmp_path / "real.yaml"
    profile.write_text(
        "profile: real\ndata: {source: cc2017, root: /data}\ninterpret: {enabled: true}\n"
    )
    real = load_profile(str(profile))
    with pytest.raises(ConfigError, match=r"interpret\.parcellation is not set.*\.dlabel\.nii"):
        stage_config("interpret", real, "subject1")
    given = load_profile(str(profile), {"interpret.parcellation": "/atlas/yeo.dlabel.nii"})
    cfg = stage_config("interpret", given, "subject1")
    assert cfg.parcellation == "/atlas/yeo.dlabel.nii" and not cfg.synthetic


# --- the planner --------------------------------------------------------------------------------


def test_pipeline_binds_the_training_stages_that_run():
    def bound(**overrides):
        stages = dict(pipeline(load_profile("smoke", overrides)))
        return stages.get("interpret"), list(stages)

    assert bound()[0] is None and bound(**{"interpret.enabled": False})[1] == bound()[1]
    node, order = bound(**{"interpret.enabled": True})
    assert node == {
        "dataset": "simulate",
        "mbm": "mbm",
        "contrastive": "contrastive",
        "cotrain": "cotrain",
    }
    assert order.index("interpret") == order.index("cotrain") + 1
    node, _ = bound(
        **{"interpret.enabled": True, "encoder.init": "scratch", "cotrain.enabled": False}
    )
    assert node == {"dataset": "simulate", "contrastive": "contrastive"}
    node, order = bound(
        **{"interpret.enabled": True, "stop_after": "contrastive", "mbm.finetune_epochs": 2}
    )
    assert node == {"dataset": "simulate", "mbm": "mbm_finetune", "contrastive": "contrastive"}
    assert order[-1] == "interpret"


SUITE = """
suite: attention
profile: smoke
overrides: {stop_after: contrastive}
seeds: [0, 1]
subjects: [subject1]
variants: {full: {}}
report: {metrics: [retrieval50_image_top1], samples: 0}
"""


def test_plan_is_unchanged_without_interpret_and_gains_one_node_with_it(tmp_path):
    from harness.plan import build_plan
    from harness.spec import load_spec

    plain = build_plan(load_spec(write_spec(tmp_path, SUITE, "plain.yaml")))
    off = SUITE.replace(
        "{stop_after: contrastive}", "{stop_after: contrastive, interpret.enabled: false}"
    )
    on = SUITE.replace(
        "{stop_after: contrastive}", "{stop_after: contrastive, interpret.enabled: true}"
    )
    disabled = build_plan(load_spec(write_spec(tmp_path, off, "off.yaml")))
    enabled = build_plan(load_spec(write_spec(tmp_path, on, "on.yaml")))
    assert [r.key for r in disabled.runs] == [r.key for r in plain.runs]
    assert set(disabled.nodes) == set(plain.nodes)
    added = set(enabled.nodes) - set(plain.nodes)
    assert set(plain.nodes) < set(enabled.nodes)  # every other stage keeps its cache key
    assert sorted(enabled.nodes[k].name for k in added) == ["interpret", "interpret"]  # 2 seeds
    node = enabled.nodes[enabled.runs[0].stages[-1]]
    assert node.name == "interpret" and set(node.inputs) == {"dataset", "mbm", "contrastive"}


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attention_store(tmp_path_factory, harness_run):
    """The encoder stages and `interpret` on smoke, two seeds, through `mvbench run`."""
    from conftest import run_suite, seed_cache

    folder = tmp_path_factory.mktemp("attention")
    text = SUITE.replace(
        "{stop_after: contrastive}", "{stop_after: contrastive, interpret.enabled: true}"
    )
    spec = write_spec(folder, text)
    store = folder / "store"
    seed_cache(harness_run[1], store)
    run_suite(spec, store)
    return spec, store


def test_stage_end_to_end_logs_enrichment_per_stage_layer_region(attention_store):
    from harness.tracking import Tracker

    spec, store = attention_store
    entries = sorted((store / "cache" / "interpret").glob("*/attention.json"))
    assert len(entries) == 2  # one per seed
    results = json.loads(entries[0].read_text())
    assert (entries[0].parent / "attention.png").stat().st_size > 0
    assert list(results["stages"]) == ["mbm", "contrastive"]  # no co-training in this suite
    regions = results["regions"]
    assert set(regions) <= {"early_visual", "colour_shape", "motion", "category", "non_visual"}
    assert "early_visual" in regions and sum(results["voxel_fraction"].values()) == pytest.approx(1)
    for stage in results["stages"].values():
        assert list(stage["layers"]) == ["L1"]  # smoke: depth 1
        fraction = stage["input_fraction"]
        for layer in stage["layers"].values():
            assert sum(layer["mass"].values()) == pytest.approx(1.0)
            for r in regions:
                assert layer["enrichment"][r] == pytest.approx(layer["mass"][r] / fraction[r])
    assert results["stages"]["mbm"]["layers"]["L1"]["temporal_frame_mass"] is None
    frames = results["stages"]["contrastive"]["layers"]["L1"]["temporal_frame_mass"]
    assert len(frames) == 2 and sum(frames) == pytest.approx(1.0)

    tracker = Tracker(store)
    children = tracker.children(tracker.experiment("attention", create=False), "FINISHED")
    assert len(children) == 2
    metrics = children[0].data.metrics
    for stage in ("mbm", "contrastive"):
        for r in regions:
            assert np.isfinite(metrics[f"interpret.{stage}.L1.{r}"])
    assert not any(k.startswith("interpret.cotrain.") for k in metrics)
    assert sum(metrics[f"interpret.voxel_fraction.{r}"] for r in regions) == pytest.approx(1)
    uploaded = {a.path for a in tracker.client.list_artifacts(children[0].info.run_id, "interpret")}
    assert uploaded == {"interpret/attention.json", "interpret/attention.png"}


def test_stage_reads_a_cotrain_encoder_and_is_deterministic(attention_store, tmp_path):
    from harness.plan import build_plan
    from harness.spec import load_spec
    from mindvideo.stages.base import StageContext

    spec, store = attention_store
    plan = build_plan(load_spec(spec))
    node = plan.nodes[plan.runs[0].stages[-1]]
    inputs = {r: store / "cache" / plan.nodes[k].name / k for r, k in node.inputs.items()}
    # the contrastive encoder standing in for a co-trained one: the same numbers for both
    inputs["cotrain"] = inputs["contrastive"]
    (tmp_path / "out").mkdir()
    result = interpret.run(node.config, inputs, tmp_path / "out", StageContext(seed=node.seed))
    cached = json.loads((store / "cache" / "interpret" / node.key / "attention.json").read_text())
    found = json.loads((tmp_path / "out" / "attention.json").read_text())
    assert found["stages"]["cotrain"]["layers"] == found["stages"]["contrastive"]["layers"]
    for stage in ("mbm", "contrastive"):
        assert found["stages"][stage] == cached["stages"][stage]  # same inputs, same numbers
    assert any(k.startswith("cotrain.L1.") for k in result.metrics)
    synthetic = node.config.model_copy(update={"synthetic": False})
    with pytest.raises(ConfigError, match="interpret.parcellation is not set"):
        interpret.run(synthetic, inputs, tmp_path / "out", StageContext())


def test_report_draws_attention_per_subject(attention_store, tmp_path):
    from harness.cli import main

    spec, store = attention_store
    out = tmp_path / "results"
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    figure = out / "figures" / "attention_subject1.png"
    assert figure.stat().st_size > 0
    table = (out / "attention.md").read_text()
    assert (
        "## subject1 (full)" in table
        and "| mbm | L1 |" in table
        and "| contrastive | L1 |" in table
    )
    assert "±" in table  # two seeds


def test_report_attention_from_a_runs_frame(tmp_path):
    from harness.report.attention import attention_frame, write_attention

    rows = []
    for subject in ("subject1", "subject2"):
        for seed in (0, 1):
            row = {
                "variant": "full",
                "base": "full",
                "kind": "model",
                "subject": subject,
                "seed": seed,
                "video_2way_top1": 0.6,
            }
            for stage in ("contrastive", "mbm"):
                for layer in (1, 2):
                    row[f"interpret.{stage}.L{layer}.early_visual"] = 1.5 + 0.1 * seed
                    row[f"interpret.{stage}.L{layer}.non_visual"] = 0.5
            row["interpret.voxel_fraction.early_visual"] = 0.4
            row["interpret.voxel_fraction.non_visual"] = 0.6
            rows.append(row)
    runs = pd.DataFrame(rows)
    frame = attention_frame(runs)
    assert len(frame) == 2 * 2 * 2 * 2 * 2 and set(frame["layer"]) == {1, 2}
    written = write_attention(runs, tmp_path, "suite")
    names = sorted(p.name for p in written)
    assert names == ["attention.md", "attention_subject1.png", "attention_subject2.png"]
    table = (tmp_path / "attention.md").read_text()
    # training order, not alphabetical; mean +- sd over the two seeds
    assert table.index("| mbm | L1 |") < table.index("| contrastive | L1 |")
    assert "| mbm | L2 | 1.55 ± 0.07 | 0.50 ± 0.00 |" in table
    assert "| voxel fraction | | 0.40 | 0.60 |" in table and "(2 per subject)" in table
    assert (
        write_attention(runs.drop(columns=[c for c in runs if "interpret" in c]), tmp_path, "suite")
        == []
    )
    only_table = write_attention(runs, tmp_path / "nofig", "suite", figures=False)
    assert [p.name for p in only_table] == ["attention.md"]
