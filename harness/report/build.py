"""`mvbench report`: read a suite's finished runs back from MLflow and write its results folder."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import tracking as T
from harness.plan import Plan, Run
from harness.tracking import Tracker
from mindvideo.errors import ConfigError


@dataclass
class Collected:
    runs: pd.DataFrame  # one row per finished run (see harness/report/tables.py)
    run_ids: dict[str, str]  # run key -> MLflow run id
    missing: list[Run]  # planned runs with no FINISHED child


def collect(plan: Plan, tracker: Tracker) -> Collected:
    """The latest FINISHED child of each planned run, with its metrics."""
    exp = tracker.experiment(plan.suite, create=False)
    if exp is None:
        raise ConfigError(
            f"suite {plan.suite!r} has no runs in {tracker.uri}; run it first: "
            f"mvbench run {plan.spec.path}"
        )
    latest: dict[str, object] = {}
    for r in tracker.children(exp, "FINISHED"):
        key = r.data.tags.get(T.RUN_KEY)
        if key not in latest or r.info.end_time > latest[key].info.end_time:
            latest[key] = r
    rows, ids, missing = [], {}, []
    for run in plan.runs:
        found = latest.get(run.key)
        if found is None:
            missing.append(run)
            continue
        ids[run.key] = found.info.run_id
        row = {
            "variant": run.variant.name,
            "base": run.variant.base,
            "kind": run.variant.kind,
            "subject": run.subject,
            "seed": run.seed,
        }
        row |= {f"param:{k}": v for k, v in run.variant.grid.items()}
        row |= dict(found.data.metrics)
        rows.append(row)
    return Collected(pd.DataFrame(rows), ids, missing)


def write_report(plan: Plan, tracker: Tracker, out: Path) -> tuple[list[Path], Collected]:
    """Tables, figures and samples of the suite under `out`; returns the files written."""
    from harness.report.figures import write_figures
    from harness.report.tables import write_tables

    found = collect(plan, tracker)
    if found.runs.empty:
        raise ConfigError(
            f"suite {plan.suite!r} ({plan.spec.profile}): none of its {len(plan.runs)} runs has "
            f"finished in {tracker.uri}; run it first: mvbench run {plan.spec.path}"
            + (
                f" --profile {plan.spec.profile}"
                if plan.spec.profile != plan.spec.spec.profile
                else ""
            )
        )
    report = plan.spec.spec.report
    reference = plan.spec.spec.reference
    if reference is not None and reference not in set(found.runs["variant"]):
        print(
            f"warning: the reference {reference!r} has no finished run yet: no deltas",
            file=sys.stderr,
        )
        reference = None
    out.mkdir(parents=True, exist_ok=True)
    title = f"{plan.suite} ({plan.spec.profile} profile)"
    written = write_tables(
        found.runs,
        list(report.metrics),
        out,
        reference,
        formats=report.formats,
        group_by=report.group_by,
        title=title,
    )
    if report.figures:
        written += write_figures(found.runs, list(report.metrics), out / "figures", reference)
    if report.samples:
        written += write_samples(plan, tracker, found, out, report.samples)
    (out / "runs.json").write_text(
        json.dumps(
            {
                "suite": plan.suite,
                "profile": plan.spec.profile,
                "spec": str(plan.spec.path),
                "spec_hash": plan.spec.hash,
                "tracking_uri": tracker.uri,
                "runs": {k: v for k, v in found.run_ids.items()},
                "missing": [r.label for r in found.missing],
            },
            indent=1,
        )
        + "\n"
    )
    return [*written, out / "runs.json"], found


def write_samples(plan: Plan, tracker: Tracker, found: Collected, out: Path, k: int) -> list[Path]:
    """A grid of the first subject's first test clips (ground truth over each variant, first
    seed) and their GIFs under samples/."""
    from harness.report.samples import contact_sheet, write_gifs

    first: dict[str, Run] = {}
    for run in plan.runs:
        if run.key in found.run_ids and run.variant.name not in first:
            if run.subject == plan.runs[0].subject:
                first[run.variant.name] = run
    truth, names, rows = None, None, {}
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant, run in first.items():
            path = tracker.download(
                found.run_ids[run.key], "samples/samples.npz", Path(tmp) / variant
            )
            if path is None:
                continue
            with np.load(path) as z:
                if truth is None:
                    truth, names = z["truth"][:k], [str(n) for n in z["names"][:k]]
                rows[variant] = z["reconstruction"][:k]
    if truth is None or not rows:
        return written
    sheet = out / "figures" / "samples_grid.png"
    sheet.parent.mkdir(parents=True, exist_ok=True)
    written.append(contact_sheet(truth, rows, sheet, names=names))
    folder = out / "samples"
    if folder.exists():
        shutil.rmtree(folder)
    fps = truth.shape[1] / 2.0
    written += write_gifs(truth, [f"truth_{n}" for n in names], folder, fps)
    for variant, clips in rows.items():
        safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in variant)
        written += write_gifs(clips, [f"{safe}_{n}" for n in names], folder, fps)
    return written
