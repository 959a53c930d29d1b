"""Suite specs and the planner: validation errors, expansion, stage keys shared across runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_spec

from harness.cli import main
from harness.plan import build_plan
from harness.spec import expand_variants, load_spec
from mindvideo.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

BASE = """
suite: t
profile: smoke
seeds: [0, 1]
subjects: [subject1, subject2]
baselines: [ridge, shuffled, random-train-clip]
reference: ridge
"""


def spec_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        spec = load_spec(write_spec(tmp_path, text))
        build_plan(spec)
    return str(e.value)


def test_unknown_key_names_file_and_path(tmp_path):
    msg = spec_error(tmp_path, BASE + "report: {metricz: [ssim]}\n")
    assert "suite.yaml" in msg and "report.metricz" in msg and "unknown key" in msg


def test_wrong_type_and_allowed_values(tmp_path):
    msg = spec_error(tmp_path, BASE.replace("seeds: [0, 1]", "seeds: three"))
    assert "seeds" in msg
    msg = spec_error(
        tmp_path, BASE.replace("[ridge, shuffled, random-train-clip]", "[ridge, lasso]")
    )
    assert (
        "baselines.1" in msg and "'ridge', 'shuffled', 'random-train-clip' or 'autoencoder'" in msg
    )


def test_unknown_variant_path_lists_known_keys(tmp_path):
    text = BASE + "variants:\n  no-temporal: {encoder.temporal_attn: false}\n"
    msg = spec_error(tmp_path, text)
    assert "variants.no-temporal" in msg and "unknown variant path" in msg
    assert "'encoder.temporal_attn'" in msg and "temporal_attention" in msg  # the keys there
    msg = spec_error(tmp_path, BASE + "variants:\n  g: {sampler.steps: 10}\n")
    assert "'sampler.steps'" in msg and "contrastive" in msg  # the top-level keys
    msg = spec_error(tmp_path, BASE + "variants:\n  g: {generator.attention: none}\n")
    assert "'generator.attention'" in msg and "frame_attention" in msg
    msg = spec_error(tmp_path, BASE + "overrides: {decode.step: 3}\nvariants: {a: {}}\n")
    assert "overrides: unknown variant path 'decode.step'" in msg and "steps" in msg
    msg = spec_error(tmp_path, BASE + "variants:\n  w: {data.windw: 3}\n")
    assert "data.windw" in msg and "window_offset" in msg


def test_bad_override_value_names_variant(tmp_path):
    msg = spec_error(tmp_path, BASE.replace("baselines:", "variants: {w0: {data.window: 0}}\nb:"))
    assert "unknown key" in msg  # `b:` is not a spec key
    text = BASE + "variants:\n  w0: {data.window: 0, method: ridge}\n"
    msg = spec_error(tmp_path, text)
    assert "variants.w0" in msg and "window" in msg and "greater than or equal to 1" in msg


def test_empty_variants_and_nothing_to_run(tmp_path):
    msg = spec_error(tmp_path, BASE + "variants: {}\n")
    assert "variants" in msg and "empty" in msg
    msg = spec_error(tmp_path, "profile: smoke\nseeds: [0]\n")
    assert "nothing to run" in msg


def test_report_metrics_and_subjects_are_checked_before_running(tmp_path):
    msg = spec_error(tmp_path, BASE + "report: {metrics: [ssim, video_2way_top1_strict, fid]}\n")
    assert "report.metrics: ['fid']" in msg and "clip_pcc_adjacent" in msg
    msg = spec_error(tmp_path, BASE.replace("[subject1, subject2]", "[]"))
    assert "subjects" in msg and "distinct subjects" in msg


def test_missing_profile_and_unknown_reference(tmp_path):
    msg = spec_error(tmp_path, BASE.replace("profile: smoke", "profile: huge"))
    assert "unknown profile 'huge'" in msg and "smoke" in msg and "tiny" in msg
    msg = spec_error(tmp_path, BASE.replace("reference: ridge", "reference: full"))
    assert "reference" in msg and "'full'" in msg and "ridge, shuffled, random-train-clip" in msg


def test_encoder_pipeline_shares_mbm_across_variants_and_subjects(tmp_path):
    text = """
profile: smoke
overrides: {stop_after: contrastive}
seeds: [0, 1]
variants:
  full: {}
  no-mbm: {encoder.init: scratch}
  no-temporal: {encoder.temporal_attention: false}
  window-1: {data.window: 1}
report: {metrics: [retrieval50_image_top1, retrieval50_text_top1]}
"""
    plan = build_plan(load_spec(write_spec(tmp_path, text)))
    names = {r.variant.name: [plan.node(k).name for k in r.stages] for r in plan.runs}
    assert names["full"] == ["simulate", "foundation", "mbm", "contrastive"]
    assert names["no-mbm"] == ["simulate", "foundation", "contrastive"]
    mbm_keys = {k for r in plan.runs for k in r.stages if plan.node(k).name == "mbm"}
    assert len(mbm_keys) == 2  # one per seed, shared by 3 variants x 2 subjects
    contrastive = [plan.node(k) for r in plan.runs for k in r.stages]
    contrastive = [n for n in contrastive if n.name == "contrastive"]
    assert len({n.key for n in contrastive}) == 4 * 2 * 2
    window_1 = [n for n in contrastive if n.config.window == 1]
    assert window_1 and all(n.config.model == plan.runs[0].profile.mbm.model for n in window_1)
    msg = spec_error(tmp_path, text.replace("retrieval50_text_top1", "video_2way_top1"))
    assert "['video_2way_top1'] are not logged" in msg and "retrieval50_image_top1" in msg
    # without stop_after the generator follows, and one diffusion model serves every run
    whole = build_plan(
        load_spec(write_spec(tmp_path, text.replace("overrides: {stop_after: contrastive}\n", "")))
    )
    names = [whole.node(k).name for k in whole.runs[0].stages]
    assert names == [
        "simulate",
        "foundation",
        "mbm",
        "contrastive",
        "diffusion",
        "align",
        "cotrain",
        "decode",
        "evaluate",
    ]
    assert len({k for r in whole.runs for k in r.stages if whole.node(k).name == "diffusion"}) == 1
    # co-training and decoding read the aligned encoder; without align, the contrastive one
    nodes = {whole.node(k).name: whole.node(k) for k in whole.runs[0].stages}
    assert nodes["cotrain"].inputs["contrastive"] == nodes["align"].key
    assert nodes["align"].inputs["contrastive"] == nodes["contrastive"].key
    plain = build_plan(
        load_spec(
            write_spec(
                tmp_path,
                text.replace("overrides: {stop_after: contrastive}\n", "")
                + "overrides: {align.enabled: false}\n",
            )
        )
    )
    nodes = {plain.node(k).name: plain.node(k) for k in plain.runs[0].stages}
    assert (
        "align" not in nodes and nodes["decode"].inputs["contrastive"] == nodes["contrastive"].key
    )


def test_finetune_sits_between_mbm_and_contrastive_per_subject(tmp_path):
    text = """
profile: smoke
overrides: {stop_after: contrastive}
seeds: [0]
variants:
  full: {mbm.finetune_epochs: 3}
  image-only: {mbm.finetune_epochs: 3, contrastive.modalities: [image]}
  no-finetune: {}
report: {metrics: [retrieval50_image_top1]}
"""
    plan = build_plan(load_spec(write_spec(tmp_path, text)))
    by_name = {}
    for run in plan.runs:
        by_name.setdefault(run.variant.name, []).append([plan.node(k) for k in run.stages])
    full = by_name["full"][0]
    assert [n.name for n in full] == [
        "simulate",
        "foundation",
        "mbm",
        "mbm_finetune",
        "contrastive",
    ]
    mbm_node, tune, contrastive = full[2:]
    assert tune.inputs["mbm"] == mbm_node.key and contrastive.inputs["mbm"] == tune.key
    assert tune.config.subject == contrastive.config.subject
    assert tune.config.training.epochs == 3 and tune.config.training.model == mbm_node.config.model
    # the pretraining does not depend on the fine-tune: one mbm for all three variants
    assert (
        len({n.key for runs in by_name.values() for r in runs for n in r if n.name == "mbm"}) == 1
    )
    # one fine-tune per subject, shared by the variants that differ only after it
    tunes = {
        n.key
        for v in ("full", "image-only")
        for r in by_name[v]
        for n in r
        if n.name == "mbm_finetune"
    }
    assert len(tunes) == len(by_name["full"])
    assert "mbm_finetune" not in [n.name for n in by_name["no-finetune"][0]]


def test_yaml_tags_are_not_executed(tmp_path):
    msg = spec_error(tmp_path, BASE + "x: !!python/object/apply:os.system ['echo hi']\n")
    assert "invalid YAML" in msg


def test_cli_errors_exit_2_without_traceback(tmp_path, capsys):
    spec = write_spec(tmp_path, BASE + "report: {formats: [html]}\n")
    for command in ("run", "plan", "report", "status"):
        assert main([command, str(spec), "--store", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert "report.formats.0" in err and "'md', 'tex' or 'csv'" in err
        assert "Traceback" not in err and str(spec) in err
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "spec file not found" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # nothing was created


def test_grid_expands_variants_with_named_points(tmp_path):
    text = """
profile: smoke
variants: {r: {method: ridge}, c: {method: random-train-clip, baselines.top_k: 2}}
grid: {data.window: [1, 2], baselines.pixel_size: [4]}
"""
    spec = load_spec(write_spec(tmp_path, text))
    names = [v.name for v in expand_variants(spec.spec)]
    assert names == [
        "r[data.window=1,baselines.pixel_size=4]",
        "r[data.window=2,baselines.pixel_size=4]",
        "c[data.window=1,baselines.pixel_size=4]",
        "c[data.window=2,baselines.pixel_size=4]",
    ]
    plan = build_plan(spec)
    assert [r.profile.data.window for r in plan.runs[:4]] == [1, 1, 2, 2]  # x 2 subjects
    assert plan.runs[-1].profile.baselines.top_k == 2
    assert {r.variant.grid["data.window"] for r in plan.runs} == {1, 2}


def test_stages_are_shared_where_their_inputs_agree(tmp_path):
    plan = build_plan(load_spec(write_spec(tmp_path, BASE)))
    assert len(plan.runs) == 3 * 2 * 2
    by_stage: dict[str, set[str]] = {}
    for run in plan.runs:
        for key in run.stages:
            by_stage.setdefault(plan.node(key).name, set()).add(key)
    assert len(by_stage["simulate"]) == 1 and len(by_stage["foundation"]) == 1
    # ridge is deterministic: one fit per subject for both seeds; the others draw per seed
    assert len(by_stage["baselines"]) == 2 + 2 * 2 + 2 * 2
    assert len(by_stage["evaluate"]) == 12
    assert len({r.key for r in plan.runs}) == 12


def test_keys_follow_config_seed_and_profile(tmp_path):
    spec_path = write_spec(tmp_path, BASE)
    a = build_plan(load_spec(spec_path))
    b = build_plan(load_spec(spec_path))
    assert [r.key for r in a.runs] == [r.key for r in b.runs]  # deterministic
    c = build_plan(load_spec(spec_path), {"eval.trials": 50})
    same = {a.node(k).name for r, s in zip(a.runs, c.runs, strict=True) for k in r.stages}
    changed = {
        a.node(k).name
        for r, s in zip(a.runs, c.runs, strict=True)
        for k, k2 in zip(r.stages, s.stages, strict=True)
        if k != k2
    }
    assert changed == {"evaluate"} and "baselines" in same
    d = build_plan(load_spec(spec_path), {"data.synth.seed": 1})
    for r, s in zip(a.runs, d.runs, strict=True):
        assert all(x != y for x, y in zip(r.stages, s.stages, strict=True))
    tiny = build_plan(load_spec(spec_path, profile="tiny"))
    assert tiny.spec.profile == "tiny" and tiny.runs[0].key != a.runs[0].key


def test_options_added_later_keep_the_keys_cached_before_them(tmp_path):
    """decode.noise_share, cotrain.noise_share and eval.extra_metrics came after results were
    cached: at 0 or [] (what the stages did before they existed) they are not in the keys; any
    other value is."""
    from harness.cache import key_config
    from mindvideo.stages.registry import get_stage

    spec = load_spec(write_spec(tmp_path, BASE + "variants: {full: {}}\n"))
    a = build_plan(spec)
    full = next(r for r in a.runs if r.variant.name == "full")
    node = next(a.node(k) for k in full.stages if a.node(k).name == "decode")
    assert node.config.decode.noise_share == 0.0
    assert "noise_share" not in key_config(node.config, get_stage("decode").key_neutral)["decode"]
    assert "noise_share" in node.config.model_dump()["decode"]  # the manifest still says it
    names = {k: a.node(k).name for r in a.runs for k in r.stages}

    def changed(overrides: dict) -> set[str]:
        b = build_plan(spec, overrides)
        return {
            names[k]
            for r, s in zip(a.runs, b.runs, strict=True)
            for k, k2 in zip(r.stages, s.stages, strict=True)
            if k != k2
        }

    assert changed({"decode.noise_share": 0.0}) == changed({"cotrain.noise_share": 0.0}) == set()
    assert changed({"decode.noise_share": 0.5}) == {"decode", "evaluate"}
    assert changed({"cotrain.noise_share": 0.5}) == {"cotrain", "decode", "evaluate"}
    assert changed({"cotrain.frame_change_loss": 0.0}) == set()
    assert changed({"cotrain.frame_change_loss": 1.0}) == {"cotrain", "decode", "evaluate"}
    # activation checkpointing changes memory, not numbers: in no key, whatever its value
    assert changed({"encoder.checkpoint_activations": True}) == set()
    assert changed({"eval.extra_metrics": []}) == set()
    assert changed({"eval.extra_metrics": ["motion_direction"]}) == {"evaluate"}
    # a list of names is a set: two suites that order it differently share their scores
    c = build_plan(spec, {"eval.extra_metrics": ["motion_speed", "motion_direction"]})
    d = build_plan(spec, {"eval.extra_metrics": ["motion_direction", "motion_speed"] * 2})
    assert [r.stages for r in c.runs] == [r.stages for r in d.runs]


def test_profile_swap_drops_subjects_the_profile_lacks(tmp_path, capsys):
    text = BASE.replace("[subject1, subject2]", "[subject1, subject3]").replace("smoke", "tiny")
    plan = build_plan(load_spec(write_spec(tmp_path, text), profile="smoke"))
    assert {r.subject for r in plan.runs} == {"subject1"}
    assert "no subject3" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="subject3"):
        build_plan(load_spec(write_spec(tmp_path, text.replace("tiny", "smoke"))))


def test_plan_command_lists_runs_and_cache_state(tmp_path, capsys):
    spec = write_spec(tmp_path, BASE)
    assert main(["plan", str(spec), "--store", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "12 runs share 24 distinct stages" in out
    assert "simulate 1 (0 cached)" in out and "24 to compute" in out
    assert out.count("to run") == 12 * 4
    # a fresh store has no times to estimate from, and says so rather than "about 0 s"
    assert "compute: nothing cached; the 24 to compute: no estimate yet" in out
    for i, seconds in enumerate((40.0, 50.0, 4000.0)):  # simulate stages of other specs, one
        timed = tmp_path / "s" / "cache" / "simulate" / f"0123abc{i}"  # slowed by other work
        timed.mkdir(parents=True)
        peak = f', "peak_gib": {{"rss": {i + 1.5}}}' if i else ""  # the first: before peaks
        (timed / "manifest.json").write_text(f'{{"seconds": {seconds}{peak}}}')
    assert main(["plan", str(spec), "--store", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "the 24 to compute: about 50 s for the 1 of kinds timed here (the median" in out
    assert "none yet for" in out and "not counted" in out and "simulate," not in out
    # the largest peak of the finished stages of each kind to compute
    assert "; peak resident memory of such stages here: simulate 3.5 GiB" in out
    assert "GPU memory" not in out


def test_plan_of_several_suites_counts_what_they_share_once(tmp_path, capsys):
    a = write_spec(tmp_path, BASE)
    b = write_spec(
        tmp_path, BASE.replace("suite: t", "suite: u").replace("[0, 1]", "[0, 2]"), "u.yaml"
    )
    assert main(["plan", str(a), str(b), "--store", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert out.count("12 runs share 24 distinct stages") == 2
    # seed 2 adds its own shuffled and chance decodes (2 subjects x 2) and 6 evaluates
    assert "all 2 suites: 24 runs share 34 distinct stages; 34 to compute" in out
    # specs after an option, or one given twice, are the same command
    for argv in (
        ["plan", str(a), "--store", str(tmp_path / "s"), str(b)],
        ["plan", str(a), str(b), str(tmp_path / "." / a.name), "--store", str(tmp_path / "s")],
    ):
        assert main(argv) == 0
        assert "all 2 suites: 24 runs share 34 distinct stages" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["plan", str(a), "--store", str(tmp_path / "s"), "--bogus"])
    # a bad spec anywhere stops the command before it prints any plan
    assert main(["plan", str(a), str(tmp_path / "nope.yaml"), "--store", str(tmp_path / "s")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "nope.yaml: spec file not found" in captured.err


@pytest.mark.parametrize("command", ["run", "plan", "report", "status", "data", "score"])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: mvbench" in capsys.readouterr().out


def test_one_key_variants_make_a_curve_with_the_reference(tmp_path):
    from harness.report.build import _sweep_point, one_key_sweeps

    text = """
profile: smoke
seeds: [0]
variants:
  full: {}
  window-1: {data.window: 1}
  window-3: {data.window: 3}
  no-mbm: {encoder.init: scratch}
  lr: {contrastive.lr: 0.01}
  two-keys: {data.window: 4, contrastive.lr: 0.01}
reference: full
report: {metrics: [retrieval50_image_top1]}
"""
    plan = build_plan(load_spec(write_spec(tmp_path, text)))
    swept = one_key_sweeps(plan)
    assert swept == {"data.window"}  # one lr value is no curve; two keys are no sweep
    points = {r.variant.name: _sweep_point(plan, r, swept) for r in plan.runs}
    assert points["full"] == {"data.window": 2}  # the reference at the profile's value
    assert points["window-1"] == {"data.window": 1} and points["window-3"] == {"data.window": 3}
    assert points["no-mbm"] == points["lr"] == points["two-keys"] == {}


def test_part_of_a_suite_runs_only_its_stages(tmp_path):
    from harness.plan import select_runs

    text = """
profile: smoke
seeds: [0, 1]
variants:
  full: {}
  no-mbm: {encoder.init: scratch}
grid: {guidance.scale: [3.0, 7.5]}
baselines: [ridge, autoencoder]
"""
    plan = build_plan(load_spec(write_spec(tmp_path, text)))
    part = select_runs(plan, ["full"], ["subject1"], [1])
    assert [r.variant.name for r in part.runs] == [
        "full[guidance.scale=3.0]",
        "full[guidance.scale=7.5]",
    ]
    assert {r.seed for r in part.runs} == {1} and {r.subject for r in part.runs} == {"subject1"}
    names = sorted(n.name for n in part.nodes.values())
    assert names.count("mbm") == 1 and names.count("decode") == 2 and "baselines" not in names
    assert set(part.nodes) == {k for r in part.runs for k in r.stages}
    # the autoencoder baseline reads the generator's diffusion model (the same node)
    ae = select_runs(plan, ["autoencoder"], None, [0])
    stages = {ae.node(k).name: ae.node(k) for k in ae.runs[0].stages}
    assert stages["baselines"].inputs["diffusion"] == stages["diffusion"].key
    full_diffusion = {n.key for n in plan.nodes.values() if n.name == "diffusion"}
    assert full_diffusion == {stages["diffusion"].key}
    with pytest.raises(ConfigError, match=r"--subject subject9: not in this suite; it has: "):
        select_runs(plan, None, ["subject9"], None)
    with pytest.raises(ConfigError, match=r"--seed 5"):
        select_runs(plan, None, None, [5])


def test_committed_suites_plan_and_paper_ablations_share_stages():
    root = Path(__file__).resolve().parents[2] / "experiments" / "suites"
    for path in sorted(root.glob("*.yaml")):
        build_plan(load_spec(path, "smoke"))  # every committed suite plans on smoke
    plan = build_plan(load_spec(root / "paper_ablations.yaml", "smoke"))
    by_stage: dict[str, set[str]] = {}
    for run in plan.runs:
        for key in run.stages:
            by_stage.setdefault(plan.node(key).name, set()).add(key)
    variants = {r.variant.name for r in plan.runs}
    n = len({(r.subject, r.seed) for r in plan.runs})
    assert len(variants) == 10
    assert len(by_stage["mbm"]) == 3  # one per seed, for every variant and subject using it
    assert len(by_stage["diffusion"]) == 1
    # encoders: full (also no-cotrain, zero-negative, per-frame, no-align), no-mbm,
    # no-contrastive, image-only, text-only, no-temporal-attention
    assert len(by_stage["contrastive"]) == 6 * n
    # co-training: all but no-cotrain; zero-negative re-uses the full model's
    assert len(by_stage["cotrain"]) == 8 * n
    assert len(by_stage["decode"]) == 10 * n
    # the condition adapter: every variant with its own encoder, none for no-align
    assert len(by_stage["align"]) == 6 * n
    zero = [r for r in plan.runs if r.variant.name == "zero-negative"][0]
    full = [
        r
        for r in plan.runs
        if r.variant.name == "full" and r.subject == zero.subject and r.seed == zero.seed
    ][0]
    shared = [plan.node(k).name for k in set(zero.stages) & set(full.stages)]
    assert "cotrain" in shared and "decode" not in shared

    # the `full` runs of baselines and window_size are paper_ablations' own, down to the score:
    # the suites must agree on every override that reaches the evaluate stage
    def full_runs(name):
        other = build_plan(load_spec(root / f"{name}.yaml", "smoke"))
        return {(r.subject, r.seed): r.stages for r in other.runs if r.variant.name == "full"}

    ablations = full_runs("paper_ablations")
    for name in ("baselines", "window_size"):
        for cell, stages in full_runs(name).items():
            assert stages == ablations[cell], (name, cell)


def test_a_headline_metric_with_its_stage_prefix_is_refused(tmp_path):
    text = """
profile: smoke
overrides: {stop_after: contrastive}
variants: {full: {}}
report: {metrics: [contrastive.retrieval50_image_top1]}
"""
    msg = spec_error(tmp_path, text)
    assert "without the prefix, as 'retrieval50_image_top1'" in msg


def test_the_chance_baseline_is_renamed_with_a_message(tmp_path):
    msg = spec_error(tmp_path, BASE.replace("random-train-clip]", "chance]"))
    assert "'chance' is now 'random-train-clip'" in msg and "not chance level" in msg


def test_a_repeated_key_is_an_error_naming_both_lines(tmp_path):
    # YAML keeps the last of two equal keys: a copy-pasted variant would vanish without a word
    msg = spec_error(tmp_path, BASE + "variants:\n  full: {}\n  full: {data.window: 3}\n")
    assert "the key 'full' appears twice" in msg and "rename or remove one" in msg
    assert str(tmp_path) in msg


def test_a_file_that_is_not_utf8_text_says_so(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"suite: x\nprofile: smoke\n\xff\xfe\x00binary\n")
    with pytest.raises(ConfigError, match=r"spec.yaml: not UTF-8 text \(byte 24"):
        load_spec(path)


def test_a_report_under_another_profile_goes_beside_the_committed_one():
    from harness.cli.results import default_out

    quickstart = REPO / "experiments" / "suites" / "quickstart.yaml"
    assert default_out(build_plan(load_spec(quickstart))) == Path("results/quickstart")
    smoke = build_plan(load_spec(quickstart, "smoke"))
    assert default_out(smoke) == Path("results/quickstart-smoke")


def test_a_reference_of_pairs_names_rows_of_the_suite(tmp_path):
    from harness.spec import load_spec

    body = (
        "profile: smoke\nvariants: {a: {}, b: {encoder.init: scratch}, c: {}}\n"
        "baselines: [ridge]\nreference: REF\n"
    )

    def spec(ref: str):
        path = tmp_path / "s.yaml"
        path.write_text(body.replace("REF", ref))
        return load_spec(path)

    assert spec("{a: b, c: ridge}").spec.reference == {"a": "b", "c": "ridge"}
    with pytest.raises(ConfigError, match=r"reference: a: 'z' is not a variant or baseline"):
        spec("{a: z}")
    with pytest.raises(ConfigError, match=r"reference: a: a row is not its own reference"):
        spec("{a: a}")
    with pytest.raises(ConfigError, match=r"reference: empty"):
        spec("{}")
