"""The stage interface: what every pipeline stage receives and returns.

A stage is a module of mindvideo/stages/ with
  NAME      its name;
  INPUTS    the roles of its upstream stages ("dataset", "foundation", "decode", ...): the
            harness binds each role to a stage of the run's pipeline and passes its output folder;
  CONFIG    the pydantic model of its config slice;  VERSION  bumped when its output changes;
  SEEDED    whether the run seed changes its output: a bool, or a function of the config;
            an unseeded stage is shared by all seeds of a suite;
  run(cfg, inputs, out, ctx) -> StageResult, writing only under `out`;
  work_units(cfg) (optional) the number of progress units run() reports.
"""

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
    """What the runner gives a stage: its seed, device, processes, progress and metric
    callbacks. `processes` > 1 asks training stages to train under torch.distributed in that
    many processes (mindvideo.distributed.launch); it never changes what they compute."""

    seed: int = 0
    device: str = "cpu"
    processes: int = 1
    progress: Callable[[int, str], None] = _no_progress
    log_metric: Callable[[str, float, int | None], None] = _no_metrics


@dataclass
class StageResult:
    """Scalar metrics and the artifact files (relative to the stage's output folder)."""

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


# What a decoding stage (baselines, decode) writes for `evaluate`: the test clips in order.
RECONSTRUCTIONS = "clips.npy"  # (n, F, H, W, 3) uint8
NAMES = "names.txt"  # one <segment>_<clip:03d> per line, the order of clips.npy
SYNTHCC_FOLDER = "synthcc"  # where the `simulate` stage writes its dataset


def dataset_root(path: Path) -> Path:
    """The dataset a `dataset` input points at: the simulate stage's synthcc/ folder, or a
    real dataset's root given directly."""
    path = Path(path)
    return path / SYNTHCC_FOLDER if (path / SYNTHCC_FOLDER).is_dir() else path
