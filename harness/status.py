"""What a store holds for a suite: which stages are cached, what the rest should cost, and the
state of each run as tracking and the run leases tell it (`mvbench plan` and `mvbench status`
print these)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from harness import tracking as T
from harness.cache import MANIFEST, StageCache
from harness.lease import duration
from harness.plan import Plan
from harness.tracking import Tracker


def cache_state(plan: Plan, store: Path) -> dict[str, bool]:
    """Which of the plan's stage keys are already in the cache."""
    cache = StageCache(store)
    return {key: cache.manifest(node) is not None for key, node in plan.nodes.items()}


def compute_estimate(plan: Plan, store: Path, cached: dict[str, bool]) -> str:
    """What the plan's stages cost: the recorded time of the cached ones, and for the others
    the median recorded time of finished stages of the same kind in the store (a rough guide:
    the same kind of stage costs more with other settings)."""
    cache = StageCache(store)
    done = 0.0
    for key, node in plan.nodes.items():
        if cached[key] and node.external is None:
            done += float((cache.manifest(node) or {}).get("seconds", 0.0))
    pending: dict[str, int] = {}
    for key, node in plan.nodes.items():
        if not cached[key]:
            pending[node.name] = pending.get(node.name, 0) + 1
    estimate, unknown, peaks = 0.0, [], {}
    for name, count in pending.items():
        times = []
        for path in sorted((cache.root / name).glob(f"*/{MANIFEST}"))[:200]:
            try:
                manifest = json.loads(path.read_text())
                times.append(float(manifest.get("seconds", 0.0)))
                for kind, gib in manifest.get("peak_gib", {}).items():  # harness/memory.py
                    peaks[kind, name] = max(peaks.get((kind, name), 0.0), float(gib))
            except (OSError, ValueError, AttributeError, TypeError):
                continue
        if times:  # the median: a stage slowed by other work on the cores does not count much
            estimate += count * statistics.median(times)
        else:
            unknown.append(name)
    n_cached = sum(cached.values())
    text = "compute: " + (
        f"the {n_cached} cached stages took {duration(done)}" if n_cached else "nothing cached"
    )
    if not pending:
        return text
    n_pending = sum(pending.values())
    if len(unknown) == len(pending):  # a fresh store: nothing to average
        return (
            f"{text}; the {n_pending} to compute: no estimate yet (this store has no finished "
            f"stage of these kinds; results/README.md gives the times measured for the committed "
            f"suites)"
        )
    known = n_pending - sum(pending[name] for name in unknown)
    text += (
        f"; the {n_pending} to compute: about {duration(estimate)}"
        + (f" for the {known} of kinds timed here" if unknown else "")
        + " (the median time of finished stages of each kind in this store"
        + (f"; none yet for {', '.join(unknown)}, not counted" if unknown else "")
        + ")"
    )
    for kind, what in (("rss", "resident memory"), ("cuda", "GPU memory")):
        found = [f"{name} {gib:.1f} GiB" for (k, name), gib in peaks.items() if k == kind]
        if found:
            text += f"; peak {what} of such stages here: {', '.join(found)}"
    return text


def experiment_summaries(tracker: Tracker) -> list[tuple[str, str]]:
    """(suite, its runs counted by state) for every suite in the tracking store."""
    summaries = []
    for exp in tracker.client.search_experiments():
        if exp.name == "Default":
            continue
        counts: dict[str, int] = {}
        for r in tracker.children(exp.experiment_id):
            status = r.info.status
            if status == "RUNNING" and T.worker_alive(r.data.tags.get(T.WORKER)) is False:
                status = "RUNNING (worker died)"
            counts[status] = counts.get(status, 0) + 1
        desc = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) or "no runs"
        summaries.append((exp.name, desc))
    return summaries


def run_states(plan: Plan, store: Path, tracker: Tracker) -> list[list[str]]:
    """One row per run of the plan: variant, subject, seed, status, stages cached, note (why a
    RUNNING run runs again, who holds it, a failure's error, where an imported run came from)."""
    from harness.launchers import default_lease_timeout
    from harness.lease import RunLease, store_id
    from harness.transfer import IMPORTED_FROM

    cached = cache_state(plan, store)
    exp = tracker.experiment(plan.suite, create=False)
    latest: dict[str, object] = {}
    for r in tracker.children(exp) if exp else []:
        key = r.data.tags.get(T.RUN_KEY)
        if key not in latest or r.info.start_time > latest[key].info.start_time:
            latest[key] = r
    leased_here = store_id(store, create=False) or "none"
    rows = []
    for run in plan.runs:
        r = latest.get(run.key)
        status = r.info.status if r else "not run"
        note = ""
        alive = T.worker_alive(r.data.tags.get(T.WORKER)) if r is not None else None
        if status == "RUNNING" and alive is False:
            note = "worker died: runs again on the next `mvbench run`"
        elif status == "RUNNING" and r.data.tags.get(T.LEASE_STORE) == leased_here:
            holder = RunLease(store / "leases" / exp, run.key, default_lease_timeout()).holder()
            if holder is None or holder.stale:
                why = holder.stale if holder else "its lease is gone"
                note = f"{why}: runs again on the next `mvbench run`"
            else:
                note = holder.description
        elif status == "RUNNING" and alive is None:
            note = f"on another machine ({r.data.tags.get(T.WORKER, '?')})"
        elif r is not None and status == "FAILED":
            note = r.data.tags.get(T.ERROR, "")[:80]
        elif r is not None and r.data.tags.get(IMPORTED_FROM):
            note = f"imported from {r.data.tags[IMPORTED_FROM]}"
        n = sum(cached[k] for k in run.stages)
        rows.append(
            [run.variant.name, run.subject, str(run.seed), status, f"{n}/{len(run.stages)}", note]
        )
    return rows
