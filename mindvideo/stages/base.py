"""The stage interface: what every pipeline stage receives and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def _no_progress(n: int, what: str) -> None:
    return None


def _no_metrics(name: str, value: float, step: int | None = None) -> None:
    return None


@dataclass
class StageContext:
    """What the runner gives a stage: its seed, device, progress and metric callbacks."""

    seed: int = 0
    device: str = "cpu"
    progress: Callable[[int, str], None] = _no_progress
    log_metric: Callable[[str, float, int | None], None] = _no_metrics


@dataclass
class StageResult:
    """Scalar metrics and the artifact files (relative to the stage's output folder)."""

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
