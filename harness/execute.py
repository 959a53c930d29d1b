"""The `local` executor: runs a plan's stages in dependency order, tracked in MLflow."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import tracking as T
from harness.cache import StageCache
from harness.plan import Plan, Run, StageNode, stage_module
from harness.tracking import Tracker
from mindvideo.errors import ConfigError
from mindvideo.stages.base import StageContext

HEADLINE_STAGE = "evaluate"  # its metrics are logged unprefixed: they are the suite's results
# Stage metrics go to MLflow in one write per run, except after a stage that took this long
# (training): then they are written at once, to be watched while the run goes on.
LOG_EACH_STAGE_AFTER_S = 60.0


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


def _bar(total: int | None, desc: str, quiet: bool, position: int = 0, leave: bool = True):
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


def run_params(run: Run) -> dict[str, str]:
    config = run.profile.model_dump(mode="json", exclude={"source", "description"})
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
    }


def stage_metrics(node: StageNode, manifest: dict) -> list[tuple[str, float, int]]:
    """A stage's metrics as the child run logs them: the final values (step 0) and any
    series logged with steps (per epoch...). Evaluate's, and a stage's HEADLINE_METRICS, are
    unprefixed; others <stage>.<name>."""
    headline = set(getattr(stage_module(node.name), "HEADLINE_METRICS", ()))

    def name(k: str) -> str:
        return k if node.name == HEADLINE_STAGE or k in headline else f"{node.name}.{k}"

    out = [(name(k), float(v), 0) for k, v in manifest.get("metrics", {}).items()]
    out += [
        (name(k), float(v), int(step))
        for k, v, step in manifest.get("series", [])
        if step is not None
    ]
    if "seconds" in manifest:
        out.append((f"seconds.{node.name}", float(manifest["seconds"]), 0))
    return out


class LocalExecutor:
    """Runs the plan's runs one after another in this process."""

    def __init__(
        self,
        plan: Plan,
        store: Path,
        tracker: Tracker,
        fail_fast: bool = False,
        quiet: bool = False,
        device: str | None = None,
        processes: int = 1,
    ):
        if processes < 1:
            raise ConfigError(f"--processes {processes}: need at least 1")
        self.plan = plan
        self.processes = processes
        self.cache = StageCache(store)
        self.tracker = tracker
        self.fail_fast = fail_fast
        self.quiet = quiet
        self.requested_device = device
        self._device: str | None = None
        self.failed_nodes: dict[str, str] = {}  # key -> error, within this execution
        self.stage_seconds = 0.0

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = _device(self.requested_device)
        return self._device

    def execute(self) -> Execution:
        started = time.perf_counter()
        plan, tracker = self.plan, self.tracker
        exp = tracker.experiment(plan.suite)
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
        for r in tracker.children(exp):
            key = r.data.tags.get(T.RUN_KEY)
            if r.info.status == "FINISHED":
                done.add(key)
            elif r.info.status == "RUNNING":
                busy.add(key)
        outcomes = [
            Outcome(run, "DONE_BEFORE" if run.key in done else "BUSY")
            for run in plan.runs
            if run.key in done or run.key in busy
        ]
        todo = [run for run in plan.runs if run.key not in done and run.key not in busy]
        if not todo:
            return Execution(outcomes, None, time.perf_counter() - started, 0.0)

        parent = tracker.start_parent(
            exp,
            {
                T.SPEC_HASH: plan.spec.hash,
                T.PROFILE: plan.spec.profile,
                "mvbench.spec": str(plan.spec.path),
                "mvbench.runs": str(len(todo)),
            },
        )
        total = sum(len(run.stages) for run in todo)
        overall = _bar(total, plan.suite, self.quiet)
        status = "FINISHED"
        try:
            for i, run in enumerate(todo):
                if self.fail_fast and any(o.status == "FAILED" for o in outcomes):
                    outcomes.extend(Outcome(r, "NOT_RUN") for r in todo[i:])
                    break
                outcomes.append(self._run(exp, parent, run, overall))
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            overall.close()
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

    def _run(self, exp: str, parent: str, run: Run, overall) -> Outcome:
        started = time.perf_counter()
        tracker = self.tracker
        child = tracker.start_child(exp, parent, run.label, run_tags(self.plan, run))
        # The params go with the first metrics write: one MLflow write fewer per run.
        params: dict[str, str] | None = run_params(run)
        outcome = Outcome(run, "RUNNING", child)
        overall.set_postfix_str(run.label, refresh=False)
        stage = None
        metrics: list[tuple[str, float, int]] = []  # logged in one batch: one write per run
        try:
            for key in run.stages:
                stage = self.plan.node(key)
                if key in self.failed_nodes:
                    raise UpstreamFailed(
                        f"stage {stage.name} failed earlier in this execution: "
                        f"{self.failed_nodes[key]}"
                    )
                try:
                    manifest, computed = self._stage(stage)
                except Exception as e:
                    self.failed_nodes[key] = f"{type(e).__name__}: {e}"
                    raise
                outcome.computed += computed
                outcome.reused += not computed
                metrics += stage_metrics(stage, manifest)
                if computed and manifest.get("seconds", 0.0) > LOG_EACH_STAGE_AFTER_S:
                    tracker.log_metrics(child, metrics, params)  # long stages: visible now
                    metrics, params = [], None
                overall.update(1)
            tracker.log_metrics(child, metrics, params)
            metrics, params = [], None
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
            outcome.status = "FINISHED"
            tracker.end(child, "FINISHED")
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _stage(self, node: StageNode) -> tuple[dict, bool]:
        module = stage_module(node.name) if node.external is None else None

        def produce(out: Path) -> dict:
            series: list[tuple[str, float, int | None]] = []
            t0 = time.perf_counter()
            units = getattr(module, "work_units", None)
            bar = _bar(
                units(node.config) if units else None,
                node.name,
                self.quiet,
                position=1,
                leave=False,
            )

            def tick(n: int, what: str) -> None:
                bar.set_postfix_str(what, refresh=False)
                bar.update(n)

            ctx = StageContext(
                seed=node.seed if node.seed is not None else 0,
                device=self.device,
                processes=self.processes,
                progress=tick,
                log_metric=lambda name, value, step=None: series.append((name, value, step)),
            )
            inputs = {role: self.cache.path(self.plan.node(k)) for role, k in node.inputs.items()}
            try:
                result = module.run(node.config, inputs, out, ctx)
            finally:
                self.stage_seconds += time.perf_counter() - t0
                bar.close()
            return {
                "version": module.VERSION,
                "metrics": {k: float(v) for k, v in result.metrics.items()},
                "series": [[k, float(v), s] for k, v, s in series if s is not None],
                "artifacts": [str(p) for p in result.artifacts],
            }

        return self.cache.compute(node, produce)

    def _log_artifacts(self, child: str, run: Run) -> None:
        """The resolved config, the evaluation's scores (with the per-sample scores the report's
        paired statistics read), sample GIFs, a contact sheet and the attention analysis, in one
        upload."""
        nodes = {self.plan.node(k).name: self.plan.node(k) for k in run.stages}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "config.yaml").write_text(
                yaml.dump(
                    run.profile.model_dump(mode="json"),
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
