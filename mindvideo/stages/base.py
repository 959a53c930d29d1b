"""The stage interface: what every pipeline stage declares, receives and returns.

A stage is a module of mindvideo/stages/ that defines `STAGE = Stage(...)`: its name, the
roles of its inputs, its config type and how its config is read from a profile, its version,
whether it is seeded, where it sits in the pipeline and when it runs, the profile sections it
owns, its headline metrics and artifacts, and `run(cfg, inputs, out, ctx) -> StageResult`,
which writes only under `out`. `mindvideo.stages.registry` collects the STAGE of every module;
the harness plans runs from those descriptions alone. Stages never import each other: what two
stages share lives in data/, models/, train/ or eval/.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mindvideo.errors import ConfigError

# What a decoding stage writes for `evaluate` (re-exported: part of the stage interface).
from mindvideo.eval.video_io import NAMES as NAMES
from mindvideo.eval.video_io import RECONSTRUCTIONS as RECONSTRUCTIONS
from mindvideo.eval.video_io import write_reconstructions as write_reconstructions


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


SYNTHCC_FOLDER = "synthcc"  # where the `simulate` stage writes its dataset
# What `evaluate` writes for the report's paired statistics: metric -> (n,) per-sample scores,
# with the scored clips' names and, where the dataset gives them, their scenes.
PER_SAMPLE = "per_sample.npz"
NAMES_KEY = "__names__"  # <segment>_<clip:03d> of each score, in order
BLOCKS_KEY = "__blocks__"  # <segment>/<scene> of each score


def dataset_root(path: Path) -> Path:
    """The dataset a `dataset` input points at: the simulate stage's synthcc/ folder, or a
    real dataset's root given directly."""
    path = Path(path)
    return path / SYNTHCC_FOLDER if (path / SYNTHCC_FOLDER).is_dir() else path


def always(profile: Any) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """A pipeline stage as the planner sees it.

    The planner lists the registered stages by `order`, keeps those `enabled` for the run's
    profile, and binds each input role to the last stage before it that `provides` the role
    (or to the stage `pinned` names); the dataset role is a real dataset's folder where no
    stage provides it. The key of a stage's cache entry hashes name, version, config (read as
    `key_neutral` and `key_renamed` say; `key_ignored` fields never), its inputs' keys and,
    where `seeded`, the seed.

    `profile` arguments are the run's resolved profile (a pydantic model with the sections of
    every registered stage and the harness's own: data, eval, method, stop_after, ...)."""

    name: str
    run: Callable[[Any, Mapping[str, Path], Path, StageContext], StageResult]
    config: type[BaseModel]
    configure: Callable[[Any, str], BaseModel]  # (profile, subject) -> its config slice
    version: int
    order: int  # place among the stages; part of every run key, never renumber
    inputs: tuple[str, ...] = ()  # roles of upstream stages
    optional_inputs: tuple[str, ...] = ()  # roles left unbound when nothing provides them
    enabled: Callable[[Any], bool] = always  # profile -> whether the run has this stage
    provides: str = ""  # the role its output fills ("" : its name)
    pinned: Mapping[str, str] = field(default_factory=dict)  # role -> a stage's own output
    # profile -> the optional roles bound under it (None: each one some stage provides)
    uses: Callable[[Any], Collection[str]] | None = None
    sections: Mapping[str, type[BaseModel]] = field(default_factory=dict)  # owned sections
    reads: tuple[str, ...] = ()  # other profile sections configure() reads
    seeded: bool | Callable[[Any], bool] = True  # a function of the config where it depends
    headline: tuple[str, ...] | Callable[[Any], Collection[str]] = ()  # logged unprefixed
    artifacts: tuple[str, ...] = ()  # files (or folders) its output holds
    work_units: Callable[[Any], int | None] | None = None  # progress units run() reports
    key_neutral: Mapping[tuple[str, ...], Any] = field(default_factory=dict)
    key_renamed: Mapping[tuple[str, ...], Mapping[str, str]] = field(default_factory=dict)
    # switches of how a result is computed that change no number of it (memory for compute):
    # never in the key, so an entry computed either way serves both
    key_ignored: tuple[tuple[str, ...], ...] = ()
    test_split_metrics: tuple[str, ...] = ()  # name prefixes computed on the test split
    held_out_metrics: tuple[str, ...] = ()  # ... on val segments, or test without them
    # profile -> the keys naming local files it reads on real data (key -> dir, dir:<a file the
    # folder must hold>, file, any, name)
    local_paths: Callable[[Any], Mapping[str, str]] | None = None
    check_profile: Callable[[Any], None] | None = None  # cross-section checks at load

    @property
    def role(self) -> str:
        return self.provides or self.name

    def is_seeded(self, cfg: BaseModel) -> bool:
        return bool(self.seeded(cfg) if callable(self.seeded) else self.seeded)

    def headline_metrics(self, cfg: BaseModel | None) -> set[str]:
        if callable(self.headline):
            return set(self.headline(cfg)) if cfg is not None else set()
        return set(self.headline)


def decodes_fmri(profile: Any) -> bool:
    """Whether the run is MinD-Video through the generator (not a baseline, not cut short)."""
    return profile.method == "mindvideo" and profile.stop_after is None


def scored_split(profile: Any) -> str:
    """eval.split, once the data are known to have it: `val` needs validation segments."""
    split, data = profile.eval.split, profile.data
    if split == "val" and not data.has_val and not _has_val_folders(data):
        how = (
            "e.g. --set data.synth.protocol.val_segments=2 (a dataset of its own)"
            if data.source == "synth"
            else "training segments to hold out, e.g. --set 'data.val_segments=[seg18]' or a count"
        )
        raise ConfigError(
            f"{profile.source}: eval.split: val, but the data have no validation segments; set "
            f"{data.val_key} ({how}), or score on test (eval.split: test)"
        )
    return split


def _has_val_folders(data: Any) -> bool:
    """Whether a real dataset has validation segments of its own (subject*/fmri/val*/)."""
    if data.source == "synth" or data.root is None or not Path(data.root).is_dir():
        return False
    root = Path(data.root)
    return any(root.glob("subject*/fmri/val*/")) or any(
        root.glob("video_fmri_dataset/subject*/fmri/val*/")
    )
