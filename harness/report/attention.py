"""The attention analysis of a report: enrichment per brain region of the encoder's layers after
each training stage, from the `interpret` stage's metrics, as figures and a Markdown table."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.report.figures import DPI, _file_part

# interpret.<stage>.L<layer>.<region> (the enrichment), interpret.voxel_fraction.<region>
ENRICHMENT = re.compile(r"^interpret\.(?P<stage>[^.]+)\.L(?P<layer>\d+)\.(?P<region>[^.]+)$")
VOXEL_FRACTION = re.compile(r"^interpret\.voxel_fraction\.(?P<region>[^.]+)$")
TRAINING_ORDER = ("mbm", "contrastive", "cotrain")
TABLE_FILE = "attention.md"


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _long(runs: pd.DataFrame, pattern: re.Pattern, value: str) -> pd.DataFrame:
    """The metrics matching `pattern` as rows: variant, subject, seed, the pattern's groups,
    `value`; runs without them dropped."""
    columns = [c for c in runs.columns if pattern.match(str(c))]
    groups = list(pattern.groupindex)
    if not columns:
        return pd.DataFrame(columns=["variant", "subject", "seed", *groups, value])
    long = runs.melt(
        id_vars=["variant", "subject", "seed"],
        value_vars=columns,
        var_name="metric",
        value_name=value,
    )
    long[value] = pd.to_numeric(long[value], errors="coerce")
    long = long.dropna(subset=[value])
    parts = long["metric"].str.extract(pattern)
    return pd.concat([long.drop(columns="metric"), parts], axis=1)


def attention_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The interpret metrics of the runs, one row per (run, stage, layer, region):
    variant, subject, seed, stage, layer (int), region, enrichment."""
    frame = _long(runs, ENRICHMENT, "enrichment")
    return frame.assign(layer=frame["layer"].astype(int))


def _stages(frame: pd.DataFrame) -> list[str]:
    found = set(frame["stage"])
    return [s for s in TRAINING_ORDER if s in found] + sorted(found - set(TRAINING_ORDER))


def _regions(frame: pd.DataFrame) -> list[str]:
    return sorted(set(frame["region"]), key=_natural)


def _groups(frame: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, str]]:
    """(variant, subject, rows, file stem) per subject, and per variant when several variants
    have the metrics."""
    variants = list(dict.fromkeys(frame["variant"]))
    out = []
    for variant in variants:
        for subject in sorted(set(frame.loc[frame["variant"] == variant, "subject"]), key=_natural):
            rows = frame[(frame["variant"] == variant) & (frame["subject"] == subject)]
            stem = f"attention_{_file_part(subject)}"
            if len(variants) > 1:
                stem += f"_{_file_part(variant)}"
            out.append((variant, subject, rows, stem))
    return out


def _panels(n: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure of n panels of width x height inches, at most 4 a row (Agg, outside pyplot)."""
    columns = min(n, 4)
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(width * columns, height * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(rows, columns, squeeze=False).ravel())


def _plot(rows: pd.DataFrame, title: str, path: Path) -> None:
    """Regions on x, a bar per training stage (mean over seeds, sd), one panel per layer, a
    dashed line at enrichment 1 (uniform attention)."""
    stages, regions = _stages(rows), _regions(rows)
    layers = sorted(set(rows["layer"]))
    width = max(4.0, 0.45 * len(regions) * len(stages) + 1.5)
    fig, axes = _panels(len(layers), width, 3.0)
    for i, ax in enumerate(axes):
        if i >= len(layers):
            ax.set_visible(False)
            continue
        sns.barplot(
            data=rows[rows["layer"] == layers[i]],
            x="region",
            y="enrichment",
            hue="stage",
            order=regions,
            hue_order=stages,
            errorbar="sd",
            capsize=0.1,
            ax=ax,
        )
        ax.axhline(1.0, linestyle="--", color="0.3", linewidth=1)
        ax.set_title(f"layer L{layers[i]}", fontsize="medium")
        ax.set_xlabel("")
        ax.set_ylabel("enrichment (mass / voxel share)")
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        if i == 0:
            ax.legend(fontsize="small", title=None)
        elif ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle(title)
    fig.savefig(path, dpi=DPI)


def _cell(values: pd.Series) -> str:
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def _table(rows: pd.DataFrame, fractions: pd.DataFrame) -> list[str]:
    """Rows: the voxel fraction, then (stage, layer); columns: regions."""
    regions = _regions(rows)
    lines = [
        "| stage | layer | " + " | ".join(regions) + " |",
        "|---|---|" + "---:|" * len(regions),
    ]
    if not fractions.empty:  # the subject's, the same for every seed
        share = [
            f"{fractions.loc[fractions['region'] == r, 'fraction'].mean():.2f}" for r in regions
        ]
        lines.append("| voxel fraction | | " + " | ".join(share) + " |")
    for stage in _stages(rows):
        at = rows[rows["stage"] == stage]
        for layer in sorted(set(at["layer"])):
            here = at[at["layer"] == layer]
            cells = [_cell(here.loc[here["region"] == r, "enrichment"]) for r in regions]
            lines.append(f"| {stage} | L{layer} | " + " | ".join(cells) + " |")
    return lines


def write_attention(runs: pd.DataFrame, out: Path, title: str, figures: bool = True) -> list[Path]:
    """attention.md and, with `figures`, figures/attention_<subject>[_<variant>].png, when the
    runs have interpret metrics (the variant in the name when several variants have them);
    nothing otherwise. Means over seeds, sd where there are several."""
    frame = attention_frame(runs)
    if frame.empty:
        return []
    fractions = _long(runs, VOXEL_FRACTION, "fraction")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    n_seeds = sorted(set(frame.groupby(["variant", "subject"])["seed"].nunique()))
    seeds = "-".join(str(n) for n in dict.fromkeys([n_seeds[0], n_seeds[-1]]))
    lines = [
        f"# Attention per brain region: {title}",
        "",
        "Enrichment of each brain region in the spatial self-attention of the fMRI encoder's "
        "layers, after each training stage: the share of the attention mass its voxel patches "
        "receive (averaged over queries, heads, window frames and test windows) divided by its "
        "share of the encoder's voxels; 1 = uniform attention. The temporal attention (over the "
        f"window's frames) is not region-specific and left out. Mean ± sd over seeds "
        f"({seeds} per subject).",
    ]
    for variant, subject, rows, stem in _groups(frame):
        share = fractions[(fractions["variant"] == variant) & (fractions["subject"] == subject)]
        lines += ["", f"## {subject} ({variant})", "", *_table(rows, share)]
        if figures:
            path = out / "figures" / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            _plot(rows, f"spatial attention per region: {subject} ({variant})", path)
            written.append(path)
            lines += ["", f"![{subject} ({variant})](figures/{path.name})"]
    table = out / TABLE_FILE
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [table, *written]
