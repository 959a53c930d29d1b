"""Suite specs: the YAML files that declare variants, grids, seeds, subjects, baselines, report."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.functional_validators import AfterValidator

from harness.profiles import BASELINES, format_validation_error, read_yaml
from mindvideo.errors import ConfigError
from mindvideo.eval.baselines import refuse_old_names
from mindvideo.eval.protocols import PROTOCOLS

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _results_name(v: str | None) -> str | None:
    if v is not None and not NAME_PATTERN.match(v):
        raise ValueError("use letters, digits and _ . + - only (it names a folder in results/)")
    return v


# A suite's or a study's name, when the spec gives one.
ResultsName = Annotated[str | None, AfterValidator(_results_name)]


def _seeds(v: tuple[int, ...]) -> tuple[int, ...]:
    if not v:
        raise ValueError("give at least one seed")
    if len(set(v)) != len(v) or min(v) < 0:
        raise ValueError(f"seeds must be distinct and >= 0, got {list(v)}")
    return v


# The seeds of a suite's or a study's runs.
Seeds = Annotated[tuple[int, ...], AfterValidator(_seeds)]

# By default a report shows the MinD-Video protocol's metrics, the strict N-way variants too.
DEFAULT_METRICS = PROTOCOLS["mindvideo"].metrics


class SignificanceSpec(BaseModel):
    """The paired tests of each variant against the reference (harness/report/stats.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: float = Field(0.05, gt=0, lt=1, description="a delta is marked when p < level")
    n_boot: int = Field(2000, ge=100, description="bootstrap resamples of the paired CI")
    seed: int = Field(0, ge=0, description="seed of the bootstrap resampling")
    method: Literal["block", "clip"] = Field(
        "block",
        description="block: stimulus blocks resampled jointly across subjects, seeds a random "
        "effect; clip: per-clip bootstrap and Wilcoxon (assumes independent clips)",
    )
    blocks: Literal["auto", "scene", "contiguous"] = Field(
        "auto", description="the block method's blocks: scenes where every run kept them (auto)"
    )
    block_clips: int = Field(
        5, ge=1, description="clips per block where scenes are unknown (5 clips = 10 s)"
    )
    correction: Literal["holm", "none"] = Field(
        "holm", description="multiple-comparison correction across a table's variants x metrics"
    )


class ReportSpec(BaseModel):
    """What `mvbench report` shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: tuple[str, ...] = DEFAULT_METRICS
    group_by: tuple[Literal["average", "subject"], ...] = ("average", "subject")
    formats: tuple[Literal["md", "tex", "csv"], ...] = ("md", "tex", "csv")
    figures: bool = True
    samples: int = Field(4, ge=0, description="test clips shown in the samples grid")
    significance: SignificanceSpec = SignificanceSpec()

    @field_validator("metrics", "group_by", "formats")
    @classmethod
    def _not_empty(cls, v: tuple) -> tuple:
        if not v:
            raise ValueError("must list at least one entry")
        return v


class Spec(BaseModel):
    """A suite: a profile, the variants to run on it, and what the report shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: ResultsName = Field(None, description="name (default: the file's stem)")
    description: str = ""
    profile: str
    overrides: dict[str, Any] = Field(
        {}, description="dotted overrides of the profile for every run, before each variant's"
    )
    variants: dict[str, dict[str, Any] | None] | None = None
    grid: dict[str, list[Any]] = {}
    seeds: Seeds = (0,)
    subjects: tuple[str, ...] | None = None
    baselines: tuple[Literal["ridge", "shuffled", "random-train-clip", "autoencoder"], ...] = ()
    reference: str | dict[str, str] | None = Field(
        None,
        description="the variant every other row is compared with, or pairs {variant: its "
        "reference} (a contrast at each level of a design)",
    )
    report: ReportSpec = ReportSpec()

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: dict | None) -> dict | None:
        if v is None:
            return v
        if not v:
            raise ValueError(
                "empty: name at least one variant (e.g. `full: {}` for the profile as is), "
                "or remove the key and list `baselines`"
            )
        for name in v:
            if not NAME_PATTERN.match(str(name)):
                raise ValueError(f"variant name {name!r}: use letters, digits and _ . + - only")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict) -> dict:
        for key, values in v.items():
            if not values:
                raise ValueError(f"{key}: give at least one value")
            if len({json.dumps(x, sort_keys=True) for x in values}) != len(values):
                raise ValueError(f"{key}: values repeat: {values}")
        return v

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, v: tuple | None) -> tuple | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("list distinct subjects, or remove the key to run all of them")
        return v

    _renamed = field_validator("baselines", mode="before")(refuse_old_names)

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: tuple) -> tuple:
        if len(set(v)) != len(v):
            raise ValueError(f"baselines repeat: {list(v)}")
        return v

    @model_validator(mode="after")
    def _runs_something(self) -> Spec:
        if self.variants is None and not self.baselines:
            raise ValueError(
                "nothing to run: give `variants` (e.g. `full: {}`) and/or `baselines` "
                f"(any of {', '.join(BASELINES)})"
            )
        clash = set(self.variants or {}) & set(self.baselines)
        if clash:
            raise ValueError(f"variant names clash with baselines: {sorted(clash)}")
        if self.grid and not self.variants:
            raise ValueError("`grid` expands variants, but the spec has none")
        return self


@dataclass(frozen=True)
class Variant:
    """One row of the suite: a name and the overrides of the profile it runs with."""

    name: str  # e.g. full, ridge, full[data.window=3]
    base: str  # the spec's variant (or baseline) name before grid expansion
    kind: Literal["model", "baseline"]
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec
    path: Path
    suite: str
    profile: str  # the profile actually used (--profile swaps the spec's)
    hash: str  # of the parsed spec, to tag runs with
    # key path -> the file that gave it, the spec or an include (for errors)
    origin: dict[tuple, Path] = field(default_factory=dict, hash=False, compare=False)

    def given_by(self, loc: tuple) -> Path:
        """The file that gave a key path, e.g. ("overrides", "eval.extra_metrics"): the spec or
        one of its includes."""
        return _given_by(loc, self.origin, self.path)


def _format_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, list | dict) else str(v)


def expand_variants(spec: Spec) -> list[Variant]:
    """The spec's rows in order: each variant (times the grid), then the baselines."""
    rows: list[Variant] = []
    keys = list(spec.grid)
    for name, overrides in (spec.variants or {}).items():
        overrides = dict(overrides or {})
        if not keys:
            rows.append(Variant(name, name, "model", overrides))
            continue
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            label = ",".join(f"{k}={_format_value(v)}" for k, v in point.items())
            rows.append(Variant(f"{name}[{label}]", name, "model", overrides | point, point))
    for method in spec.baselines:
        rows.append(Variant(method, method, "baseline", {"method": method}))
    return rows


def _check_reference(path: Path, reference: str | dict[str, str] | None, names: list[str]):
    """Every name the reference gives is a row of the suite; a row is not its own reference."""
    if reference is None:
        return
    pairs = reference.items() if isinstance(reference, dict) else [(None, reference)]
    if isinstance(reference, dict) and not reference:
        raise ConfigError(f"{path}: reference: empty; name a variant, pairs, or remove the key")
    for variant, ref in pairs:
        for name in (variant, ref):
            if name is not None and name not in names:
                where = "reference" if variant is None else f"reference: {variant}"
                raise ConfigError(
                    f"{path}: {where}: {name!r} is not a variant or baseline of this suite; "
                    f"choose one of: {', '.join(names)}"
                )
        if variant == ref:
            raise ConfigError(f"{path}: reference: {variant}: a row is not its own reference")


def merge_included(base: dict, top: dict) -> dict:
    """`top` over `base`: mappings merge key by key (recursively), anything else in `top`
    (lists, scalars) replaces. `top`'s keys come after `base`'s, so an including spec's
    `overrides` apply after its includes'."""
    merged = {k: v for k, v in base.items() if k not in top}
    for k, v in top.items():
        below = base.get(k)
        merged[k] = (
            merge_included(below, v) if isinstance(below, dict) and isinstance(v, dict) else v
        )
    return merged


def _origins(tree: dict, source: Path, prefix: tuple = ()) -> dict[tuple, Path]:
    """Every key path of a parsed file (mappings only) -> the file."""
    found: dict[tuple, Path] = {}
    for k, v in tree.items():
        found[(*prefix, k)] = source
        if isinstance(v, dict):
            found |= _origins(v, source, (*prefix, k))
    return found


def read_spec_tree(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, dict[tuple, Path]]:
    """A spec file's mapping with its `include:` files merged under it (later includes over
    earlier ones, the file over all), and which file gave each key path (for errors)."""
    by = f" (included by {chain[-1]})" if chain else ""
    try:
        raw = read_yaml(path)
    except ConfigError as e:
        raise ConfigError(f"{e}{by}") from None
    if not isinstance(raw, dict):
        what = "an included file" if chain else "a spec"
        raise ConfigError(
            f"{path}{by}: {what} must be a mapping (profile:, variants:, seeds:, ...), "
            f"got {type(raw).__name__}"
        )
    if chain and "suite" in raw:
        raise ConfigError(
            f"{path}{by}: suite: an included file must not name the suite (it names "
            "results/<suite>/ of each spec including it); set it in the spec"
        )
    names = raw.pop("include", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(
            f"{path}{by}: include: {names!r}: give a file or a list of files (paths relative "
            f"to {path.parent})"
        )
    here = path.resolve()
    merged: dict = {}
    origin: dict[tuple, Path] = {}
    for name in names:
        included = path.parent / name
        if included.resolve() in (*(p.resolve() for p in chain), here):
            loop = " -> ".join(str(p) for p in (*chain, path, included))
            raise ConfigError(f"{path}: include: {name}: a cycle of includes: {loop}")
        if not included.is_file():
            raise ConfigError(
                f"{path}: include: {name}: file not found ({included}); paths are relative to "
                "the including file"
            )
        tree, given = read_spec_tree(included, (*chain, path))
        merged = merge_included(merged, tree)
        origin |= given
    return merge_included(merged, raw), origin | _origins(raw, path)


def _given_by(loc: tuple, origin: dict[tuple, Path], path: Path) -> Path:
    """The file that gave a key path (its longest prefix that a file gave), else `path`."""
    return next((origin[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origin), path)


def _invalid_spec(path: Path, err: ValidationError, origin: dict[tuple, Path]) -> str:
    """The validation errors, each with the value given (where short) and the included file
    that gave the key, if one did."""
    text = format_validation_error(path, err).replace("invalid config", "invalid spec")
    lines = text.split("\n")
    if len(lines) != 1 + err.error_count():  # a message over several lines: leave as is
        return text
    for i, e in enumerate(err.errors(), start=1):
        shown = repr(e["input"])
        fresh = "(got " not in lines[i]  # format_validation_error may have shown it
        if fresh and e["type"] != "extra_forbidden" and e["loc"] and len(shown) <= 80:
            lines[i] += f" (got {shown})"
        given = _given_by(tuple(e["loc"]), origin, path)
        if given != path:
            lines[i] += f" (from {given}, included by {path})"
    return "\n".join(lines)


def load_spec(path: Path | str, profile: str | None = None) -> LoadedSpec:
    """Read and validate a suite spec; `profile` replaces the spec's profile (--profile).

    `include:` names YAML files (relative to the spec) merged under it: the spec's own values
    win, mappings merge key by key, lists replace. The hash is of the merged spec, so inlining
    an include keeps it."""
    path = Path(path)
    if not path.exists():
        hint = ""
        suites = path.parent if path.parent.is_dir() else None
        if suites is not None:
            have = sorted(p.name for p in suites.glob("*.yaml"))
            hint = f"; {suites} holds: {', '.join(have)}" if have else ""
        raise ConfigError(f"{path}: spec file not found{hint}")
    raw, origin = read_spec_tree(path)
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_invalid_spec(path, e, origin)) from None
    names = [v.name for v in expand_variants(spec)]
    _check_reference(path, spec.reference, names)
    digest = hashlib.sha256(
        json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()[:12]
    return LoadedSpec(
        spec=spec,
        path=path,
        suite=spec.suite or path.stem,
        profile=profile or spec.profile,
        hash=digest,
        origin=origin,
    )
