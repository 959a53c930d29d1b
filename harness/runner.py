"""The runner: a plan's runs, each one's stages in dependency order through the stage cache,
tracked in MLflow. Where the runs go is its launcher's choice (InlineLauncher here: one after
another in this process; harness.launchers: pool processes, slurm jobs)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import tracking as T
from harness.cache import StageCache, StageNode
from harness.lease import DEFAULT_TIMEOUT_S, RunLease, store_id
from harness.plan import Plan, Run, headline_metrics
from harness.tracking import Tracker
from mindvideo.errors import ConfigError
from mindvideo.stages.base import PER_SAMPLE, StageContext
from mindvideo.stages.registry import get_stage

HEADLINE_STAGE = "evaluate"  # its metrics are logged unprefixed: they are the suite's results
# Stage metrics go to MLflow in one write per run, except after a stage that took this long
# (training): then they are written at once, to be watched while the run goes on.
LOG_EACH_STAGE_AFTER_S = 60.0
# A stage's progress goes to its run's lease (mvbench status) at most this often, and at its end.
PROGRESS_EVERY_S = 2.0


class UpstreamFailed(RuntimeError):
    """A stage this run needs failed earlier in the same execution."""


@dataclass
class Outcome:
    run: Run
    status: str  # FINISHED, FAILED, KILLED, DONE_BEFORE, BUSY, NOT_RUN
    run_id: str | None = None
    seconds: float = 0.0
    error: str = ""
    computed: int = 0  # stages computed by this run
    reused: int = 0  # stages found in the cache
    stage_seconds: float = 0.0  # time inside its stages' run()


@dataclass
class Execution:
    outcomes: list[Outcome]
    parent_id: str | None
    seconds: float
    stage_seconds: float  # time inside stages' run(): the compute the harness wraps

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "FAILED"]


def _device(requested: str | None) -> str:
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_bar(total: int | None, desc: str, quiet: bool, position: int = 0, leave: bool = True):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        disable=quiet,
        file=sys.stderr,
        position=position,
        leave=leave,
        dynamic_ncols=True,
    )


# Profile sections that say how a run is executed, not what it computes: left out of its
# params and config.yaml (and of every stage's config slice, so of every key).
EXECUTION_SECTIONS = {"resources"}


def run_params(run: Run) -> dict[str, str]:
    config = run.profile.model_dump(
        mode="json", exclude={"source", "description", *EXECUTION_SECTIONS}
    )
    return T.flatten(config) | {
        "run.variant": run.variant.name,
        "run.subject": run.subject,
        "run.seed": str(run.seed),
    }


def run_tags(plan: Plan, run: Run) -> dict[str, str]:
    return {
        T.RUN_KEY: run.key,
        T.STAGE_KEYS: json.dumps({plan.node(k).name: k for k in run.stages}),
        T.SPEC_HASH: plan.spec.hash,
        T.VARIANT: run.variant.name,
        T.BASE: run.variant.base,
        T.VARIANT_KIND: run.variant.kind,
        T.SUBJECT: run.subject,
        T.SEED: str(run.seed),
        T.GRID: json.dumps(run.variant.grid),
        T.PROFILE: plan.spec.profile,
        T.DESCRIPTION: run_description(plan, run),
    }


def run_description(plan: Plan, run: Run) -> str:
    """What the MLflow UI shows as a run's description: variant, subject, seed and the
    dotted overrides it runs with (beyond the suite's own)."""
    overrides = {**run.variant.overrides, **run.variant.grid}
    lines = [
        f"{run.variant.name} ({run.variant.kind}) on {run.subject}, seed {run.seed}, "
        f"suite {plan.suite}, profile {plan.spec.profile}",
        *(f"- {k}: {json.dumps(v)}" for k, v in sorted(overrides.items())),
    ]
    if not overrides:
        lines.append("- no overrides: the profile as it is")
    return "\n".join(lines)


def metric_name(node: StageNode, key: str) -> str:
    """A stage's metric as the child run logs it: evaluate's and a stage's HEADLINE_METRICS
    unprefixed, others <stage>.<name>."""
    headline = node.name == HEADLINE_STAGE or key in headline_metrics(node)
    return key if headline else f"{node.name}.{key}"


def stage_metrics(node: StageNode, manifest: dict) -> list[tuple[str, float, int]]:
    """A stage's metrics as the child run logs them: the final values (step 0) and any
    series logged with steps (per epoch...). Evaluate's, and a stage's HEADLINE_METRICS, are
    unprefixed; others <stage>.<name>."""

    def name(k: str) -> str:
        return metric_name(node, k)

    out = [(name(k), float(v), 0) for k, v in manifest.get("metrics", {}).items()]
    out += [
        (name(k), float(v), int(step))
        for k, v, step in manifest.get("series", [])
        if step is not None
    ]
    if "seconds" in manifest:
        out.append((f"seconds.{node.name}", float(manifest["seconds"]), 0))
    for kind, gib in manifest.get("peak_gib", {}).items():  # harness/memory.py
        out.append((f"{node.name}.peak_{kind}_gib", float(gib), 0))
    return out


def check_threads(threads: int | None) -> None:
    """`--threads N` of run and search: None (the executor's default) or at least 1."""
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: give 1 or more torch threads")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` (None: left as they are) for the block, then
    given back: CPU results repeat only at the same count."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compute_stage(
    cache: StageCache,
    node: StageNode,
    inputs: Mapping[str, Path],
    device: str = "cpu",
    processes: int = 1,
    quiet: bool = True,
    on_metric: Callable[[str, float, int | None], None] | None = None,
    on_progress: Callable[[int, int | None, str, float], None] | None = None,
) -> tuple[dict, bool, float]:
    """A stage node's cache entry, computed if missing by its stage's run() on `inputs`
    (role -> folder): (its manifest, whether it was computed now, the seconds it took).
    `on_progress(done, units, what, seconds)` hears of the computation's start and of its
    progress, at most every PROGRESS_EVERY_S seconds and at its last unit."""
    stage = get_stage(node.name)
    seconds = 0.0

    def produce(out: Path) -> dict:
        nonlocal seconds
        series: list[tuple[str, float, int | None]] = []
        t0 = time.perf_counter()
        units = stage.work_units(node.config) if stage.work_units else None
        bar = run_bar(units, node.name, quiet, position=1, leave=False)
        done, said = 0, t0
        if on_progress is not None:
            on_progress(0, units, "", 0.0)

        def tick(n: int, what: str) -> None:
            nonlocal done, said
            bar.set_postfix_str(what, refresh=False)
            bar.update(n)
            done += n
            now = time.perf_counter()
            if on_progress is not None and (now - said >= PROGRESS_EVERY_S or done == units):
                said = now
                on_progress(done, units, what, now - t0)

        def log_metric(name: str, value: float, step: int | None = None) -> None:
            series.append((name, value, step))
            if on_metric is not None:
                on_metric(name, float(value), step)

        ctx = StageContext(
            seed=node.seed if node.seed is not None else 0,
            device=device,
            processes=processes,
            progress=tick,
            log_metric=log_metric,
        )
        try:
            result = stage.run(node.config, dict(inputs), out, ctx)
        finally:
            seconds = time.perf_counter() - t0
            bar.close()
        import torch

        return {
            "version": stage.version,
            # provenance: numbers computed on a GPU differ from a CPU's in the last digits
            "device": device,
            # on a CPU, torch's thread count changes float sums in the last digits too
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "metrics": {k: float(v) for k, v in result.metrics.items()},
            "series": [[k, float(v), s] for k, v, s in series if s is not None],
            "artifacts": [str(p) for p in result.artifacts],
        }

    manifest, computed = cache.compute(node, produce)
    return manifest, computed, seconds


class InlineLauncher:
    """The `local` launcher: the runs one after another in this process."""

    def describe(self) -> str:
        return "in this process"

    def dispatch(
        self, runner: Runner, exp: str, parent: str, todo: list[Run], outcomes: list[Outcome]
    ) -> None:
        overall = run_bar(sum(len(run.stages) for run in todo), runner.plan.suite, runner.quiet)
        try:
            with torch_threads(runner.threads):
                for i, run in enumerate(todo):
                    if runner.fail_fast and any(o.status == "FAILED" for o in outcomes):
                        outcomes.extend(Outcome(r, "NOT_RUN") for r in todo[i:])
                        break
                    outcomes.append(runner.run_one(exp, parent, run, overall))
        finally:
            overall.close()


class Runner:
    """Runs a plan's runs (see run_one), handed out by its launcher (inline by default)."""

    def __init__(
        self,
        plan: Plan,
        store: Path,
        tracker: Tracker,
        fail_fast: bool = False,
        quiet: bool = False,
        device: str | None = None,
        processes: int = 1,
        on_metric: Callable[[str, float, int | None], None] | None = None,
        lease_timeout: float = DEFAULT_TIMEOUT_S,
        threads: int | None = None,
    ):
        if processes < 1:
            raise ConfigError(f"--processes {processes}: need at least 1")
        if not lease_timeout > 0:
            raise ConfigError(f"--lease-timeout {lease_timeout}: give a number of seconds > 0")
        self.plan = plan
        self.store = Path(store)
        # A run's lease goes stale (its worker is taken as gone) after this long without a
        # heartbeat; see harness.lease.
        self.lease_timeout = lease_timeout
        self._store_id: str | None = None
        self.processes = processes
        # torch's CPU threads for the stages (None: torch's default here, the executor's share
        # in a worker); CPU results repeat only at the same count
        check_threads(threads)
        self.threads = threads
        self.cache = StageCache(store)
        self.tracker = tracker
        self.fail_fast = fail_fast
        self.quiet = quiet
        self.requested_device = device
        self._device: str | None = None
        self.failed_nodes: dict[str, str] = {}  # key -> error, within this execution
        self.stage_seconds = 0.0
        # Called with each metric a stage logs while it runs (its run's name for it, value,
        # step): a search reports them to its pruner, whose TrialPruned stops the stage.
        self.on_metric = on_metric
        self.launcher = InlineLauncher()  # harness.launchers: PoolLauncher, SlurmLauncher

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = _device(self.requested_device)
        return self._device

    def execute(self) -> Execution:
        started = time.perf_counter()
        plan, tracker = self.plan, self.tracker
        exp = tracker.experiment(plan.suite)
        outcomes, todo = self.pending(exp)
        if not todo:
            return Execution(outcomes, None, time.perf_counter() - started, 0.0)

        parent = tracker.start_parent(
            exp,
            {
                T.SPEC_HASH: plan.spec.hash,
                T.PROFILE: plan.spec.profile,
                "mvbench.spec": str(plan.spec.path),
                "mvbench.runs": str(len(todo)),
                T.DESCRIPTION: f"mvbench run {plan.spec.path}: {len(todo)} runs of suite "
                f"{plan.suite} on profile {plan.spec.profile}",
            },
            what=f"{plan.suite} ({plan.spec.profile})",
        )
        status = "FINISHED"
        try:
            self.dispatch(exp, parent, todo, outcomes)
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if status != "KILLED" and any(o.status == "FAILED" for o in outcomes):
                status = "FAILED"
            tracker.log_metrics(
                parent,
                [
                    ("runs_finished", sum(o.status == "FINISHED" for o in outcomes), 0),
                    ("runs_failed", sum(o.status == "FAILED" for o in outcomes), 0),
                    ("stage_seconds", self.stage_seconds, 0),
                    ("seconds", time.perf_counter() - started, 0),
                ],
            )
            tracker.end(parent, status)
        order = {run.key: i for i, run in enumerate(plan.runs)}
        outcomes.sort(key=lambda o: order[o.run.key])
        return Execution(outcomes, parent, time.perf_counter() - started, self.stage_seconds)

    @property
    def store_id(self) -> str:
        if self._store_id is None:
            self._store_id = store_id(self.store)
        return self._store_id

    def lease_folder(self, exp: str) -> Path:
        return self.store / "leases" / exp

    def pending(self, exp: str) -> tuple[list[Outcome], list[Run]]:
        """After ending the runs of dead local workers and sweeping their temporary folders:
        the outcomes of the plan's runs already done or running in a live worker, and the
        runs to run."""
        plan, tracker = self.plan, self.tracker
        reaped = [r for r in tracker.reap_stale(exp) if r.data.tags.get(T.KIND) == "run"]
        swept = self.cache.sweep()
        if swept and not self.quiet:
            print(f"removed {swept} temporary stage folder(s) of dead processes", file=sys.stderr)
        if reaped and not self.quiet:
            print(
                f"{len(reaped)} run(s) left RUNNING by a dead process marked KILLED; "
                "they run again",
                file=sys.stderr,
            )
        done: set[str] = set()
        busy: set[str] = set()
        finished: dict[str, object] = {}
        for r in tracker.children(exp):
            key = r.data.tags.get(T.RUN_KEY)
            if r.info.status == "FINISHED":
                done.add(key)
                finished[key] = r
            elif r.info.status == "RUNNING" and self._worker_may_live(exp, r):
                busy.add(key)
        self._complete_artifacts(finished)
        outcomes = [
            Outcome(run, "DONE_BEFORE" if run.key in done else "BUSY")
            for run in plan.runs
            if run.key in done or run.key in busy
        ]
        todo = [run for run in plan.runs if run.key not in done and run.key not in busy]
        return outcomes, todo

    def _complete_artifacts(self, finished: dict[str, object]) -> None:
        """Runs finished by an older version lack the per-sample scores the report's paired
        tests read: upload them from the stage cache (where the evaluation is still cached)."""
        for run in self.plan.runs:
            child = finished.get(run.key)
            evaluate = [
                self.plan.node(k) for k in run.stages if self.plan.node(k).name == HEADLINE_STAGE
            ]
            if child is None or not evaluate:
                continue
            scores = self.cache.path(evaluate[0]) / PER_SAMPLE
            if not scores.exists():
                continue
            have = {a.path for a in self.tracker.client.list_artifacts(child.info.run_id)}
            if PER_SAMPLE not in have:
                self.tracker.log_artifact(child.info.run_id, scores)

    def _worker_may_live(self, exp: str, child) -> bool:
        """Whether the worker of a RUNNING child may still run it: for a run leased in this
        store, whether its lease has a live holder; otherwise (leased in another store, or
        started by a version without leases) yes, as reap_stale has ended those of dead
        processes on this machine."""
        if child.data.tags.get(T.LEASE_STORE) != self.store_id:
            return True
        key = child.data.tags.get(T.RUN_KEY, "")
        holder = RunLease(self.lease_folder(exp), key, self.lease_timeout).holder()
        return holder is not None and not holder.stale

    def dispatch(self, exp: str, parent: str, todo: list[Run], outcomes: list[Outcome]) -> None:
        """Run `todo` where the launcher puts them, appending their outcomes."""
        self.launcher.dispatch(self, exp, parent, todo, outcomes)

    def run_one(self, exp: str, parent: str, run: Run, overall) -> Outcome:
        """Claim the run's lease, then run it, unless it has finished meanwhile (DONE_BEFORE)
        or a live worker holds it (BUSY). Children of its key left RUNNING by workers that no
        longer hold the lease are marked KILLED first."""
        lease = RunLease(self.lease_folder(exp), run.key, self.lease_timeout, run.label)
        claim = lease.acquire()
        if not claim.acquired:
            overall.update(len(run.stages))
            return Outcome(run, "BUSY", error=claim.holder.description if claim.holder else "")
        try:
            earlier = self.tracker.runs_of_key(exp, run.key)
            if any(r.info.status == "FINISHED" for r in earlier):  # finished since we looked
                overall.update(len(run.stages))
                return Outcome(run, "DONE_BEFORE")
            for r in (r for r in earlier if r.info.status == "RUNNING"):
                worker = r.data.tags.get(T.WORKER)
                if r.data.tags.get(T.LEASE_STORE) == self.store_id:
                    # We hold the lease now: whoever started this run does not any more.
                    reason = claim.holder.stale if claim.holder else "its worker lost the lease"
                elif T.worker_alive(worker) is False:
                    reason = "worker died"
                else:  # started by a version without leases, and maybe alive
                    overall.update(len(run.stages))
                    return Outcome(run, "BUSY", error=f"worker {worker}")
                self.tracker.mark_stale(r.info.run_id, reason)
                if not self.quiet:
                    print(
                        f"{run.label}: left RUNNING ({reason}); marked KILLED, running it again",
                        file=sys.stderr,
                    )
            before = self.stage_seconds
            outcome = self._run(exp, parent, run, overall, lease)
            outcome.stage_seconds = self.stage_seconds - before
            return outcome
        finally:
            lease.release()

    def _run(
        self, exp: str, parent: str, run: Run, overall, lease: RunLease | None = None
    ) -> Outcome:
        started = time.perf_counter()
        tracker = self.tracker
        tags = run_tags(self.plan, run)
        if lease is not None:
            tags[T.LEASE_STORE] = self.store_id
        child = tracker.start_child(exp, parent, run.label, tags)
        # The params go with the first metrics write: one MLflow write fewer per run.
        params: dict[str, str] | None = run_params(run)
        outcome = Outcome(run, "RUNNING", child)
        overall.set_postfix_str(run.label, refresh=False)
        stage = None
        metrics: list[tuple[str, float, int]] = []  # logged in one batch: one write per run
        devices: set[str] = set()  # where its stages were computed, cached ones included
        threads: set[int] = set()  # torch CPU threads of its stages (from their manifests)
        try:
            for key in run.stages:
                stage = self.plan.node(key)
                if key in self.failed_nodes:
                    raise UpstreamFailed(
                        f"stage {stage.name} failed earlier in this execution: "
                        f"{self.failed_nodes[key]}"
                    )
                try:
                    manifest, computed = self._stage(stage, lease)
                except Exception as e:
                    self.failed_nodes[key] = f"{type(e).__name__}: {e}"
                    raise
                outcome.computed += computed
                outcome.reused += not computed
                if manifest.get("device"):  # (older manifests do not say)
                    devices.add(manifest["device"])
                if manifest.get("threads"):
                    threads.add(int(manifest["threads"]))
                metrics += stage_metrics(stage, manifest)
                if computed and manifest.get("seconds", 0.0) > LOG_EACH_STAGE_AFTER_S:
                    tracker.log_metrics(child, metrics, params)  # long stages: visible now
                    metrics, params = [], None
                overall.update(1)
            tracker.log_metrics(child, metrics, params)
            metrics, params = [], None
            provenance = {T.DEVICES: sorted(devices), T.THREADS: sorted(threads)}
            if any(provenance.values()):  # one write (older manifests say neither)
                tracker.set_tags(
                    child, {k: ",".join(map(str, v)) for k, v in provenance.items() if v}
                )
            self._log_artifacts(child, run)
        except KeyboardInterrupt:
            tracker.log_metrics(child, metrics, params)
            tracker.set_tags(child, {T.ERROR: "interrupted (Ctrl-C or SIGTERM)"})
            tracker.end(child, "KILLED")
            raise
        except Exception as e:
            outcome.status = "FAILED"
            outcome.error = f"{type(e).__name__}: {e}"
            tracker.log_metrics(child, metrics, params)  # what the stages before it measured
            tracker.set_tags(
                child, {T.ERROR: outcome.error, T.FAILED_STAGE: stage.name if stage else ""}
            )
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "error.txt"
                path.write_text(traceback.format_exc())
                tracker.log_artifact(child, path)
            tracker.end(child, "FAILED")
            overall.update(len(run.stages) - run.stages.index(stage.key) if stage else 0)
            if not self.quiet:
                print(f"\nFAILED {run.label}: {outcome.error}", file=sys.stderr)
        else:
            if lease is not None and not lease.held():
                # Its lease went stale (a hung worker, a lost heartbeat) and another worker
                # has taken the run over: that one's result counts, not this one's.
                outcome.status = "KILLED"
                outcome.error = f"lease lost ({lease.lost}); the run was taken over"
                tracker.set_tags(child, {T.ERROR: outcome.error, T.STALE: lease.lost})
                tracker.end(child, "KILLED")
            else:
                outcome.status = "FINISHED"
                tracker.end(child, "FINISHED")
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _stage(self, node: StageNode, lease: RunLease | None = None) -> tuple[dict, bool]:
        """The node's cache entry, computed here if missing; its progress goes to `lease`
        (mvbench status)."""
        inputs = {role: self.cache.path(self.plan.node(k)) for role, k in node.inputs.items()}

        def on_metric(name: str, value: float, step: int | None) -> None:
            if self.on_metric is not None:
                self.on_metric(metric_name(node, name), value, step)

        def on_progress(done: int, units: int | None, what: str, seconds: float) -> None:
            if lease is not None:
                lease.report(node.name, done, units, what, seconds)

        manifest, computed, seconds = compute_stage(
            self.cache,
            node,
            inputs,
            self.device,
            self.processes,
            self.quiet,
            on_metric,
            on_progress,
        )
        self.stage_seconds += seconds
        return manifest, computed

    def _log_artifacts(self, child: str, run: Run) -> None:
        """The resolved config, the evaluation's scores (with the per-sample scores the report's
        paired statistics read), sample GIFs, a contact sheet and the attention analysis, in one
        upload."""
        nodes = {self.plan.node(k).name: self.plan.node(k) for k in run.stages}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "config.yaml").write_text(
                yaml.dump(
                    run.profile.model_dump(mode="json", exclude=EXECUTION_SECTIONS),
                    Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),  # libyaml: 10x faster
                    sort_keys=False,
                )
            )
            evaluate = nodes.get(HEADLINE_STAGE)
            if evaluate is not None:
                scored = self.cache.path(evaluate)
                samples = folder / "samples"
                samples.mkdir()
                for name in ("scores.json", "per_sample.npz"):  # per_sample: paired statistics
                    if (scored / name).exists():
                        shutil.copy2(scored / name, folder)
                if (scored / "samples.npz").exists():
                    shutil.copy2(scored / "samples.npz", samples)
                    _contact_sheet(scored / "samples.npz", run.variant.name, samples)
                decode_key = evaluate.inputs.get("decode")
                if decode_key:
                    gifs = self.cache.path(self.plan.node(decode_key)) / "samples"
                    for gif in sorted(gifs.glob("*.gif")) if gifs.is_dir() else []:
                        shutil.copy2(gif, samples)
            interpret = nodes.get("interpret")  # the attention analysis, when the run has it
            if interpret is not None:
                analysed = self.cache.path(interpret)
                (folder / "interpret").mkdir()
                for name in ("attention.json", "attention.png"):
                    if (analysed / name).exists():
                        shutil.copy2(analysed / name, folder / "interpret")
            self.tracker.log_artifacts(child, folder)


def _contact_sheet(samples: Path, label: str, folder: Path) -> bool:
    """contact_sheet.png: ground truth over reconstruction for the saved test clips (False if
    there are none)."""
    import numpy as np

    from harness.report.samples import contact_sheet

    with np.load(samples) as z:
        if len(z["names"]) == 0:
            return False
        contact_sheet(
            z["truth"],
            {label: z["reconstruction"]},
            folder / "contact_sheet.png",
            names=[str(n) for n in z["names"]],
            compress_level=1,  # one per run: speed over size
        )
    return True
