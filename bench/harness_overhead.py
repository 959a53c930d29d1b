"""The harness's own cost (planning, hashing, cache I/O, MLflow tracking) against stage compute.

Runs a suite cold in a fresh store through the same code as `mvbench run`, twice side by side
in one process: first as on a new machine (MLflow builds its database schema by replaying its
migrations), then in another new store that starts from the cached empty schema (as every
later store does); each time it measures the time inside the stages' run() functions (the
compute the harness wraps), the time inside MLflow calls, and the wall time of planning and
execution. Then runs it again warm (everything finished: nothing is recomputed) and times that.
Prints the overhead ratio (wall - stage compute) / wall against the goal (<= 5%) and exits 0
either way.

    python bench/harness_overhead.py [SPEC] [--profile smoke] [--keep DIR]
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

from _scratch import scratch_folder

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.05


def timed_tracker(tracker, totals: dict[str, float]):
    """Wrap the tracker's MLflow-facing methods to add up the time spent in them."""
    for name in (
        "start_parent",
        "start_child",
        "log_metrics",
        "set_tags",
        "log_artifact",
        "log_artifacts",
        "end",
        "children",
        "runs",
        "reap_stale",
        "experiment",
    ):
        method = getattr(tracker, name, None)
        if method is None:
            continue

        @functools.wraps(method)
        def wrapper(*args, _method=method, _name=name, **kwargs):
            t0 = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                totals[_name] = totals.get(_name, 0.0) + time.perf_counter() - t0

        setattr(tracker, name, wrapper)
    return tracker


def execute_once(spec_path: Path, profile: str, store: Path) -> dict[str, float]:
    from harness.plan import build_plan
    from harness.runner import Runner
    from harness.spec import load_spec
    from harness.tracking import Tracker

    t0 = time.perf_counter()
    plan = build_plan(load_spec(spec_path, profile))
    t_plan = time.perf_counter() - t0
    t1 = time.perf_counter()
    tracking: dict[str, float] = {}
    tracker = timed_tracker(Tracker(store), tracking)
    t_tracker = time.perf_counter() - t1
    result = Runner(plan, store, tracker, quiet=True).execute()
    wall = time.perf_counter() - t0
    return {
        "runs": len(plan.runs),
        "finished": result.count("FINISHED"),
        "plan_s": t_plan,
        "tracker_init_s": t_tracker,
        "execute_s": result.seconds,
        "stage_s": result.stage_seconds,
        "mlflow_s": sum(tracking.values()),
        "wall_s": wall,
        "tracking": tracking,
    }


def import_seconds(module: str) -> float:
    """Seconds to import `module` in a fresh interpreter (what every `mvbench` process pays)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def report(name: str, cold: dict) -> None:
    overhead = cold["wall_s"] - cold["stage_s"]
    rest = overhead - cold["plan_s"] - cold["tracker_init_s"] - cold["mlflow_s"]
    ratio = overhead / cold["wall_s"]
    print(
        f"{name}: wall {cold['wall_s']:.2f} s = stage compute {cold['stage_s']:.2f} s "
        f"+ harness {overhead:.2f} s (plan {cold['plan_s']:.2f} s, tracker init "
        f"{cold['tracker_init_s']:.2f} s, MLflow calls {cold['mlflow_s']:.2f} s, "
        f"the rest: cache, hashing, artifacts, bars {rest:.2f} s): "
        f"overhead {100 * ratio:.1f}% (goal <= {100 * GOAL:.0f}%: "
        f"{'met' if ratio <= GOAL else 'NOT met'}; "
        f"{1000 * cold['mlflow_s'] / max(cold['finished'], 1):.0f} ms of MLflow calls per run)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "spec", nargs="?", default=str(ROOT / "experiments" / "suites" / "ridge.yaml")
    )
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--keep", help="use (and keep) this folder instead of a temp one")
    args = parser.parse_args()
    from harness.tracking import SCHEMA_CACHE_ENV

    with scratch_folder(args.keep, "mvbench-bench-") as folder:
        # A cache of its own: the first store builds MLflow's schema (as on a new machine)
        # and leaves its empty database there; the second starts from that copy.
        os.environ[SCHEMA_CACHE_ENV] = str(folder / "schema-cache")
        built = execute_once(Path(args.spec), args.profile, folder / "first-store")
        cold = execute_once(Path(args.spec), args.profile, folder / "store")
        warm = execute_once(Path(args.spec), args.profile, folder / "store")
    print(f"suite {Path(args.spec).name} on {args.profile}: {cold['runs']} runs, cold each time")
    report("first store on this machine (MLflow builds its schema)", built)
    report("a new store (from the cached empty schema)         ", cold)
    detail = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cold["tracking"].items()))
    print(f"  MLflow time by call (s): {detail}")
    floor = import_seconds("mlflow")
    print(
        f"  of the tracker's init, importing mlflow takes {floor:.2f} s in a fresh interpreter "
        f"({100 * floor / cold['wall_s']:.1f}% of this suite's wall time)"
    )
    print(
        f"warm re-run (all {warm['runs']} runs finished before): wall {warm['wall_s']:.2f} s, "
        f"{warm['finished']} runs executed; ratio cold/warm {cold['wall_s'] / warm['wall_s']:.0f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
