"""A search's trials: each is the spec's runs with the trial's parameters as overrides, planned
and executed like a suite's (sharing cached stages), under the study's run in MLflow.

Counting: a study has reached its trial count when that many trials are COMPLETE or PRUNED.
FAIL trials do not count: a trial that failed with an error leaves its place to a new one (up
to `search.max_failures` failures in the study), and a trial whose worker died (or was
interrupted) is retried with the same parameters. Workers count and ask under one lock, so
several of them never start more trials than the count needs and never share a trial.
"""

from __future__ import annotations

import math
import multiprocessing
import signal
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import tracking as T
from harness.plan import Plan, build_plan, headline_metrics
from harness.search import storage as S
from harness.search.spec import (
    SPLIT_KEY,
    LoadedSearch,
    first_point,
    load_search_spec,
    trial_spec,
)
from harness.tracking import Tracker
from mindvideo.errors import ConfigError, MindVideoError
from mindvideo.stages.registry import stages

POLL_S = 2.0  # a worker with nothing to start checks the study this often
STUDY = "study"  # mvbench.kind of the study's MLflow run
TRIAL = "trial"  # ... and of each trial's
TRIAL_NUMBER = "mvbench.trial"
TRIAL_STATE = "mvbench.trial_state"
PRUNED = "mvbench.pruned"
STUDY_RUN_ATTR = "mlflow_run_id"  # study and trial user attribute: its MLflow run


@dataclass(frozen=True)
class SearchOptions:
    """What `mvbench search` was asked for (picklable: worker processes get a copy)."""

    spec: str
    store: str
    profile: str | None = None
    storage: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    trials: int | None = None  # --trials: replaces search.n_trials
    workers: int | None = None  # None: 1 (local), one per GPU or core (pool), parallelism (slurm)
    executor: str | None = None  # local (in process), pool (processes), slurm (jobs); None:
    # pool with --workers > 1, else local
    slurm_local: bool = False  # slurm: submitit's local executor (processes on this machine)
    quiet: bool = False
    device: str | None = None
    threads: int | None = None  # torch CPU threads per worker (None: the executor's default)
    allow_test_objective: bool = False  # --allow-test-objective: may optimise test scores
    study_run: str = ""  # the study's MLflow run, once created
    deadline: float | None = None  # time.time() after which no trial starts (search.timeout)


@dataclass
class SearchResult:
    study: str
    storage: str
    target: int | None
    counts: dict[str, int]
    stopped: str  # reached, timeout, failures, workers died
    seconds: float
    study_run: str
    best: list[dict] = field(default_factory=list)  # number, values, params

    @property
    def reached(self) -> bool:
        return self.stopped in ("reached", "timeout")


class TrialFailed(MindVideoError):
    """A trial could not give its objective values; the message is the reason."""


def sampler_seed(seed: int, number: int) -> int:
    """The sampler seed of trial `number`: the same history gives the same proposal, whatever
    the number of workers and however often the search was resumed."""
    import numpy as np

    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def load(options: SearchOptions) -> LoadedSearch:
    return load_search_spec(options.spec, options.profile)


def target_trials(loaded: LoadedSearch, options: SearchOptions) -> int | None:
    return options.trials or loaded.search.trials


def check_plan(
    loaded: LoadedSearch, overrides: dict[str, Any], allow_test_objective: bool = False
) -> Plan:
    """Plan one point of the space before any work: the runs resolve, the objective and
    pruning metrics are ones the runs log, and none is scored on the test split unless
    `allow_test_objective` (errors name the spec file and key)."""
    clash = sorted(set(overrides) & set(loaded.search.space))
    if clash:
        raise ConfigError(
            f"--set {', '.join(clash)}: searched by {loaded.path} (search.space); remove the "
            "--set, or take the key out of the space"
        )
    try:
        plan = build_plan(trial_spec(loaded, first_point(loaded)), overrides)
    except ConfigError as e:  # the planner checks the metrics as a suite's report.metrics
        text = str(e).replace("report.metrics:", "search.objective / prune_on:")
        raise ConfigError(text) from None
    stages = {plan.node(k).name for run in plan.runs for k in run.stages}
    prune = loaded.search.prune_on
    named = [(f"search.objective.{m}", m) for m in loaded.search.objective]
    named += [("search.prune_on", prune.metric)] if prune else []
    for key, metric in named:
        if "." not in metric:
            continue  # checked by the planner against the evaluation's metrics
        stage = metric.split(".")[1] if metric.startswith("seconds.") else metric.split(".")[0]
        if stage not in stages:
            raise ConfigError(
                f"{loaded.path}: {key}: {metric!r} names stage {stage!r}, which the runs do not "
                f"have (they run {', '.join(sorted(stages))}); name a metric of one of them"
            )
    on_test = test_split_metrics(loaded, plan)
    if on_test and not allow_test_objective:
        raise ConfigError(
            f"{loaded.path}: the search would tune on the test set: "
            + "; ".join(on_test)
            + ". Optimise metrics of the validation split (the evaluation's under eval.split: "
            "val, the search's default; the data need validation segments), or pass "
            "--allow-test-objective to optimise on test knowingly (the best trial's test scores "
            "are then biased upwards)"
        )
    return plan


def test_split_metrics(loaded: LoadedSearch, plan: Plan) -> list[str]:
    """The objective and pruning metrics computed on the test split, each with the reason:
    evaluation metrics under eval.split: test, a stage's test metrics (its TEST_SPLIT_METRICS),
    and its held-out metrics (HELD_OUT_METRICS) on data without validation segments."""
    prune = loaded.search.prune_on
    named = [(f"search.objective.{m}", m) for m in loaded.search.objective]
    named += [("search.prune_on", prune.metric)] if prune else []
    profiles = [run.profile for run in plan.runs]
    headline = {m: node.name for node in plan.nodes.values() for m in headline_metrics(node)}
    found = []
    for key, metric in named:
        stage, _, name = metric.partition(".")
        if not name and metric in headline:  # a stage's metric, logged without its prefix
            stage, name = headline[metric], metric
        if not name:  # the evaluation's: scored on eval.split
            space = loaded.search.space.get(SPLIT_KEY)
            if any(p.eval.split == "test" for p in profiles) or (
                space is not None and space.contains("test")
            ):
                found.append(f"{key}: {metric} is scored on eval.split: test")
            continue
        if stage not in stages():
            continue  # seconds.* and the like: no split
        described = stages()[stage]
        if name.startswith(described.test_split_metrics):
            found.append(f"{key}: {metric} is computed on the test split by stage {stage}")
        elif name.startswith(described.held_out_metrics) and not all(
            p.data.has_val for p in profiles
        ):
            found.append(
                f"{key}: {metric} is computed on the test split where the data have no "
                f"validation segments (set {profiles[0].data.val_key})"
            )
    return found


def _suggest(trial, loaded: LoadedSearch) -> dict[str, Any]:
    params = {}
    for key, p in loaded.search.space.items():
        if p.type == "float":
            params[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            params[key] = trial.suggest_int(key, p.low, p.high, log=p.log, step=p.step)
        else:
            params[key] = trial.suggest_categorical(key, p.choices)
    return params


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


# The study ----------------------------------------------------------------------------------


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search prints its own lines


def open_study(loaded: LoadedSearch, options: SearchOptions):
    """(study, storage): the study in its storage, created on first use (load_if_exists)."""
    import optuna

    _quiet_optuna()
    search = loaded.search
    storage = S.open_storage(options.storage, Path(options.store), loaded.study, search.retries)
    study = optuna.create_study(
        storage=storage,
        study_name=loaded.study,
        directions=search.directions,
        sampler=search.sampler.build(search.space, sampler_seed(search.sampler.seed, 0)),
        pruner=search.pruner.build(search.prune_sign),
        load_if_exists=True,
    )
    have = [d.name.lower() for d in study.directions]
    if have != search.directions:
        raise ConfigError(
            f"{loaded.path}: search.objective: study {loaded.study!r} in {where(options, loaded)} "
            f"optimises {have}, the spec {search.directions}; give the spec another `study:` "
            "name to start a new study"
        )
    return study, storage


def where(options: SearchOptions, loaded: LoadedSearch) -> str:
    if options.storage:
        return S.shown(options.storage)
    return str(S.journal_path(Path(options.store), loaded.study))


def prepare_study(study, loaded: LoadedSearch, options: SearchOptions) -> bool:
    """On first use, record what the study searches and queue `search.enqueue`; later, refuse
    a spec or --set that would mix other trials into it. True if the study is new."""
    import json

    search = loaded.search
    record = {
        "space": json.loads(json.dumps({k: p.model_dump() for k, p in search.space.items()})),
        "objective": dict(search.objective),
        "profile": loaded.profile,
        "overrides": json.loads(json.dumps(loaded.spec.overrides | options.overrides)),
        "seeds": list(loaded.spec.seeds),
        "subjects": list(loaded.spec.subjects) if loaded.spec.subjects else None,
    }
    attrs = study.user_attrs
    if "space" not in attrs:
        for key, value in record.items():
            study.set_user_attr(key, value)
        study.set_user_attr("spec", str(loaded.path))
        for point in search.enqueue:
            study.enqueue_trial(dict(point), skip_if_exists=True)
        return True
    changed = [key for key, value in record.items() if attrs.get(key) != value]
    if changed:
        detail = "; ".join(f"{k}: was {attrs.get(k)}, now {record[k]}" for k in changed)
        raise ConfigError(
            f"{loaded.path}: study {loaded.study!r} in {where(options, loaded)} was run with "
            f"other settings ({detail}); continue it with the same spec and --set, or give the "
            "spec another `study:` name to start a new study"
        )
    return False


def study_run(tracker: Tracker, study, loaded: LoadedSearch, options: SearchOptions) -> str:
    """The study's MLflow run (every trial's run is its child): created once, then reopened."""
    exp = tracker.experiment(loaded.study)
    run_id = study.user_attrs.get(STUDY_RUN_ATTR)
    if run_id:
        try:
            if tracker.client.get_run(run_id).info.experiment_id == exp:
                tracker.client.update_run(run_id, status="RUNNING")
                tracker.set_tags(run_id, {T.WORKER: T.this_worker()})
                return run_id
        except Exception:
            pass  # another tracking store than the one the study started with: a new run
    tags = {
        T.SPEC_HASH: loaded.hash,
        T.PROFILE: loaded.profile,
        "mvbench.spec": str(loaded.path),
        "mvbench.storage": where(options, loaded),
    }
    run = tracker.create_run(exp, f"study {loaded.study}", STUDY, tags)
    params = T.flatten({"search": loaded.search.model_dump(mode="json", exclude={"enqueue"})})
    tracker.log_metrics(run.info.run_id, [], params)
    study.set_user_attr(STUDY_RUN_ATTR, run.info.run_id)
    return run.info.run_id


# One worker ---------------------------------------------------------------------------------


class TrialTracker(Tracker):
    """A worker's tracker: the execution run the executor opens for a trial is the trial's run,
    a child of the study's run with the trial's number and parameters (one per trial, reopened
    if the executor runs again)."""

    def __init__(self, store: Path, study_run: str):
        super().__init__(store)
        self.study_run = study_run
        self.trial_tags: dict[str, str] = {}
        self.trial_params: dict[str, str] = {}
        self.trial_run: str | None = None

    def begin(self, number: int, params: dict[str, Any]) -> None:
        self.trial_tags = {TRIAL_NUMBER: str(number), T.PARENT: self.study_run}
        self.trial_params = {k: str(v) for k, v in params.items()}
        self.trial_run = None

    def start_parent(
        self, experiment_id: str, tags: dict[str, str], what: str = "execution"
    ) -> str:
        """The trial's run stands as the parent of its suite runs (`what`, the name a suite's
        parent run would get, is the trial's own: "trial N")."""
        if self.trial_run is not None:
            self.client.update_run(self.trial_run, status="RUNNING")
            return self.trial_run
        number = self.trial_tags.get(TRIAL_NUMBER, "?")
        run = self.create_run(experiment_id, f"trial {number}", TRIAL, {**tags, **self.trial_tags})
        self.trial_run = run.info.run_id
        self.log_metrics(self.trial_run, [], self.trial_params)
        return self.trial_run


class PruneReporter:
    """The executor's metric callback: the pruning metric's values, reported to the trial per
    step (the first value of each step: the trial's first run that trains), and TrialPruned
    raised inside the stage when the pruner says so."""

    def __init__(self, trial, loaded: LoadedSearch):
        self.trial = trial
        self.prune = loaded.search.prune_on
        self.sign = loaded.search.prune_sign  # reported in the study's direction
        self.steps: dict[int, float] = {}  # step -> value as logged
        self.seen: set[str] = set()
        self.pruned: str | None = None

    def __call__(self, name: str, value: float, step: int | None) -> None:
        import optuna

        self.seen.add(name)
        if self.prune is None or name != self.prune.metric or step is None:
            return
        if step in self.steps:
            return
        self.steps[step] = value
        self.trial.report(self.sign * value, step)
        if self.trial.should_prune():
            self.pruned = f"{name} = {value:.4g} at step {step}"
            raise optuna.TrialPruned(f"pruned: {self.pruned}")


def executor_for(plan: Plan, options: SearchOptions, tracker: Tracker, on_metric):
    """The executor that runs a trial's plan: the local one, in this worker process (the one
    place a search picks its executor)."""
    from harness.runner import Runner

    return Runner(
        plan,
        Path(options.store),
        tracker,
        fail_fast=True,  # a trial needs all its runs: stop at the first failure
        quiet=options.quiet or options.workers > 1,
        device=options.device,
        on_metric=on_metric,
    )


def objective_values(
    tracker: Tracker, plan: Plan, loaded: LoadedSearch
) -> tuple[list[float], list[str]]:
    """The objective metrics of the trial's runs, read back from MLflow (a run done before, by
    an earlier trial with the same parameters, counts), aggregated over subjects and seeds."""
    exp = tracker.experiment(plan.suite)
    metrics, run_ids = [], []
    for run in plan.runs:
        found = tracker.runs(
            exp, f"tags.`{T.RUN_KEY}` = '{run.key}' and attributes.status = 'FINISHED'"
        )
        if not found:
            raise TrialFailed(f"{run.label}: no FINISHED run in MLflow")
        latest = max(found, key=lambda r: r.info.end_time or 0)
        metrics.append(latest.data.metrics)
        run_ids.append(latest.info.run_id)
    combine = statistics.fmean if loaded.search.aggregate == "mean" else statistics.median
    values = []
    for metric in loaded.search.objective:
        missing = [r.label for r, m in zip(plan.runs, metrics, strict=True) if metric not in m]
        if missing:
            logged = sorted(k for k in metrics[0] if not k.endswith(("_se", "_low", "_high")))
            raise TrialFailed(
                f"{missing[0]} logged no {metric!r} (search.objective); it logged: "
                f"{', '.join(logged[:30])}"
            )
        value = combine(m[metric] for m in metrics)
        if not math.isfinite(value):
            raise TrialFailed(f"objective {metric} is {value}")
        values.append(float(value))
    return values, run_ids


def run_trial(
    trial, params, loaded, options, tracker: TrialTracker, storage, lease=None
) -> tuple[str, str]:
    """Execute one trial and tell the study its outcome; (state, what to print). A trial whose
    `lease` was taken over meanwhile (its worker hung past the lease timeout, so another
    worker failed it and queued a retry) is not told: its retry is."""
    import optuna

    started = time.perf_counter()
    tracker.begin(trial.number, params)
    reporter = PruneReporter(trial, loaded)
    status, state, tags, text = "FINISHED", "COMPLETE", {}, ""
    values: list[float] = []
    try:
        with S.heartbeat(storage, trial):
            plan = build_plan(trial_spec(loaded, params), options.overrides)
            while True:
                executor = executor_for(plan, options, tracker, reporter)
                result = executor.execute()
                if reporter.pruned is not None:
                    for o in result.failed:  # the interrupted run: KILLED, tagged pruned
                        tracker.set_tags(o.run_id, {PRUNED: reporter.pruned})
                        tracker.end(o.run_id, "KILLED")
                    raise optuna.TrialPruned(reporter.pruned)
                if result.failed:
                    o = result.failed[0]
                    raise TrialFailed(f"{o.run.label}: {o.error}")
                if not any(o.status == "BUSY" for o in result.outcomes):
                    break
                time.sleep(POLL_S)  # the same runs in another live worker: wait for them
            values, run_ids = objective_values(tracker, plan, loaded)
            trial.set_user_attr("runs", run_ids)
    except optuna.TrialPruned as e:
        status, state, tags = "KILLED", "PRUNED", {PRUNED: str(e)}
        trial.set_user_attr("pruned_at", str(e))
        text = f"pruned: {e}"
    except KeyboardInterrupt:
        reason = "interrupted (Ctrl-C or SIGTERM)"
        _finish_run(tracker, loaded, "KILLED", "FAIL", {T.ERROR: reason}, [], reporter, started)
        S.fail_and_retry(trial.study, trial, reason, loaded.search.retries)
        raise
    except Exception as e:
        reason = str(e) if isinstance(e, MindVideoError) else f"{type(e).__name__}: {e}"
        if not isinstance(e, MindVideoError) and not options.quiet:
            traceback.print_exc()
        status, state, tags = "FAILED", "FAIL", {T.ERROR: reason}
        text = f"failed: {reason.splitlines()[0][:300]}"
    if lost := _taken_over(trial, lease):
        _finish_run(tracker, loaded, "KILLED", "FAIL", {T.ERROR: lost}, [], reporter, started)
        return "FAIL", f"trial {trial.number} taken over ({lost}); its retry counts"
    if state == "FAIL":
        trial.set_user_attr(S.ERROR_ATTR, tags[T.ERROR])
    if missing := _unreported(reporter, loaded):
        print(f"note: trial {trial.number}: {missing}", file=sys.stderr)
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
    _finish_run(tracker, loaded, status, state, tags, values, reporter, started)
    trial.set_user_attr(STUDY_RUN_ATTR, tracker.trial_run)
    if state == "COMPLETE":
        trial.study.tell(trial, values)
        pairs = zip(loaded.search.objective, values, strict=True)
        text = ", ".join(f"{m}={v:.4g}" for m, v in pairs)
    elif state == "PRUNED":
        trial.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    seconds = time.perf_counter() - started
    return state, f"trial {trial.number} {state} {text} [{_params_text(params)}] {seconds:.1f} s"


def _taken_over(trial, lease) -> str:
    """Why another worker took the trial over while this one ran it ("" if it did not): its
    lease was broken, or the trial was failed (its lease or heartbeat went silent while this
    worker hung)."""
    from optuna.trial import TrialState

    if lease is not None and not lease.held():
        return lease.lost
    frozen = trial.study._storage.get_trial(trial._trial_id)
    if frozen.state != TrialState.RUNNING:
        return f"marked {frozen.state.name}: {frozen.user_attrs.get(S.ERROR_ATTR, '?')}"
    return ""


def _unreported(reporter: PruneReporter, loaded: LoadedSearch) -> str:
    """Why the pruner had nothing to judge, when the watched stage ran but logged no series."""
    prune = loaded.search.prune_on
    if prune is None or reporter.steps:
        return ""
    stage = prune.metric.split(".")[0]
    logged = sorted(n for n in reporter.seen if n.startswith(f"{stage}."))
    if not logged:
        return ""  # the stage came from the cache: it logged nothing while this trial ran
    return (
        f"stage {stage} logged no {prune.metric!r} per step, so the pruner had nothing to "
        f"judge (search.prune_on); it logs {', '.join(logged)}"
    )


def _finish_run(tracker, loaded, status, state, tags, values, reporter, started) -> None:
    """The trial's MLflow run: its objective values, the pruning metric per step, its state."""
    if tracker.trial_run is None:  # every run was done before: nothing opened it
        exp = tracker.experiment(loaded.study)
        tracker.start_parent(exp, {T.SPEC_HASH: loaded.hash, T.PROFILE: loaded.profile})
    run = tracker.trial_run
    metrics = [(m, v, 0) for m, v in zip(loaded.search.objective, values, strict=False)]
    if loaded.search.prune_on is not None:
        name = f"intermediate.{loaded.search.prune_on.metric}"
        metrics += [(name, v, step) for step, v in reporter.steps.items()]
    metrics.append(("trial_seconds", time.perf_counter() - started, 0))
    tracker.log_metrics(run, metrics)
    tracker.set_tags(run, {TRIAL_STATE: state, **tags})
    tracker.end(run, status)


def run_worker(options: SearchOptions, index: int = 0) -> str:
    """Run trials until the study has its count (or the timeout, or too many failures);
    returns why it stopped. Several workers may run this against one storage."""
    from optuna.trial import TrialState

    loaded = load(options)
    search = loaded.search
    study, storage = open_study(loaded, options)
    tracker = TrialTracker(Path(options.store), options.study_run)
    target = target_trials(loaded, options)
    prefix = f"[worker {index}] " if options.workers > 1 else ""
    while True:
        trial = lease = None
        with S.study_lock(storage, Path(options.store), loaded.study):
            reaped = S.reap_dead_workers(study, storage, search.retries, Path(options.store))
            for number in reaped:
                print(f"{prefix}trial {number}: its worker died; retried", file=sys.stderr)
            trials = study.get_trials(deepcopy=False)
            counts = Counter(t.state for t in trials)
            done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
            if target is not None and done >= target:
                return "reached"
            if counts[TrialState.FAIL] >= search.failures:
                return "failures"
            if options.deadline is not None and time.time() >= options.deadline:
                return "timeout"
            if target is None or done + counts[TrialState.RUNNING] < target:
                seed = sampler_seed(search.sampler.seed, len(trials))
                study.sampler = search.sampler.build(search.space, seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # fixed params of a retry
                    trial = study.ask()
                    params = _suggest(trial, loaded)
                S.claim(trial)
                lease = S.trial_lease(storage, Path(options.store), loaded.study, trial)
                if lease is not None:
                    lease.acquire()
        if trial is None:  # the last trials run in other workers: wait, they may die
            time.sleep(POLL_S)
            continue
        try:
            state, line = run_trial(trial, params, loaded, options, tracker, storage, lease)
        finally:
            if lease is not None:
                lease.release()
        if not options.quiet:
            print(prefix + line, file=sys.stderr)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def _worker_process(options: SearchOptions, index: int, env: dict[str, str]) -> None:
    """A pool worker process: its GPU or its share of the cores (`env`, set when it was
    started), SIGTERM stops it like Ctrl-C."""
    import torch

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
    signal.signal(signal.SIGTERM, _terminate)
    try:
        run_worker(options, index)
    except KeyboardInterrupt:
        sys.exit(130)
    except MindVideoError as e:
        print(f"[worker {index}] mvbench: error: {e}", file=sys.stderr)
        sys.exit(2)


def search_job(options: SearchOptions, index: int, threads: int) -> str:
    """A slurm job of the search (submitit calls it on the node): one worker against the
    shared storage and store; scancel or the time limit (SIGTERM) fail its trial for a retry."""
    signal.signal(signal.SIGTERM, _terminate)
    import torch

    torch.set_num_threads(max(1, threads))
    try:
        return run_worker(options, index)
    except KeyboardInterrupt:
        return "interrupted"


def summarize(study, target: int | None) -> tuple[dict[str, int], list[dict]]:
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    best = []
    for t in study.best_trials if counts.get("COMPLETE") else []:
        best.append({"number": t.number, "values": t.values, "params": t.params})
    return dict(counts), best


def resolve_executor(options: SearchOptions, resources) -> SearchOptions:
    """The executor and worker count a search runs with, checked before any work: local runs
    one worker in this process; pool N processes (default one per GPU, else per core); slurm
    N jobs (default resources.slurm_array_parallelism)."""
    from harness.launchers import EXECUTORS, check_options, pool_slots

    workers, executor = options.workers, options.executor
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: give 1 or more")
    if executor is None:
        executor = "pool" if workers is not None and workers > 1 else "local"
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor}: choose one of {', '.join(EXECUTORS)}")
    if options.slurm_local and executor != "slurm":
        raise ConfigError(
            "--slurm-local runs the search's slurm jobs on this machine; add --executor slurm"
        )
    if executor == "local":
        if workers is not None and workers > 1:
            raise ConfigError(
                f"--workers {workers} with --executor local: the local executor is one worker "
                "in this process; use --executor pool (processes here) or slurm (cluster jobs)"
            )
        workers = 1
    elif executor == "pool":
        workers = len(pool_slots(workers, options.device))
    else:
        check_options("slurm", slurm_local=options.slurm_local)
        workers = workers or resources.slurm_array_parallelism
    return replace(options, executor=executor, workers=workers)


def run_search(options: SearchOptions) -> SearchResult:
    """`mvbench search`: check the plan, open (or continue) the study and its MLflow run, run
    the workers (in this process, or N processes), and close the study's run."""
    started = time.time()
    loaded = load(options)
    plan = check_plan(loaded, options.overrides, options.allow_test_objective)
    options = resolve_executor(options, plan.runs[0].profile.resources)
    tracker = Tracker(Path(options.store))  # created (or found unreachable) before any work
    study, storage = open_study(loaded, options)
    with S.study_lock(storage, Path(options.store), loaded.study):
        prepare_study(study, loaded, options)
        run_id = study_run(tracker, study, loaded, options)
        study.set_user_attr("n_trials", target_trials(loaded, options))
    timeout = loaded.search.timeout
    options = replace(
        options, study_run=run_id, deadline=started + timeout if timeout else options.deadline
    )
    target = target_trials(loaded, options)
    try:
        if options.executor == "slurm":
            resources = plan.runs[0].profile.resources
            stopped = _run_jobs(options, study, loaded, target, resources)
        elif options.executor == "pool":
            stopped = _run_processes(options, study, loaded, target)
        else:
            from harness.runner import torch_threads

            with torch_threads(options.threads):  # the one worker, in this process
                stopped = run_worker(options, 0)
    except KeyboardInterrupt:
        tracker.set_tags(run_id, {T.ERROR: "interrupted (Ctrl-C or SIGTERM)"})
        tracker.end(run_id, "KILLED")
        raise
    counts, best = summarize(study, target)
    tracker.log_metrics(
        run_id,
        [(f"trials_{k.lower()}", v, 0) for k, v in counts.items()]
        + [("seconds", time.time() - started, 0)],
    )
    tracker.end(run_id, "FINISHED" if stopped in ("reached", "timeout") else "FAILED")
    return SearchResult(
        study=loaded.study,
        storage=where(options, loaded),
        target=target,
        counts=counts,
        stopped=stopped,
        seconds=time.time() - started,
        study_run=run_id,
        best=best,
    )


def _run_processes(options: SearchOptions, study, loaded: LoadedSearch, target: int | None) -> str:
    """N worker processes (spawned: safe with torch threads and CUDA), each with one GPU or its
    share of the cores (as the pool executor's workers); returns why they stopped."""
    from harness.launchers import pool_slots, reap, spawn_worker

    ctx = multiprocessing.get_context("spawn")
    slots = pool_slots(options.workers, options.device, threads=options.threads)
    procs = [
        spawn_worker(
            ctx, _worker_process, (options, s.index, s.env), s, f"mvbench-worker-{s.index}"
        )
        for s in slots
    ]
    reap(procs)  # on Ctrl-C each worker is sent SIGTERM: it marks its trial and stops
    died = [p for p in procs if p.exitcode not in (0, None)]
    for p in died:
        how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit status {p.exitcode}"
        print(f"{p.name} ended with {how}", file=sys.stderr)
    return _why_stopped(study, loaded, target, options)


def _run_jobs(options: SearchOptions, study, loaded: LoadedSearch, target, resources) -> str:
    """N slurm jobs (the profile's `resources:` per job), each a worker against the shared
    storage and store; returns why they stopped, read from the study."""
    from harness.launchers import job_error, job_executor

    folder = Path(options.store).resolve() / "slurm" / loaded.study
    executor = job_executor(folder, resources, f"mvbench-{loaded.study}", options.slurm_local)
    job_options = replace(options, store=str(Path(options.store).resolve()))
    threads = options.threads or resources.cpus_per_job
    n = options.workers
    if options.slurm_local:
        jobs = [executor.submit(search_job, job_options, i, threads) for i in range(n)]
    else:
        jobs = executor.map_array(search_job, [job_options] * n, list(range(n)), [threads] * n)
    if not options.quiet:
        ids = ", ".join(j.job_id for j in jobs)
        print(f"submitted {n} search worker job(s) ({ids}); logs in {folder}", file=sys.stderr)
    try:
        while not all(j.done() for j in jobs):
            time.sleep(0.5 if options.slurm_local else 10.0)
    except KeyboardInterrupt:
        for j in jobs:
            try:
                j.cancel(check=False)  # SIGTERM: each marks its trial and stops
            except Exception:
                pass
        raise
    for j in jobs:
        try:
            j.result()
        except Exception as e:
            print(job_error(j, e), file=sys.stderr)
    return _why_stopped(study, loaded, target, options)


def _why_stopped(study, loaded: LoadedSearch, target: int | None, options: SearchOptions) -> str:
    """Why the workers stopped, read from the study."""
    counts, _ = summarize(study, target)
    if target is not None and counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) >= target:
        return "reached"
    if counts.get("FAIL", 0) >= loaded.search.failures:
        return "failures"
    if options.deadline is not None and time.time() >= options.deadline:
        return "timeout"
    return "workers died"
