"""The metric registry: direction, label, chance and stimulus measures of every metric family,
the defaults for unknown names, and that nothing else parses metric names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mindvideo.eval.protocols import KNOWN_METRICS, chance_level
from mindvideo.eval.registry import FAMILIES, METRICS, NEEDS, metric_info

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "label", "chance", "rule"),
    [
        ("video_2way_top1", "Video 2-way", 0.75, "3/(N+2)"),
        ("frame_50way_top1", "Frame 50-way", 3 / 52, "3/(N+2)"),
        ("video_2way_top1_strict", "Video 2-way (strict)", 0.5, "1/N"),
        ("frame_50way_top1_strict", "Frame 50-way (strict)", 1 / 50, "1/N"),
        # 1 - C(49, 5) / C(52, 5)
        ("video_50way_top5", "Video 50-way top-5", 1 - 1906884 / 2598960, "1 - C(N-1,K)/C(N+2,K)"),
        ("video_50way_top5_strict", "Video 50-way top-5 (strict)", 5 / 50, "K/N"),
    ],
)
def test_n_way_family(name, label, chance, rule):
    info = metric_info(name)
    assert info.family == "n_way" and info.known
    assert info.label == label
    assert info.higher_is_better is True and info.ranked
    assert info.chance() == pytest.approx(chance)
    assert info.chance_rule == rule
    assert info.kind == "proportion" and info.aspect == "semantic"
    assert not info.stimulus_level
    judge = "video_judge" if name.startswith("video") else "frame_judge"
    assert judge in info.needs and "frames" in info.needs
    assert info.function().__name__ == "n_way_top_k"


def test_n_way_chance_follows_the_protocols_rule():
    info = metric_info("video_2way_top1")
    assert info.chance(gt_top=1) == pytest.approx(0.5)  # a protocol counting the argmax only
    assert metric_info("video_2way_top1_strict").chance(gt_top=3) == pytest.approx(0.5)
    assert chance_level("video_2way_top1") == pytest.approx(0.75)
    assert chance_level("frame_2way_top1_strict") == pytest.approx(0.5)
    # the protocol's chance level is the N-way one only
    assert chance_level("retrieval50_image_top1") is None and chance_level("ssim") is None


@pytest.mark.parametrize(
    ("name", "label", "chance", "target"),
    [
        ("retrieval50_image_top1", "Retrieval 50-way (image)", 1 / 50, "image"),
        ("retrieval50_text_top1", "Retrieval 50-way (text)", 1 / 50, "text"),
        ("retrieval10_text_top3", "Retrieval 10-way (text) top-3", 3 / 10, "text"),
    ],
)
def test_retrieval_family(name, label, chance, target):
    info = metric_info(name)
    assert info.family == "retrieval"
    assert (info.label, info.variant, info.higher_is_better) == (label, target, True)
    assert info.chance() == pytest.approx(chance)
    assert info.chance_rule == ("1/N" if info.top_k == 1 else "K/N")
    assert info.needs == {"embeddings", "scenes"}
    assert info.function().__name__ == "retrieval_top1"


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("val_loss", "loss"),
        ("train_loss", "loss"),
        ("loss", "loss"),
        ("cotrain.val_loss", "loss"),
        ("unet_val_loss", "loss"),
        ("epe", "epe"),
        ("flow_epe", "epe"),
        ("decode.flow_epe", "epe"),
        ("evaluate.epe", "epe"),
        ("decode.decode_seconds", "seconds"),
        ("cotrain.train_seconds", "seconds"),
        ("seconds", "seconds"),
    ],
)
def test_losses_flow_errors_and_times_are_lower_is_better(name, family):
    info = metric_info(name)
    assert info.family == family and info.known
    assert info.higher_is_better is False and info.ranked
    assert info.chance() is None and info.chance_rule == ""


def test_a_stage_loss_keeps_its_name_as_label():
    info = metric_info("cotrain.val_loss")
    assert (info.label, info.stage, info.needs) == ("cotrain.val_loss", "cotrain", {"training"})
    assert info.computed_by == ""
    with pytest.raises(LookupError, match="cotrain.val_loss"):
        info.function()


@pytest.mark.parametrize(
    ("name", "label", "better", "aspect"),
    [
        ("ssim", "SSIM", True, "pixel"),
        ("psnr", "PSNR", True, "pixel"),
        ("clip_pcc_adjacent", "CLIP-pcc (adj.)", True, "temporal"),
        ("clip_pcc_allpairs", "CLIP-pcc (all)", True, "temporal"),
        ("hue_sim", "Hue sim.", True, "colour"),
        ("epe", "EPE", False, "motion"),
        ("motion_direction", "Motion dir.", True, "motion"),
        ("motion_speed", "Mean flow (px/frame)", None, "motion"),
        ("motion_speed_truth", "Stimulus mean flow", None, "motion"),
    ],
)
def test_named_metrics(name, label, better, aspect):
    info = metric_info(name)
    assert info.family == name and info.known
    assert (info.label, info.higher_is_better, info.aspect) == (label, better, aspect)
    assert info.ranked == (better is not None)
    assert info.chance() is None and info.kind == "mean"
    assert callable(info.function())


def test_the_speed_is_compared_with_the_stimulus():
    speed, truth = metric_info("motion_speed"), metric_info("motion_speed_truth")
    assert speed.stimulus == "motion_speed_truth" and not speed.stimulus_level
    assert truth.stimulus_level and truth.stimulus is None
    # a stage prefix carries over to the stimulus's column
    prefixed = metric_info("evaluate.motion_speed")
    assert prefixed.stimulus == "evaluate.motion_speed_truth" and not prefixed.ranked
    assert metric_info("evaluate.motion_speed_truth").stimulus_level


def test_clip_pcc_variants_and_psnr_decimals():
    assert metric_info("clip_pcc_adjacent").variant == "adjacent"
    assert metric_info("clip_pcc_allpairs").variant == "allpairs"
    assert "clip" in metric_info("clip_pcc_adjacent").needs
    assert metric_info("psnr").decimals == 2 and metric_info("ssim").decimals is None


@pytest.mark.parametrize(
    "name",
    [
        "mbm.val_corr",
        "val_corr",
        "align.test_r2",
        "cotrain.val_loss_zero_cond",  # not a `*loss` name: the default, as tables show it
        "video_pretrain.direction_gap",
        "retrieval50_audio_top1",
        "video_twoway_top1",
        "",
    ],
)
def test_unknown_names_have_the_documented_defaults(name):
    info = metric_info(name)
    assert not info.known and info.family == "unknown"
    assert info.label == name
    assert info.higher_is_better is True and info.ranked
    assert info.chance() is None and info.chance_rule == ""
    assert not info.stimulus_level and info.stimulus is None
    assert info.needs == frozenset() and info.decimals is None


def test_every_registered_metric_is_well_formed():
    for name in KNOWN_METRICS:
        assert metric_info(name).known, name
    for info in METRICS.values():
        assert info.needs <= set(NEEDS), info.name
        if info.stimulus is not None:
            assert metric_info(info.stimulus).stimulus_level, info.name
    assert [f.name for f in FAMILIES] == ["n_way", "retrieval", "loss", "epe", "seconds", "memory"]
    peak = metric_info("cotrain.peak_rss_gib")  # harness/memory.py, per stage
    assert peak.family == "memory" and not peak.higher_is_better and peak.aspect == "cost"


def test_lookups_are_cached_and_immutable():
    assert metric_info("video_2way_top1") is metric_info("video_2way_top1")
    with pytest.raises(AttributeError):
        metric_info("ssim").label = "x"  # type: ignore[misc]


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
    return modules


def test_the_search_spec_does_not_import_the_report():
    modules = _imports(ROOT / "harness" / "search" / "spec.py")
    assert not {m for m in modules if m == "harness.report" or m.startswith("harness.report.")}
    assert "mindvideo.eval.registry" in modules


# Patterns that parse a metric name: a regex naming an N-way or retrieval metric, suffix and
# prefix tests on the names of losses, flow errors, N-way and CLIP-pcc metrics, or cutting off
# a stage prefix.
_PARSING = re.compile(
    r"\(\\d\+\)way|retrieval\(\\d|\"way_top\" in|endswith\(\(?\"(loss|_epe|_strict)"
    r"|startswith\(\(?\"(video_|frame_|clip_pcc|retrieval)|removeprefix\(\"clip_pcc|SEMANTIC_PREFIXES"
    r'|rsplit\("\.", 1\)\[-1\]'
)


@pytest.mark.parametrize(
    "path",
    [
        "mindvideo/eval/protocols.py",
        "mindvideo/eval/metrics.py",
        "harness/report/tables.py",
        "harness/report/figures.py",
        "harness/report/stats.py",
        "harness/report/search.py",
        "harness/report/build.py",
        "harness/search/spec.py",
    ],
)
def test_no_module_but_the_registry_parses_metric_names(path):
    code = [
        line
        for line in (ROOT / path).read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    found = [line for line in code if _PARSING.search(line)]
    assert not found, f"{path} parses metric names: {found}"
