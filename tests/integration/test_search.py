"""`mvbench search`: Optuna searches over a profile at smoke scale (spec validation, trials
tracked in Optuna and MLflow, resume, failures, pruning, several workers, a killed worker,
PostgreSQL storage) and `mvbench report` of a study. The trials decode with the ridge baseline
on features that fit in a second (simulate and foundation come from the session's smoke
store), so a trial costs a few seconds."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from conftest import seed_cache, write_spec
from mlflow import MlflowClient

from harness import tracking as T
from harness.cli import main
from harness.report.search import status_lines
from harness.search import storage as S
from harness.search.spec import load_search_spec
from harness.search.trials import PruneReporter, check_plan
from mindvideo.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

# Ridge on the SynthCC labels: a trial is a ridge fit of a second and the evaluation.
RIDGE = """
study: {study}
profile: smoke
seeds: [0]
subjects: [subject1]
overrides:
  method: ridge
  baselines.features: [labels]
  baselines.alphas: [10.0, 1000.0]
  baselines.folds: 2
search:
  space:
    baselines.top_k: {{type: int, low: 1, high: 8}}
{space}  objective: {{video_2way_top1: maximize}}
  sampler: {{type: tpe, seed: 0, n_startup_trials: 2}}
  n_trials: {n_trials}
{extra}"""


def ridge_spec(
    folder: Path, study: str, n_trials: int = 2, space: str = "", extra: str = ""
) -> Path:
    text = RIDGE.format(study=study, n_trials=n_trials, space=space, extra=extra)
    return write_spec(folder, text, f"{study}.yaml")


def search(spec: Path, store: Path, *args: str) -> int:
    """`mvbench search` in process with one torch thread (a shared 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(["search", str(spec), "--store", str(store), "--quiet", *args])
    finally:
        torch.set_num_threads(threads)


def journal(store: Path, study: str) -> optuna.Study:
    storage = S.open_storage(None, store, study, retries=2)
    return optuna.load_study(study_name=study, storage=storage)


def states(study: optuna.Study) -> Counter:
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def mlflow_runs(store: Path, study: str) -> list:
    client = MlflowClient(T.default_uri(store))
    exp = client.get_experiment_by_name(study)
    return client.search_runs([exp.experiment_id], max_results=1000)


def by_kind(runs: list, kind: str) -> list:
    return [r for r in runs if r.data.tags.get(T.KIND) == kind]


@pytest.fixture
def store(tmp_path, harness_run) -> Path:
    """A fresh store with the smoke dataset simulated and the judges trained."""
    _, source = harness_run
    out = tmp_path / "store"
    seed_cache(source, out)
    return out


# Specs --------------------------------------------------------------------------------------

GOOD = {
    "profile": "smoke",
    "search": {
        "space": {"guidance.scale": {"type": "float", "low": 1.0, "high": 15.0}},
        "objective": {"video_2way_top1": "maximize"},
        "sampler": {"type": "tpe", "seed": 0},
        "n_trials": 4,
    },
}


def _with(path: str, value) -> dict:
    """GOOD with one dotted key replaced (None: removed)."""
    import copy

    spec = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node[part]
    if value is None:
        node.pop(last)
    else:
        node[last] = value
    return spec


BAD_SPECS = [
    (
        _with("search.space", {"guidance.scal": {"type": "float", "low": 1, "high": 2}}),
        r"search.space: 'guidance.scal' is not a key of profile 'smoke'.*keys there: .*scale",
    ),
    (
        _with("search.space", {"guidance": {"type": "float", "low": 1, "high": 2}}),
        r"'guidance' is a section of profile 'smoke', not a value",
    ),
    (
        _with("search.space", {"cotrain.lr": {"type": "float", "low": 0, "high": 1, "log": True}}),
        r"search.space.cotrain.lr.float: log scale needs low > 0, got low 0",
    ),
    (
        _with("search.space", {"decode.steps": {"type": "int", "low": 0, "high": 4}}),
        r"search.space.decode.steps: the profile rejects 0",
    ),
    (_with("search.n_trial", 3), r"search.n_trial: unknown key"),
    (_with("search.sampler", {"type": "tpe"}), r"search.sampler.tpe.seed: Field required"),
    (_with("search.sampler", {"type": "cmaes", "seed": 0}), r"search.sampler: .*tpe"),
    (_with("search.pruner", {"type": "median"}), r"needs prune_on"),
    (
        _with(
            "search",
            GOOD["search"]
            | {
                "objective": {"video_2way_top1": "maximize", "ssim": "maximize"},
                "pruner": {"type": "median"},
                "prune_on": "cotrain.train_loss",
            },
        ),
        r"single-objective",
    ),
    (_with("search.sampler", {"type": "grid", "seed": 0}), r"float parameters .* need a step"),
    (
        _with(
            "search", GOOD["search"] | {"pruner": {"type": "median"}, "prune_on": "motion_speed"}
        ),
        r"prune_on: .*'motion_speed' has no better direction",
    ),
    (_with("search.enqueue", [{"guidance.scale": 40.0}]), r"enqueue\[0\]: guidance.scale: 40"),
    (_with("overrides", {"guidance.scale": 3.0}), r"both in overrides and search.space"),
    (_with("search.n_trials", None), r"give n_trials and/or timeout"),
]


@pytest.mark.parametrize("raw, message", BAD_SPECS)
def test_search_spec_errors_name_the_file_and_key(tmp_path, raw, message):
    import yaml

    path = write_spec(tmp_path, yaml.safe_dump(raw), "bad.yaml")
    with pytest.raises(ConfigError, match=message) as err:
        load_search_spec(path)
    assert str(path) in str(err.value)


def test_search_plan_checks_metrics_and_set(tmp_path):
    import yaml

    def plan(raw, overrides=None):
        path = write_spec(tmp_path, yaml.safe_dump(raw), "plan.yaml")
        return check_plan(load_search_spec(path), overrides or {})

    with pytest.raises(ConfigError, match=r"search.objective / prune_on: \['video_2way_top9'\]"):
        plan(_with("search.objective", {"video_2way_top9": "maximize"}))
    ridge = _with("overrides", {"method": "ridge"}) | {
        "search": GOOD["search"]
        | {
            "space": {"baselines.top_k": {"type": "int", "low": 1, "high": 3}},
            "pruner": {"type": "median"},
            "prune_on": "contrastive.train_loss",
        }
    }
    with pytest.raises(ConfigError, match=r"search.prune_on: 'contrastive.train_loss' names"):
        plan(ridge)
    with pytest.raises(ConfigError, match=r"--set guidance.scale: searched by .*plan.yaml"):
        plan(GOOD, {"guidance.scale": 2.0})
    # the shipped spec: cotrain per trial, the stages before it shared
    shipped = load_search_spec(REPO / "experiments" / "search" / "guidance.yaml")
    stages = [p.name for p in check_plan(shipped, {}).nodes.values()]
    assert shipped.study == "guidance" and "cotrain" in stages and "decode" in stages
    assert shipped.search.prune_sign == -1.0  # a loss watched while an accuracy is maximised
    swapped = load_search_spec(REPO / "experiments" / "search" / "guidance.yaml", "tiny")
    assert swapped.study == "guidance-tiny"


def test_cli_tells_searches_from_suites(capsys):
    search_spec = REPO / "experiments" / "search" / "guidance.yaml"
    assert main(["run", str(search_spec)]) == 2
    assert "a search spec" in capsys.readouterr().err
    assert main(["search", str(REPO / "experiments" / "suites" / "ridge.yaml")]) == 2
    assert "not a search spec" in capsys.readouterr().err


def test_prune_reporter_reports_in_the_study_direction(tmp_path):
    """A loss watched while an accuracy is maximised: a higher loss than the median is worse,
    so it is pruned, and a lower one is not."""
    import yaml

    raw = _with("search.pruner", {"type": "median", "n_startup_trials": 1})
    raw["search"]["prune_on"] = "cotrain.train_loss"
    loaded = load_search_spec(write_spec(tmp_path, yaml.safe_dump(raw), "p.yaml"))
    study = optuna.create_study(direction="maximize", pruner=loaded.search.pruner.build(-1.0))
    first = study.ask()
    PruneReporter(first, loaded)("cotrain.train_loss", 1.0, 0)
    study.tell(first, 0.5)
    better, worse = study.ask(), study.ask()
    PruneReporter(better, loaded)("cotrain.train_loss", 0.5, 0)  # lower loss: goes on
    reporter = PruneReporter(worse, loaded)
    reporter("cotrain.val_loss", 9.0, 0)  # another metric: ignored
    with pytest.raises(optuna.TrialPruned):
        reporter("cotrain.train_loss", 2.0, 0)
    assert worse.study.trials[2].intermediate_values == {0: -2.0}


# Searches -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ridge_study(tmp_path_factory, harness_run) -> tuple[Path, Path]:
    """(spec, store) of a 2-trial ridge search run once."""
    _, source = harness_run
    folder = tmp_path_factory.mktemp("search")
    store = folder / "store"
    seed_cache(source, store)
    spec = ridge_spec(folder, "ridge", n_trials=2)
    assert search(spec, store, "--threads", "2") == 0  # (search() runs with 1 thread)
    return spec, store


def test_search_trials_are_in_optuna_and_mlflow(ridge_study):
    spec, store = ridge_study
    study = journal(store, "ridge")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1]
    assert states(study) == {"COMPLETE": 2}
    assert study.user_attrs["space"]["baselines.top_k"]["type"] == "int"
    runs = mlflow_runs(store, "ridge")
    (parent,) = by_kind(runs, "study")
    assert (
        parent.info.status == "FINISHED" and parent.info.run_id == study.user_attrs["mlflow_run_id"]
    )
    trial_runs = {r.data.tags["mvbench.trial"]: r for r in by_kind(runs, "trial")}
    assert sorted(trial_runs) == ["0", "1"]
    for t in trials:
        run = trial_runs[str(t.number)]
        assert run.data.tags[T.PARENT] == parent.info.run_id
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.data.tags["mvbench.trial_state"] == "COMPLETE"
        assert run.data.params["baselines.top_k"] == str(t.params["baselines.top_k"])
        assert run.data.metrics["video_2way_top1"] == pytest.approx(t.value)
    children = by_kind(runs, "run")
    assert {r.data.tags[T.PARENT] for r in children} <= {r.info.run_id for r in trial_runs.values()}
    assert all(r.info.status == "FINISHED" for r in children)
    # --threads 2: the trials' ridge stages used 2 torch threads (simulate, foundation: cached, 1)
    assert {r.data.tags[T.THREADS] for r in children} == {"1,2"}
    # the trial's value is the runs' metric (one run per trial here)
    for t in trials:
        (child,) = [c for c in children if c.info.run_id in t.user_attrs["runs"]]
        assert child.data.metrics["video_2way_top1"] == pytest.approx(t.value)


def test_search_report_writes_tables_and_figures(ridge_study, tmp_path):
    spec, store = ridge_study
    out = tmp_path / "results"
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    for name in ("table.md", "table.csv", "figures/history.png"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "table.md").read_text()
    assert "## Best trials" in text and "## All trials" in text and "baselines.top_k" in text
    assert "scored on the val split" in text  # searches tune on validation by default
    import pandas as pd

    table = pd.read_csv(out / "table.csv")
    assert set(table["trial"]) == {0, 1} and set(table["state"]) == {"COMPLETE"}
    assert {"video_2way_top1", "baselines.top_k", "duration_s", "mlflow_run_id"} <= set(table)
    assert table["video_2way_top1"].is_monotonic_decreasing  # best first
    page = (out / "index.html").read_text()
    assert "<title>search ridge (smoke profile)</title>" in page and "Best trials" in page
    assert 'src="figures/history.png"' in page and 'id="reconstructions"' not in page


@pytest.mark.slow  # a server start: ~5 s
def test_the_dashboard_serves_the_finished_study_over_http(ridge_study, tmp_path):
    """`mvbench search --dashboard` starts optuna-dashboard on the study's journal; its HTTP
    API gives the study's trials back."""
    pytest.importorskip("optuna_dashboard")
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    spec, store = ridge_study
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "harness.cli", "search", str(spec), "--store", str(store)]
    proc = subprocess.Popen(
        [*argv, "--dashboard", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "the dashboard did not answer in 60 s"
        (study,) = [s for s in studies if s["study_name"] == "ridge"]
        with urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}", timeout=10) as r:
            trials = json.loads(r.read())["trials"]
        assert sorted(t["number"] for t in trials) == [0, 1]
        assert {t["state"] for t in trials} == {"Complete"}
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"optuna-dashboard at http://127.0.0.1:{port}/dashboard" in out


def test_the_dashboard_of_a_study_without_trials_says_what_to_run(tmp_path, capsys):
    spec = ridge_spec(tmp_path, "never-run", n_trials=2)
    code = main(["search", str(spec), "--store", str(tmp_path / "s"), "--dashboard"])
    assert code == 2
    err = capsys.readouterr().err
    assert "study 'never-run' has no trials" in err and f"mvbench search {spec}" in err


def test_status_of_a_search_gives_its_trials(ridge_study, capsys):
    spec, store = ridge_study
    assert main(["status", str(spec), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "study ridge: 2/2 trials done (2 complete, 0 pruned), 0 failed, 0 running" in out
    assert "best: trial" in out and "baselines.top_k=" in out


def test_search_rerun_continues_the_study(ridge_study, capsys):
    spec, store = ridge_study
    before = len(by_kind(mlflow_runs(store, "ridge"), "trial"))
    assert search(spec, store) == 0  # the study has its 2 trials: nothing runs
    assert "2/2 trials done" in capsys.readouterr().out
    assert len(journal(store, "ridge").trials) == 2
    assert len(by_kind(mlflow_runs(store, "ridge"), "trial")) == before
    assert search(spec, store, "--trials", "3") == 0  # one more, not three
    study = journal(store, "ridge")
    assert [t.number for t in study.trials] == [0, 1, 2] and states(study) == {"COMPLETE": 3}
    assert len(by_kind(mlflow_runs(store, "ridge"), "study")) == 1  # the same study run


def test_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, store, capsys):
    spec = ridge_spec(
        tmp_path,
        "failing",
        n_trials=1,
        space="    eval.frames: {type: int, low: 2, high: 1000}\n",  # > 12 frames: evaluate raises
        extra="  enqueue: [{eval.frames: 1000}, {eval.frames: 6}]\n",
    )
    assert search(spec, store) == 0
    study = journal(store, "failing")
    failed, complete = study.trials
    assert failed.state.name == "FAIL" and complete.state.name == "COMPLETE"
    assert "1000 frames per clip requested" in failed.user_attrs["error"]
    assert "1 failed" in capsys.readouterr().out
    run = next(
        r
        for r in by_kind(mlflow_runs(store, "failing"), "trial")
        if r.data.tags["mvbench.trial"] == "0"
    )
    assert run.info.status == "FAILED" and "1000 frames" in run.data.tags[T.ERROR]
    assert run.data.tags["mvbench.trial_state"] == "FAIL"


PRUNED = """
study: pruned
profile: smoke
seeds: [0]
subjects: [subject1]
overrides: {stop_after: contrastive, mbm.epochs: 3, contrastive.epochs: 1}
search:
  space:
    mbm.lr: {type: float, low: 1.0e-5, high: 10.0, log: true}
  objective: {retrieval50_image_top1: maximize}
  sampler: {type: random, seed: 0}
  pruner: {type: threshold, upper: 100.0}     # a diverging masked-brain-model loss
  prune_on: mbm.val_loss
  enqueue: [{mbm.lr: 10.0}]
  n_trials: 1
"""


def test_pruning_interrupts_the_training_stage(tmp_path, store):
    """lr 10 makes the MBM diverge: the trial is pruned after its first epoch (of 3), the stage
    is interrupted, its run KILLED and tagged, and nothing of it is cached."""
    spec = write_spec(tmp_path, PRUNED, "pruned.yaml")
    # contrastive retrieval is scored on the test split: allowed here, the test is the pruning
    assert search(spec, store, "--allow-test-objective") == 0
    (trial,) = journal(store, "pruned").trials
    assert trial.state.name == "PRUNED"
    # reported negated (a loss while the objective is maximised): -loss < -100
    assert list(trial.intermediate_values) == [0] and trial.intermediate_values[0] < -100
    runs = mlflow_runs(store, "pruned")
    (run,) = by_kind(runs, "run")
    assert run.info.status == "KILLED" and "mbm.val_loss" in run.data.tags["mvbench.pruned"]
    assert run.data.tags[T.FAILED_STAGE] == "mbm"
    (trial_run,) = by_kind(runs, "trial")
    assert trial_run.info.status == "KILLED"
    assert trial_run.data.tags["mvbench.trial_state"] == "PRUNED"
    mbm = store / "cache" / "mbm"
    assert [p.name for p in mbm.iterdir() if not p.name.startswith(".")] == []  # no entry, no tmp
    assert not (store / "cache" / "contrastive").exists()  # the stages after it never ran


@pytest.mark.slow  # two journal workers also run in the killed-worker test
def test_two_workers_reach_the_trial_count(tmp_path, store):
    spec = ridge_spec(tmp_path, "workers", n_trials=4)
    assert search(spec, store, "--workers", "2") == 0
    study = journal(store, "workers")
    trials = study.trials
    assert [t.number for t in trials] == list(range(len(trials)))  # no duplicate numbers
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 4 and states(study)["RUNNING"] == 0
    assert len({t.user_attrs[S.WORKER_ATTR] for t in trials}) == 2  # both workers ran trials
    trial_runs = by_kind(mlflow_runs(store, "workers"), "trial")
    assert sorted(int(r.data.tags["mvbench.trial"]) for r in trial_runs) == [
        t.number for t in trials
    ]


@pytest.mark.slow  # submitit's local executor also runs in test_executors
def test_search_through_slurm_jobs_on_submitit_local(tmp_path, store):
    """Two slurm jobs (submitit's local executor) share the study through the journal in the
    store: the count is reached, once per trial, and every trial is in MLflow."""
    spec = ridge_spec(tmp_path, "jobs", n_trials=3)
    assert search(spec, store, "--executor", "slurm", "--slurm-local", "--workers", "2") == 0
    study = journal(store, "jobs")
    trials = study.trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert states(study)["COMPLETE"] == 3 and states(study)["RUNNING"] == 0
    trial_runs = by_kind(mlflow_runs(store, "jobs"), "trial")
    assert sorted(int(r.data.tags["mvbench.trial"]) for r in trial_runs) == [
        t.number for t in trials
    ]
    logs = list((store / "slurm" / "jobs").glob("*_log.err"))
    assert len(logs) == 2  # one log per job, where a user looks when a job dies
    assert not list((store / "optuna" / "jobs.trials").glob("*.lease"))  # all released


@pytest.mark.parametrize(
    "args, message",
    [
        (["--executor", "local", "--workers", "2"], "the local executor is one worker"),
        (["--slurm-local"], "--slurm-local runs the search's slurm jobs on this machine"),
        (["--workers", "0"], "--workers 0: give 1 or more"),
        (["--threads", "0"], "--threads 0: give 1 or more torch threads"),
    ],
)
def test_search_executor_options_are_checked_before_any_work(tmp_path, capsys, args, message):
    spec = ridge_spec(tmp_path, "options")
    store = tmp_path / "store"
    assert main(["search", str(spec), "--store", str(store), *args]) == 2
    assert message in capsys.readouterr().err
    assert not S.journal_path(store, "options").exists()


def test_journal_trials_of_a_silent_worker_on_another_host_are_retried(tmp_path, monkeypatch):
    """A slurm job on another node cannot be checked by pid: its trial lease decides. A trial
    whose lease stopped beating, or that has none, is failed and queued again; one whose
    lease beats is left alone."""
    monkeypatch.setattr(S, "GRACE_S", 0.6)
    storage = S.open_storage(None, tmp_path, "hosts", retries=2)
    study = optuna.create_study(study_name="hosts", storage=storage)
    leases = {}
    for name in ("beating", "silent", "unleased"):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr(S.WORKER_ATTR, f"node-b:{trial.number + 100}:1")
        if name != "unleased":
            lease = S.trial_lease(storage, tmp_path, "hosts", trial)
            lease.worker = trial.user_attrs[S.WORKER_ATTR]
            assert lease.acquire().acquired
            leases[name] = lease
    leases["silent"].stop_heartbeat()
    time.sleep(1.0)
    lines = status_lines(study, SimpleNamespace(study="hosts"), tmp_path, database=False)
    assert lines[0] == (
        "study hosts: 0 trials done (0 complete, 0 pruned), 0 failed, 3 running, 0 waiting"
    )
    assert "on node-b:100:1: lease renewed 0 s ago" in lines[1]
    assert "on node-b:101:1: no heartbeat for 1 s" in lines[2]
    assert "on node-b:102:1: no lease (the next worker retries it)" in lines[3]
    assert S.reap_dead_workers(study, storage, 2, tmp_path) == [1, 2]
    trials = study.get_trials()
    assert trials[0].state.name == "RUNNING"
    assert "worker died or hung (node-b:101:1: no heartbeat" in trials[1].user_attrs[S.ERROR_ATTR]
    assert "no lease left" in trials[2].user_attrs[S.ERROR_ATTR]
    retries = {t.system_attrs.get("failed_trial") for t in trials[3:]}
    assert retries == {1, 2} and all(t.state.name == "WAITING" for t in trials[3:])
    for lease in leases.values():
        lease.release()


def test_a_trial_taken_over_while_its_worker_hung_is_not_told(tmp_path, store, monkeypatch):
    """The worker hangs past its lease timeout inside a trial: another worker fails the trial
    and queues a retry. When the hung worker comes back it must not tell the trial (it is
    finished) but leave it to the retry, which it then runs itself."""
    import harness.search.trials as trials_module

    spec = ridge_spec(tmp_path, "hung", n_trials=1)
    monkeypatch.setattr(S, "GRACE_S", 0.6)
    leases = []
    real_lease, real_values = S.trial_lease, trials_module.objective_values

    def recorded(*args):
        leases.append(real_lease(*args))
        return leases[-1]

    def hangs_once(tracker, plan, loaded):
        if len(leases) == 1:
            leases[0].stop_heartbeat()  # hung: no heartbeat...
            time.sleep(1.0)
            study = journal(store, "hung")  # ...so another worker reaps the trial
            assert S.reap_dead_workers(study, study._storage, 2, store) == [0]
        return real_values(tracker, plan, loaded)

    monkeypatch.setattr(S, "trial_lease", recorded)
    monkeypatch.setattr(trials_module, "objective_values", hangs_once)
    assert search(spec, store) == 0
    first, retry = journal(store, "hung").trials
    assert first.state.name == "FAIL" and "worker died or hung" in first.user_attrs["error"]
    assert retry.state.name == "COMPLETE" and retry.system_attrs["failed_trial"] == 0
    (run,) = [
        r
        for r in by_kind(mlflow_runs(store, "hung"), "trial")
        if r.data.tags["mvbench.trial"] == "0"
    ]
    assert run.info.status == "KILLED" and "marked FAIL" in run.data.tags[T.ERROR]


def _cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MVBENCH_STORE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow  # 25 s of worker processes; retries are unit-tested in-process
def test_killed_worker_trial_is_retried_and_the_count_reached(tmp_path, store):
    """SIGKILL one of 2 workers in the middle of a trial: the other finds the trial's worker
    gone, marks it FAIL, runs it again with the same values and the study reaches its count."""
    spec = ridge_spec(tmp_path, "killed", n_trials=3)
    cmd = [sys.executable, "-m", "harness.cli", "search", str(spec), "--store", str(store)]
    log = (tmp_path / "out").open("w")
    proc = subprocess.Popen(
        [*cmd, "--workers", "2", "--quiet"], cwd=tmp_path, env=_cli_env(), stdout=log, stderr=log
    )
    killed = None
    try:
        deadline = time.monotonic() + 240
        path = S.journal_path(store, "killed")
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if not path.exists() or path.stat().st_size == 0:
                continue
            try:
                running = journal(store, "killed").get_trials(
                    states=(optuna.trial.TrialState.RUNNING,)
                )
            except KeyError:
                continue  # the study is being created
            claimed = [t for t in running if S.WORKER_ATTR in t.user_attrs]
            if len(claimed) == 2 or (claimed and time.monotonic() > deadline - 180):
                time.sleep(1.0)  # into the trial's stages
                # the worker started last: the parent reaps it only if it waits on both
                victim = max(claimed, key=lambda t: int(t.user_attrs[S.WORKER_ATTR].split(":")[1]))
                pid = int(victim.user_attrs[S.WORKER_ATTR].split(":")[1])
                os.kill(pid, signal.SIGKILL)
                killed = victim
        assert killed is not None, (tmp_path / "out").read_text()
        assert proc.wait(timeout=300) == 0, (tmp_path / "out").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    study = journal(store, "killed")
    trials = study.trials
    dead = trials[killed.number]
    assert dead.state.name == "FAIL" and "worker died" in dead.user_attrs["error"]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state.name == "COMPLETE" and retry.params == dead.params
    assert dead.user_attrs["error"] == f"worker died ({killed.user_attrs[S.WORKER_ATTR]})"
    assert not retry.user_attrs.get(S.ERROR_ATTR)  # the retry does not carry the failure
    out = tmp_path / "report"
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    rows = {
        line.split("|")[1].strip(): line
        for line in (out / "table.md").read_text().splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    }
    assert f"retry of trial {killed.number} |" in rows[str(retry.number)]
    assert "worker died (" in rows[str(dead.number)]
    assert states(study)["COMPLETE"] + states(study)["PRUNED"] == 3
    assert states(study)["RUNNING"] == 0
    runs = mlflow_runs(store, "killed")
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the dead trial's runs reaped
    assert "signal 9" in (tmp_path / "out").read_text()


# PostgreSQL ---------------------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


PG_USER = "mvbench-pg"  # initdb and postgres refuse to run as root


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server of our own on 127.0.0.1 (a fresh cluster in a temporary folder,
    run by an unprivileged user when the tests run as root), stopped at the end."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        why = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        if os.environ.get("MVBENCH_REQUIRE_POSTGRES"):  # CI: the test must run, not skip
            pytest.fail(f"{why} ($MVBENCH_REQUIRE_POSTGRES is set)")
        pytest.skip(why)
    folder = Path(tempfile.mkdtemp(prefix="mvbench-pg-"))  # not under pytest's 0700 folders
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PG_USER,
                ],
                check=True,
            )
        shutil.chown(folder, PG_USER, PG_USER)
        run_as = ["runuser", "-u", PG_USER, "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = folder / "data", folder / "server.log"

    def pg(*args: str) -> None:
        out = subprocess.run([*run_as, *args], cwd=folder, capture_output=True, text=True)
        if out.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")

    pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
    options = f"-k {folder} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(log),
        "-w",
        "-t",
        "60",
        "-o",
        options,
        "start",
    )
    try:
        pg(
            str(bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "mvbench",
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/mvbench"
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            cwd=folder,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_search_on_postgresql_storage(tmp_path, store, postgres_url):
    from sqlalchemy import create_engine, text

    spec = ridge_spec(tmp_path, "postgres", n_trials=2)
    assert search(spec, store, "--storage", postgres_url) == 0
    assert not S.journal_path(store, "postgres").exists()  # nothing in the journal
    study = optuna.load_study(study_name="postgres", storage=postgres_url)
    assert [t.number for t in study.trials] == [0, 1] and states(study) == {"COMPLETE": 2}
    with create_engine(postgres_url).connect() as conn:  # the trials' heartbeats were recorded
        beats = conn.execute(text("SELECT count(*) FROM trial_heartbeats")).scalar()
    assert beats == 2
    assert search(spec, store, "--storage", postgres_url) == 0  # continues: nothing to run
    assert len(optuna.load_study(study_name="postgres", storage=postgres_url).trials) == 2
    out = tmp_path / "results"
    assert (
        main(
            [
                "report",
                str(spec),
                "--store",
                str(store),
                "--storage",
                postgres_url,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = (out / "table.md").read_text()
    assert "## All trials" in text and text.count("| COMPLETE |") == 2


@pytest.mark.slow  # a minute; PostgreSQL storage, the shipped spec's plan: in the default run
def test_the_shipped_guidance_search_on_postgresql_with_two_workers(tmp_path, store, postgres_url):
    """experiments/search/guidance.yaml itself (co-training and decoding per trial) on smoke,
    two worker processes sharing the study through PostgreSQL and its advisory lock."""
    spec = REPO / "experiments" / "search" / "guidance.yaml"
    assert search(spec, store, "--storage", postgres_url, "--workers", "2", "--trials", "2") == 0
    study = optuna.load_study(study_name="guidance", storage=postgres_url)
    trials = study.trials
    assert [t.number for t in trials] == list(range(len(trials)))  # no duplicate numbers
    assert states(study)["COMPLETE"] + states(study)["PRUNED"] == 2
    assert trials[0].params == {"guidance.scale": 12.5, "cotrain.lr": 1.0e-4}  # enqueued first
    runs = mlflow_runs(store, "guidance")
    assert sorted(int(r.data.tags["mvbench.trial"]) for r in by_kind(runs, "trial")) == [
        t.number for t in trials
    ]
    assert not [r for r in runs if r.info.status == "RUNNING"]
