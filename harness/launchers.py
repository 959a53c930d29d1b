"""Launchers: where a plan's runs go. A Runner (harness.runner) runs one run (its stages
through the stage cache, tracked in MLflow); a launcher hands the runs to it: `local` in this
process, `pool` in worker processes here, `slurm` in cluster jobs through submitit. The parent
process plans, ends the runs of dead workers and opens the suite's MLflow parent run; each run is
then executed by `Runner.run_one` wherever the launcher puts it, and its outcome comes back.
Searches start their workers with the same process and job primitives (spawn_worker, reap,
job_executor, job_error).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, fields
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from harness.lease import DEFAULT_TIMEOUT_S
from harness.plan import Plan, Run
from harness.profiles import ResourcesSection
from harness.runner import Outcome, Runner, check_threads, run_bar
from harness.tracking import Tracker
from mindvideo.errors import ConfigError

EXECUTORS = ("local", "pool", "slurm")
LEASE_TIMEOUT_ENV = "MVBENCH_LEASE_TIMEOUT"
# What travels back from a worker or job: an Outcome without its Run (the parent has it).
OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome) if f.name != "run")


def default_lease_timeout() -> float:
    """$MVBENCH_LEASE_TIMEOUT, else harness.lease's default (60 s)."""
    text = os.environ.get(LEASE_TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        return float(text)
    except ValueError:
        raise ConfigError(
            f"${LEASE_TIMEOUT_ENV}={text!r}: give a number of seconds, e.g. 60"
        ) from None


def check_options(
    executor: str,
    workers: int | None = None,
    slurm_local: bool = False,
    processes: int = 1,
    device: str | None = None,
    lease_timeout: float = DEFAULT_TIMEOUT_S,
    threads: int | None = None,
) -> None:
    """Refuse inconsistent `mvbench run` options before any work (one message each)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor}: choose one of {', '.join(EXECUTORS)}")
    check_threads(threads)
    if not lease_timeout > 0:
        raise ConfigError(f"--lease-timeout {lease_timeout}: give a number of seconds > 0")
    if workers is not None and executor != "pool":
        hint = (
            "slurm runs resources.slurm_array_parallelism jobs at once (set it in the profile, "
            "or --set resources.slurm_array_parallelism=N)"
            if executor == "slurm"
            else "add --executor pool to run the suite in N worker processes"
        )
        raise ConfigError(f"--workers {workers} applies to --executor pool; {hint}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: give 1 or more worker processes")
    if slurm_local and executor != "slurm":
        raise ConfigError(
            "--slurm-local runs the slurm executor's jobs on this machine; add --executor slurm"
        )
    if executor == "pool":
        if processes > 1:
            raise ConfigError(
                f"--processes {processes} with --executor pool: each pool worker has one GPU (or "
                "its share of the cores) and runs whole runs; use --executor local --processes N "
                "to train one run's stages in N processes"
            )
        if device not in (None, "cpu", "cuda"):
            raise ConfigError(
                f"--device {device} with --executor pool: the pool gives each worker its own GPU; "
                "give --device cuda, --device cpu, or no --device (GPUs if there are any)"
            )
    if executor == "slurm":
        import_submitit()
        if not slurm_local and shutil.which("sbatch") is None:
            raise ConfigError(
                "--executor slurm: no Slurm here (sbatch is not on PATH); run it on the "
                "cluster's login node, or add --slurm-local to run the jobs as processes on this "
                "machine (to try the slurm path without a cluster)"
            )


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--executor slurm needs submitit, which is not installed: pip install 'submitit>=1.5' "
            "(a dependency of mindvideo-bench: pip install -e . installs it)"
        ) from None
    return submitit


def make_runner(
    kind: str,
    plan: Plan,
    store: Path,
    tracker: Tracker,
    workers: int | None = None,
    slurm_local: bool = False,
    **options: Any,
) -> Runner:
    """The runner `mvbench run --executor KIND` uses, with KIND's launcher; `options` are
    Runner's."""
    runner = Runner(plan, store, tracker, **options)
    if kind == "pool":
        runner.launcher = PoolLauncher(
            workers,
            device=runner.requested_device,
            processes=runner.processes,
            threads=runner.threads,
        )
    elif kind == "slurm":
        check_options("slurm", slurm_local=slurm_local, processes=runner.processes)
        runner.launcher = SlurmLauncher(local=slurm_local)
    elif kind != "local":
        raise ConfigError(f"--executor {kind}: choose one of {', '.join(EXECUTORS)}")
    return runner


def subplan(plan: Plan, runs: list[Run]) -> Plan:
    """The plan of some of its runs with the stage nodes they read (inputs included, such as a
    real dataset's node): what a worker or a job needs, and no more."""
    nodes: dict = {}
    todo = [k for run in runs for k in run.stages]
    while todo:
        key = todo.pop()
        if key not in nodes:
            nodes[key] = plan.node(key)
            todo.extend(nodes[key].inputs.values())
    return Plan(spec=plan.spec, runs=list(runs), nodes=nodes)


def outcome_fields(outcome: Outcome) -> dict[str, Any]:
    return {name: getattr(outcome, name) for name in OUTCOME_FIELDS}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def child_environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set, for a child process started inside (spawn copies it)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def spawn_worker(ctx, target, args: tuple, slot: Slot, name: str):
    """Start a process (of a spawn context) with the slot's share of the machine in its
    environment, set before torch or CUDA start in it."""
    process = ctx.Process(target=target, args=args, name=name)
    with child_environ(slot.env):
        process.start()
    return process


def reap(processes: list) -> None:
    """Wait for every process, joining each as soon as it ends (an unreaped dead worker is a
    zombie); on Ctrl-C, SIGTERM the others (each marks what it runs KILLED) and wait."""
    pending = {p.sentinel: p for p in processes}
    try:
        while pending:
            for sentinel in wait(list(pending)):
                pending.pop(sentinel).join()
    except KeyboardInterrupt:
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join()
        raise


def job_executor(folder: Path, resources: ResourcesSection, name: str, local: bool):
    """A submitit executor for jobs of these resources (local: processes on this machine)."""
    submitit = import_submitit()
    executor = submitit.AutoExecutor(folder=folder, cluster="local" if local else "slurm")
    executor.update_parameters(**submitit_parameters(resources, name))
    return executor


def job_error(job, error: BaseException) -> str:
    """What to say of a job that ended without a result: its first error line and its log."""
    text = str(error).strip()
    first = text.splitlines()[0][:300] if text else type(error).__name__
    return f"job {job.job_id} ended without a result ({first}); its log: {job.paths.stderr}"


# The pool -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One pool worker's share of the machine."""

    index: int
    gpu: str | None  # the CUDA device it sees (an entry of CUDA_VISIBLE_DEVICES); None: CPU
    threads: int  # torch threads

    @property
    def env(self) -> dict[str, str]:
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        return env


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pool_slots(
    workers: int | None,
    device: str | None,
    gpus: list[str] | None = None,
    threads: int | None = None,
) -> list[Slot]:
    """The pool's workers: on GPUs one GPU each (worker i gets GPU i mod #GPUs; default one
    worker per GPU), on CPU one per core (default); torch threads per worker = `threads`, or
    cores / workers, at least 1."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: give 1 or more worker processes")
    if gpus is None:
        gpus = [] if device == "cpu" else visible_gpus()
    if device == "cuda" and not gpus:
        raise ConfigError(
            "--device cuda with --executor pool: no GPU is visible (drivers, "
            "CUDA_VISIBLE_DEVICES); give --device cpu"
        )
    n = workers or len(gpus) or cores()
    threads = threads or max(1, cores() // n)
    return [Slot(i, gpus[i % len(gpus)] if gpus else None, threads) for i in range(n)]


class PoolLauncher:
    """Runs the suite's runs in N worker processes on this machine. Each worker asks the parent
    for a run whenever it is free (a shared queue, not a static split: a slow run holds up only
    its own worker) and sends its outcome back."""

    def __init__(
        self,
        workers: int | None = None,
        device: str | None = None,
        processes: int = 1,
        threads: int | None = None,
    ):
        check_options("pool", workers, processes=processes, device=device)
        self.slots = pool_slots(workers, device, threads=threads)
        cpu_slots = [s for s in self.slots if s.gpu is None]
        if cpu_slots and sum(s.threads for s in cpu_slots) > cores():
            print(
                f"warning: {len(cpu_slots)} CPU workers x {cpu_slots[0].threads} torch threads on "
                f"{cores()} cores: torch processes that share cores slow each other down far "
                "more than their share; give fewer --workers or --threads",
                file=sys.stderr,
            )

    def describe(self) -> str:
        slot = self.slots[0]
        if slot.gpu is None:
            share = f"{slot.threads} torch thread(s) each"
        else:
            share = "GPUs " + ", ".join(dict.fromkeys(s.gpu for s in self.slots)) + ", one each"
        return f"pool of {len(self.slots)} worker processes ({share})"

    def dispatch(
        self, runner: Runner, exp: str, parent: str, todo: list[Run], outcomes: list[Outcome]
    ) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # not fork: the parent holds threads, MLflow, maybe CUDA
        results = ctx.Queue()
        by_key = {run.key: run for run in todo}
        waiting = deque(run.key for run in todo)  # the queue workers take their runs from
        plan = subplan(runner.plan, todo)
        options = {
            "lease_timeout": runner.lease_timeout,
            "device": runner.requested_device,
        }
        workers: dict[int, Any] = {}  # slot index -> process
        inboxes: dict[int, Any] = {}
        current: dict[int, str | None] = {}  # slot index -> the run key it was given
        started: set[int] = set()  # slots whose worker has reported at least once
        retried: set[str] = set()
        unfinished = set(by_key)
        stop = False  # --fail-fast: no new runs
        overall = run_bar(sum(len(run.stages) for run in todo), runner.plan.suite, runner.quiet)

        def start(slot: Slot) -> None:
            inboxes[slot.index] = ctx.Queue()
            args = (slot, plan, runner.store.resolve(), runner.tracker.uri, exp, parent, options)
            workers[slot.index] = spawn_worker(
                ctx,
                pool_worker,
                (*args, inboxes[slot.index], results, os.getpid()),
                slot,
                f"mvbench-pool-{slot.index}",
            )
            current[slot.index] = None
            started.discard(slot.index)

        def record(outcome: Outcome) -> None:
            unfinished.discard(outcome.run.key)
            outcomes.append(outcome)
            runner.stage_seconds += outcome.stage_seconds
            overall.update(len(outcome.run.stages))
            if outcome.status == "FAILED" and not runner.quiet:
                print(f"\nFAILED {outcome.run.label}: {outcome.error}", file=sys.stderr)

        def assign(index: int) -> None:
            nonlocal stop
            if runner.fail_fast and any(o.status == "FAILED" for o in outcomes):
                stop = True
            if stop:
                while waiting:
                    record(Outcome(by_key[waiting.popleft()], "NOT_RUN"))
            key = waiting.popleft() if waiting else None
            current[index] = key
            inboxes[index].put(key)  # None: no more runs, the worker exits
            if key is not None:
                overall.set_postfix_str(by_key[key].label, refresh=False)

        def receive(message: tuple) -> None:
            kind, index, key, values = message
            started.add(index)
            if kind == "done" and key in unfinished:
                record(Outcome(by_key[key], **values))
            assign(index)

        slots = self.slots[: len(todo)]  # no more workers than runs
        interrupted = False
        try:
            for slot in slots:
                start(slot)
            while unfinished:
                try:
                    receive(results.get(timeout=0.5))
                    continue  # read every message before looking for dead workers
                except queue.Empty:
                    pass
                for slot in slots:
                    process, key = workers[slot.index], current[slot.index]
                    if process.exitcode is None or key is None and not waiting:
                        continue  # alive, or gone when told to with nothing left to do
                    self._worker_died(
                        slot, process, key, started, retried, waiting, by_key, runner.quiet
                    )
                    current[slot.index] = None
                    if key is not None and key in unfinished and key not in waiting:
                        error = f"its pool worker died twice (exit code {process.exitcode})"
                        record(Outcome(by_key[key], "FAILED", error=error))
                    if waiting:
                        start(slot)
        except BaseException:
            interrupted = True
            raise
        finally:
            overall.close()
            self._stop_workers(workers, inboxes, graceful=not interrupted)

    def _worker_died(self, slot, process, key, started, retried, waiting, by_key, quiet) -> None:
        """A worker ended without being told to: its run runs again (once) in another worker;
        a worker that dies before taking any run stops the pool (its error is above)."""
        if slot.index not in started:
            raise RuntimeError(
                f"pool worker {slot.index} exited with code {process.exitcode} before taking a "
                "run (its error is printed above)"
            )
        if key is None or key in retried:
            return
        retried.add(key)
        waiting.appendleft(key)
        if not quiet:
            print(
                f"\npool worker {slot.index} (pid {process.pid}) died (exit code "
                f"{process.exitcode}) while running {by_key[key].label}; it runs again",
                file=sys.stderr,
            )

    def _stop_workers(self, workers: dict, inboxes: dict, graceful: bool) -> None:
        """Tell the workers to exit; then interrupt those still there: after a finished
        execution they hold no run (a replacement worker may still be starting), after an
        interruption their runs are marked KILLED. Kill what is left after a grace period."""
        for index, process in workers.items():
            if process.exitcode is None:
                with contextlib.suppress(Exception):
                    inboxes[index].put(None)
        deadline = time.monotonic() + (2 if graceful else 0)
        for process in workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for process in workers.values():
            if process.exitcode is None:
                process.terminate()  # SIGTERM: the worker marks its run KILLED
        deadline = time.monotonic() + 30
        for process in workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()


def pool_worker(
    slot: Slot,
    plan: Plan,
    store: Path,
    uri: str,
    exp: str,
    parent: str,
    options: dict,
    inbox,
    results,
    parent_pid: int,
) -> None:
    """A pool worker's life: ask for a run, claim and run it with the local executor, send
    the outcome back; until the parent sends None or is gone."""
    # Ctrl-C reaches the parent, which stops the workers with SIGTERM: the run is marked KILLED.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    import torch

    torch.set_num_threads(slot.threads)
    device = "cuda" if slot.gpu is not None else options["device"]
    executor = Runner(
        plan,
        store,
        Tracker(store, uri),
        quiet=True,
        device=device,
        lease_timeout=options["lease_timeout"],
    )
    runs = {run.key: run for run in plan.runs}
    bar = run_bar(None, "", quiet=True)
    try:
        results.put(("ready", slot.index, None, None))
        while True:
            key = _next_run(inbox, parent_pid)
            if key is None:
                return
            outcome = executor.run_one(exp, parent, runs[key], bar)
            results.put(("done", slot.index, key, outcome_fields(outcome)))
    except KeyboardInterrupt:
        return  # its run is marked KILLED; the parent is stopping the pool
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # from now on, nothing left to mark


def _next_run(inbox, parent_pid: int) -> str | None:
    while True:
        try:
            return inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the parent is gone: nobody wants the outcome
                return None


# Slurm ----------------------------------------------------------------------------------------


def submitit_parameters(resources: ResourcesSection, name: str) -> dict[str, Any]:
    """The profile's `resources:` as submitit AutoExecutor parameters (slurm_* ones are ignored
    by submitit's local executor)."""
    params: dict[str, Any] = {
        "name": name,
        "nodes": 1,
        "tasks_per_node": 1,
        "timeout_min": resources.timeout_min,
        "mem_gb": resources.mem_gb,
        "cpus_per_task": resources.cpus_per_job,
        "gpus_per_node": resources.gpus_per_job,
        "slurm_array_parallelism": resources.slurm_array_parallelism,
    }
    if resources.partition:
        params["slurm_partition"] = resources.partition
    if resources.slurm_additional_parameters:
        params["slurm_additional_parameters"] = dict(resources.slurm_additional_parameters)
    return params


class SlurmLauncher:
    """One cluster job per run, through submitit: the suite's runs go out as one job array per
    distinct `resources:` (usually one), and each job claims and runs its run against the
    shared store. `local`: submitit's local executor runs the jobs as processes here, at most
    resources.slurm_array_parallelism at once (testing the slurm path on a laptop)."""

    def __init__(self, local: bool = False):
        self.local = local

    def describe(self) -> str:
        where = "submitit's local executor (processes on this machine)" if self.local else "Slurm"
        return f"one job per run on {where}"

    def dispatch(
        self, runner: Runner, exp: str, parent: str, todo: list[Run], outcomes: list[Outcome]
    ) -> None:
        store = runner.store.resolve()
        folder = store / "slurm" / exp
        groups: dict[str, list[Run]] = {}
        for run in todo:
            resources = run.profile.resources.model_dump(mode="json")
            groups.setdefault(json.dumps(resources, sort_keys=True), []).append(run)
        overall = run_bar(sum(len(run.stages) for run in todo), runner.plan.suite, runner.quiet)
        queued: deque = deque()  # (run, executor, parallelism) not submitted yet (local only)
        running: list = []  # (run, job)
        try:
            for runs in groups.values():
                resources = runs[0].profile.resources
                executor = job_executor(
                    folder, resources, f"mvbench-{runner.plan.suite}", self.local
                )
                if self.local:
                    queued.extend((run, executor, resources) for run in runs)
                    continue
                args = [self._job_args(runner, store, exp, parent, run) for run in runs]
                jobs = executor.map_array(run_job, *zip(*args, strict=True))
                running.extend(zip(runs, jobs, strict=True))
                if not runner.quiet:
                    print(
                        f"submitted {len(jobs)} jobs (array {jobs[0].job_id.split('_')[0]}"
                        f"{', partition ' + resources.partition if resources.partition else ''}"
                        f"); logs in {folder}",
                        file=sys.stderr,
                    )
            while running or queued:
                self._submit_local(runner, queued, running, store, exp, parent)
                for run, job in [(r, j) for r, j in running if j.done()]:
                    running.remove((run, job))
                    outcome = self._collect(run, job)
                    outcomes.append(outcome)
                    runner.stage_seconds += outcome.stage_seconds
                    overall.update(len(run.stages))
                    if outcome.status == "FAILED" and not runner.quiet:
                        print(f"\nFAILED {run.label}: {outcome.error}", file=sys.stderr)
                if runner.fail_fast and any(o.status == "FAILED" for o in outcomes):
                    while queued:
                        outcomes.append(Outcome(queued.popleft()[0], "NOT_RUN"))
                if running or queued:
                    time.sleep(0.2 if self.local else 5.0)
        except BaseException:
            for _, job in running:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)  # its run is marked KILLED (SIGTERM / SIGINT)
            raise
        finally:
            overall.close()

    def _job_args(self, runner: Runner, store: Path, exp: str, parent: str, run: Run) -> tuple:
        options = {
            "lease_timeout": runner.lease_timeout,
            "device": runner.requested_device,
            "processes": runner.processes,
            "threads": runner.threads or run.profile.resources.cpus_per_job,
        }
        return (subplan(runner.plan, [run]), str(store), runner.tracker.uri, exp, parent, options)

    def _submit_local(
        self, runner: Runner, queued: deque, running: list, store, exp, parent
    ) -> None:
        """Local jobs, each group at most its slurm_array_parallelism at once."""
        while queued:
            run, executor, resources = queued[0]
            same = sum(1 for r, _ in running if r.profile.resources == resources)
            if same >= resources.slurm_array_parallelism:
                return
            queued.popleft()
            running.append(
                (run, executor.submit(run_job, *self._job_args(runner, store, exp, parent, run)))
            )

    def _collect(self, run: Run, job) -> Outcome:
        try:
            return Outcome(run, **job.result())
        except Exception as e:  # the job died, hit its time limit, or failed outside the run
            return Outcome(
                run,
                "FAILED",
                error=f"{job_error(job, e)}. Its run, if left RUNNING, runs again on the next "
                "`mvbench run` once its lease goes stale",
            )


def run_job(plan: Plan, store: str, uri: str, exp: str, parent: str, options: dict) -> dict:
    """One cluster job (submitit calls it on the node): claim the plan's one run and run it
    with the local executor; its outcome goes back to the submitting process."""
    # scancel or the time limit send SIGTERM: the run is marked KILLED, as on Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    import torch

    torch.set_num_threads(max(1, int(options["threads"])))
    executor = Runner(
        plan,
        Path(store),
        Tracker(Path(store), uri),
        quiet=True,
        device=options["device"],
        processes=options["processes"],
        lease_timeout=options["lease_timeout"],
    )
    [run] = plan.runs
    return outcome_fields(executor.run_one(exp, parent, run, run_bar(None, "", quiet=True)))
