"""`mvbench run / report / status` end to end on a smoke suite: tracking, sharing, re-runs."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from harness.cli import main
from harness.tracking import default_uri


def client_and_children(store):
    client = MlflowClient(tracking_uri=default_uri(store))
    exp = client.get_experiment_by_name("smoke-baselines")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("mvbench.kind") == "run"]
    parents = [r for r in runs if r.data.tags.get("mvbench.kind") == "execution"]
    return client, children, parents


def test_children_hold_params_tags_metrics_and_artifacts(harness_run):
    spec, store = harness_run
    client, children, parents = client_and_children(store)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    manifest = json.loads(next((store / "cache" / "baselines").glob("*/manifest.json")).read_text())
    assert manifest["device"] == device and manifest["torch"] == torch.__version__
    assert manifest["threads"] == 1  # run_suite computes with one torch thread
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(
        (c.data.tags["mvbench.variant"], c.data.tags["mvbench.seed"]) for c in children
    ) == [("random-train-clip", "0"), ("random-train-clip", "1"), ("ridge", "0"), ("ridge", "1")]
    for c in children:
        assert c.info.status == "FINISHED"
        assert c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        tags, params, metrics = c.data.tags, c.data.params, c.data.metrics
        assert set(json.loads(tags["mvbench.stage_keys"])) == {
            "simulate",
            "foundation",
            "baselines",
            "evaluate",
        }
        assert len(tags["mvbench.run_key"]) == 20 and tags["mvbench.spec_hash"]
        assert tags["mvbench.git_commit"] and tags["mvbench.profile"] == "smoke"
        assert tags["mvbench.devices"] == device  # where its stages were computed
        assert tags["mvbench.torch_threads"] == "1"  # CPU sums differ between thread counts
        assert params["method"] == tags["mvbench.variant"]
        assert params["data.window"] == "2" and params["run.seed"] == tags["mvbench.seed"]
        assert params["data.synth.protocol.subjects"] == "2"
        assert 0.0 <= metrics["video_2way_top1"] <= 1.0 and "video_2way_top1_ci_low" in metrics
        assert metrics["simulate.subjects"] == 2.0 and "foundation.clip.zeroshot_top1" in metrics
        assert metrics["seconds.foundation"] > 0
        if sys.platform == "linux":  # each stage's own peak (harness/memory.py), not the
            peaks = [metrics[f"{s}.peak_rss_gib"] for s in ("simulate", "baselines")]
            assert all(0.01 < p < 64 for p in peaks)  # process's since it started
        assert "baselines.peak_cuda_gib" not in metrics or device == "cuda"
        files = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert {"config.yaml", "scores.json", "samples"} <= files
        samples = {a.path for a in client.list_artifacts(c.info.run_id, "samples")}
        assert "samples/contact_sheet.png" in samples and "samples/samples.npz" in samples
        assert any(p.endswith(".gif") for p in samples)
    ridge = [c for c in children if c.data.tags["mvbench.variant"] == "ridge"]
    assert "baselines.ridge_alpha" in ridge[0].data.metrics


def test_mlflow_shows_runs_where_a_researcher_looks(harness_run, capsys):
    spec, store = harness_run
    client, children, parents = client_and_children(store)
    exp = client.get_experiment_by_name("smoke-baselines")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # training view
    assert parents[0].info.run_name.startswith("smoke-baselines (smoke) ")
    assert (
        "runs of suite smoke-baselines on profile smoke"
        in parents[0].data.tags["mlflow.note.content"]
    )
    for c in children:
        note = c.data.tags["mlflow.note.content"]
        variant, seed = c.data.tags["mvbench.variant"], c.data.tags["mvbench.seed"]
        assert note.startswith(f"{variant} (baseline) on subject1, seed {seed}, suite ")
        assert "- method: " in note  # the baseline's override, dotted
    assert main(["report", str(spec), "--store", str(store), "--out", str(store / "r")]) == 0
    assert f"mlflow ui --backend-store-uri {default_uri(store)}" in capsys.readouterr().out


def test_identical_stages_are_computed_once(harness_run):
    _, store = harness_run
    counts = {d.name: len(list(d.glob("*/manifest.json"))) for d in (store / "cache").iterdir()}
    # ridge is deterministic (one fit for both seeds); chance draws per seed
    assert counts == {"simulate": 1, "foundation": 1, "baselines": 3, "evaluate": 4}
    assert not list((store / "cache").glob("*/.tmp-*"))


def test_rerun_is_a_no_op(harness_run, capsys):
    spec, store = harness_run
    _, before, parents_before = client_and_children(store)
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "0 finished, 4 already done, 0 failed" in out
    assert f"Next: mvbench report {spec} --store {store}\n" in out
    _, after, parents_after = client_and_children(store)
    assert len(after) == len(before) and len(parents_after) == len(parents_before)


def test_report_reads_runs_back_from_mlflow(harness_run, tmp_path, capsys):
    spec, store = harness_run
    out = tmp_path / "results"
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ridge (ref.)" in printed and "Video 2-way" in printed
    for name in ("table.md", "table.tex", "table.csv", "runs.json", "figures/samples_grid.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "figures").glob("bars_*.png"))) == 4
    gifs = list((out / "samples" / "subject1").glob("*.gif"))
    assert len(gifs) == 2 * 3  # truth + 2 variants, 2 clips
    # index.html: the page over it all, every link relative and present
    page = (out / "index.html").read_text()
    assert "<title>smoke-baselines (smoke profile)</title>" in page
    assert "<td>ridge (ref.)</td>" in page and 'class="sortable"' in page
    ssim = pd.read_csv(out / "table.csv").query("table == 'average' and metric == 'ssim'")
    assert f"{ssim[ssim.variant == 'ridge']['mean'].iloc[0]:.3f}" in page
    links = re.findall(r'src="([^"]+)"', page)
    assert {f"samples/subject1/{g.name}" for g in gifs} <= set(links)
    assert all((out / link).is_file() for link in links)
    assert '<option value="subject1">' in page and "suite: smoke-baselines" in page
    assert f"mlflow ui --backend-store-uri {default_uri(store)}" in page
    assert "index.html" in json.loads((out / "runs.json").read_text())["files"]
    table = pd.read_csv(out / "table.csv")
    _, children, _ = client_and_children(store)
    for variant in ("ridge", "random-train-clip"):
        values = [
            c.data.metrics["ssim"] for c in children if c.data.tags["mvbench.variant"] == variant
        ]
        row = table[(table.table == "average") & (table.variant == variant)]
        row = row[row.metric == "ssim"].iloc[0]
        assert row["mean"] == pytest.approx(sum(values) / 2)
        assert row["n_seeds"] == 2
    chance = table[(table.table == "average") & (table.variant == "random-train-clip")]
    ridge = table[(table.table == "average") & (table.variant == "ridge")]
    delta = chance.set_index("metric")["delta"]
    expected = chance.set_index("metric")["mean"] - ridge.set_index("metric")["mean"]
    assert delta["ssim"] == pytest.approx(expected["ssim"])


def test_a_run_without_samples_is_a_labelled_gap_in_the_page(harness_run, tmp_path):
    spec, store = harness_run
    client, children, _ = client_and_children(store)
    ridge = next(
        c
        for c in children
        if c.data.tags["mvbench.variant"] == "ridge" and c.data.tags["mvbench.seed"] == "0"
    )
    # the store's database names its artifact folder: move the file away for this report only
    samples = Path(ridge.info.artifact_uri.removeprefix("file://")) / "samples" / "samples.npz"
    assert samples.is_file()
    out, again = tmp_path / "r", tmp_path / "again"
    argv = ["report", str(spec), "--store", str(store), "--seed", "0", "--out"]
    assert main([*argv, str(again)]) == 0  # an earlier report, with ridge's GIFs
    earlier = {p.name: p.read_bytes() for p in (again / "samples" / "subject1").glob("ridge_*")}
    assert earlier
    shutil.move(samples, tmp_path / "samples.npz")
    try:
        assert main([*argv, str(out)]) == 0
        assert main([*argv, str(again)]) == 0
    finally:
        shutil.move(tmp_path / "samples.npz", samples)
    page = (out / "index.html").read_text()
    assert '<span class="gap">ridge: its run kept no samples (samples.npz)</span>' in page
    assert "random-train-clip, subject1" in page  # the other variant's GIFs still play
    # over the earlier report, its GIFs stand in for the samples the store lacks
    page = (again / "index.html").read_text()
    assert 'class="gap"' not in page
    kept = {p.name: p.read_bytes() for p in (again / "samples" / "subject1").glob("ridge_*")}
    assert kept == earlier


def test_report_against_another_reference(harness_run, tmp_path, capsys):
    spec, store = harness_run
    out = tmp_path / "other"
    argv = ["report", str(spec), "--store", str(store), "--out", str(out)]
    assert main([*argv, "--reference", "random-train-clip"]) == 0
    assert "random-train-clip (ref.)" in capsys.readouterr().out
    table = pd.read_csv(out / "table.csv")
    ridge = table[(table.table == "average") & (table.variant == "ridge")]
    assert ridge["p_value"].notna().all() and ridge["delta"].notna().all()
    assert main([*argv, "--reference", "lasso"]) == 2
    assert "--reference lasso: not a variant" in capsys.readouterr().err


def test_a_report_written_again_with_fewer_metrics_leaves_no_stale_figure(
    harness_run, tmp_path, capsys
):
    spec, store = harness_run
    out = tmp_path / "results"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_bytes(b"not the report's")
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    listed = json.loads((out / "runs.json").read_text())["files"]
    assert "figures/bars_psnr.png" in listed and "table.md" in listed
    assert "figures/mine.png" not in listed
    fewer = spec.parent / "fewer.yaml"
    fewer.write_text(spec.read_text().replace(", psnr]", "]"))
    capsys.readouterr()
    assert main(["report", str(fewer), "--store", str(store), "--out", str(out)]) == 0
    assert (
        capsys.readouterr().err == "removed 1 file(s) of an earlier report: figures/bars_psnr.png\n"
    )
    assert not (out / "figures" / "bars_psnr.png").exists()
    assert (out / "figures" / "bars_ssim.png").exists() and (out / "figures" / "mine.png").exists()


def test_a_report_with_unfinished_seeds_says_how_to_report_the_finished_ones(
    harness_run, tmp_path, capsys
):
    spec, store = harness_run
    more = spec.parent / "three_seeds.yaml"
    more.write_text(spec.read_text().replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    out = tmp_path / "r"
    assert main(["report", str(more), "--store", str(store), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "2 of 6 planned runs have not finished" in err
    assert f"run: mvbench run {more} --store {store};" in err  # the same store
    hint = f"mvbench report {more} --store {store} --out {out} --seed 0 --seed 1"
    assert err.rstrip().endswith(f"; or report the seeds that are complete alone: {hint}")
    capsys.readouterr()
    text = (out / "table.md").read_text()
    # the file itself says it is partial, not only the command's warning
    assert (
        "_Partial report: 2 of 6 planned runs had not finished and are not in these tables "
        "(variants random-train-clip, ridge; subjects subject1; seeds 2), so rows may average "
        "fewer runs than others. Computed with: cpu, 1 torch thread (all 4 runs)._"
    ) in text
    assert "Partial report: 2 of 6" in (out / "table.tex").read_text()
    assert main(hint.split()[1:]) == 0  # the hint works as given
    assert "(smoke, 4 runs of seed 0 1)" in capsys.readouterr().out
    assert "Partial report" not in (out / "table.md").read_text()  # the seeds that are whole


def test_suggested_commands_keep_the_options_that_find_the_same_runs():
    import argparse

    from harness.cli.common import context_flags

    args = argparse.Namespace(profile="tiny", store="my store", set=["a.b=1", "c=[x, y]"])
    assert context_flags(args) == " --profile tiny --store 'my store' --set a.b=1 --set 'c=[x, y]'"
    assert context_flags(argparse.Namespace(profile=None, store=None, set=None)) == ""


def test_report_of_some_seeds_of_a_suite(harness_run, tmp_path, capsys):
    """--seed (and --variant, --subject) report part of a suite, e.g. the seeds that are done
    while the others still run, so that no table mixes seed counts."""
    spec, store = harness_run
    out = tmp_path / "seed1"
    assert main(["report", str(spec), "--store", str(store), "--out", str(out), "--seed", "1"]) == 0
    assert "(smoke, 2 runs of seed 1)" in capsys.readouterr().out
    table = pd.read_csv(out / "table.csv")
    assert set(table.loc[table.table == "average", "n_seeds"]) == {1}
    _, children, _ = client_and_children(store)
    ssim = {
        c.data.tags["mvbench.variant"]: c.data.metrics["ssim"]
        for c in children
        if c.data.tags["mvbench.seed"] == "1"
    }
    row = table[
        (table.table == "average")
        & (table.variant == "random-train-clip")
        & (table.metric == "ssim")
    ]
    assert row["mean"].iloc[0] == pytest.approx(ssim["random-train-clip"])


def test_report_says_what_its_runs_were_computed_with(harness_run, tmp_path, capsys):
    """CPU numbers repeat only at the same torch thread count: the tables say which it was,
    and a report whose runs mix thread counts warns."""
    spec, store = harness_run
    out = tmp_path / "results"
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    assert "different" not in capsys.readouterr().err
    line = "Computed with: cpu, 1 torch thread (all 4 runs)."
    assert f"_{line}_" in (out / "table.md").read_text()
    assert line in (out / "table.tex").read_text()
    listed = json.loads((out / "runs.json").read_text())["computed_with"]
    assert sorted(listed.values()) == ["cpu, 1 torch thread"] * 4
    client, children, _ = client_and_children(store)
    moved = children[0]
    client.set_tag(moved.info.run_id, "mvbench.torch_threads", "1,2")  # e.g. a pool worker
    try:
        assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    finally:
        client.set_tag(moved.info.run_id, "mvbench.torch_threads", "1")
    err = capsys.readouterr().err
    assert "computed with different torch threads 1 / 1,2;" in err
    text = (out / "table.md").read_text()
    assert "_Computed with: cpu, 1 torch thread (3 runs); cpu, 1 and 2 torch threads (1 run)._" in (
        text
    )
    listed = json.loads((out / "runs.json").read_text())["computed_with"]
    assert listed[moved.data.tags["mvbench.run_key"]] == "cpu, 1 and 2 torch threads"


def test_report_of_variants_without_the_reference_says_how_to_get_deltas(
    harness_run, tmp_path, capsys
):
    spec, store = harness_run
    argv = ["report", str(spec), "--store", str(store), "--out", str(tmp_path / "r")]
    assert main([*argv, "--variant", "random-train-clip"]) == 0
    err = capsys.readouterr().err
    assert (
        "no deltas or paired tests: the reference 'ridge' is not among the variants reported "
        in err
    )
    assert "(add --variant ridge)" in err
    assert main([*argv, "--variant", "random-train-clip", "--variant", "ridge"]) == 0
    assert "no deltas" not in capsys.readouterr().err


def test_report_on_a_profile_without_runs_says_what_to_do(harness_run, tmp_path, capsys):
    spec, store = harness_run
    code = main(["report", str(spec), "--store", str(store), "--profile", "tiny"])
    assert code == 2
    err = capsys.readouterr().err
    assert "none of its" in err and "mvbench run" in err and "--profile tiny" in err
    assert not (tmp_path / "results").exists()


def test_status_lists_every_run(harness_run, capsys):
    spec, store = harness_run
    assert main(["status", str(spec), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.count("FINISHED") == 4 and "4/4 runs finished\n" in out and "4/4" in out
    assert main(["status", "--store", str(store)]) == 0
    assert "smoke-baselines: 4 finished" in capsys.readouterr().out
