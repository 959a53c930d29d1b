"""Published numbers (reported, not re-run): experiments/reported/<dataset>.yaml.

A report shows them as marked rows only beside runs on the same dataset (real CC2017 data for
cc2017.yaml); on SynthCC they are never mixed in. Beside real runs, a published row joins the
table only when it was scored as the runs were, as far as its source states: the same protocol,
the same number of test samples per subject, the same scene-cut rule. The others are listed
apart (reported.md) with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.profiles import format_validation_error, read_yaml
from mindvideo.errors import ConfigError

REPORTED_DIR = Path(__file__).resolve().parents[2] / "experiments" / "reported"
MARK = " (reported)"


class ReportedRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    subjects: str = Field(description="which subjects the numbers are over, e.g. 'mean of 3'")
    metrics: dict[str, float]
    test_samples: int | None = Field(
        None,
        ge=1,
        description="test samples scored per subject, as the source states (None: not stated)",
    )
    scene_cuts: Literal["kept", "excluded"] | None = Field(
        None, description="whether test clips spanning a scene cut were scored (None: not stated)"
    )


class Reported(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    protocol: str
    source: str = Field(min_length=1, description="where the numbers were published")
    rows: tuple[ReportedRow, ...]


def load_reported(dataset: str, folder: Path = REPORTED_DIR) -> Reported | None:
    """The published rows for `dataset`, or None if the folder holds no file for it."""
    path = Path(folder) / f"{dataset}.yaml"
    if not path.exists():
        return None
    raw = read_yaml(path)
    try:
        reported = Reported.model_validate(raw)
    except ValidationError as e:
        message = format_validation_error(path, e).replace("invalid config", "invalid file")
        raise ConfigError(message) from None
    if reported.dataset != dataset:
        raise ConfigError(
            f"{path}: dataset: {reported.dataset!r}, but the file is named for {dataset!r}"
        )
    return reported


def reported_rows(reported: Reported, metrics: list[str]) -> pd.DataFrame:
    """Long rows (variant, kind "reported", metric, mean) of the requested metrics each
    published method reports; methods reporting none of them are left out."""
    rows = []
    for row in reported.rows:
        found = {m: v for m, v in row.metrics.items() if m in metrics}
        if not found:
            continue
        label = f"{row.method} [{row.subjects}]{MARK}"
        for metric in metrics:
            rows.append(
                {
                    "variant": label,
                    "base": row.method,
                    "kind": "reported",
                    "metric": metric,
                    "mean": found.get(metric, float("nan")),
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Scoring:
    """How the runs of a table were scored: each value the runs took."""

    protocols: frozenset[str]
    test_samples: frozenset[int]  # samples scored per run
    scene_cuts: frozenset[str]  # kept | excluded

    @staticmethod
    def of(runs: Iterable[tuple[str, int, bool]]) -> Scoring:
        """From (protocol, samples scored, scene cuts excluded) per run."""
        runs = list(runs)
        return Scoring(
            frozenset(p for p, _, _ in runs),
            frozenset(int(n) for _, n, _ in runs),
            frozenset("excluded" if x else "kept" for _, _, x in runs),
        )


def _values(values: frozenset) -> str:
    return " and ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in sorted(values))


def why_apart(row: ReportedRow, protocol: str, scoring: Scoring) -> list[str]:
    """Why a published row does not compare with the runs (empty: it does, as far as its source
    states); a criterion the source does not state is not held against it."""
    why = []
    if scoring.protocols != {protocol}:
        why.append(f"protocol {protocol}, these runs {_values(scoring.protocols)}")
    if row.test_samples is not None and scoring.test_samples != {row.test_samples}:
        why.append(
            f"{row.test_samples:,} test samples, these runs scored {_values(scoring.test_samples)}"
        )
    if row.scene_cuts is not None and scoring.scene_cuts != {row.scene_cuts}:
        why.append(f"scene-cut clips {row.scene_cuts}, in these runs {_values(scoring.scene_cuts)}")
    return why


def comparable_rows(
    reported: Reported, metrics: list[str], scoring: Scoring
) -> tuple[Reported, list[tuple[ReportedRow, list[str]]]]:
    """(the file with only the rows that compare with the runs, [(row, why apart)] of the
    others)."""
    keep, apart = [], []
    for row in reported.rows:
        why = why_apart(row, reported.protocol, scoring)
        (apart.append((row, why)) if why else keep.append(row))
    return reported.model_copy(update={"rows": tuple(keep)}), apart


def write_apart(
    path: Path, source: str, apart: list[tuple[ReportedRow, list[str]]], metrics: Iterable[str]
) -> Path:
    """reported.md: the published rows kept out of the table, their numbers and why."""
    shown = [m for m in metrics if any(m in row.metrics for row, _ in apart)]
    lines = [
        "# Published rows not comparable with these runs",
        "",
        f"Numbers as published ({source}); kept out of the table because they were "
        "scored otherwise than these runs.",
        "",
        "| Method | Subjects | " + " | ".join(shown) + " | Why apart |",
        "|" + "---|" * (len(shown) + 3),
    ]
    for row, why in apart:
        values = [f"{row.metrics[m]:.3f}" if m in row.metrics else "-" for m in shown]
        lines.append(
            f"| {row.method} | {row.subjects} | " + " | ".join(values) + f" | {'; '.join(why)} |"
        )
    path.write_text("\n".join(lines) + "\n")
    return path
