"""Published numbers (reported, not re-run): experiments/reported/<dataset>.yaml.

A report shows them as marked rows only beside runs on the same dataset (real CC2017 data for
cc2017.yaml); on SynthCC they are never mixed in.
"""

from __future__ import annotations

from pathlib import Path

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
