"""Ablation tables (Markdown, LaTeX, CSV) from a DataFrame of finished runs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.reference import Reference
from mindvideo.errors import ConfigError
from mindvideo.eval.registry import metric_info

ID_COLUMNS = ("variant", "base", "kind", "subject", "seed")
OPTIONAL_ID_COLUMNS = ("series",)  # the line a figure draws a run on (harness/report/build.py)
PARAM_PREFIX = "param:"
# Per-run companions of a metric column `m`: standard error and 95% bootstrap CI over test samples.
COMPANION_SUFFIXES = ("_se", "_ci_low", "_ci_high")
# Column order of the long frames ("subject" lacks `subjects`; "average" lacks `subject`).
COLUMNS = (
    "variant",
    "base",
    "kind",
    "subject",
    "metric",
    "mean",
    "std",
    "n_seeds",
    "ci_low",
    "ci_high",
    "delta",
    "best",
    "subjects",
    "p_value",  # paired tests against the reference (harness/report/stats.py), raw
    "p_adjusted",  # ... corrected across the table's variants x metrics (Holm by default)
    "delta_ci_low",
    "delta_ci_high",
    "pairs",
    "blocks",  # stimulus blocks resampled (0: the per-clip method)
    "df",  # degrees of freedom of the CI's t quantile
)
TEST_COLUMNS = ("p_value", "p_adjusted", "delta_ci_low", "delta_ci_high", "pairs", "blocks", "df")
FORMATS = ("md", "tex", "csv")
GROUPINGS = ("average", "subject")


def chance_text(metric: str) -> str:
    """e.g. "chance 0.750 (3/(N+2))" for an N-way metric under the published rule, "chance
    0.500 (1/N)" for its strict variant; "" for other metrics (the caption explains the N-way
    rules only)."""
    info = metric_info(metric)
    if info.family != "n_way":
        return ""
    return f"chance {info.chance():.3f} ({info.chance_rule})"


def direction_arrow(metric: str, up: str = " ↑", down: str = " ↓") -> str:
    """The arrow of the metric's better direction; "" for one without (a speed)."""
    better = metric_info(metric).higher_is_better
    if better is None:
        return ""
    return up if better else down


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The metric columns of a runs frame: not an id, `param:` or `_se`/`_ci_*` column."""
    return [
        c
        for c in runs.columns
        if c not in ID_COLUMNS + OPTIONAL_ID_COLUMNS
        and not c.startswith(PARAM_PREFIX)
        and not c.endswith(COMPANION_SUFFIXES)
    ]


def check_runs(
    runs: pd.DataFrame, metrics: Sequence[str], reference: str | Reference | None
) -> None:
    """Raise if the runs frame lacks an id column, a requested metric or a reference."""
    missing_ids = [c for c in ID_COLUMNS if c not in runs.columns]
    if missing_ids:
        raise ValueError(f"runs frame lacks the column(s) {', '.join(missing_ids)}")
    if runs.empty:
        raise ConfigError("no finished runs to report; run the suite first")
    if not metrics:
        raise ConfigError(f"no metrics to report; choose from {', '.join(metric_columns(runs))}")
    unknown = [m for m in metrics if m not in runs.columns]
    if unknown:
        have = ", ".join(metric_columns(runs)) or "none"
        raise ConfigError(
            f"unknown metric(s) {', '.join(unknown)}: no run logged them; "
            f"the runs have the metrics {have}"
        )
    reference = Reference.of(reference)
    absent = [] if reference is None else reference.keep(runs["variant"])[1]
    if absent:
        have = ", ".join(str(v) for v in pd.unique(runs["variant"]))
        raise ConfigError(
            f"reference variant {absent[0]!r} is not among the runs' variants ({have}); "
            "choose one of them or no reference"
        )


def _ci_mean(rows: pd.DataFrame, metric: str, bound: str) -> float:
    column = f"{metric}_ci_{bound}"
    if column not in rows.columns:
        return math.nan
    return float(rows.loc[rows[metric].notna(), column].mean())


def _annotate(frame: pd.DataFrame, keys: list[str], reference: Reference | None) -> pd.DataFrame:
    """Add `delta` (vs the row's reference at the same keys; NaN for a reference and an
    unpaired row) and `best`."""
    if reference is not None and reference.single is not None:
        single = reference.single
        ref = frame.loc[frame["variant"] == single, [*keys, "mean"]]
        ref = ref.rename(columns={"mean": "_ref"})
        frame = frame.merge(ref, on=keys, how="left")
        frame["delta"] = frame["mean"] - frame["_ref"]
        frame.loc[frame["variant"] == single, "delta"] = math.nan
    elif reference is not None:  # pairs: each row against its own reference
        ref = frame[[*keys, "variant", "mean"]].rename(
            columns={"variant": "_refvar", "mean": "_ref"}
        )
        frame = frame.assign(_refvar=frame["variant"].map(dict(reference.pairs)))
        frame = frame.merge(ref, on=[*keys, "_refvar"], how="left").drop(columns="_refvar")
        frame["delta"] = frame["mean"] - frame["_ref"]
    if reference is not None:
        stimulus = frame["metric"].map(lambda m: metric_info(m).stimulus_level).astype(bool)
        frame.loc[stimulus, "delta"] = math.nan
        frame = frame.drop(columns="_ref")
    else:
        frame["delta"] = math.nan
    better = frame["metric"].map(lambda m: metric_info(m).higher_is_better)
    signed = frame["mean"].where(better.ne(False), -frame["mean"])
    top = signed.groupby([frame[k] for k in keys]).transform("max")
    frame["best"] = signed.notna() & np.isclose(signed, top, rtol=1e-9, atol=1e-12)
    frame.loc[better.isna(), "best"] = False
    return frame


def summarise_runs(
    runs: pd.DataFrame, metrics: list[str], reference: str | Reference | None
) -> dict[str, pd.DataFrame]:
    """Long-format summaries of the runs: {"subject": per variant x subject x metric,
    "average": per variant x metric}.

    Columns: variant, base, kind, [subject,] metric, mean, std, n_seeds, ci_low, ci_high, delta,
    best, [subjects,] then the `param:` columns. `mean`/`std` are over seeds (std with ddof=1, NaN
    for one seed); in "average" each seed's score is first averaged over the subjects that variant
    has (`subjects` counts them, so a variant missing a subject is visible). `ci_low`/`ci_high` are
    the mean of the per-run 95% bootstrap CIs over test samples (`m_ci_low`/`m_ci_high`), not a CI
    over seeds; NaN when the runs logged none. `delta` = mean - the reference's mean at the same
    subject (or in the average); NaN for the reference itself, without a reference, or where the
    reference has no value. `best` marks the best mean per metric (per subject), in the direction
    of the registry's `higher_is_better`; ties are all best; never for a metric with no better
    direction; a stimulus measure has no delta. A metric NaN for
    some runs is left out of their means; a metric no run has raises ConfigError.
    """
    metrics = list(dict.fromkeys(metrics))
    reference = Reference.of(reference)
    check_runs(runs, metrics, reference)
    runs = runs.copy()
    for m in metrics:
        for column in (m, f"{m}_ci_low", f"{m}_ci_high"):
            if column in runs.columns:
                runs[column] = pd.to_numeric(runs[column], errors="coerce")
    params = [c for c in runs.columns if c.startswith(PARAM_PREFIX)]
    info = runs.groupby("variant", sort=False)[["base", "kind", *params]].first()
    variants = list(pd.unique(runs["variant"]))
    subjects = list(pd.unique(runs["subject"]))

    def stats(values: pd.Series) -> dict[str, float | int]:
        values = values.dropna()
        std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        mean = float(values.mean()) if len(values) else math.nan
        return {"mean": mean, "std": std, "n_seeds": len(values)}

    per_subject, average = [], []
    for variant in variants:
        rows = runs[runs["variant"] == variant]
        head = {
            "variant": variant,
            "base": info.at[variant, "base"],
            "kind": info.at[variant, "kind"],
        }
        for subject in subjects:
            sub = rows[rows["subject"] == subject]
            if sub.empty:
                continue
            for metric in metrics:
                per_subject.append(
                    {
                        **head,
                        "subject": subject,
                        "metric": metric,
                        **stats(sub[metric]),
                        "ci_low": _ci_mean(sub, metric, "low"),
                        "ci_high": _ci_mean(sub, metric, "high"),
                    }
                )
        for metric in metrics:
            per_seed = rows.groupby("seed", sort=False)[metric].mean()  # mean over subjects
            average.append(
                {
                    **head,
                    "metric": metric,
                    **stats(per_seed),
                    "ci_low": _ci_mean(rows, metric, "low"),
                    "ci_high": _ci_mean(rows, metric, "high"),
                    "subjects": int(rows.loc[rows[metric].notna(), "subject"].nunique()),
                }
            )

    def finish(records: list[dict], keys: list[str]) -> pd.DataFrame:
        frame = _annotate(pd.DataFrame(records), keys, reference)
        frame["n_seeds"] = frame["n_seeds"].astype(int)
        frame["best"] = frame["best"].astype(bool)
        for p in params:
            frame[p] = frame["variant"].map(info[p])
        if "subjects" in frame.columns:
            frame["subjects"] = frame["subjects"].astype(int)
        return frame[[c for c in COLUMNS if c in frame.columns] + params]

    return {
        "subject": finish(per_subject, ["subject", "metric"]),
        "average": finish(average, ["metric"]),
    }


@dataclass(frozen=True)
class _Dialect:
    """How one output format writes the pieces of a cell."""

    pm: str
    minus: str
    missing: str
    up: str
    down: str
    dagger: str
    star: str
    dash: str
    bold: Callable[[str], str]
    escape: Callable[[str], str]


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    out = []
    for ch in str(text):
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "\\":
            out.append(r"\textbackslash{}")
        elif ch == "~":
            out.append(r"\textasciitilde{}")
        elif ch == "^":
            out.append(r"\textasciicircum{}")
        else:
            out.append(ch)
    return "".join(out)


_MD = _Dialect(
    pm=" ± ",
    minus="−",
    missing="–",
    up=" ↑",
    down=" ↓",
    dagger="†",
    star="*",
    dash="–",
    bold=lambda s: f"**{s}**",
    escape=lambda s: str(s).replace("|", r"\|"),
)
_TEX = _Dialect(
    pm=r" $\pm$ ",
    minus="$-$",
    missing="--",
    up=r" $\uparrow$",
    down=r" $\downarrow$",
    dagger=r"$^\dagger$",
    star=r"$^*$",
    dash="--",
    bold=lambda s: f"\\textbf{{{s}}}",
    escape=tex_escape,
)


def _partial_variants(frame: pd.DataFrame, n_subjects: int) -> set[str]:
    """Variants of an average frame whose best-covered metric has fewer than n_subjects."""
    if not n_subjects or "subjects" not in frame.columns:
        return set()
    run = frame[frame["kind"] != "reported"]
    covered = run.groupby("variant", sort=False)["subjects"].max()
    return set(covered.index[covered < n_subjects])


def _decimals(metric: str, means: pd.Series) -> int:
    """The registry's decimals for the metric (PSNR: 2), else 3; 2 for any metric whose values
    exceed 10; for a metric whose values are all below 0.01 in size (not all 0), enough for the
    largest to show two significant digits (at most 8), so that e.g. a loss difference of 5e-5
    does not read 0.000."""
    fixed = metric_info(metric).decimals
    if fixed is not None:
        return fixed
    finite = means.dropna().abs()
    largest = finite.max() if len(finite) else 0.0
    if largest > 10:
        return 2
    if 0 < largest < 0.01:
        return min(8, 1 - math.floor(math.log10(largest)))
    return 3


def _num(x: float, decimals: int, d: _Dialect) -> str:
    """x rounded, negative numbers with the dialect's minus sign, no sign on a rounded 0."""
    return (d.minus if round(x, decimals) < 0 else "") + f"{abs(x):.{decimals}f}"


def _cell(row: pd.Series, decimals: int, d: _Dialect) -> str:
    if pd.isna(row["mean"]):
        return d.missing
    text = _num(row["mean"], decimals, d)
    if pd.notna(row["std"]):
        text += f"{d.pm}{row['std']:.{decimals}f}"
    if row["best"]:
        text = d.bold(text)
    if pd.notna(row["delta"]):
        sign = "" if round(row["delta"], decimals) < 0 else "+"
        text += f" ({sign}{_num(row['delta'], decimals, d)})"
        if row.get("significant", False):
            text += d.star
    return text


def _paired_cell(row: pd.Series, decimals: int, d: _Dialect) -> str:
    """delta [paired CI] and the Wilcoxon p of a variant against the reference."""
    if pd.isna(row.get("p_value", math.nan)):
        return d.missing

    def num(x: float) -> str:
        return _num(x, decimals, d)

    sign = "+" if round(row["delta"], decimals) >= 0 else ""
    p = row.get("p_adjusted", math.nan)
    p = row["p_value"] if pd.isna(p) else p
    p_text = f"p={p:.2g}" if p >= 1e-3 else "p<0.001"
    text = f"{sign}{num(row['delta'])} [{num(row['delta_ci_low'])}, {num(row['delta_ci_high'])}]"
    text += f" {p_text}"
    return text + (d.star if row.get("significant", False) else "")


def _ci_cell(row: pd.Series, decimals: int, d: _Dialect) -> str:
    if pd.isna(row["ci_low"]) or pd.isna(row["ci_high"]):
        return d.missing
    return f"[{_num(row['ci_low'], decimals, d)}, {_num(row['ci_high'], decimals, d)}]"


@dataclass
class _Grid:
    """One displayed table: header, model rows, then baseline rows."""

    header: list[str]
    models: list[list[str]]
    baselines: list[list[str]]
    reported: list[list[str]] = None  # published rows (harness/report/reported.py)

    def __post_init__(self):
        self.reported = self.reported or []

    @property
    def blocks(self) -> list[list[list[str]]]:
        return [b for b in (self.models, self.baselines, self.reported) if b]


def _grid(
    frame: pd.DataFrame,
    metrics: list[str],
    reference: Reference | None,
    d: _Dialect,
    cell: Callable[[pd.Series, int, _Dialect], str] = _cell,
    arrows: bool = True,
    n_subjects: int = 0,
) -> _Grid:
    """Variants x metrics from one grouping's long rows (one subject, or the average)."""
    header = ["Variant"]
    for m in metrics:
        arrow = direction_arrow(m, d.up, d.down) if arrows else ""
        header.append(d.escape(metric_info(m).label) + arrow)
    decimals = {m: _decimals(m, frame.loc[frame["metric"] == m, "mean"]) for m in metrics}
    by_key = frame.set_index(["variant", "metric"])
    partial = _partial_variants(frame, n_subjects)
    grid = _Grid(header, [], [])
    for variant in pd.unique(frame["variant"]):
        first = by_key.loc[(variant, metrics[0])]
        label = d.escape(variant + (reference.label(variant) if reference is not None else ""))
        if variant in partial:
            label += d.dagger
        row = [label] + [cell(by_key.loc[(variant, m)], decimals[m], d) for m in metrics]
        kind = first["kind"]
        block = {"baseline": grid.baselines, "reported": grid.reported}.get(kind, grid.models)
        block.append(row)
    return grid


def _md_table(grid: _Grid) -> list[str]:
    lines = [
        "| " + " | ".join(grid.header) + " |",
        "| :-- |" + " --: |" * (len(grid.header) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for block in grid.blocks for row in block]
    return lines


def _tex_rows(grid: _Grid) -> list[str]:
    lines: list[str] = []
    for i, block in enumerate(grid.blocks):
        if i:
            lines.append(r"\midrule")
        lines += [" & ".join(row) + r" \\" for row in block]
    return lines


def _seeds_text(frame: pd.DataFrame, d: _Dialect) -> str:
    counts = frame.loc[frame["n_seeds"] > 0, "n_seeds"]
    if counts.empty:
        return "0 seeds"
    lo, hi = int(counts.min()), int(counts.max())
    if lo == hi:
        return f"{lo} seed" + ("s" if lo != 1 else "")
    return f"{lo}{d.dash}{hi} seeds"


def _chance_caption(metrics: Sequence[str], d: _Dialect) -> str:
    """The analytic chance level of each N-way metric shown, or ""."""
    levels = [f"{metric_info(m).label} {chance_text(m)}" for m in metrics if chance_text(m)]
    if not levels:
        return ""
    return d.escape(
        "Analytic chance (a reconstruction unrelated to the stimulus; published rule: any of the "
        "ground truth's top-3 classes counts, strict: only its top class): "
        + "; ".join(levels)
        + "."
    )


def _significance_caption(average: pd.DataFrame, d: _Dialect) -> str:
    """How the paired tests were made, from the tests' attrs (harness/report/stats.py)."""
    level = average.attrs.get("level", 0.05)
    method = average.attrs.get("method", "block")
    correction = average.attrs.get("correction", "holm")
    ci = d.escape(f"{(1 - level) * 100:g}%")
    if method == "block":
        how = (
            f"the mean paired difference over test clips, its {ci} CI = difference{d.pm}t "
            f"{d.escape('*')} SE, where the SE adds a bootstrap over stimulus blocks "
            f"({d.escape(average.attrs.get('blocking', 'blocks'))}, drawn jointly for all "
            "subjects and seeds, who share the stimuli) and the variance between seeds (a "
            "random effect), with Satterthwaite's degrees of freedom; p from the same t test"
        )
        if average.attrs.get("seeds", 2) == 1:
            how += (
                "; with one seed the seeds' variance cannot be estimated, so these tests speak "
                "for this seed's trained models only"
            )
    else:
        how = (
            f"the paired bootstrap {ci} CI over test clips (seeds averaged per clip) and the "
            "two-sided Wilcoxon signed-rank test, both of which assume independent clips "
            "(they are not: subjects share stimuli, clips share scenes and fMRI frames)"
        )
    corrected = (
        "Holm-corrected across the variants x metrics of each table (raw p in table.csv)"
        if correction == "holm"
        else "not corrected for multiple comparisons"
    )
    if method == "clip":
        mark = f"p < {level:g} and the CI excludes 0"
    else:
        mark = f"p < {level:g}"
    return f"{d.star} = different from the reference: {mark}, p {corrected}; {how}."


def _caption(
    summary: dict[str, pd.DataFrame], reference: Reference | None, d: _Dialect, n_subjects: int
) -> str:
    """What the cells mean: the split, ±, the delta, bold, the CIs, chance and the marks."""
    average = summary["average"]
    split = average.attrs.get("split", "test")
    parts = [
        f"Scored on the {d.escape(split)} split.",
        f"Mean{d.pm}std (ddof=1) over seeds of each run's {d.escape(split)}-set score;",
        "the average first averages the subjects within each seed.",
    ]
    if reference is not None:
        parts.append(f"In parentheses: difference of the mean from {d.escape(reference.text())}.")
    parts.append("Bold = best per column.")
    if average[["ci_low", "ci_high"]].notna().any(axis=None):
        parts.append(
            f"95{d.escape('%')} CIs = mean over runs of each run's bootstrap CI over test samples "
            "(clips resampled as if independent: narrower than the paired tests' CIs)."
        )
    if _partial_variants(average, n_subjects):
        parts.append(f"{d.dagger} = averaged over fewer subjects than the others.")
    source = average.attrs.get("reported_source")
    if source:
        parts.append(
            f"Rows marked (reported): published numbers ({d.escape(source)}), not re-run here."
        )
    if "p_value" in average.columns and average["p_value"].notna().any():
        parts.append(_significance_caption(average, d))
    chance = _chance_caption(average.attrs.get("metrics", ()), d)
    if chance:
        parts.append(chance)
    return " ".join(parts)


@dataclass(frozen=True)
class _Tables:
    """What both renderers (Markdown, LaTeX) draw from: the summary frames of `write_tables`."""

    summary: dict[str, pd.DataFrame]
    metrics: list[str]
    reference: Reference | None
    group_by: Sequence[str]
    title: str
    n_subjects: int
    provenance: str = ""


def _write_md(t: _Tables) -> str:
    metrics, reference = t.metrics, t.reference
    average, per_subject = t.summary["average"], t.summary["subject"]
    title, n_subjects, group_by = t.title, t.n_subjects, t.group_by
    lines = [f"# {title}", ""] if title else []
    lines += [f"_{_caption(t.summary, reference, _MD, n_subjects)}_", ""]
    if t.provenance:
        lines += [f"_{t.provenance}_", ""]
    if "average" in group_by:
        lines += [f"## Average over subjects (mean ± std over {_seeds_text(average, _MD)})", ""]
        lines += _md_table(_grid(average, metrics, reference, _MD, n_subjects=n_subjects)) + [""]
    if "subject" in group_by:
        lines += [f"## Per subject (mean ± std over {_seeds_text(per_subject, _MD)})", ""]
        for subject in pd.unique(per_subject["subject"]):
            rows = per_subject[per_subject["subject"] == subject]
            lines += [f"### {subject}", ""]
            lines += _md_table(_grid(rows, metrics, reference, _MD)) + [""]
    if "average" in group_by and average[["ci_low", "ci_high"]].notna().any(axis=None):
        lines += ["## 95% bootstrap CIs", ""]
        lines += [
            "_Average over subjects; each cell is the mean over runs of the per-run "
            "[low, high] 95% bootstrap CI over test samples._",
            "",
        ]
        grid = _grid(average, metrics, reference, _MD, cell=_ci_cell, arrows=False)
        lines += _md_table(grid) + [""]
    if "p_value" in average.columns and average["p_value"].notna().any():
        lines += [f"## Paired differences from {reference.text()}", ""]
        lines += [
            "_Average over subjects: mean per-clip difference (variant − reference) "
            "[95% CI] and p (corrected as the caption says; raw p in table.csv)._",
            "",
        ]
        shown = average[average["variant"].map(reference.of_variant).notna()]
        grid = _grid(shown, metrics, reference, _MD, cell=_paired_cell, arrows=False)
        lines += _md_table(grid) + [""]
    return "\n".join(lines)


def attach_tests(
    summary: dict[str, pd.DataFrame], tests: pd.DataFrame, level: float
) -> dict[str, pd.DataFrame]:
    """Add the paired tests' columns (TEST_COLUMNS) and `significant` (the corrected p <
    level and the paired CI excludes 0) to the summary frames."""
    from harness.report.stats import AVERAGE

    renamed = tests.rename(columns={"ci_low": "delta_ci_low", "ci_high": "delta_ci_high"})
    renamed = renamed.drop(columns=["delta", "n"])
    out = {}
    for grouping, frame in summary.items():
        if grouping == "average":
            part = renamed[renamed["subject"] == AVERAGE].drop(columns="subject")
            keys = ["variant", "metric"]
        else:
            part = renamed[renamed["subject"] != AVERAGE]
            keys = ["variant", "subject", "metric"]
        merged = frame.merge(part, on=keys, how="left")
        # the corrected p, and the CI of the mean excludes 0 (for the per-clip method, whose
        # Wilcoxon p tests medians, a separate condition; for the block method implied)
        excludes_zero = (merged["delta_ci_low"] > 0) | (merged["delta_ci_high"] < 0)
        merged["significant"] = merged["p_adjusted"].lt(level) & excludes_zero
        merged.attrs = dict(frame.attrs) | dict(tests.attrs) | {"level": level}
        out[grouping] = merged
    return out


def add_reported(average: pd.DataFrame, rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """The average frame with published rows after the runs' (never best, no delta)."""
    extra = rows.assign(
        std=math.nan, n_seeds=0, ci_low=math.nan, ci_high=math.nan, delta=math.nan, best=False
    )
    attrs = dict(average.attrs)
    out = pd.concat([average, extra], ignore_index=True)
    out["best"] = out["best"].astype(bool)
    out.attrs = attrs | {"reported_source": source}
    return out


def _label(title: str, grouping: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f"tab:{slug + '-' if slug else ''}{grouping}"


def _tex_table(grid_rows: list[str], header: list[str], caption: str, label: str) -> list[str]:
    return [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *grid_rows,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]


def _write_tex(t: _Tables) -> str:
    metrics, reference = t.metrics, t.reference
    average, per_subject = t.summary["average"], t.summary["subject"]
    lead = f"{tex_escape(t.title)}: " if t.title else ""
    caption = _caption(t.summary, reference, _TEX, t.n_subjects)
    if t.provenance:
        caption += " " + tex_escape(t.provenance)
    blocks: list[list[str]] = []
    if "average" in t.group_by:
        grid = _grid(average, metrics, reference, _TEX, n_subjects=t.n_subjects)
        text = f"{lead}average over subjects (mean $\\pm$ std over {_seeds_text(average, _TEX)}). "
        blocks.append(
            _tex_table(_tex_rows(grid), grid.header, text + caption, _label(t.title, "average"))
        )
    if "subject" in t.group_by and not per_subject.empty:
        rows: list[str] = []
        header: list[str] = []
        for i, subject in enumerate(pd.unique(per_subject["subject"])):
            grid = _grid(per_subject[per_subject["subject"] == subject], metrics, reference, _TEX)
            header = grid.header
            if i:
                rows.append(r"\midrule")
            rows.append(
                f"\\multicolumn{{{len(header)}}}{{l}}{{\\textit{{{tex_escape(subject)}}}}} \\\\"
            )
            rows += _tex_rows(grid)
        text = f"{lead}per subject (mean $\\pm$ std over {_seeds_text(per_subject, _TEX)}). "
        blocks.append(_tex_table(rows, header, text + caption, _label(t.title, "subject")))
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def write_tables(
    runs: pd.DataFrame,
    metrics: list[str],
    out: Path,
    reference: str | Reference | None,
    formats: Sequence[str] = ("md", "tex", "csv"),
    group_by: Sequence[str] = ("average", "subject"),
    title: str = "",
    tests: pd.DataFrame | None = None,
    level: float = 0.05,
    reported: tuple[pd.DataFrame, str] | None = None,
    provenance: str = "",
    split: str = "test",
) -> list[Path]:
    """Write out/table.{md,tex,csv}: variants x metrics, mean ± std over seeds, best in bold,
    delta vs the reference; the CSV holds `summarise_runs`' long frames at full precision.
    `tests` (harness/report/stats.py `paired_tests`) marks deltas with p < `level`; `reported`
    (rows of harness/report/reported.py, their source) adds published rows to the average;
    `provenance` is a line under the caption (what the runs were computed with); `split` is
    the data split the runs were scored on, named in the caption."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"unknown table format(s) {', '.join(bad)}; use {', '.join(FORMATS)}")
    bad = [g for g in group_by if g not in GROUPINGS]
    if bad:
        raise ConfigError(f"unknown table grouping(s) {', '.join(bad)}; use {', '.join(GROUPINGS)}")
    metrics = list(dict.fromkeys(metrics))
    reference = Reference.of(reference)
    summary = summarise_runs(runs, metrics, reference)
    for frame in summary.values():
        frame.attrs = {"split": split, "metrics": tuple(metrics)}
    if tests is not None and not tests.empty:
        summary = attach_tests(summary, tests, level)
    if reported is not None and not reported[0].empty:
        summary["average"] = add_reported(summary["average"], *reported)
    n_subjects = int(runs["subject"].nunique())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    render = {"md": _write_md, "tex": _write_tex}
    for fmt in formats:
        path = out / f"table.{fmt}"
        if fmt in render:
            tables = _Tables(summary, metrics, reference, group_by, title, n_subjects, provenance)
            text = render[fmt](tables)
            path.write_text(text, encoding="utf-8")
        else:
            frames = [summary[g].assign(table=g) for g in GROUPINGS if g in group_by]
            long = pd.concat(frames, ignore_index=True)
            if "subjects" in long.columns:
                long["subjects"] = long["subjects"].astype("Int64")  # empty on subject rows
            order = [c for c in COLUMNS if c in long.columns]
            long = long[["table", *order, *[c for c in long.columns if c.startswith(PARAM_PREFIX)]]]
            long.to_csv(path, index=False)
        written.append(path)
    return written
