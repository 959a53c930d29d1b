"""`mvbench report`: read a suite's finished runs back from MLflow and write its results folder."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import tracking as T
from harness.plan import Plan, Run
from harness.report import listed_files, remove_stale
from harness.report.html import Samples
from harness.report.reference import Reference
from harness.tracking import Tracker
from mindvideo.errors import ConfigError
from mindvideo.eval.registry import metric_info


@dataclass
class Collected:
    runs: pd.DataFrame  # one row per finished run (see harness/report/tables.py)
    run_ids: dict[str, str]  # run key -> MLflow run id
    missing: list[Run]  # planned runs with no FINISHED child
    keys: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # -> (variant, subj, seed)
    # run key -> (devices, torch threads) its stages were computed with; "" if not recorded
    computed_with: dict[str, tuple[str, str]] = field(default_factory=dict)


def computed_with_label(devices: str, threads: str) -> str:
    """e.g. "cpu, 2 torch threads", from a run's tags (T.DEVICES, T.THREADS)."""
    if not devices and not threads:
        return "not recorded"  # runs logged before mvbench recorded them
    where = devices.replace(",", " + ") if devices else "device not recorded"
    if not threads:
        return f"{where}, threads not recorded"
    plural = "s" if threads != "1" else ""
    return f"{where}, {threads.replace(',', ' and ')} torch thread{plural}"


def computed_with_text(found: Collected) -> str:
    """One line for the tables: what the runs were computed with, and how many runs each."""
    counts = Counter(computed_with_label(*v) for v in found.computed_with.values())
    if len(counts) == 1:
        ((label, n),) = counts.items()
        return f"Computed with: {label} (all {n} runs)."
    parts = [f"{label} ({n} run{'s' if n != 1 else ''})" for label, n in counts.most_common()]
    return "Computed with: " + "; ".join(parts) + "." if parts else ""


def partial_text(plan: Plan, found: Collected) -> str:
    """A sentence for the tables' caption when planned runs have not finished, so a partial
    report says so in the file itself and not only in the command's warning; "" when whole."""
    if not found.missing:
        return ""
    variants = sorted({r.variant.name for r in found.missing})
    seeds = sorted({r.seed for r in found.missing})
    subjects = sorted({r.subject for r in found.missing})
    return (
        f"Partial report: {len(found.missing)} of {len(plan.runs)} planned runs had not finished "
        f"and are not in these tables (variants {', '.join(variants)}; subjects "
        f"{', '.join(subjects)}; seeds {', '.join(map(str, seeds))}), so rows may average "
        "fewer runs than others."
    )


def run_split(run: Run) -> str:
    """The data split a run decodes and scores (eval.split; test before the option existed)."""
    return str(getattr(run.profile.eval, "split", "test"))


def report_split(plan: Plan, found: Collected) -> str:
    """The one split of the collected runs; ConfigError naming the runs when they mix splits
    (a table would average validation and test scores)."""
    splits: dict[str, list[str]] = {}
    for run in plan.runs:
        if run.key in found.run_ids:
            splits.setdefault(run_split(run), []).append(run.label)
    if len(splits) > 1:
        said = "; ".join(
            f"{split}: {', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''}"
            for split, labels in sorted(splits.items())
        )
        raise ConfigError(
            f"suite {plan.suite!r}: its runs were scored on different splits ({said}); a report "
            "shows one split: set eval.split once for the suite (spec overrides), or report the "
            "variants of each split apart with --variant"
        )
    return next(iter(splits), "test")


def mixed_computation(found: Collected) -> str | None:
    """Why the runs may not compare to the last digit (CPU float sums depend on torch's thread
    count), or None; runs that did not record it are not counted as different."""
    devices = {d for d, _ in found.computed_with.values() if d}
    threads = {t for d, t in found.computed_with.values() if t and "cpu" in d.split(",")}
    said = []
    if len(devices) > 1:
        said.append("devices " + " / ".join(sorted(devices)))
    if len(threads) > 1:
        said.append("torch threads " + " / ".join(sorted(threads)))
    return ", ".join(said) or None


def per_sample_scores(
    found: Collected, tracker: Tracker, variants: set[str] | None = None
) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """The evaluate stage's per-sample scores of each collected run (of `variants`), read back
    from MLflow; runs logged without them are left out."""
    out: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (key, run_id) in enumerate(found.run_ids.items()):
            ident = found.keys[key]
            if variants is not None and ident[0] not in variants:
                continue
            path = tracker.download(run_id, "per_sample.npz", Path(tmp) / str(i))
            if path is None:
                continue
            with np.load(path) as z:
                out[ident] = {name: z[name] for name in z.files}
    return out


def collect(plan: Plan, tracker: Tracker) -> Collected:
    """The latest FINISHED child of each planned run, with its metrics."""
    exp = tracker.experiment(plan.suite, create=False)
    if exp is None:
        raise ConfigError(
            f"suite {plan.suite!r} has no runs in {tracker.uri}; run it first: "
            f"mvbench run {plan.spec.path}"
        )
    latest = tracker.latest_finished(exp)
    rows, ids, keys, missing, where = [], {}, {}, [], {}
    swept = one_key_sweeps(plan)
    for run in plan.runs:
        found = latest.get(run.key)
        if found is None:
            missing.append(run)
            continue
        ids[run.key] = found.info.run_id
        keys[run.key] = (run.variant.name, run.subject, run.seed)
        tags = found.data.tags
        where[run.key] = (tags.get(T.DEVICES, ""), tags.get(T.THREADS, ""))
        row = {
            "variant": run.variant.name,
            "base": run.variant.base,
            "kind": run.variant.kind,
            "subject": run.subject,
            "seed": run.seed,
            # the line a figure draws this run on: its base over a grid, or the one-key sweep
            "series": run.variant.base if run.variant.grid else SWEEP_SERIES,
        }
        row |= {f"param:{k}": v for k, v in run.variant.grid.items()}
        row |= {f"param:{k}": v for k, v in _sweep_point(plan, run, swept).items()}
        row |= dict(found.data.metrics)
        rows.append(row)
    return Collected(pd.DataFrame(rows), ids, missing, keys, where)


SWEEP_SERIES = "variants"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def one_key_sweeps(plan: Plan) -> set[str]:
    """Keys that variants sweep one at a time: model variants (not on a grid) that override
    only that key, with a number (e.g. window-1: {data.window: 1}, window-3: {data.window: 3}).
    With the reference variant's own value they make a curve like a grid does."""
    counts: dict[str, set] = {}
    for v in {r.variant.name: r.variant for r in plan.runs}.values():
        if v.kind == "model" and not v.grid and len(v.overrides) == 1:
            ((key, value),) = v.overrides.items()
            if _is_number(value):
                counts.setdefault(key, set()).add(value)
    return {k for k, values in counts.items() if len(values) >= 2}


def _sweep_point(plan: Plan, run: Run, swept: set[str]) -> dict:
    """The run's position on the one-key sweeps: its override, or the reference's value."""
    v = run.variant
    if v.grid or v.kind != "model":
        return {}
    if len(v.overrides) == 1 and next(iter(v.overrides)) in swept:
        return dict(v.overrides)
    if v.name == Reference.of(plan.spec.spec.reference or {}).single and not v.overrides:
        point = {}
        for key in swept:
            value = run.profile
            for part in key.split("."):
                value = getattr(value, part, None)
            if _is_number(value):
                point[key] = value
        return point
    return {}


def write_report(
    plan: Plan, tracker: Tracker, out: Path, reference: str | None = None
) -> tuple[list[Path], Collected]:
    """Tables, figures and samples of the suite under `out`, compared with `reference` (None:
    the spec's); returns the files written."""
    from harness.report.attention import write_attention
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
    reference = Reference.of(reference or plan.spec.spec.reference)
    if reference is not None:
        reference, missing = reference.keep(found.runs["variant"])
        for name in missing:
            if name in {r.variant.name for r in plan.runs}:
                why = "has no finished run yet"
            else:  # left out by --variant
                why = f"is not among the variants reported (add --variant {name})"
            what = f"the reference {name!r}" if reference is None else f"pairs with {name!r}"
            print(f"warning: no deltas or paired tests: {what} {why}", file=sys.stderr)
    split = report_split(plan, found)
    mixed = mixed_computation(found)
    if mixed:
        print(
            f"warning: the runs of this report were computed with different {mixed}; results "
            f"agree across those only up to rounding, which can flip N-way trials (see "
            f"'Repeating numbers on a CPU' in the README; runs.json lists each run's)",
            file=sys.stderr,
        )
    out.mkdir(parents=True, exist_ok=True)
    previous = listed_files(out / "runs.json")
    title = f"{plan.suite} ({plan.spec.profile} profile)"
    tests = None
    if reference is not None:
        from harness.report.stats import paired_tests

        sig = report.significance
        models = set(found.runs["variant"])
        tests = paired_tests(
            per_sample_scores(found, tracker, models),
            reference,
            [m for m in report.metrics if not metric_info(m).stimulus_level],
            n_boot=sig.n_boot,
            seed=sig.seed,
            alpha=sig.level,
            method=sig.method,
            blocks=sig.blocks,
            block_clips=sig.block_clips,
            correction=sig.correction,
        )
    scoring = run_scoring(plan, found)
    published = _published(plan, list(report.metrics), scoring)
    apart = []
    if published is not None and published[2]:
        from harness.report.reported import write_apart

        apart = [write_apart(out / REPORTED_APART, published[1], published[2], report.metrics)]
    try:
        written = apart + write_tables(
            found.runs,
            list(report.metrics),
            out,
            reference,
            formats=report.formats,
            group_by=report.group_by,
            title=title,
            tests=tests,
            level=report.significance.level,
            reported=published[:2] if published is not None else None,
            provenance=" ".join(
                t
                for t in (
                    partial_text(plan, found),
                    windows_text(plan, found, scoring),
                    apart_text(published),
                    computed_with_text(found),
                )
                if t
            ),
            split=split,
        )
    except ConfigError as e:
        if not found.missing:
            raise
        # most likely the metric belongs to the runs that have not finished (or were run
        # with other code or config, so their keys differ): say so
        names = sorted({r.variant.name for r in found.missing})
        raise ConfigError(
            f"{e}\n{len(found.missing)} of {len(plan.runs)} planned runs have no finished run "
            f"(variants {', '.join(names)}; a changed config or stage version gives new run "
            f"keys): run them first: mvbench run {plan.spec.path}"
        ) from None
    if report.figures:
        written += write_figures(found.runs, list(report.metrics), out / "figures", reference)
    written += write_attention(found.runs, out, title, figures=report.figures)  # interpret runs
    grid = None
    if report.samples:
        files, grid = write_samples(plan, tracker, found, out, report.samples)
        written += files
    written.append(write_page(plan, tracker, found, out, title, split, written, grid, published))
    (out / "runs.json").write_text(
        json.dumps(
            {
                "suite": plan.suite,
                "profile": plan.spec.profile,
                "spec": str(plan.spec.path),
                "spec_hash": plan.spec.hash,
                "tracking_uri": tracker.uri,
                "runs": {k: v for k, v in found.run_ids.items()},
                "computed_with": {
                    k: computed_with_label(*v) for k, v in found.computed_with.items()
                },
                "missing": [r.label for r in found.missing],
                # what this report wrote: the next one removes those it no longer writes
                "files": sorted(str(p.relative_to(out)) for p in written),
            },
            indent=1,
        )
        + "\n"
    )
    removed = remove_stale(out, written, previous)
    if removed:
        names = ", ".join(str(p.relative_to(out.resolve())) for p in removed)
        print(f"removed {len(removed)} file(s) of an earlier report: {names}", file=sys.stderr)
    return [*written, out / "runs.json"], found


def _published(
    plan: Plan, metrics: list[str], scoring=None
) -> tuple[pd.DataFrame, str, list] | None:
    """(published rows, their source, [(row, why apart)]) for the suite's dataset: real data
    only, never SynthCC; with the runs' `scoring` (run_scoring), the rows scored otherwise are
    kept out of the frame and listed apart (harness/report/reported.py)."""
    from harness.report.reported import comparable_rows, load_reported, reported_rows

    sources = {run.profile.data.source for run in plan.runs}
    if not sources <= {"cc2017", "mindvideo_npy"}:  # the CC2017 release, in either form
        return None
    reported = load_reported("cc2017")
    if reported is None:
        return None
    apart = []
    if scoring is not None:
        reported, apart = comparable_rows(reported, metrics, scoring)
    return reported_rows(reported, metrics), reported.source, apart


REPORTED_APART = "reported.md"  # published rows scored otherwise than the runs


def write_page(
    plan: Plan,
    tracker: Tracker,
    found: Collected,
    out: Path,
    title: str,
    split: str,
    written: list[Path],
    grid,
    published,
) -> Path:
    """index.html over what the report wrote (harness/report/html.py)."""

    from harness.report.html import environment, write_index
    from harness.tracking import ui_command

    first = next((r for r in plan.runs if r.key in found.run_ids), plan.runs[0])
    http = tracker.uri.startswith(("http://", "https://"))
    exp = tracker.experiment(plan.suite, create=False) if http else None
    runs = []
    for run in plan.runs:
        if run.key not in found.run_ids:
            continue
        run_id = found.run_ids[run.key]
        url = f"{tracker.uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}" if exp else ""
        runs.append(
            {
                "variant": run.variant.name,
                "subject": run.subject,
                "seed": str(run.seed),
                "run id": run_id,
                "computed with": computed_with_label(*found.computed_with.get(run.key, ("", ""))),
                "url": url,
            }
        )
    summary = [
        f"Scored on the {split} split; profile {plan.spec.profile}; {len(runs)} of "
        f"{len(plan.runs)} planned runs finished.",
        *[t for t in (partial_text(plan, found), apart_text(published)) if t],
    ]
    tables = out / "table.md"
    figures = [p for p in written if p.suffix == ".png" and p.parent == out / "figures"]
    labels = {k: computed_with_label(*v) for k, v in found.computed_with.items()}
    return write_index(
        out,
        title,
        summary,
        tables.read_text(encoding="utf-8")
        if tables.exists() and tables in written
        else "The tables are in this folder's table.csv / table.tex (report.formats has no md).",
        grid,
        figures,
        Path(plan.spec.path).read_text(encoding="utf-8"),
        first.profile.model_dump(mode="json"),
        environment(labels, {}),
        runs,
        tracker.uri if http else None,
        ui_command(tracker.uri),
    )


def apart_text(published: tuple | None) -> str:
    """The caption's pointer to the published rows kept out of the table."""
    if published is None or not published[2]:
        return ""
    names = ", ".join(row.method for row, _ in published[2])
    return (
        f"Published rows scored otherwise than these runs ({names}) are listed apart, with the "
        f"reason, in {REPORTED_APART}."
    )


def run_scoring(plan: Plan, found: Collected):
    """How the collected runs were scored: protocol, samples scored, scene-cut rule."""
    from harness.report.reported import Scoring
    from mindvideo.eval.protocols import get_protocol

    n = found.runs.set_index(["variant", "subject", "seed"]).get("n_samples")
    runs = []
    for run in plan.runs:
        if run.key not in found.run_ids or n is None:
            continue
        ev = run.profile.eval
        excluded = ev.exclude_scene_cuts
        if excluded is None:
            excluded = get_protocol(ev.protocol, ev.extra_metrics).exclude_scene_cuts
        samples = n.get((run.variant.name, run.subject, run.seed))
        if samples is not None and samples == samples:  # baselines scored alike log it too
            runs.append((ev.protocol, int(samples), bool(excluded)))
    return Scoring.of(runs)


def windows_text(plan: Plan, found: Collected, scoring) -> str:
    """Real data: how the runs paired fMRI with clips and how many test samples they scored
    (what a published number must share to compare)."""
    if {run.profile.data.source for run in plan.runs} == {"synth"}:
        return ""
    said = set()
    for run in plan.runs:
        if run.key in found.run_ids:
            d = run.profile.data
            said.add(
                f"window {d.window} from {d.window_offset} TRs after the clip, edge {d.window_edge}"
            )
    samples = " / ".join(f"{n:,}" for n in sorted(scoring.test_samples))
    return (
        f"fMRI windows: {'; '.join(sorted(said))}; {samples or 'unknown'} test samples scored "
        "per run."
    )


def write_samples(
    plan: Plan, tracker: Tracker, found: Collected, out: Path, k: int
) -> tuple[list[Path], Samples]:
    """The first `k` test clips of every subject: ground truth and each variant's
    reconstruction (its first seed) as GIFs under samples/<subject>/, and a grid image of the
    first subject's (figures/samples_grid.png). Returns the files and what the page's grid
    shows, with the reason where a run kept no samples."""
    from harness.report.samples import contact_sheet, write_gifs

    first: dict[tuple[str, str], Run] = {}  # (subject, variant) -> its first-seed run
    for run in plan.runs:
        if run.key in found.run_ids:
            first.setdefault((run.subject, run.variant.name), run)
    variants = list(dict.fromkeys(v for _, v in first))
    grid = Samples(columns=["ground truth", *variants])
    written: list[Path] = []
    folder = out / "samples"
    # GIFs of an earlier report in `out` (samples/<subject>/, or samples/ for its first
    # subject): kept where a run's samples are not in the store, as when runs were imported
    # with their scores only
    earlier: dict[tuple[str | None, str], bytes] = {}
    if folder.exists():
        for gif in folder.rglob("*.gif"):
            subject = gif.parent.name if gif.parent != folder else None
            earlier[(subject, gif.name)] = gif.read_bytes()
        shutil.rmtree(folder)
    subjects = list(dict.fromkeys(s for s, _ in first))
    kept_sheet = False
    for subject in subjects:
        truth, names, rows = None, None, {}
        with tempfile.TemporaryDirectory() as tmp:
            for variant in variants:
                run = first.get((subject, variant))
                if run is None:
                    grid.gaps[(subject, variant)] = "no finished run for this subject"
                    continue
                path = tracker.download(
                    found.run_ids[run.key], "samples/samples.npz", Path(tmp) / variant
                )
                if path is None:
                    grid.gaps[(subject, variant)] = "its run kept no samples (samples.npz)"
                    continue
                with np.load(path) as z:
                    if truth is None:
                        truth, names = z["truth"][:k], [str(n) for n in z["names"][:k]]
                    rows[variant] = z["reconstruction"][:k]
        if truth is None:
            continue
        where = folder / _safe(subject)
        reused = _earlier_gifs(earlier, subject, subject == subjects[0], variants, names, rows)
        for variant, gifs in reused.items():
            where.mkdir(parents=True, exist_ok=True)
            for name, data in zip(names, gifs, strict=True):
                path = where / f"{_safe(variant)}_{name}.gif"
                path.write_bytes(data)
                written.append(path)
                grid.cells[(subject, variant, name)] = path.relative_to(out).as_posix()
            grid.gaps.pop((subject, variant), None)
        sheet = out / "figures" / "samples_grid.png"
        if subject == subjects[0] and reused and sheet.exists():
            kept_sheet = True  # the earlier grid image shows the variants this store lacks
            written.append(sheet)
        elif subject == subjects[0] and not kept_sheet:
            sheet.parent.mkdir(parents=True, exist_ok=True)
            written.append(contact_sheet(truth, rows, sheet, names=names))
        fps = truth.shape[1] / 2.0
        grid.subjects[subject] = names
        gifs = write_gifs(truth, [f"truth_{n}" for n in names], where, fps)
        written += gifs
        for name, gif in zip(names, gifs, strict=True):
            grid.cells[(subject, "ground truth", name)] = gif.relative_to(out).as_posix()
        for variant, clips in rows.items():
            gifs = write_gifs(clips, [f"{_safe(variant)}_{n}" for n in names], where, fps)
            written += gifs
            for name, gif in zip(names, gifs, strict=True):
                grid.cells[(subject, variant, name)] = gif.relative_to(out).as_posix()
    return written, grid


def _earlier_gifs(earlier, subject, first_subject, variants, names, rows) -> dict:
    """variant -> the earlier report's GIFs of `names`, for the variants with no samples here
    whose every clip an earlier report wrote (in samples/<subject>/, or the first subject's
    in samples/)."""
    found = {}
    for variant in variants:
        if variant in rows:
            continue
        gifs = []
        for name in names:
            key = f"{_safe(variant)}_{name}.gif"
            data = earlier.get((_safe(subject), key))
            if data is None and first_subject:
                data = earlier.get((None, key))
            gifs.append(data)
        if all(g is not None for g in gifs):
            found[variant] = gifs
    return found


def _safe(name: str) -> str:
    """A name as a file name: letters, digits and -_.= kept, anything else _."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)
