"""The planner: a spec becomes runs (variant x subject x seed), each a DAG of keyed stages."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.cache import StageNode, digest, stage_key
from harness.profiles import Profile, load_profile
from harness.spec import LoadedSpec, Variant, expand_variants
from mindvideo.errors import ConfigError, DataError
from mindvideo.stages.registry import get_stage, stages

EXTERNAL = "dataset"  # the node standing for a real dataset read in place (not cached)


def headline_metrics(node: StageNode) -> set[str]:
    """The stage's metrics a run logs without the `<stage>.` prefix."""
    if node.external is not None:
        return set()
    return get_stage(node.name).headline_metrics(node.config)


def pipeline(profile: Profile) -> list[tuple[str, dict[str, str]]]:
    """The run's stages in pipeline order, each with its input roles bound to stages: the
    registered stages its profile enables, each role bound to the last stage before it that
    provides the role (or the one the stage pins), a real dataset's folder where no stage
    provides `dataset`."""
    chosen = [stage for stage in stages().values() if stage.enabled(profile)]
    providers: dict[str, str] = {}
    if not any(stage.role == "dataset" for stage in chosen):
        providers["dataset"] = EXTERNAL
    result = []
    for stage in chosen:
        optional = set(stage.optional_inputs)
        used = set(stage.uses(profile)) if stage.uses is not None else optional
        bindings = {}
        for role in stage.inputs:
            if role in optional and role not in used:
                continue
            target = stage.pinned.get(role, providers.get(role))
            if target is not None and target not in {name for name, _ in result} | {EXTERNAL}:
                target = None  # pinned to a stage this run does not have
            if target is None:
                if role in optional:
                    continue
                raise ConfigError(
                    f"{profile.source}: stage {stage.name} needs its input {role!r}, but no "
                    f"stage before it in this run provides it (stages: "
                    f"{', '.join(name for name, _ in result) or 'none'})"
                )
            bindings[role] = target
        result.append((stage.name, bindings))
        providers[stage.role] = stage.name
    return result


def stage_config(name: str, profile: Profile, subject: str) -> BaseModel:
    """The config slice of a stage, resolved from the profile (and the run's subject)."""
    return get_stage(name).configure(profile, subject)


# Suite rows renamed since runs were recorded, new name -> the name in their run keys, so that
# recorded runs (and committed exports) still match their plans.
RENAMED_VARIANTS = {"random-train-clip": "chance"}


@dataclass
class Run:
    """A (variant, subject, seed) of the suite: a fully resolved config and its stages."""

    variant: Variant
    subject: str
    seed: int
    profile: Profile
    stages: list[str]  # node keys in dependency order
    key: str = ""

    @property
    def label(self) -> str:
        return f"{self.variant.name} / {self.subject} / seed {self.seed}"


@dataclass
class Plan:
    spec: LoadedSpec
    runs: list[Run]
    nodes: dict[str, StageNode] = field(default_factory=dict)

    @property
    def suite(self) -> str:
        return self.spec.suite

    def node(self, key: str) -> StageNode:
        return self.nodes[key]


def all_subjects(profile: Profile) -> list[str]:
    data = profile.data
    if data.source == "synth":
        return [f"subject{i + 1}" for i in range(data.synth.protocol.subjects)]
    try:
        root = profile.required("data.root")
    except ConfigError as e:  # say at once what else is unset, not one variable per attempt
        others = [
            f"{', '.join(names)} ({key})"
            for key, names in profile.unset_variables().items()
            if key != "data.root"
        ]
        if others:
            raise ConfigError(
                f"{e}\n  also unset in this profile, needed by the stages that read them: "
                + "; ".join(others)
            ) from None
        raise
    if root is None:
        raise ConfigError(
            f"{profile.source}: data.root is not set: give the {data.source} dataset folder "
            "(in the profile, or --set data.root=/path)"
        )
    from mindvideo.data.cc2017 import list_subjects

    if not Path(data.root).is_dir():
        raise ConfigError(
            f"{profile.source}: data.root: {data.root} does not exist or is not a folder; give "
            "the dataset folder"
        )
    _check_runnable_source(profile)
    found = list_subjects(Path(data.root))
    if not found:
        raise ConfigError(f"data.root: {data.root} holds no subject*/fmri folders")
    return found


def local_paths(profile: Profile, names: list[str]) -> dict[str, str]:
    """The profile keys naming local files and folders that a real-data run of these stages
    reads (key -> kind: dir, dir:<file> for a folder that must hold that file, file, any, or
    name for a value that is not a path)."""
    if profile.data.source == "synth":
        return {}  # SynthCC: every model is trained in the run, the dataset simulated
    keys = {"data.root": "dir"}
    for name in names:
        stage = get_stage(name)
        if stage.local_paths is not None:
            keys |= dict(stage.local_paths(profile))
    return keys


def check_local_paths(profile: Profile, stages: list[str]) -> None:
    """Before any work: every local path the run reads exists, and no value it needs refers
    to an unset environment variable (one error listing every problem: key, path, file)."""
    problems = []
    for key, kind in local_paths(profile, stages).items():
        try:
            value = profile.required(key)  # raises for an unset ${VARIABLE}
        except ConfigError as e:
            problems.append(str(e))
            continue
        if value is None or kind == "name":
            continue  # not given: the stage says what it needs, or uses its default
        path = Path(value)
        if not path.exists():
            problems.append(f"{profile.source}: {key}: {value} does not exist")
        elif kind.startswith("dir") and not path.is_dir():
            problems.append(f"{profile.source}: {key}: {value} is a file; give a folder")
        elif kind.startswith("dir:") and not (path / kind[4:]).is_file():
            problems.append(
                f"{profile.source}: {key}: {value} has no {kind[4:]}; give the folder a "
                "save_pretrained call wrote (see the profile's comment on this key)"
            )
        elif kind == "file" and not path.is_file():
            problems.append(f"{profile.source}: {key}: {value} is a folder; give a file")
    if problems:
        raise ConfigError("\n  ".join(problems))


def _resolve(spec: LoadedSpec, variant: Variant, overrides: dict[str, Any]) -> Profile:
    try:
        return load_profile(spec.profile, spec.spec.overrides | variant.overrides | overrides)
    except ConfigError as e:
        where = f"variants.{variant.base}" if variant.kind == "model" else "baselines"
        raise ConfigError(f"{spec.path}: {where} ({variant.name}): {e}") from None


def _check_paths(spec: LoadedSpec, variant: Variant | None, base: dict) -> None:
    """Every override must name a key the profile has (or a known section's key); variant
    None checks the spec's own `overrides`."""
    for key in variant.overrides if variant is not None else spec.spec.overrides:
        parts = key.split(".")
        node: Any = base
        for i, part in enumerate(parts):
            if isinstance(node, dict) and part in node:
                node = node[part]
                continue
            if isinstance(node, dict) and i > 0 and _open_section(parts[:i]):
                break  # eval.judges.* / eval.clip.*: validated with their own models
            if variant is None:
                where = "overrides"
                source = spec.given_by(("overrides", key))
                if source != spec.path:  # an included file gave it
                    where += f" (from {source}, included)"
            else:
                where = f"variants.{variant.base}" if variant.kind == "model" else "baselines"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "(a value)"
            raise ConfigError(
                f"{spec.path}: {where}: unknown variant path {key!r} ({'.'.join(parts[: i + 1])} "
                f"is not in profile {spec.profile!r}; keys there: {known})"
            )


def _open_section(parts: list[str]) -> bool:
    return parts in (["eval", "judges"], ["eval", "clip"])


def select_runs(
    plan: Plan,
    variants: list[str] | None = None,
    subjects: list[str] | None = None,
    seeds: list[int] | None = None,
) -> Plan:
    """The plan's runs of the given variants (names or their base before a grid), subjects
    and seeds (None: all), with only the stages they need; a name the suite lacks is an error."""
    have = {
        "variant": {r.variant.name for r in plan.runs} | {r.variant.base for r in plan.runs},
        "subject": {r.subject for r in plan.runs},
        "seed": {r.seed for r in plan.runs},
    }
    for what, picked in (("variant", variants), ("subject", subjects), ("seed", seeds)):
        unknown = [x for x in picked or () if x not in have[what]]
        if unknown:
            listed = ", ".join(str(x) for x in sorted(have[what], key=str))
            raise ConfigError(
                f"{plan.spec.path}: --{what} {', '.join(map(str, unknown))}: not in this suite; "
                f"it has: {listed}"
            )
    runs = [
        r
        for r in plan.runs
        if (not variants or r.variant.name in variants or r.variant.base in variants)
        and (not subjects or r.subject in subjects)
        and (seeds is None or not seeds or r.seed in seeds)
    ]
    keys = {k for r in runs for k in r.stages}
    keys |= {k for key in keys for k in plan.node(key).inputs.values()}  # a real dataset's node
    return Plan(spec=plan.spec, runs=runs, nodes={k: n for k, n in plan.nodes.items() if k in keys})


def _check_runnable_source(profile) -> None:
    """The folder holds what data.source says, before any work: MinD-Video's arrays converted
    (read at their own window offset, as they are), or the release's CIFTI runs."""
    from mindvideo.data.cc2017 import holds_preprocessed

    data = profile.data
    if data.source == "synth" or data.root is None or not Path(data.root).is_dir():
        return  # all_subjects says what is missing
    root = Path(data.root)
    if data.source == "mindvideo_npy" and any(root.glob("fmri_train_*.npy")):
        raise ConfigError(
            f"data.root: {root} holds MinD-Video's arrays as released; the stages read them in "
            f"the CC2017 layout: mvbench data prepare mindvideo-npy {root} --out FOLDER, then "
            "data.root: FOLDER"
        )
    try:
        converted = holds_preprocessed(root)
    except DataError:
        return  # all_subjects says what is missing
    if data.source == "mindvideo_npy" and not converted:
        raise ConfigError(
            f"data.source: mindvideo_npy, but {root} holds runs to preprocess, not MinD-Video's "
            "converted arrays (mvbench data prepare mindvideo-npy writes them); for the "
            "release's CIFTI runs set data.source: cc2017"
        )
    if data.source != "mindvideo_npy" and converted:
        raise ConfigError(
            f"data.source: {data.source}, but {root} holds MinD-Video's preprocessed arrays "
            "(converted); set data.source: mindvideo_npy, which reads them as MinD-Video did "
            "(window offset 0: the arrays are aligned already)"
        )


def build_plan(spec: LoadedSpec, overrides: dict[str, Any] | None = None) -> Plan:
    """Expand the spec into runs and share identical stages between them."""
    overrides = overrides or {}
    base_profile = load_profile(spec.profile, overrides)
    base = base_profile.model_dump(mode="json")
    _check_paths(spec, None, base)
    if spec.spec.overrides:  # the spec's own overrides may give data.root
        try:
            base_profile = load_profile(spec.profile, spec.spec.overrides | overrides)
        except ConfigError as e:
            raise ConfigError(f"{spec.path}: overrides: {e}") from None
    subjects = all_subjects(base_profile)
    wanted = list(spec.spec.subjects or subjects)
    unknown = [s for s in wanted if s not in subjects]
    swapped = spec.profile != spec.spec.profile
    if unknown and swapped and len(unknown) < len(wanted):
        # --profile swapped in a smaller profile: run the subjects it has.
        print(
            f"note: profile {spec.profile!r} has no {', '.join(unknown)}; running "
            f"{', '.join(s for s in wanted if s in subjects)}",
            file=sys.stderr,
        )
        wanted = [s for s in wanted if s in subjects]
    elif unknown:
        raise ConfigError(
            f"{spec.path}: subjects: {unknown} not in profile {spec.profile!r}; "
            f"it has: {', '.join(subjects)}"
        )
    plan = Plan(spec=spec, runs=[])
    for variant in expand_variants(spec.spec):
        _check_paths(spec, variant, base)
        profile = _resolve(spec, variant, overrides)
        try:
            _check_runnable_source(profile)
            stages = pipeline(profile)
            check_local_paths(profile, [name for name, _ in stages])
        except ConfigError as e:
            raise ConfigError(f"{spec.path}: variant {variant.name!r}: {e}") from None
        for subject in wanted:
            for seed in spec.spec.seeds:
                try:
                    keys = _add_stages(plan, stages, profile, subject, seed)
                except (ConfigError, ValidationError) as e:
                    raise ConfigError(f"{spec.path}: variant {variant.name!r}: {e}") from None
                run = Run(variant, subject, seed, profile, keys)
                name = RENAMED_VARIANTS.get(variant.name, variant.name)
                run.key = digest(
                    {"variant": name, "subject": subject, "seed": seed, "stages": keys}
                )
                plan.runs.append(run)
    _check_report_metrics(plan)
    return plan


def _check_report_metrics(plan: Plan) -> None:
    """The report's metrics must be ones the runs will log: caught now, not after the runs."""
    from mindvideo.eval.protocols import get_protocol

    logged = {"n_samples"}
    stages = {plan.node(k).name for run in plan.runs for k in run.stages}
    if "evaluate" in stages:
        scored = {(run.profile.eval.protocol, *run.profile.eval.extra_metrics) for run in plan.runs}
        for protocol, *extra in scored:
            for name in get_protocol(protocol, extra).metrics:
                logged |= {name, f"{name}_se", f"{name}_ci_low", f"{name}_ci_high"}
    headline: dict[str, set[str]] = {}  # by stage
    for node in {plan.node(k).key: plan.node(k) for run in plan.runs for k in run.stages}.values():
        headline.setdefault(node.name, set()).update(headline_metrics(node))
    for names in headline.values():
        logged |= names
    for m in plan.spec.spec.report.metrics:  # a headline metric is logged without its prefix
        stage, _, name = m.partition(".")
        if name in headline.get(stage, ()):
            raise ConfigError(
                f"{plan.spec.path}: report.metrics: {m!r}: stage {stage} logs it without the "
                f"prefix, as {name!r}; write that"
            )
    unknown = [m for m in plan.spec.spec.report.metrics if "." not in m and m not in logged]
    if unknown:
        shown = sorted(m for m in logged if not m.endswith(("_se", "_ci_low", "_ci_high")))
        raise ConfigError(
            f"{plan.spec.path}: report.metrics: {unknown} are not logged by the runs "
            f"(stages {', '.join(sorted(stages))}); choose from {', '.join(shown)} (or a stage "
            "metric such as foundation.judges.frame_judge_top1)"
        )


def _add_stages(
    plan: Plan,
    pipeline_stages: list[tuple[str, dict[str, str]]],
    profile: Profile,
    subject: str,
    seed: int,
) -> list[str]:
    by_name: dict[str, str] = {}
    keys = []
    if profile.data.source != "synth":
        root = Path(profile.data.root).resolve()
        key = digest({"external": str(root)})
        plan.nodes.setdefault(key, StageNode(EXTERNAL, key, None, {}, None, external=root))
        by_name[EXTERNAL] = key
    for name, bindings in pipeline_stages:
        stage = get_stage(name)
        cfg = stage.configure(profile, subject)
        missing = set(stage.inputs) - set(stage.optional_inputs) - set(bindings)
        if missing:
            raise ConfigError(f"stage {name}: inputs {sorted(missing)} are not bound")
        inputs = {role: by_name[bindings[role]] for role in stage.inputs if role in bindings}
        node_seed = seed if stage.is_seeded(cfg) else None
        key = stage_key(stage, cfg, inputs, node_seed)
        plan.nodes.setdefault(key, StageNode(name, key, cfg, inputs, node_seed))
        by_name[name] = key
        keys.append(key)
    return keys
