"""The pool and slurm executors, run leases and crash safety, on the smoke suite."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import SMOKE_SUITE, make_cc2017, seed_cache, write_spec
from mlflow import MlflowClient

from harness import tracking as T
from harness.cli import main
from harness.launchers import pool_slots, submitit_parameters, subplan
from harness.lease import RunLease, store_id
from harness.plan import build_plan, select_runs
from harness.runner import run_params, run_tags
from harness.spec import load_spec
from harness.tracking import Tracker

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMOKE_NAME = "smoke-baselines"
# The smoke suite on one seed (ridge and random-train-clip): two runs, in the harness_run store.
ONE_SEED = SMOKE_SUITE.replace("seeds: [0, 1]", "seeds: [0]")
assert ONE_SEED != SMOKE_SUITE
UPSTREAM = ("simulate", "foundation")
ALL_STAGES = (*UPSTREAM, "baselines", "evaluate")


def _store(harness_run: tuple[Path, Path], folder: Path, stages=UPSTREAM) -> Path:
    """A new store holding the given finished stages of the `harness_run` store."""
    store = folder / "store"
    seed_cache(harness_run[1], store, stages)
    return store


def _runs(store: Path, kind: str = "run", suite: str = SMOKE_NAME) -> list:
    client = MlflowClient(tracking_uri=T.default_uri(store))
    exp = client.get_experiment_by_name(suite)
    assert exp is not None, f"no MLflow experiment {suite!r} in {store}"
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{T.KIND}` = '{kind}'")


def _statuses(store: Path, suite: str = SMOKE_NAME) -> dict[str, list[str]]:
    """Run key -> the statuses of its child runs (sorted)."""
    out: dict[str, list[str]] = {}
    for r in _runs(store, suite=suite):
        out.setdefault(r.data.tags[T.RUN_KEY], []).append(r.info.status)
    return {k: sorted(v) for k, v in out.items()}


def _planned(spec: Path) -> list[str]:
    return [run.key for run in build_plan(load_spec(spec)).runs]


def _table(spec: Path, store: Path, out: Path) -> pd.DataFrame:
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    return pd.read_csv(out / "table.csv")


def _assert_local_table(harness_run, spec: Path, store: Path, folder: Path) -> None:
    """The suite's table from `store` is the one the local executor gave (harness_run, whose
    runs include every run of `spec`)."""
    pd.testing.assert_frame_equal(
        _table(spec, store, folder / "report"),
        _table(spec, harness_run[1], folder / "reference"),
        rtol=1e-9,  # workers may use other torch thread counts than the reference run
    )


def _pids(children: list) -> set[int]:
    return {int(c.data.tags[T.WORKER].rsplit(":", 2)[1]) for c in children}


def _argv(spec: Path, store: Path, *extra: str) -> list[str]:
    return ["run", str(spec), "--store", str(store), *extra]


@pytest.mark.slow  # 40 s of subprocesses; the lease is tested in-process
def test_pool_of_two_workers_gives_the_local_table_and_runs_each_run_once(
    harness_run, tmp_path, capsys
):
    spec = write_spec(tmp_path, SMOKE_SUITE)
    store = _store(harness_run, tmp_path)  # the workers compute baselines and evaluate
    assert main(_argv(spec, store, "--quiet", "--executor", "pool", "--workers", "2")) == 0
    assert "4 finished, 0 already done, 0 failed" in capsys.readouterr().out
    assert _statuses(store) == dict.fromkeys(_planned(spec), ["FINISHED"])
    children = _runs(store)
    [parent] = _runs(store, kind="execution")
    assert {c.data.tags[T.PARENT] for c in children} == {parent.info.run_id}
    assert os.getpid() not in _pids(children)  # run by the workers, not the parent
    assert not list((store / "leases").glob("*/*.lease"))  # every lease released
    _assert_local_table(harness_run, spec, store, tmp_path)


@pytest.mark.slow  # 13 s of submitit jobs; the job's command is unit-tested
def test_slurm_jobs_through_submitit_local_give_the_local_table(harness_run, tmp_path, capsys):
    spec = write_spec(tmp_path, ONE_SEED)
    store = _store(harness_run, tmp_path, ALL_STAGES)  # a job starts in seconds: keep them light
    assert main(_argv(spec, store, "--quiet", "--executor", "slurm", "--slurm-local")) == 0
    assert "2 finished, 0 already done, 0 failed" in capsys.readouterr().out
    assert _statuses(store) == dict.fromkeys(_planned(spec), ["FINISHED"])
    pids = _pids(_runs(store))
    assert len(pids) == 2 and os.getpid() not in pids  # one job, one process, per run
    [exp] = [p.name for p in (store / "slurm").iterdir()]
    assert len(list((store / "slurm" / exp).glob("*_result.pkl"))) == 2  # submitit's results
    _assert_local_table(harness_run, spec, store, tmp_path)


@pytest.mark.slow  # minutes of subprocesses; the lease is tested in-process below
def test_pool_worker_killed_mid_run_its_run_runs_again(harness_run, tmp_path, capfd):
    spec = write_spec(tmp_path, ONE_SEED)
    store = _store(harness_run, tmp_path)
    killed: dict[str, str] = {}

    def kill_a_worker_mid_run() -> None:
        """SIGKILL the holder of a run's lease once its MLflow child is RUNNING."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for lease in (store / "leases").glob("*/*.lease"):
                try:
                    worker = json.loads(lease.read_text())["worker"]
                    running = [
                        r
                        for r in _runs(store)
                        if r.data.tags[T.RUN_KEY] == lease.stem
                        and r.data.tags[T.WORKER] == worker
                        and r.info.status == "RUNNING"
                    ]
                except (OSError, ValueError, KeyError, AssertionError):
                    continue  # not written yet, or released meanwhile
                if running:
                    os.kill(int(worker.rsplit(":", 2)[1]), signal.SIGKILL)
                    killed.update(key=lease.stem, worker=worker)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker_mid_run, daemon=True)
    killer.start()
    code = main(_argv(spec, store, "--executor", "pool", "--workers", "2"))
    killer.join(timeout=5)
    out, err = capfd.readouterr()
    assert killed, "no worker was caught mid-run"
    assert code == 0, err[-3000:]
    assert "2 finished, 0 already done, 0 failed" in out
    assert "died (exit code -9)" in err and "it runs again" in err

    statuses = _statuses(store)
    assert statuses.pop(killed["key"]) == ["FINISHED", "KILLED"]
    assert statuses == dict.fromkeys(set(_planned(spec)) - {killed["key"]}, ["FINISHED"])
    [dead] = [r for r in _runs(store) if r.info.status == "KILLED"]
    assert dead.data.tags[T.WORKER] == killed["worker"]
    assert f"worker {killed['worker']} died" in dead.data.tags[T.STALE]


ONE_RUN = """
suite: lease
profile: smoke
seeds: [0]
subjects: [subject1]
baselines: [ridge]
"""


@pytest.mark.slow  # 18 s with the suite it needs; stale leases are tested in-process below
def test_run_of_a_silent_worker_on_another_host_runs_again_after_the_lease_timeout(
    harness_run, tmp_path, capsys, monkeypatch
):
    spec = write_spec(tmp_path, ONE_RUN)
    store = _store(harness_run, tmp_path, ALL_STAGES)
    plan = build_plan(load_spec(spec))
    [run] = plan.runs
    tracker = Tracker(store)
    exp = tracker.experiment(plan.suite)
    # A worker on node-b claimed the run and started it, then went silent (hung, or its
    # machine lost the network): the pid check cannot see it, only the heartbeat can.
    other = "node-b:4242:99"
    hung = RunLease(store / "leases" / exp, run.key, timeout_s=1.0, label=run.label, worker=other)
    assert hung.acquire().acquired
    tags = run_tags(plan, run) | {T.LEASE_STORE: store_id(store), T.WORKER: other}
    child = tracker.start_child(exp, tracker.start_parent(exp, {}), run.label, tags)
    argv = _argv(spec, store, "--lease-timeout", "1")

    assert main(argv) == 0  # while it beats, a live worker elsewhere holds the run
    assert "1 running in another live process (skipped)" in capsys.readouterr().out
    assert tracker.client.get_run(child).info.status == "RUNNING"

    assert main(["status", str(spec), "--store", str(store)]) == 0
    assert f"worker {other}, heartbeat " in capsys.readouterr().out

    hung.stop_heartbeat()
    time.sleep(1.2)  # more than the timeout without a heartbeat
    monkeypatch.setenv("MVBENCH_LEASE_TIMEOUT", "1")
    assert main(["status", str(spec), "--store", str(store)]) == 0
    assert "no heartbeat for" in capsys.readouterr().out
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "1 finished" in out
    assert "no heartbeat for" in err and "marked KILLED, running it again" in err
    stale = tracker.client.get_run(child)
    assert stale.info.status == "KILLED"
    assert "no heartbeat for" in stale.data.tags[T.STALE] and other in stale.data.tags[T.STALE]
    assert _statuses(store, "lease") == {run.key: ["FINISHED", "KILLED"]}
    # Were node-b to wake up, it would find its lease gone and not mark its run FINISHED.
    assert not hung.held() and hung.lost
    hung.release()
    assert not list((store / "leases").glob("*/*.lease"))


def _start_run(spec: Path, store: Path, logs: Path) -> subprocess.Popen:
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "harness.cli", *_argv(spec, store, "--quiet")],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            cwd=logs,
            stdout=out,
            stderr=err,
        )


@pytest.mark.slow  # the lease race itself is tested in-process below
def test_two_executions_at_once_never_run_the_same_run(harness_run, tmp_path):
    spec = write_spec(tmp_path, ONE_SEED)
    store = _store(harness_run, tmp_path)  # runs compute for seconds: the executions overlap
    Tracker(store)  # the MLflow database exists before the workers start (as `mvbench run`)
    procs = [_start_run(spec, store, tmp_path / f"run{i}") for i in range(2)]
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outs = [(tmp_path / f"run{i}" / "stdout").read_text() for i in range(2)]
    assert codes == [0, 0], [(tmp_path / f"run{i}" / "stderr").read_text()[-2000:] for i in (0, 1)]
    assert len(_runs(store, kind="execution")) == 2  # both started while runs were left to do
    # Every run key has exactly one child run: no run was started twice.
    assert _statuses(store) == dict.fromkeys(_planned(spec), ["FINISHED"])
    finished = [int(out.split(f"suite {SMOKE_NAME}: ")[1].split(" finished")[0]) for out in outs]
    assert sum(finished) == 2


def _race(claimers: list[RunLease]) -> list:
    """Every lease tries to claim at the same moment (one thread each)."""
    barrier = threading.Barrier(len(claimers))
    claims: list = [None] * len(claimers)

    def claim(i: int) -> None:
        barrier.wait()
        claims[i] = claimers[i].acquire()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return claims


def test_one_claimer_wins_a_run_and_a_stale_lease_is_broken_exactly_once(tmp_path):
    folder = tmp_path / "leases" / "1"
    fresh = [RunLease(folder, "fresh", timeout_s=0.6) for _ in range(8)]
    assert sum(c.acquired for c in _race(fresh)) == 1

    # A heartbeat keeps a lease live past its timeout.
    [winner] = [lease for lease in fresh if lease.held()]
    time.sleep(1.0)
    claim = RunLease(folder, "fresh", timeout_s=0.6).acquire()
    assert not claim.acquired and claim.holder.token == winner.token and not claim.holder.stale

    # A lease whose holder stopped beating is broken by exactly one of many claimers.
    hung = RunLease(folder, "stale", timeout_s=0.6, worker="node-b:1:1")
    assert hung.acquire().acquired
    hung.stop_heartbeat()
    time.sleep(0.8)
    claimers = [RunLease(folder, "stale", timeout_s=0.6) for _ in range(8)]
    claims = _race(claimers)
    broke = [(lease, c) for lease, c in zip(claimers, claims, strict=True) if c.acquired]
    assert len(broke) == 1
    new, claim = broke[0]
    assert claim.holder.worker == "node-b:1:1" and "no heartbeat" in claim.holder.stale
    assert all(c.holder.token == new.token for c in claims if not c.acquired)
    assert not hung.held() and "taken over" in hung.lost
    hung.release()  # the hung worker's release leaves the new holder's lease alone
    assert new.held() and new.path.exists()
    for lease in [winner, new]:
        lease.release()
    assert not list(folder.glob("*.lease"))


def test_an_exited_unreaped_worker_is_dead_and_its_lease_is_broken(tmp_path):
    """A worker that exited but whose parent has not reaped it (a zombie) still answers
    kill(pid, 0); it runs nothing, so its lease must not block the run."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    worker = f"{T.socket.gethostname()}:{child.pid}:{T._process_start(child.pid)}"
    deadline = time.time() + 10
    while T._proc_stat(child.pid)[:1] != ["Z"] and time.time() < deadline:
        time.sleep(0.05)
    try:
        assert T._proc_stat(child.pid)[:1] == ["Z"], "the child did not become a zombie"
        assert T.worker_alive(worker) is False
        folder = tmp_path / "leases" / "1"
        held = RunLease(folder, "run", timeout_s=60, worker=worker)
        assert held.acquire().acquired
        held.stop_heartbeat()  # its heartbeat is fresh: only the dead holder makes it stale
        claim = RunLease(folder, "run", timeout_s=60).acquire()
        assert claim.acquired and "died" in claim.holder.stale
    finally:
        child.wait()
    assert T.worker_alive(T.this_worker()) is True


def test_resources_change_no_stage_key_and_no_run_key(tmp_path):
    spec = load_spec(write_spec(tmp_path, SMOKE_SUITE))
    base = build_plan(spec)
    resources = {
        "resources.partition": "gpu",
        "resources.gpus_per_job": 4,
        "resources.cpus_per_job": 16,
        "resources.mem_gb": 128,
        "resources.timeout_min": 600,
        "resources.slurm_array_parallelism": 3,
        "resources.slurm_additional_parameters": {"account": "lab", "qos": "high"},
    }
    other = build_plan(spec, resources)
    assert [r.key for r in other.runs] == [r.key for r in base.runs]
    assert [r.stages for r in other.runs] == [r.stages for r in base.runs]
    assert other.runs[0].profile.resources != base.runs[0].profile.resources
    assert run_params(other.runs[0]) == run_params(base.runs[0])  # not logged as params
    params = submitit_parameters(other.runs[0].profile.resources, "mvbench-x")
    assert params["gpus_per_node"] == 4 and params["cpus_per_task"] == 16
    assert params["slurm_partition"] == "gpu" and params["slurm_array_parallelism"] == 3
    assert params["slurm_additional_parameters"] == {"account": "lab", "qos": "high"}


def test_pool_gives_each_worker_one_gpu_or_its_share_of_the_cores():
    slots = pool_slots(3, None, gpus=["0", "1"])
    assert [s.gpu for s in slots] == ["0", "1", "0"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "0"]
    assert [s.gpu for s in pool_slots(None, None, gpus=["2", "5"])] == ["2", "5"]
    cpu = pool_slots(1, "cpu", gpus=[])
    assert cpu[0].gpu is None and "CUDA_VISIBLE_DEVICES" not in cpu[0].env
    assert cpu[0].threads == len(os.sched_getaffinity(0))
    assert all(s.threads >= 1 for s in pool_slots(64, "cpu", gpus=[]))
    pinned = pool_slots(2, "cpu", gpus=[], threads=3)  # --threads 3
    assert [s.threads for s in pinned] == [3, 3] and pinned[0].env["OMP_NUM_THREADS"] == "3"


@pytest.mark.slow  # 7 s; search --threads (test_search) runs the same context in the default run
def test_threads_option_sets_the_stages_torch_threads_and_restores_them(
    harness_run, tmp_path, capsys
):
    """`--threads N`: the stages computed here use N torch threads (recorded in their
    manifests and the run's tag); the process gets its own count back afterwards."""
    spec = write_spec(tmp_path, ONE_SEED)
    store = _store(harness_run, tmp_path)  # simulate, foundation: computed with 1 thread
    assert torch.get_num_threads() == 1
    assert main(_argv(spec, store, "--quiet", "--threads", "2")) == 0
    assert torch.get_num_threads() == 1
    manifests = [json.loads(p.read_text()) for p in (store / "cache").glob("*/*/manifest.json")]
    assert {m["threads"] for m in manifests if m["stage"] in ("baselines", "evaluate")} == {2}
    assert {r.data.tags[T.THREADS] for r in _runs(store)} == {"1,2"}


def test_a_running_run_says_which_stage_it_is_in_and_how_far(harness_run, tmp_path, monkeypatch):
    """Each computed stage reports its start and progress to the run's lease, which is how
    `mvbench status` shows them; stages found in the cache report nothing."""
    heard: list[tuple[str, int, int | None, str]] = []
    report = RunLease.report

    def spy(self, stage, done, units, what, elapsed_s):
        heard.append((stage, done, units, what))
        assert self.held() and elapsed_s >= 0.0
        report(self, stage, done, units, what, elapsed_s)
        assert RunLease(self.folder, self.path.stem).holder().progress.startswith(f"stage {stage}")

    monkeypatch.setattr(RunLease, "report", spy)
    spec = write_spec(tmp_path, ONE_RUN)
    store = _store(harness_run, tmp_path)  # simulate and foundation cached
    assert main(_argv(spec, store, "--quiet")) == 0
    assert sorted({h[0] for h in heard}) == ["baselines", "evaluate"]
    evaluate = [h for h in heard if h[0] == "evaluate"]
    assert evaluate[0][1] == 0 and evaluate[-1][1] == evaluate[-1][2]  # from start to end
    assert not list((store / "leases").glob("*/*.progress"))  # gone with the lease


def test_a_lease_shows_its_holders_last_progress_report(tmp_path):
    folder = tmp_path / "leases"
    # on another host (no pid to check): only its heartbeat tells whether it lives
    lease = RunLease(folder, "run", 0.6, label="full / subject1 / seed 0", worker="node-b:1:1")
    lease.report("cotrain", 1, 6, "epoch 1/4", 1.0)  # not held: nothing to say
    assert not lease.progress_path.exists()
    assert lease.acquire().acquired
    assert RunLease(folder, "run").holder().progress == ""
    lease.report("cotrain", 2, 6, "epoch 1/4 loss 0.0412", 30.0)
    holder = RunLease(folder, "run").holder()
    assert re.fullmatch(
        r"stage cotrain 2/6 \(epoch 1/4 loss 0\.0412\), 3[01] s in", holder.progress
    )
    assert holder.description.startswith(holder.progress + "; worker ")
    lease.report("decode", 0, None, "", 7200.0)  # units not counted: none shown
    assert RunLease(folder, "run").holder().progress == "stage decode, 2 h 00 min in"
    # a report left by another claim of the run is not this holder's
    other = json.loads(lease.progress_path.read_text()) | {"token": "another claim"}
    lease.progress_path.write_text(json.dumps(other))
    assert RunLease(folder, "run").holder().progress == ""
    lease.progress_path.write_text("{half a repo")  # damaged: no progress, the lease holds
    assert RunLease(folder, "run").holder().progress == "" and lease.held()
    lease.report("decode", 1, 3, "", 5.0)
    # broken as stale by another claimer: the hung worker's report goes with its lease
    lease.stop_heartbeat()
    time.sleep(0.8)  # more than the timeout without a heartbeat
    taker = RunLease(folder, "run", timeout_s=0.6)
    assert taker.holder().stale and taker.holder().progress == ""  # stale: not shown
    assert taker.acquire().acquired and not lease.progress_path.exists()
    taker.release()
    lease.release()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--executor", "pool", "--workers", "0"], "--workers 0: give 1 or more worker processes"),
        (["--workers", "2"], "--workers 2 applies to --executor pool"),
        (["--slurm-local"], "add --executor slurm"),
        (["--executor", "pool", "--processes", "2"], "--processes 2 with --executor pool"),
        (["--executor", "pool", "--device", "cuda:1"], "--device cuda:1 with --executor pool"),
        (["--lease-timeout", "0"], "--lease-timeout 0.0: give a number of seconds > 0"),
        (["--executor", "pool", "--threads", "0"], "--threads 0: give 1 or more torch threads"),
    ],
    ids=[
        "workers-0",
        "workers-local",
        "slurm-local-alone",
        "pool-processes",
        "pool-device",
        "lease",
        "threads-0",
    ],
)
def test_bad_executor_options_are_refused_before_any_work(tmp_path, capsys, options, message):
    spec = write_spec(tmp_path, SMOKE_SUITE)
    store = tmp_path / "store"
    assert main(_argv(spec, store, *options)) == 2
    assert message in capsys.readouterr().err
    assert not store.exists()


def test_slurm_without_submitit_or_without_slurm_says_what_to_do(tmp_path, capsys, monkeypatch):
    spec = write_spec(tmp_path, SMOKE_SUITE)
    store = tmp_path / "store"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "submitit", None)  # as if not installed
        assert main(_argv(spec, store, "--executor", "slurm")) == 2
    assert "pip install 'submitit>=1.5'" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    assert main(_argv(spec, store, "--executor", "slurm")) == 2
    err = capsys.readouterr().err
    assert "sbatch is not on PATH" in err and "--slurm-local" in err
    assert not store.exists()


def test_a_selected_or_dispatched_run_keeps_its_real_datasets_node(tmp_path):
    root = make_cc2017(tmp_path / "cc2017")
    spec = load_spec(write_spec(tmp_path, ONE_SEED))
    real = {"data.source": "cc2017", "data.root": str(root), "data.synth": None}
    plan = build_plan(spec, real)
    for part in (select_runs(plan, ["ridge"]), subplan(plan, plan.runs[:1])):
        [run] = part.runs
        inputs = {k for key in run.stages for k in part.node(key).inputs.values()}
        assert inputs <= set(part.nodes)
        assert "dataset" in {part.node(k).name for k in inputs}
