"""Bar figures per metric (and per subject), line figures per grid parameter and the semantic
vs pixel trade-off along one, as PNG files."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.report.reference import Reference
from harness.report.tables import PARAM_PREFIX, chance_text, check_runs, direction_arrow
from mindvideo.eval.registry import metric_info

DPI = 150
MODEL_COLOR, BASELINE_COLOR, REFERENCE_COLOR = "tab:blue", "0.72", "tab:orange"


def _variant_bars(ax, data: pd.DataFrame, metric: str, order: list, hue: tuple, **kw) -> None:
    """Bars of `metric` per variant in `order` (mean ± std over rows); `hue` is (column, its
    order, palette)."""
    column, hue_order, palette = hue
    sns.barplot(
        data=data,
        x="variant",
        y=metric,
        order=order,
        hue=column,
        hue_order=hue_order,
        palette=palette,
        errorbar="sd",
        ax=ax,
        **kw,
    )


def _figure(width: float, height: float, rows: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure on the Agg canvas, outside pyplot: nothing global to show or close."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _axis_label(metric: str) -> str:
    return metric_info(metric).label + direction_arrow(metric)


def _per_seed(rows: pd.DataFrame, metric: str, keys: list[str]) -> pd.DataFrame:
    """One score per (keys, seed): the mean over subjects; runs without the metric dropped."""
    scores = rows.groupby([*keys, "seed"], sort=False)[metric].mean().reset_index()
    return scores.dropna(subset=[metric])


def _level(runs: pd.DataFrame, variant: str | None, metric: str) -> float:
    """A variant's average score (mean over seeds of the mean over subjects), NaN if none."""
    if variant is None:
        return math.nan
    return float(_per_seed(runs[runs["variant"] == variant], metric, [])[metric].mean())


def _stimulus_line(ax: Axes, runs: pd.DataFrame, metric: str) -> bool:
    """Draw the level of the metric's stimulus counterpart (the registry's `stimulus`: the mean
    over seeds of the mean over runs); False if it has none or no run has it."""
    truth = metric_info(metric).stimulus
    if truth is None or truth not in runs or runs[truth].isna().all():
        return False
    level = float(_per_seed(runs, truth, [])[truth].mean())
    # variants may score different test clips (e.g. another fMRI window): then it is a mean
    varies = runs.groupby("variant")[truth].mean().nunique() > 1
    label = "stimulus (mean over runs)" if varies else "stimulus"
    ax.axhline(level, linestyle="-.", color="tab:green", linewidth=1, label=label)
    return True


def _chance_line(ax: Axes, metric: str) -> bool:
    """Draw the analytic chance level of an N-way metric (those the tables' captions give);
    False for other metrics."""
    text = chance_text(metric)
    if not text:
        return False
    level = metric_info(metric).chance()
    ax.axhline(level, linestyle="--", color="0.3", linewidth=1, label=text)
    return True


def _slant_labels(ax: Axes, names: list) -> None:
    """Slant the x labels when there are many or they are long."""
    if len(names) > 3 or max(len(str(v)) for v in names) > 8:
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name.replace(".", "_"))


def _bars(runs: pd.DataFrame, metric: str, references: list[str], path: Path) -> bool:
    """Bars per variant (sd over seeds), per-subject points; False if no run has the metric."""
    scores = _per_seed(runs, metric, ["variant"])
    if scores.empty:
        return False
    order = [v for v in pd.unique(runs["variant"]) if v in set(scores["variant"])]
    kinds = runs.groupby("variant", sort=False)["kind"].first()
    colors = {
        v: REFERENCE_COLOR
        if v in references
        else (BASELINE_COLOR if kinds[v] == "baseline" else MODEL_COLOR)
        for v in order
    }
    bars = scores[scores["variant"].isin(order)]
    points = runs[runs["variant"].isin(order)].groupby(["variant", "subject"], sort=False)
    points = points[metric].mean().reset_index().dropna(subset=[metric])  # mean over seeds

    fig, (ax,) = _figure(max(4.0, 0.8 * len(order) + 2.0), 3.6)
    _variant_bars(ax, bars, metric, order, ("variant", order, colors), capsize=0.2, legend=False)
    # Per-subject points with seeded jitter (seaborn's stripplot jitters from numpy's global
    # generator, so the same runs would not give the same figure).
    rng = np.random.default_rng(0)
    subjects = list(dict.fromkeys(points["subject"]))
    palette = sns.color_palette("dark", len(subjects))
    position = {v: i for i, v in enumerate(order)}
    for colour, subject in zip(palette, subjects, strict=True):
        group = points[points["subject"] == subject]
        x = group["variant"].map(position).to_numpy(float)
        x = x + rng.uniform(-0.15, 0.15, len(x))
        ax.scatter(
            x,
            group[metric],
            s=20,
            color=colour,
            edgecolor="white",
            linewidth=0.6,
            label=subject,
            zorder=3,
        )
    _chance_line(ax, metric)
    _stimulus_line(ax, runs, metric)
    ax.legend(fontsize="small", title=None, loc="best")
    ax.set_xlabel("")
    ax.set_ylabel(_axis_label(metric))
    ax.set_title(metric_info(metric).label)
    _slant_labels(ax, order)
    fig.savefig(path, dpi=DPI)
    return True


def _subject_bars(runs: pd.DataFrame, metric: str, references: list[str], path: Path) -> bool:
    """Grouped bars: variants on x, one bar per subject (sd over seeds); False with fewer than
    two subjects or no run with the metric."""
    scores = runs.dropna(subset=[metric])
    subjects = list(dict.fromkeys(scores["subject"]))
    if len(subjects) < 2:
        return False
    order = [v for v in pd.unique(runs["variant"]) if v in set(scores["variant"])]
    fig, (ax,) = _figure(max(5.0, 0.45 * len(order) * len(subjects) + 2.0), 3.6)
    colours = sns.color_palette("dark", len(subjects))
    _variant_bars(ax, scores, metric, order, ("subject", subjects, colours), capsize=0.1)
    ax.legend(fontsize="small", title=None, loc="best")
    ax.set_xlabel("")
    ax.set_ylabel(_axis_label(metric))
    ax.set_title(f"{metric_info(metric).label} per subject")
    ticks = ax.get_xticklabels()
    for reference in references:
        if reference in order:
            ticks[order.index(reference)].set_fontweight("bold")
    _slant_labels(ax, order)
    fig.savefig(path, dpi=DPI)
    return True


def _tradeoff(runs: pd.DataFrame, column: str, metrics: list[str], path: Path) -> bool:
    """Semantic (N-way) metrics on the left axis and pixel metrics (SSIM, PSNR) on the right,
    against one numeric parameter (e.g. the guidance scale); False unless it has both kinds."""
    numbers = _numeric_param(runs[column])
    shown = [m for m in metrics if runs[m].notna().any()]
    semantic = [m for m in shown if metric_info(m).aspect == "semantic"]
    pixel = [m for m in shown if metric_info(m).aspect == "pixel"]
    if numbers is None or not semantic or not pixel:
        return False
    grid = runs[numbers.notna()].assign(**{column: numbers[numbers.notna()]})
    fig, (left,) = _figure(6.0 + 0.9 * (len(pixel) - 1), 3.8)
    handles = []
    colours = iter(sns.color_palette("tab10", len(semantic) + len(pixel)))

    def draw(ax: Axes, metric: str, line: str, marker: str) -> str:
        means = _per_seed(grid, metric, [column]).groupby(column)[metric].mean()
        colour = next(colours)
        label = metric_info(metric).label
        (h,) = ax.plot(means.index, means.values, line, marker=marker, color=colour, label=label)
        handles.append(h)
        return colour

    for metric in semantic:
        draw(left, metric, "-", "o")
    left.set_ylabel("semantic (N-way top-1) ↑")
    for i, metric in enumerate(pixel):  # each pixel metric on its own right-hand axis
        ax = left.twinx()
        if i:
            ax.spines["right"].set_position(("axes", 1.0 + 0.18 * i))
        colour = draw(ax, metric, "--", "s")
        ax.set_ylabel(_axis_label(metric), color=colour)
        ax.tick_params(axis="y", colors=colour)
    left.set_xlabel(column[len(PARAM_PREFIX) :])
    left.legend(handles=handles, fontsize="small", loc="best")
    left.set_title("Semantic vs pixel metrics")
    fig.savefig(path, dpi=DPI)
    return True


def _numeric_param(values: pd.Series) -> pd.Series | None:
    """A grid parameter as numbers (NaN off the grid), or None if not numeric or not varied."""
    if pd.api.types.is_bool_dtype(values):
        return None
    present = values.notna()
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers[present].isna().any() or numbers.nunique() < 2:
        return None
    return numbers


def _lines(
    runs: pd.DataFrame, column: str, metrics: list[str], reference: str | None, path: Path
) -> bool:
    """Metric vs one grid parameter (or a key that variants sweep one value at a time): a line
    per base (or per series), band = sd over seeds; False if no data."""
    numbers = _numeric_param(runs[column])
    if numbers is None:
        return False
    grid = runs[numbers.notna()].assign(**{column: numbers[numbers.notna()]})
    # Other grid parameters that vary along this one split the lines further.
    others = [
        c
        for c in grid.columns
        if c.startswith(PARAM_PREFIX) and c != column and grid[c].nunique() > 1
    ]
    grid["line"] = (grid["series"] if "series" in grid else grid["base"]).astype(str)
    for c in others:
        grid["line"] += ", " + c[len(PARAM_PREFIX) :] + "=" + grid[c].astype(str)
    panels = [m for m in metrics if grid[m].notna().any()]
    if not panels:
        return False
    name = column[len(PARAM_PREFIX) :]
    fig, axes = _figure(6.0, 2.6 * len(panels) + 0.6, rows=len(panels))
    for i, (ax, metric) in enumerate(zip(axes, panels, strict=True)):
        scores = _per_seed(grid, metric, ["line", column])
        sns.lineplot(data=scores, x=column, y=metric, hue="line", errorbar="sd", marker="o", ax=ax)
        level = _level(runs[numbers.isna()], reference, metric)
        if not math.isnan(level):
            ax.axhline(level, linestyle="-", color="0.5", linewidth=1, label=f"{reference} (ref.)")
        _chance_line(ax, metric)
        stimulus = _stimulus_line(ax, grid, metric)
        ax.set_ylabel(_axis_label(metric))
        if i == 0 or stimulus:  # the lines on the first panel; the stimulus where it is drawn
            ax.legend(fontsize="small", title=None)
        elif ax.get_legend() is not None:
            ax.get_legend().remove()
    axes[-1].set_xlabel(name)
    ticks = sorted(numbers.dropna().unique())
    if len(ticks) <= 12:
        axes[-1].set_xticks(ticks)
    fig.savefig(path, dpi=DPI)
    return True


def write_figures(
    runs: pd.DataFrame, metrics: list[str], out: Path, reference: str | Reference | None = None
) -> list[Path]:
    """Write out/bars_<metric>.png per metric (and subjects_<metric>.png with several subjects),
    out/line_<param>.png per numeric grid parameter (and tradeoff_<param>.png when semantic and
    pixel metrics are both shown); dots in a path become underscores; metrics no run has are
    skipped, and so are the stimuli's levels (the registry's `stimulus_level`), drawn in their
    metric's figure."""
    metrics = list(dict.fromkeys(metrics))
    reference = Reference.of(reference)
    check_runs(runs, metrics, reference)
    references = reference.names if reference is not None else []  # the bars they colour
    single = reference.single if reference is not None else None  # the level lines draw
    metrics = [m for m in metrics if not metric_info(m).stimulus_level]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = runs.copy()
    for m in metrics:
        runs[m] = pd.to_numeric(runs[m], errors="coerce")
    written = []
    for metric in metrics:
        path = out / f"bars_{_file_part(metric)}.png"
        if _bars(runs, metric, references, path):
            written.append(path)
        path = out / f"subjects_{_file_part(metric)}.png"
        if _subject_bars(runs, metric, references, path):
            written.append(path)
    for column in [c for c in runs.columns if c.startswith(PARAM_PREFIX)]:
        name = _file_part(column[len(PARAM_PREFIX) :])
        path = out / f"line_{name}.png"
        if _lines(runs, column, metrics, single, path):
            written.append(path)
        path = out / f"tradeoff_{name}.png"
        if _tradeoff(runs, column, metrics, path):
            written.append(path)
    return written


def write_lag_figure(report: dict, path: Path) -> Path | None:
    """`mvbench data inspect --figure`: each subject's encoding-model accuracy by lag (held-out
    r), the profile's window offset marked, and the true lag where SynthCC knows it."""
    curves = {
        n: e["encoding_lag_r"] for n, e in report["subjects"].items() if "encoding_lag_r" in e
    }
    if not curves:
        return None
    fig, (ax,) = _figure(5.0, 3.2)
    for name, curve in curves.items():
        lags = [int(k) for k in curve]
        ax.plot(lags, list(curve.values()), marker="o", label=name)
    offset = report["window"]["offset"]
    ax.axvline(offset, color="grey", linestyle="--", label=f"window offset ({offset})")
    true = {e["true_lag_tr"] for e in report["subjects"].values() if "true_lag_tr" in e}
    for lag in sorted(true):
        ax.axvline(lag, color="black", linestyle=":", label=f"true lag ({lag})")
    ax.set_xlabel("lag (TRs after the clip)")
    ax.set_ylabel("held-out r (mean over voxels)")
    ax.set_title("stimulus-feature encoding model by lag")
    ax.legend(fontsize=7)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return Path(path)
