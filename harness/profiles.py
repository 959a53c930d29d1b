"""Profiles: the named base configs in experiments/profiles/ (smoke, tiny, paper)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from mindvideo.data.config import DataConfig
from mindvideo.errors import ConfigError
from mindvideo.errors import typed_section as typed_section  # the stages' lazily typed sections


class EvalSection(BaseModel):
    """Scoring: the protocol, and the SynthCC judges' and CLIP's sizes (validated on use, so
    that commands which do not score never import transformers or open_clip); for real data,
    the local paths of pre-trained judges and CLIP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: str = "mindvideo"
    split: Literal["val", "test"] = Field(
        "test",
        description="the clips decoded and scored: test (reporting) or val (tuning: the "
        "validation segments, data.synth.protocol.val_segments or data.val_segments)",
    )
    frames: int | None = Field(None, ge=1, le=1000, description="frames per clip scored")
    trials: int | None = Field(None, ge=1, le=1_000_000, description="N-way trials per sample")
    exclude_scene_cuts: bool | None = None
    samples: int = Field(
        4, ge=0, le=1000, description="test clips kept as GIFs and in contact sheets"
    )
    extra_metrics: list[str] = Field(
        [], description="metrics scored besides the protocol's, e.g. motion_direction"
    )
    judges: dict[str, Any] = {}
    clip: dict[str, Any] = {}
    frame_judge: str | None = None
    video_judge: str | None = None
    clip_checkpoint: str | None = None
    clip_model: str | None = None


# What decodes the test fMRI: the MinD-Video model, or one of the baselines (autoencoder: the
# generator's autoencoder round trip of the true frames, the pixel ceiling of any decoder).
METHODS = ("mindvideo", "ridge", "shuffled", "random-train-clip", "autoencoder")
BASELINES = METHODS[1:]


class ResourcesSection(BaseModel):
    """What one run asks of a cluster (`mvbench run --executor slurm`: one job per run). Part
    of no stage's config, so changing it changes no cache key and no run key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = Field(None, description="Slurm partition (None: the default)")
    gpus_per_job: int = Field(0, ge=0, le=64)
    cpus_per_job: int = Field(2, ge=1, le=1024, description="also the torch threads of the job")
    mem_gb: float = Field(8.0, gt=0, le=100_000)
    timeout_min: int = Field(120, ge=1, le=60 * 24 * 60, description="the job's time limit")
    slurm_array_parallelism: int = Field(
        32, ge=1, description="jobs of the suite's array running at once"
    )
    slurm_additional_parameters: dict[str, Any] = Field(
        {}, description="more sbatch options, e.g. {account: my-lab, qos: high}"
    )


class Profile(BaseModel):
    """A resolved base config: the harness's own sections here, and the sections the
    registered stages own (mindvideo.stages.registry), added by `profile_model()`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str
    description: str = ""
    method: Literal["mindvideo", "ridge", "shuffled", "random-train-clip", "autoencoder"] = (
        "mindvideo"
    )
    data: DataConfig
    stop_after: Literal["contrastive"] | None = Field(
        None,
        description="end the mindvideo pipeline after this stage (contrastive: the encoder "
        "suites, scored by retrieval); None: decode and evaluate",
    )
    eval: EvalSection = EvalSection()
    resources: ResourcesSection = ResourcesSection()
    source: str = ""  # the YAML file it was read from
    # dotted key -> (its YAML text, the variables it names that are not set): values that
    # refer to unset environment variables, None until a stage needs them (then an error)
    _unset: dict[str, tuple[str, tuple[str, ...]]] = PrivateAttr(default_factory=dict)

    def unset_variables(self) -> dict[str, tuple[str, ...]]:
        """Keys whose value names environment variables that are not set -> those names."""
        return {key: names for key, (_, names) in self._unset.items()}

    def required(self, key: str) -> Any:
        """The value at a dotted key; a ConfigError naming the file, the key and the variable
        when the value refers to an environment variable that is not set."""
        if key in self._unset:
            text, names = self._unset[key]
            raise unset_variable_error(self.source or self.profile, key, text, names)
        value: Any = self
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else getattr(value, part)
        return value


_MODELS: dict[tuple, type[Profile]] = {}


def profile_model() -> type[Profile]:
    """Profile with a section for each one the registered stages own (their defaults when a
    profile leaves one out)."""
    from pydantic import create_model

    from mindvideo.stages.registry import profile_sections

    sections = profile_sections()
    key = tuple(sorted((name, id(model)) for name, model in sections.items()))
    if key not in _MODELS:
        clash = set(sections) & set(Profile.model_fields)
        if clash:
            raise ConfigError(
                f"stage profile sections {sorted(clash)} clash with the harness's own sections"
            )
        fields: dict[str, Any] = {name: (model, model()) for name, model in sections.items()}
        model = create_model(STAGED, __base__=Profile, __module__=__name__, **fields)
        model.__qualname__ = STAGED  # pickled by name (worker processes): see __getattr__
        _MODELS[key] = model
    return _MODELS[key]


STAGED = "StagedProfile"


def __getattr__(name: str) -> Any:
    """harness.profiles.StagedProfile: the profile model of the registered stages, so that a
    profile pickled for a worker process unpickles there (the class is made at run time)."""
    if name == STAGED:
        return profile_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def experiments_dir() -> Path:
    """experiments/: $MVBENCH_EXPERIMENTS, ./experiments, or the one beside the package."""
    env = os.environ.get("MVBENCH_EXPERIMENTS")
    if env:
        return Path(env)
    here = Path.cwd() / "experiments"
    if (here / "profiles").is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "experiments"


def available_profiles() -> list[str]:
    folder = experiments_dir() / "profiles"
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def profile_path(name: str) -> Path:
    """A profile name (smoke, tiny, paper) or a path to a YAML file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.exists():
            raise ConfigError(f"{candidate}: profile file not found")
        return candidate
    path = experiments_dir() / "profiles" / f"{name}.yaml"
    if not path.exists():
        have = ", ".join(available_profiles()) or "none found"
        raise ConfigError(
            f"unknown profile {name!r}; available: {have} (in {experiments_dir() / 'profiles'}), "
            "or give a path to a .yaml file"
        )
    return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a repeated key: YAML would keep the last
    value silently, and a copy-pasted variant or override would vanish."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} appears twice in one mapping (lines {seen[key]} and "
                    f"{line}); YAML would keep only the last: rename or remove one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """Plain data from YAML text (no tags, no code); repeated keys are an error."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely (plain data only: no tags, no code; UTF-8; no repeated keys)."""
    try:
        return parse_yaml(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r}); "
            "save the file as UTF-8 (is it a spec at all?)"
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = f" ({e.context})" if e.context else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {e.problem}{context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def format_validation_error(
    path: Path, err: ValidationError, overrides: dict[str, Any] | None = None
) -> str:
    """One line per problem: file, dotted key path, what is wrong; a key that an override
    (a variant's or `--set`) gave says so, since the file does not hold that value."""
    lines = [f"{path}: invalid config"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        unknown = e["type"] == "extra_forbidden"  # then loc is the first unknown part of a key
        if unknown:
            msg = "unknown key (misspelt? remove it or check the allowed keys in the docs)"
        given = [
            k
            for k in overrides or {}
            if loc == k or loc.startswith(k + ".") or (unknown and k.startswith(loc + "."))
        ]
        if given:
            msg += f" (given by the override {given[-1]}={overrides[given[-1]]!r}, not the file)"
        elif not unknown and "input" in e and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> Profile:
    """Load and validate a profile, applying dotted-path overrides (`data.window: 3`).

    `${NAME}` in the file's string values is replaced by the environment variable NAME; a
    value naming an unset variable loads as None and fails only where a run needs it
    (`Profile.required`), unless an override gives the key."""
    path = profile_path(name)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a profile must be a mapping of sections, got {type(raw).__name__}"
        )
    unset = expand_variables(raw, path)
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value, path)
        unset = {k: v for k, v in unset.items() if k != key and not k.startswith(key + ".")}
    raw["source"] = str(path)
    try:
        profile = profile_model().model_validate(raw)
    except ValidationError as e:
        for err in e.errors():  # a field that cannot be None: say which variable is missing
            loc = ".".join(str(x) for x in err["loc"])
            if loc in unset:
                raise unset_variable_error(path, loc, *unset[loc]) from None
        raise ConfigError(format_validation_error(path, e, overrides)) from None
    from mindvideo.stages.registry import stages

    for stage in stages().values():  # checks across sections, e.g. mbm's patches vs data's
        if stage.check_profile is not None:
            stage.check_profile(profile)
    profile._unset = unset
    return profile


# `${NAME}`: an environment variable, the whole value or part of it (`${ROOT}/subject1`).
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_variables(
    tree: dict | list, source: Path, prefix: str = ""
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Replace `${NAME}` references in the string values of a parsed profile, in place, by
    the environment variables they name (no other shell syntax). A value naming an unset or
    empty variable becomes None; returns those keys with their text and the unset names."""
    unset: dict[str, tuple[str, tuple[str, ...]]] = {}
    items = list(tree.items()) if isinstance(tree, dict) else list(enumerate(tree))
    for k, value in items:
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(value, dict | list):
            unset |= expand_variables(value, source, key)
            continue
        if not isinstance(value, str) or "${" not in value:
            continue
        if "${" in VARIABLE.sub("", value):
            raise ConfigError(
                f"{source}: {key}: {value!r}: write environment variables as ${{NAME}} "
                "(letters, digits and _; no defaults or other shell syntax)"
            )
        names = VARIABLE.findall(value)
        missing = tuple(dict.fromkeys(n for n in names if not os.environ.get(n)))
        if missing:
            unset[key] = (value, missing)
            tree[k] = None
        else:
            tree[k] = VARIABLE.sub(lambda m: os.environ[m.group(1)], value)
    return unset


def unset_variable_error(
    source: Path | str, key: str, text: str, names: tuple[str, ...]
) -> ConfigError:
    """What to do when a value a run needs refers to an unset environment variable."""
    what = "NAME" if key.endswith("_model") else "PATH"
    exports = " and ".join(f"export {n}=..." for n in names)
    verb = "is" if len(names) == 1 else "are"
    return ConfigError(
        f"{source}: {key}: {text} but {', '.join(names)} {verb} not set; give it: {exports} "
        f"(see the profile's comments), or pass --set {key}={what}"
    )


def set_dotted(tree: dict, key: str, value: Any, source: Path | str) -> None:
    """Set tree[a][b][c] = value for key "a.b.c", creating mappings on the way."""
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(
                f"{source}: override {key!r}: {'.'.join(parts[: i + 1])} is a value, not a section"
            )
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` with the value parsed as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value, e.g. data.window=3")
    key, value = text.split("=", 1)
    try:
        parsed = parse_yaml(value) if value else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed
