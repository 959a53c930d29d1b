"""`mvbench run` and `mvbench report` against a real MLflow tracking server over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMOKE_SUITE, seed_cache, write_spec
from mlflow import MlflowClient

from harness import tracking as T
from harness.cli import main

SUITE = "smoke-baselines"
STARTUP_SECONDS = 90  # a cold `mlflow server` takes ~15 s on a free 2-core machine


@dataclass
class Server:
    uri: str
    proc: subprocess.Popen
    folder: Path  # server.db, server-artifacts/, stdout, stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_executable() -> str:
    """The `mlflow` script of the interpreter running the tests."""
    return str(Path(sys.executable).with_name("mlflow"))


def _server_log(server: Server) -> str:
    err = (server.folder / "stderr").read_text(errors="replace")
    return f"mlflow server stderr (last 4000 characters):\n{err[-4000:]}"


def _wait_healthy(server: Server, timeout: float = STARTUP_SECONDS) -> None:
    """Poll /health until the server answers; fail with its stderr if it dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(
                f"mlflow server exited with {server.proc.returncode}\n{_server_log(server)}"
            )
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(
        f"mlflow server at {server.uri} not healthy after {timeout:.0f} s\n" + _server_log(server)
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A `mlflow server` subprocess (started, not yet waited for: it boots while the
    session's smoke suite runs); its whole process group is stopped at the end."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    command = [
        _mlflow_executable(),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination",
        str(folder / "server-artifacts"),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        # Its own session: the server forks uvicorn and a job runner, stopped as one group.
        proc = subprocess.Popen(
            command, cwd=folder, env=env, stdout=out, stderr=err, start_new_session=True
        )
    server = Server(f"http://127.0.0.1:{port}", proc, folder)
    yield server
    _stop_group(proc)


def _stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after `grace` s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            try:
                os.killpg(proc.pid, 0)  # its job runners outlive it for a few seconds
            except ProcessLookupError:
                return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture
def server_uri(mlflow_server, harness_run, monkeypatch) -> str:
    """The server's URI once it is healthy, set as MLFLOW_TRACKING_URI for this test."""
    _wait_healthy(mlflow_server)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return mlflow_server.uri


@pytest.mark.slow  # 33 s with an mlflow server; the SQLite store stays in the default run
def test_suite_tracked_and_reported_over_http(
    mlflow_server, harness_run, server_uri, one_torch_thread, tmp_path, capsys, monkeypatch
):
    spec = write_spec(tmp_path, SMOKE_SUITE)
    store = tmp_path / "store"
    seed_cache(harness_run[1], store)
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 0
    assert "4 finished, 0 already done, 0 failed" in capsys.readouterr().out
    assert not (store / "mlflow.db").exists(), "logged to the local store, not the server"

    client = MlflowClient(tracking_uri=server_uri)
    exp = client.get_experiment_by_name(SUITE)
    assert exp is not None
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.`{T.KIND}` = 'run'")
    assert sorted(r.info.status for r in children) == ["FINISHED"] * 4
    runs = {(r.data.tags[T.VARIANT], r.data.params["run.seed"]): r for r in children}
    assert sorted(runs) == [
        ("random-train-clip", "0"),
        ("random-train-clip", "1"),
        ("ridge", "0"),
        ("ridge", "1"),
    ]
    for (variant, _), r in runs.items():
        assert r.data.params["run.variant"] == variant
        assert r.data.params["run.subject"] == "subject1"
        assert 0.0 <= r.data.metrics["video_2way_top1"] <= 1.0
        samples = [a.path for a in client.list_artifacts(r.info.run_id, "samples")]
        assert "samples/contact_sheet.png" in samples
    # The artifacts went through the server's proxy into its own folder.
    sheets = list((mlflow_server.folder / "server-artifacts").rglob("contact_sheet.png"))
    assert len(sheets) == 4

    out = tmp_path / "report"
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    assert "| ridge (ref.) |" in (out / "table.md").read_text()
    assert (out / "figures" / "samples_grid.png").exists()
    # the page links each run to the server's UI
    page = (out / "index.html").read_text()
    for r in children:
        link = f"{server_uri}/#/experiments/{exp.experiment_id}/runs/{r.info.run_id}"
        assert f'<a href="{link}">' in page

    # The same seeded numbers as the session's suite, which was logged to SQLite.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    ref_spec, ref_store = harness_run
    argv = ["report", str(ref_spec), "--store", str(ref_store), "--out", str(tmp_path / "sqlite")]
    assert main(argv) == 0
    capsys.readouterr()
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "table.csv"),
        pd.read_csv(tmp_path / "sqlite" / "table.csv"),
        check_exact=True,
    )
