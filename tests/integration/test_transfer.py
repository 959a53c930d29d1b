"""`mvbench export` / `mvbench import`: finished runs carried to another store give the same
report there, are not run again, and bad folders get errors that say what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMOKE_SUITE, write_spec
from mlflow import MlflowClient

from harness import tracking as T
from harness.cli import main
from harness.transfer import MANIFEST, RUNS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUITE = "smoke-baselines"


def _children(store: Path) -> list:
    client = MlflowClient(tracking_uri=T.default_uri(store))
    exp = client.get_experiment_by_name(SUITE)
    assert exp is not None
    return client.search_runs([exp.experiment_id], f"tags.`{T.KIND}` = 'run'")


def _table(spec: Path, store: Path, out: Path) -> pd.DataFrame:
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    return pd.read_csv(out / "table.csv")


def _export(spec: Path, store: Path, out: Path, *extra: str) -> int:
    return main(["export", str(spec), "--store", str(store), "--out", str(out), *extra])


def test_exported_runs_report_the_same_in_a_new_store_and_are_not_run_again(
    harness_run, tmp_path, capsys
):
    spec, source = harness_run
    bundle = tmp_path / "bundle"
    # two exports into one folder: seed 0 with the report's artifacts only, then seed 1
    assert _export(spec, source, bundle, "--seed", "0", "--artifacts", "report") == 0
    assert _export(spec, source, bundle, "--seed", "1", "--variant", "ridge") == 0
    assert (
        _export(
            spec,
            source,
            bundle,
            "--seed",
            "1",
            "--variant",
            "random-train-clip",
            "--artifacts",
            "scores",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "exported 2 finished runs of smoke-baselines" in out
    assert "exported 1 finished runs of smoke-baselines" in out
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert len(manifest["runs"]) == 4 and manifest["suite"] == SUITE
    seed0 = [k for k, label in manifest["runs"].items() if label.endswith("seed 0")]
    files = {p.name for k in seed0 for p in (bundle / RUNS / k / "artifacts").rglob("*.*")}
    assert "per_sample.npz" in files and not any(f.endswith(".gif") for f in files)
    assert "samples.npz" in files
    (scores_only,) = [
        k
        for k, label in manifest["runs"].items()
        if label == "random-train-clip / subject1 / seed 1"
    ]
    files = {p.name for p in (bundle / RUNS / scores_only / "artifacts").rglob("*.*")}
    assert files == {"config.yaml", "scores.json", "per_sample.npz"}

    store = tmp_path / "store"
    assert main(["import", str(bundle), "--store", str(store)]) == 0
    captured = capsys.readouterr()
    assert "imported 4 runs of smoke-baselines (smoke)" in captured.out
    assert f"Next: mvbench report {spec} --store {store}" in captured.out
    assert "warning" not in captured.err

    # the same table, paired tests included, from the imported runs alone
    pd.testing.assert_frame_equal(
        _table(spec, store, tmp_path / "imported"), _table(spec, source, tmp_path / "source")
    )
    # metric histories, params and the run keys carried over; the source is named
    by_key = {r.data.tags[T.RUN_KEY]: r for r in _children(source) if r.info.status == "FINISHED"}
    client = MlflowClient(tracking_uri=T.default_uri(store))
    for r in _children(store):
        original = by_key[r.data.tags[T.RUN_KEY]]
        assert r.data.params == original.data.params
        assert r.data.metrics == original.data.metrics
        assert r.info.end_time == original.info.end_time
        assert r.data.tags[T.RUN_KEY] == original.data.tags[T.RUN_KEY]
        assert r.data.tags["mvbench.imported_from"] == T.default_uri(source)
        name = next(iter(original.data.metrics))
        history = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, name)]
        source_client = MlflowClient(tracking_uri=T.default_uri(source))
        assert history == [
            (m.step, m.value) for m in source_client.get_metric_history(original.info.run_id, name)
        ]

    parents = client.search_runs(
        [_children(store)[0].info.experiment_id], f"tags.`{T.KIND}` = 'execution'"
    )
    assert [p.info.run_name.split()[0] for p in parents] == ["import"]
    assert main(["status", str(spec), "--store", str(store)]) == 0
    status = capsys.readouterr().out
    rows = [line for line in status.splitlines() if " FINISHED " in line]
    assert len(rows) == 4 and all(f"imported from {T.default_uri(source)}" in r for r in rows)
    assert main(["status", str(spec), "--store", str(store), "--seed", "1"]) == 0
    status = capsys.readouterr().out
    assert status.count(" FINISHED ") == 2 and "2/2 runs finished" in status
    assert main(["status", "--store", str(store), "--seed", "1"]) == 2
    assert "select runs of a suite: give its spec" in capsys.readouterr().err
    # `mvbench run` finds them done and computes nothing
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 0
    assert "0 finished, 4 already done" in capsys.readouterr().out
    assert not (store / "cache").exists() or not any((store / "cache").rglob("manifest.json"))

    # importing again adds nothing
    assert main(["import", str(bundle), "--store", str(store)]) == 0
    assert "imported 0 runs" in capsys.readouterr().out
    assert len(_children(store)) == 4


def test_import_warns_about_runs_the_spec_no_longer_plans(harness_run, tmp_path, capsys):
    spec, source = harness_run
    copy = write_spec(tmp_path / "spec", SMOKE_SUITE)
    bundle = tmp_path / "bundle"
    assert _export(copy, source, bundle, "--artifacts", "report") == 0
    # the spec changes after the export: seed 1 is no longer planned
    copy.write_text(SMOKE_SUITE.replace("seeds: [0, 1]", "seeds: [0]"))
    assert main(["import", str(bundle), "--store", str(tmp_path / "store")]) == 0
    err = capsys.readouterr().err
    assert "warning: 2 of the imported runs are not runs of" in err and str(copy) in err


def test_export_and_import_errors_name_the_folder_and_what_to_do(harness_run, tmp_path, capsys):
    spec, source = harness_run
    store = tmp_path / "store"

    def error(argv: list[str]) -> str:
        assert main(argv) == 2
        return capsys.readouterr().err

    # reading runs from a store that has none is an error, and leaves no empty store behind
    fresh = tmp_path / "fresh"
    for argv in (["export", str(spec), "--out", str(tmp_path / "x")], ["report", str(spec)]):
        msg = error([*argv, "--store", str(fresh)])
        assert f"no tracking store at {fresh / 'mlflow.db'}" in msg and "mvbench run" in msg
    assert not fresh.exists() and not (tmp_path / "x").exists()
    assert "no such folder" in error(["import", str(tmp_path / "nowhere"), "--store", str(store)])
    (tmp_path / "empty").mkdir()
    msg = error(["import", str(tmp_path / "empty"), "--store", str(store)])
    assert f"no {MANIFEST}" in msg and "mvbench export" in msg

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    msg = error(["export", str(spec), "--store", str(source), "--out", str(tmp_path / "busy")])
    assert "holds files but no" in msg
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"

    bundle = tmp_path / "bundle"
    assert _export(spec, source, bundle, "--artifacts", "report") == 0
    other = write_spec(tmp_path / "other", SMOKE_SUITE.replace(SUITE, "another-suite"))
    msg = error(["export", str(other), "--store", str(source), "--out", str(bundle)])
    assert "holds runs of suite 'smoke-baselines'" in msg  # (another-suite has no runs anyway)
    manifest = json.loads((bundle / MANIFEST).read_text())
    (bundle / MANIFEST).write_text(json.dumps(manifest | {"overrides": ["data.window=3"]}))
    msg = error(["export", str(spec), "--store", str(source), "--out", str(bundle)])
    assert "exported with --set data.window=3, these with --set (none)" in msg
    (bundle / MANIFEST).write_text(json.dumps(manifest))

    capsys.readouterr()
    key = next(iter(json.loads((bundle / MANIFEST).read_text())["runs"]))
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    record = json.loads((broken / RUNS / key / "run.json").read_text())
    (broken / RUNS / key / "run.json").write_text(json.dumps(record | {"tags": []}))
    assert "must be mappings" in error(["import", str(broken), "--store", str(store)])
    shutil.rmtree(broken / RUNS / key)
    msg = error(["import", str(broken), "--store", str(store)])
    assert f"{key}/run.json: missing" in msg and "export the runs again" in msg
    (broken / MANIFEST).write_text("{not json")
    assert "not a readable run export" in error(["import", str(broken), "--store", str(store)])
    # nothing was half-imported
    client = MlflowClient(tracking_uri=T.default_uri(store))
    exp = client.get_experiment_by_name(SUITE)
    assert exp is None or not client.search_runs([exp.experiment_id])

    assert (store / "mlflow.db").exists()  # (the failed imports made it, with no runs)
    msg = error(["export", str(spec), "--store", str(store), "--out", str(tmp_path / "x")])
    assert "none of its 4 runs has finished" in msg and "nothing to export" in msg
