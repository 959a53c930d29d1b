"""Search specs: the YAML files of experiments/search/ (a suite's runs, a space, an objective)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.profiles import format_validation_error, load_profile, read_yaml
from harness.spec import LoadedSpec, ReportSpec, ResultsName, Seeds, Spec
from mindvideo.errors import ConfigError
from mindvideo.eval.registry import metric_info

Direction = Literal["minimize", "maximize"]
# A categorical choice: plain values only (they go into YAML, JSON, MLflow and Optuna).
Choice = str | int | float | bool | None
# The variant every trial's runs belong to; its grid point is the trial's parameters.
TRIAL_VARIANT = "trial"
# The profile key of the split decoded and scored: a search tunes on val unless it says so.
SPLIT_KEY = "eval.split"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def options(self, *skip: str) -> dict[str, Any]:
        """The fields as keyword arguments of the Optuna class they configure (no `type`)."""
        return {k: v for k, v in self.model_dump().items() if k not in ("type", *skip)}


# The space ---------------------------------------------------------------------------------


class FloatParam(_Strict):
    """A float in [low, high], on a log scale or in steps of `step`."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0, description="values low, low + step, ... <= high")

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got {self.low}, {self.high}")
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low {self.low}")
        if self.log and self.step is not None:
            raise ValueError("give either log: true or a step, not both")
        return self

    def grid(self) -> list[float]:
        if self.step is None:
            raise ValueError("the grid sampler needs a step (or use a categorical)")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return [round(self.low + i * self.step, 12) for i in range(n + 1)]

    def test_values(self) -> list[float]:
        return [self.low, self.high]

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def distribution(self):
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntParam(_Strict):
    """An integer in [low, high], on a log scale or in steps of `step`."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low < 1:
            raise ValueError(f"log scale needs low >= 1, got low {self.low}")
        if self.log and self.step != 1:
            raise ValueError("give either log: true or a step, not both")
        return self

    def grid(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def test_values(self) -> list[int]:
        return [self.low, self.high]

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def distribution(self):
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_Strict):
    """One of `choices`."""

    type: Literal["categorical"]
    choices: tuple[Choice, ...]

    @field_validator("choices")
    @classmethod
    def _choices(cls, v: tuple) -> tuple:
        if not v:
            raise ValueError("give at least one choice")
        if len({json.dumps(c) for c in v}) != len(v):
            raise ValueError(f"choices repeat: {list(v)}")
        return v

    def grid(self) -> list[Choice]:
        return list(self.choices)

    def test_values(self) -> list[Choice]:
        return list(self.choices)

    def contains(self, value: Any) -> bool:
        return json.dumps(value) in {json.dumps(c) for c in self.choices}

    def distribution(self):
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


# Samplers: every argument the search relies on is stated (Optuna 5 changed several defaults) ---


class TPESpec(_Strict):
    """Tree-structured Parzen estimator (single- or multi-objective)."""

    type: Literal["tpe"]
    seed: int = Field(ge=0)
    n_startup_trials: int = Field(10, ge=0, description="random trials before TPE takes over")
    n_ei_candidates: int = Field(24, ge=1)
    multivariate: bool = Field(True, description="model the parameters jointly")
    constant_liar: bool = Field(
        True, description="count running trials as bad, so parallel workers spread out"
    )

    def build(self, space: dict[str, Param], seed: int):
        import optuna

        return optuna.samplers.TPESampler(**self.options("seed"), seed=seed, group=False)


class RandomSpec(_Strict):
    type: Literal["random"]
    seed: int = Field(ge=0)

    def build(self, space: dict[str, Param], seed: int):
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)


class GridSpec(_Strict):
    """Every point of the space's grid once (floats need a step), in a seeded order."""

    type: Literal["grid"]
    seed: int = Field(ge=0)

    def build(self, space: dict[str, Param], seed: int):
        import optuna

        class Grid(optuna.samplers.GridSampler):
            # The search counts its trials itself; Optuna's "grid exhausted" stop only works
            # inside study.optimize, and the search runs trials with ask and tell.
            def after_trial(self, study, trial, state, values) -> None:
                pass

        return Grid({k: p.grid() for k, p in space.items()}, seed=seed)


class NSGA2Spec(_Strict):
    """NSGA-II, the genetic algorithm for several objectives."""

    type: Literal["nsga2"]
    seed: int = Field(ge=0)
    population_size: int = Field(50, ge=2)
    mutation_prob: float | None = Field(None, ge=0, le=1, description="None: 1 / parameters")
    crossover_prob: float = Field(0.9, ge=0, le=1)
    swapping_prob: float = Field(0.5, ge=0, le=1)

    def build(self, space: dict[str, Param], seed: int):
        import optuna

        return optuna.samplers.NSGAIISampler(**self.options("seed"), seed=seed)


Sampler = Annotated[TPESpec | RandomSpec | GridSpec | NSGA2Spec, Field(discriminator="type")]


# Pruners ------------------------------------------------------------------------------------


class MedianSpec(_Strict):
    """Stop a trial whose intermediate value is worse than the median of earlier trials'."""

    type: Literal["median"]
    n_startup_trials: int = Field(5, ge=0, description="trials never pruned, to learn from")
    n_warmup_steps: int = Field(0, ge=0, description="steps of a trial never pruned")
    interval_steps: int = Field(1, ge=1)
    n_min_trials: int = Field(1, ge=1)

    def build(self, sign: float = 1.0):
        import optuna

        return optuna.pruners.MedianPruner(**self.options())


class HyperbandSpec(_Strict):
    type: Literal["hyperband"]
    min_resource: int = Field(1, ge=1)
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)
    bootstrap_count: int = Field(0, ge=0)

    def build(self, sign: float = 1.0):
        import optuna

        return optuna.pruners.HyperbandPruner(**self.options())


class ThresholdSpec(_Strict):
    """Stop a trial whose watched metric leaves [lower, upper] (e.g. a diverging loss), or
    is NaN; the bounds are in the metric's own units, as the runs log it."""

    type: Literal["threshold"]
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdSpec:
        if self.lower is None and self.upper is None:
            raise ValueError("give lower and/or upper")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower {self.lower} > upper {self.upper}")
        return self

    def build(self, sign: float = 1.0):
        import optuna

        lower, upper = self.lower, self.upper
        if sign < 0:  # the values are reported negated: so are the bounds
            lower, upper = (None if upper is None else -upper), (None if lower is None else -lower)
        return optuna.pruners.ThresholdPruner(
            lower=lower,
            upper=upper,
            n_warmup_steps=self.n_warmup_steps,
            interval_steps=self.interval_steps,
        )


class NoPrunerSpec(_Strict):
    type: Literal["none"]

    def build(self, sign: float = 1.0):
        import optuna

        return optuna.pruners.NopPruner()


Pruner = Annotated[
    MedianSpec | HyperbandSpec | ThresholdSpec | NoPrunerSpec, Field(discriminator="type")
]


class PruneOn(_Strict):
    """The metric the pruner watches, as the runs log it per step (e.g. per epoch)."""

    metric: str
    direction: Direction | None = Field(None, description="None: from the name (losses: minimize)")

    @model_validator(mode="after")
    def _has_a_direction(self) -> PruneOn:
        if self.direction is None and not metric_info(self.metric).ranked:
            raise ValueError(
                f"{self.metric!r} has no better direction (it is compared with the stimulus's); "
                "give prune_on: {metric: ..., direction: maximize or minimize}"
            )
        return self

    @property
    def resolved_direction(self) -> Direction:
        if self.direction is not None:
            return self.direction
        return "maximize" if metric_info(self.metric).higher_is_better else "minimize"


class SearchSection(_Strict):
    """The `search:` section: what to vary, what to optimise, how, and for how long."""

    space: dict[str, Param]
    objective: dict[str, Direction] = Field(
        description="metric (as the runs log it) -> minimize | maximize; several: multi-objective"
    )
    aggregate: Literal["mean", "median"] = Field(
        "mean", description="how a trial's value combines its runs (subjects x seeds)"
    )
    sampler: Sampler
    pruner: Pruner = NoPrunerSpec(type="none")
    prune_on: PruneOn | None = None
    n_trials: int | None = Field(
        None, ge=1, description="trials to finish (COMPLETE or PRUNED); grid: default its size"
    )
    timeout: float | None = Field(
        None, gt=0, description="seconds per command after which no new trial starts"
    )
    enqueue: tuple[dict[str, Any], ...] = Field(
        (), description="parameters of the first trials (e.g. the paper's values)"
    )
    retries: int = Field(2, ge=0, description="re-runs of a trial whose worker died")
    max_failures: int | None = Field(
        None,
        ge=1,
        description="stop once the study has this many FAIL trials (default: n_trials, >= 3)",
    )

    @field_validator("prune_on", mode="before")
    @classmethod
    def _prune_on_name(cls, v: Any) -> Any:
        return {"metric": v} if isinstance(v, str) else v

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict) -> dict:
        if not v:
            raise ValueError("empty: give at least one dotted profile key to search over")
        return v

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: dict) -> dict:
        if not v:
            raise ValueError("name at least one metric, e.g. {video_2way_top1: maximize}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SearchSection:
        pruning = self.pruner.type != "none"
        if pruning and len(self.objective) > 1:
            raise ValueError(
                "pruner: Optuna prunes single-objective studies only; use pruner: {type: none} "
                f"with the {len(self.objective)} objectives"
            )
        if pruning and self.prune_on is None:
            raise ValueError(
                f"pruner {self.pruner.type!r} needs prune_on: the metric the runs log per step "
                "(e.g. prune_on: cotrain.train_loss)"
            )
        if self.prune_on is not None and not pruning:
            raise ValueError("prune_on is set but pruner is none; give a pruner or drop prune_on")
        if self.sampler.type == "grid":
            bad = [k for k, p in self.space.items() if isinstance(p, FloatParam) and not p.step]
            if bad:
                raise ValueError(
                    f"sampler grid: float parameters {bad} need a step (or make them categorical)"
                )
            size = math.prod(len(p.grid()) for p in self.space.values())
            if self.n_trials is not None and self.n_trials > size:
                raise ValueError(
                    f"n_trials {self.n_trials} > the grid's {size} points: lower n_trials or "
                    "leave it out (a grid search runs every point once)"
                )
        elif self.n_trials is None and self.timeout is None:
            raise ValueError("give n_trials and/or timeout (seconds): when the search stops")
        for i, point in enumerate(self.enqueue):
            for key, value in point.items():
                if key not in self.space:
                    raise ValueError(
                        f"enqueue[{i}]: {key!r} is not in space (it has {', '.join(self.space)})"
                    )
                if not self.space[key].contains(value):
                    raise ValueError(f"enqueue[{i}]: {key}: {value!r} is outside its range")
        return self

    @property
    def trials(self) -> int | None:
        """The trial count the study reaches (grid: its size unless n_trials is given)."""
        if self.n_trials is None and self.sampler.type == "grid":
            return math.prod(len(p.grid()) for p in self.space.values())
        return self.n_trials

    @property
    def failures(self) -> int:
        """FAIL trials after which the search stops (default: the trial count, at least 3)."""
        return self.max_failures or max(3, self.trials or 10)

    @property
    def directions(self) -> list[Direction]:
        return list(self.objective.values())

    @property
    def prune_sign(self) -> float:
        """Pruners compare intermediate values in the study's direction: a loss watched while
        an accuracy is maximised is reported negated (-1)."""
        if self.prune_on is None or self.prune_on.resolved_direction == self.directions[0]:
            return 1.0
        return -1.0


class SearchSpec(_Strict):
    """A search: the runs of one configuration of a profile, over a space of its keys."""

    study: ResultsName = Field(None, description="name (default: the file's stem)")
    description: str = ""
    profile: str
    overrides: dict[str, Any] = Field(
        {},
        description="dotted overrides for every trial; eval.split defaults to val (the "
        "objective is scored on the validation split, never on test unless asked)",
    )
    seeds: Seeds = (0,)
    subjects: tuple[str, ...] | None = None
    search: SearchSection

    @model_validator(mode="after")
    def _no_overlap(self) -> SearchSpec:
        both = sorted(set(self.overrides) & set(self.search.space))
        if both:
            raise ValueError(f"{both} are both in overrides and search.space; remove one")
        return self


@dataclass(frozen=True)
class LoadedSearch:
    spec: SearchSpec
    path: Path
    study: str
    profile: str  # the profile actually used (--profile swaps the spec's)
    hash: str

    @property
    def search(self) -> SearchSection:
        return self.spec.search


def is_search_spec(path: Path | str) -> bool:
    """Whether a YAML spec is a search (it has a top-level `search:` key)."""
    path = Path(path)
    if not path.is_file():
        return False
    raw = read_yaml(path)
    return isinstance(raw, dict) and "search" in raw


def load_search_spec(path: Path | str, profile: str | None = None) -> LoadedSearch:
    """Read and validate a search spec; every searched key is checked against the profile by
    loading it with the range's ends (or each choice)."""
    path = Path(path)
    if not path.is_file():
        have = sorted(p.name for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        hint = f"; {path.parent} holds: {', '.join(have)}" if have else ""
        raise ConfigError(f"{path}: search spec not found{hint}")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a search spec must be a mapping (profile:, search:, ...), "
            f"got {type(raw).__name__}"
        )
    if "search" not in raw:
        raise ConfigError(
            f"{path}: not a search spec (no `search:` section); a suite spec runs with "
            f"`mvbench run {path}`"
        )
    try:
        spec = SearchSpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(
            format_validation_error(path, e).replace("invalid config", "invalid search spec")
        ) from None
    if SPLIT_KEY not in spec.overrides and SPLIT_KEY not in spec.search.space:
        # tuning never looks at the test set: trials score the validation split by default
        spec = spec.model_copy(update={"overrides": {SPLIT_KEY: "val", **spec.overrides}})
    name = profile or spec.profile
    try:
        base = load_profile(name, spec.overrides).model_dump(mode="json")
    except ConfigError as e:
        raise ConfigError(f"{path}: overrides: {e}") from None
    for key, param in spec.search.space.items():
        _check_key(path, name, base, key)
        for value in param.test_values():
            try:
                load_profile(name, spec.overrides | {key: value})
            except ConfigError as e:
                raise ConfigError(
                    f"{path}: search.space.{key}: the profile rejects {value!r}:\n  {e}"
                ) from None
    digest = hashlib.sha256(
        json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()[:12]
    study = spec.study or path.stem
    if name != spec.profile:  # --profile swapped: its trials are a study of their own
        study = f"{study}-{Path(name).stem}"
    return LoadedSearch(spec, path, study, name, digest)


def _check_key(path: Path, profile: str, base: dict, key: str) -> None:
    """A searched key must name a value of the profile (eval.judges.* / eval.clip.* are open
    sections, checked when the profile loads with the test values)."""
    node: Any = base
    parts = key.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        if i > 0 and parts[:i] in (["eval", "judges"], ["eval", "clip"]):
            return
        known = ", ".join(sorted(node)) if isinstance(node, dict) else "(a value)"
        raise ConfigError(
            f"{path}: search.space: {key!r} is not a key of profile {profile!r} "
            f"({'.'.join(parts[: i + 1])} not found; keys there: {known})"
        )
    if isinstance(node, dict):
        raise ConfigError(
            f"{path}: search.space: {key!r} is a section of profile {profile!r}, not a value; "
            f"search one of its keys: {', '.join(sorted(node))}"
        )


def trial_spec(loaded: LoadedSearch, params: dict[str, Any]) -> LoadedSpec:
    """A trial as a suite: the search's runs with the trial's parameters as a one-point grid,
    so the runs are planned, keyed and tracked like any suite's (variant `trial[k=v,...]`)."""
    objective = loaded.search.objective
    prune = loaded.search.prune_on
    metrics = [*objective, *([prune.metric] if prune else [])]
    spec = Spec(
        suite=loaded.study,
        description=loaded.spec.description,
        profile=loaded.spec.profile,
        overrides=loaded.spec.overrides,
        variants={TRIAL_VARIANT: {}},
        grid={key: [params[key]] for key in loaded.search.space if key in params},
        seeds=loaded.spec.seeds,
        subjects=loaded.spec.subjects,
        report=ReportSpec(metrics=tuple(dict.fromkeys(metrics))),
    )
    return LoadedSpec(
        spec=spec, path=loaded.path, suite=loaded.study, profile=loaded.profile, hash=loaded.hash
    )


def first_point(loaded: LoadedSearch) -> dict[str, Any]:
    """A point of the space to check the plan with: the first enqueued values, else each
    range's low end (the first choice)."""
    point = {k: p.test_values()[0] for k, p in loaded.search.space.items()}
    return point | (dict(loaded.search.enqueue[0]) if loaded.search.enqueue else {})
