"""A guidance-scale sweep re-uses one trained model: its cost against one run.

Runs, side by side in one process and each in a fresh store, (1) one MinD-Video run (subject1,
seed 0, guidance 12.5) and (2) a 5-point guidance sweep (scales 1, 3, 5, 7.5, 12.5) of the same
run, both cold through the same code as `mvbench run`. The sweep shares every stage up to the
co-training through the stage cache and decodes and scores five times. Prints both wall times,
their ratio against the goal (<= 1.5x), and the ratio without the dataset and foundation
stages (simulated data, judges and CLIP: made once per dataset, shared by every suite), from the
stage times the cache records. Exits 0 whether or not the goal is met.

    python bench/guidance_sweep.py [--profile smoke] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from _scratch import scratch_folder

GOAL = 1.5
SCALES = (1.0, 3.0, 5.0, 7.5, 12.5)
SHARED = ("simulate", "foundation")  # per dataset, not per suite


def spec_text(scales: tuple[float, ...], profile: str) -> str:
    variants = "\n".join(f"  g{s:g}: {{guidance.scale: {s}}}" for s in scales)
    return (
        f"suite: guidance-bench\nprofile: {profile}\nsubjects: [subject1]\nseeds: [0]\n"
        f"variants:\n{variants}\nreport: {{metrics: [video_2way_top1, ssim]}}\n"
    )


def stage_seconds(store: Path) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for manifest in (store / "cache").glob("*/*/manifest.json"):
        record = json.loads(manifest.read_text())
        totals[record["stage"]] += float(record.get("seconds", 0.0))
    return dict(totals)


def run_cold(text: str, profile: str, folder: Path) -> tuple[float, dict[str, float]]:
    from harness.plan import build_plan
    from harness.runner import Runner
    from harness.spec import load_spec
    from harness.tracking import Tracker

    folder.mkdir(parents=True)
    spec = folder / "suite.yaml"
    spec.write_text(text)
    store = folder / "store"
    t0 = time.perf_counter()
    plan = build_plan(load_spec(spec, profile))
    result = Runner(plan, store, Tracker(store), quiet=True).execute()
    wall = time.perf_counter() - t0
    if result.count("FINISHED") != len(plan.runs):
        raise SystemExit(f"{folder}: not every run finished; see `mvbench status`")
    return wall, stage_seconds(store)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--keep", help="use (and keep) this folder instead of a temp one")
    args = parser.parse_args()
    with scratch_folder(args.keep, "mvbench-sweep-") as root:
        one, one_stages = run_cold(spec_text((12.5,), args.profile), args.profile, root / "one")
        sweep, sweep_stages = run_cold(
            spec_text(SCALES, args.profile), args.profile, root / "sweep"
        )
    ratio = sweep / one
    shared_one = sum(one_stages.get(s, 0.0) for s in SHARED)
    shared_sweep = sum(sweep_stages.get(s, 0.0) for s in SHARED)
    model_ratio = (sweep - shared_sweep) / (one - shared_one)
    print(f"profile {args.profile}: one run vs a {len(SCALES)}-point guidance sweep, both cold")
    for name, wall, stages in (("one run", one, one_stages), ("sweep", sweep, sweep_stages)):
        detail = ", ".join(f"{k} {v:.1f}" for k, v in sorted(stages.items()))
        print(f"  {name}: wall {wall:.1f} s; stage seconds: {detail}")
    print(
        f"sweep / one run: {ratio:.2f}x (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'});"
        f" without the per-dataset stages ({', '.join(SHARED)}): {model_ratio:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
