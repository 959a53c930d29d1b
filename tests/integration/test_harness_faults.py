"""Faults in `mvbench run`: a failing stage, kill -9, Ctrl-C, no tracking store, stale runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMOKE_SUITE, seed_cache, write_spec
from mlflow import MlflowClient

from harness import tracking as T
from harness.cli import main
from harness.plan import build_plan
from harness.spec import load_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# One seed, ridge and random-train-clip: two runs; `baselines` order is the order they run in.
FAULT_SUITE = """
suite: faults
profile: smoke
seeds: [0]
subjects: [subject1]
baselines: [{first}, {second}]
"""
SMOKE_NAME = "smoke-baselines"
ALL_STAGES = ("simulate", "foundation", "baselines", "evaluate")


def _fresh_store(
    harness_run: tuple[Path, Path], folder: Path, stages: tuple[str, ...] = ALL_STAGES[:2]
) -> Path:
    """A new store holding the given finished stages of the `harness_run` store."""
    store = folder / "store"
    seed_cache(harness_run[1], store, stages)
    return store


def _client(store: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=T.default_uri(store))


def _experiment(store: Path, suite: str) -> str:
    exp = _client(store).get_experiment_by_name(suite)
    assert exp is not None, f"no MLflow experiment {suite!r} in {store}"
    return exp.experiment_id


def _runs(store: Path, suite: str, kind: str = "run") -> list:
    """The suite's active MLflow runs of one kind: `run` (children) or `execution` (parents)."""
    return _client(store).search_runs(
        [_experiment(store, suite)], filter_string=f"tags.`{T.KIND}` = '{kind}'"
    )


def _by_variant(runs: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(r.data.tags[T.VARIANT], []).append(r)
    return out


def _stage_key(spec: Path, variant: str, stage: str) -> str:
    """The cache key of `stage` in the (first) planned run of `variant`."""
    plan = build_plan(load_spec(spec))
    run = next(r for r in plan.runs if r.variant.name == variant)
    return next(k for k in run.stages if plan.node(k).name == stage)


def _tmp_folders(store: Path) -> list[Path]:
    return sorted((store / "cache").glob("*/.tmp-*"))


def _fail_chance(monkeypatch) -> None:
    """Make the baselines stage raise for the chance baseline; ridge runs as usual."""
    from dataclasses import replace

    from mindvideo.stages.registry import stages

    registered = stages()
    original = registered["baselines"].run

    def run(cfg, inputs, out, ctx):
        if cfg.methods == ("random-train-clip",):
            raise RuntimeError("boom")
        return original(cfg, inputs, out, ctx)

    monkeypatch.setitem(registered, "baselines", replace(registered["baselines"], run=run))


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(*args: object) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *map(str, args)]


def _start_run(spec: Path, store: Path, logs: Path) -> subprocess.Popen:
    """`mvbench run` in a subprocess, its output into files (progress bars could fill a pipe)."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        return subprocess.Popen(
            _command("run", spec, "--store", store, "--quiet"),
            env=_env(),
            cwd=logs,
            stdout=out,
            stderr=err,
            # A test run started in the background inherits an ignored SIGINT; a user's
            # terminal does not: give the child the terminal's default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
        )


def _wait_for_stage(proc: subprocess.Popen, store: Path, timeout: float = 90.0) -> Path:
    """Poll until a baselines or evaluate stage is computing (its .tmp- folder exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stage in ("baselines", "evaluate"):
            found = list((store / "cache" / stage).glob(".tmp-*"))
            if found:
                return found[0]
        if proc.poll() is not None:
            pytest.fail(f"mvbench run exited ({proc.returncode}) before a stage was caught")
        time.sleep(0.02)
    pytest.fail(f"no stage started computing within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """Kill a subprocess this test started if it is still alive, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def _half_written(store: Path) -> list[Path]:
    """Published entry folders (not .tmp-) without a manifest: there should be none."""
    folders = [p for p in (store / "cache").glob("*/*") if p.is_dir()]
    published = [p for p in folders if not p.name.startswith(".tmp-")]
    return [p for p in published if not (p / "manifest.json").exists()]


def test_failed_stage_is_recorded_and_only_it_reruns(harness_run, tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, FAULT_SUITE.format(first="ridge", second="random-train-clip"))
    store = _fresh_store(harness_run, tmp_path)
    argv = ["run", str(spec), "--store", str(store), "--quiet"]
    with monkeypatch.context() as m:
        _fail_chance(m)
        assert main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED random-train-clip / subject1 / seed 0: RuntimeError: boom" in out

    runs = _by_variant(_runs(store, "faults"))
    [chance], [ridge] = runs["random-train-clip"], runs["ridge"]
    assert chance.info.status == "FAILED"
    assert "boom" in chance.data.tags[T.ERROR]
    assert chance.data.tags[T.FAILED_STAGE] == "baselines"
    client = _client(store)
    assert "error.txt" in [a.path for a in client.list_artifacts(chance.info.run_id)]
    error = client.download_artifacts(chance.info.run_id, "error.txt", str(tmp_path))
    assert "RuntimeError: boom" in Path(error).read_text()
    assert ridge.info.status == "FINISHED"

    cache = store / "cache"
    chance_baselines = _stage_key(spec, "random-train-clip", "baselines")
    assert not (cache / "baselines" / chance_baselines).exists()
    assert not (cache / "evaluate" / _stage_key(spec, "random-train-clip", "evaluate")).exists()
    assert (cache / "evaluate" / _stage_key(spec, "ridge", "evaluate") / "manifest.json").exists()
    assert _tmp_folders(store) == []

    assert main(argv) == 0  # the patch is undone: chance runs, ridge is done
    assert "1 finished, 1 already done, 0 failed" in capsys.readouterr().out
    runs = _by_variant(_runs(store, "faults"))
    assert sorted(r.info.status for r in runs["random-train-clip"]) == ["FAILED", "FINISHED"]
    assert [r.info.run_id for r in runs["ridge"]] == [ridge.info.run_id]
    assert _client(store).get_run(ridge.info.run_id).info.status == "FINISHED"
    assert (cache / "baselines" / chance_baselines / "manifest.json").exists()
    assert _tmp_folders(store) == []


def test_fail_fast_stops_before_the_next_run(harness_run, tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, FAULT_SUITE.format(first="random-train-clip", second="ridge"))
    store = _fresh_store(harness_run, tmp_path)
    _fail_chance(monkeypatch)
    assert main(["run", str(spec), "--store", str(store), "--quiet", "--fail-fast"]) == 1
    assert "1 not run (--fail-fast)" in capsys.readouterr().out
    runs = _by_variant(_runs(store, "faults"))
    assert list(runs) == ["random-train-clip"]
    assert [r.info.status for r in runs["random-train-clip"]] == ["FAILED"]
    assert not (store / "cache" / "baselines" / _stage_key(spec, "ridge", "baselines")).exists()
    [parent] = _runs(store, "faults", kind="execution")
    assert parent.info.status == "FAILED"


@pytest.mark.slow  # 24 s; the atomic cache write is unit-tested in test_harness_cache
def test_kill_9_mid_stage_then_resume(harness_run, tmp_path, capsys):
    spec = write_spec(tmp_path, SMOKE_SUITE)
    store = _fresh_store(harness_run, tmp_path)
    proc = _start_run(spec, store, tmp_path / "killed")
    try:
        computing = _wait_for_stage(proc, store)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop(proc)
    assert computing.is_dir(), "the stage finished before the kill: not killed mid-stage"
    assert _half_written(store) == []
    [left] = [r for r in _runs(store, SMOKE_NAME) if r.info.status == "RUNNING"]

    resumed = subprocess.run(
        _command("run", spec, "--store", store),
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "left RUNNING by a dead process marked KILLED" in resumed.stderr
    assert _tmp_folders(store) == []
    assert _half_written(store) == []

    children = _runs(store, SMOKE_NAME)
    finished: dict[str, int] = {}
    for r in children:
        if r.info.status == "FINISHED":
            finished[r.data.tags[T.RUN_KEY]] = finished.get(r.data.tags[T.RUN_KEY], 0) + 1
    planned = [run.key for run in build_plan(load_spec(spec)).runs]
    assert finished == dict.fromkeys(planned, 1)
    assert _client(store).get_run(left.info.run_id).info.status == "KILLED"

    assert main(["report", str(spec), "--store", str(store), "--out", str(tmp_path / "A")]) == 0
    ref_spec, ref_store = harness_run
    argv = ["report", str(ref_spec), "--store", str(ref_store), "--out", str(tmp_path / "B")]
    assert main(argv) == 0
    capsys.readouterr()
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "A" / "table.csv"),
        pd.read_csv(tmp_path / "B" / "table.csv"),
        check_exact=True,
    )


@pytest.mark.slow  # a subprocess per signal; a failed stage's record stays in the default run
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_marks_the_run_killed_and_keeps_nothing_half_written(harness_run, tmp_path, signum):
    spec = write_spec(tmp_path, SMOKE_SUITE)
    store = _fresh_store(harness_run, tmp_path)
    logs = tmp_path / "interrupted"
    proc = _start_run(spec, store, logs)
    try:
        _wait_for_stage(proc, store)
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=60)
    finally:
        _stop(proc)
    stderr = (logs / "stderr").read_text()
    assert code == 130, stderr[-3000:]
    assert "resume" in stderr
    assert "Traceback" not in stderr
    assert _tmp_folders(store) == []
    assert _half_written(store) == []

    statuses = [r.info.status for r in _runs(store, SMOKE_NAME)]
    assert "RUNNING" not in statuses
    [killed] = [r for r in _runs(store, SMOKE_NAME) if r.info.status == "KILLED"]
    assert "interrupted" in killed.data.tags[T.ERROR]
    [parent] = _runs(store, SMOKE_NAME, kind="execution")
    assert parent.info.status == "KILLED"


def _closed_port() -> int:
    """A localhost port nothing listens on (checked by a refused connection)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is in use"
    return port


def test_unreachable_tracking_server_fails_fast_and_clearly(tmp_path, monkeypatch, capfd):
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    spec = write_spec(tmp_path, SMOKE_SUITE)
    store = tmp_path / "store"
    started = time.monotonic()
    code = main(["run", str(spec), "--store", str(store), "--quiet"])
    seconds = time.monotonic() - started
    err = capfd.readouterr().err
    assert code == 2
    assert seconds < 4, f"took {seconds:.1f} s to give up on {uri}"
    assert uri in err
    assert "unset MLFLOW_TRACKING_URI" in err and "mlflow server" in err
    assert "Traceback" not in err
    assert not (store / "cache").exists()
    assert not (store / "mlflow.db").exists()


def test_bad_processes_count_is_refused_before_any_work(tmp_path, capsys):
    spec = write_spec(tmp_path, SMOKE_SUITE)
    store = tmp_path / "store"
    assert main(["run", str(spec), "--store", str(store), "--processes", "0"]) == 2
    assert "--processes 0: give 1 or more" in capsys.readouterr().err
    assert not store.exists()


def test_run_left_running_by_a_dead_worker_runs_again(harness_run, tmp_path, capsys):
    spec = write_spec(tmp_path, SMOKE_SUITE)
    store = _fresh_store(harness_run, tmp_path, ALL_STAGES)
    argv = ["run", str(spec), "--store", str(store), "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()

    # A worker that died mid-run: its child was RUNNING, and no FINISHED child of the key is
    # left (the one we have is deleted); a reaped pid and start time 0 name a dead process.
    client = _client(store)
    [finished] = [
        r
        for r in _runs(store, SMOKE_NAME)
        if r.info.run_name == "random-train-clip / subject1 / seed 1"
    ]
    key = finished.data.tags[T.RUN_KEY]
    client.delete_run(finished.info.run_id)
    dead = subprocess.Popen(["true"])
    dead.wait()
    tags = {k: v for k, v in finished.data.tags.items() if k.startswith("mvbench.")}
    tags |= {T.PARENT: finished.data.tags[T.PARENT]}
    tags[T.WORKER] = f"{socket.gethostname()}:{dead.pid}:0"
    stale = client.create_run(
        _experiment(store, SMOKE_NAME), run_name=finished.info.run_name, tags=tags
    )
    assert stale.info.status == "RUNNING"

    assert main(["status", str(spec), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    [row] = [
        ln for ln in out.splitlines() if ln.split()[:3] == ["random-train-clip", "subject1", "1"]
    ]
    assert "RUNNING" in row and "worker died" in row
    assert "3/4 runs finished (by seed: 0 2/2, 1 1/2)\n" in out

    assert main(["run", str(spec), "--store", str(store)]) == 0  # not --quiet: the note
    captured = capsys.readouterr()
    assert "1 finished, 3 already done, 0 failed" in captured.out
    assert "left RUNNING by a dead process marked KILLED" in captured.err
    after = client.get_run(stale.info.run_id)
    assert after.info.status == "KILLED"
    assert after.data.tags.get("mvbench.stale") == "worker died"
    same_key = [r for r in _runs(store, SMOKE_NAME) if r.data.tags[T.RUN_KEY] == key]
    assert sorted(r.info.status for r in same_key) == ["FINISHED", "KILLED"]
