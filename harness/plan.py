"""The planner: a spec becomes runs (variant x subject x seed), each a DAG of keyed stages."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.profiles import BASELINES, Profile, load_profile, typed_section
from harness.spec import LoadedSpec, Variant, expand_variants
from mindvideo.errors import ConfigError

# The stages the harness knows, by name (modules of mindvideo/stages/).
STAGE_MODULES = {
    "simulate": "mindvideo.stages.simulate",
    "foundation": "mindvideo.stages.foundation",
    "baselines": "mindvideo.stages.baselines",
    "mbm": "mindvideo.stages.mbm",
    "mbm_finetune": "mindvideo.stages.mbm_finetune",
    "contrastive": "mindvideo.stages.contrastive",
    "align": "mindvideo.stages.align",
    "diffusion": "mindvideo.stages.diffusion",
    "video_pretrain": "mindvideo.stages.video_pretrain",
    "cotrain": "mindvideo.stages.cotrain",
    "decode": "mindvideo.stages.decode",
    "evaluate": "mindvideo.stages.evaluate",
    "interpret": "mindvideo.stages.interpret",
}
EXTERNAL = "dataset"  # the node standing for a real dataset read in place (not cached)


def stage_module(name: str) -> ModuleType:
    return importlib.import_module(STAGE_MODULES[name])


def headline_metrics(node: StageNode) -> set[str]:
    """The stage's metrics a run logs without the `<stage>.` prefix: the module's
    headline_metrics(config) where its names depend on the config, else HEADLINE_METRICS."""
    if node.external is not None:
        return set()
    module = stage_module(node.name)
    if hasattr(module, "headline_metrics") and node.config is not None:
        return set(module.headline_metrics(node.config))
    return set(getattr(module, "HEADLINE_METRICS", ()))


def pipeline(profile: Profile) -> list[tuple[str, dict[str, str]]]:
    """The run's stages in dependency order, each with its input roles bound to stages."""
    data = "simulate" if profile.data.source == "synth" else EXTERNAL
    head = [] if data == EXTERNAL else [("simulate", {})]
    if profile.method in BASELINES:
        stages = [*head, ("foundation", {"dataset": data})]
        baseline = {"dataset": data, "foundation": "foundation"}
        if profile.method == "autoencoder":  # the generator's own autoencoder
            stages.append(("diffusion", {"dataset": data, "foundation": "foundation"}))
            baseline["diffusion"] = "diffusion"
        return [
            *stages,
            ("baselines", baseline),
            ("evaluate", {"dataset": data, "foundation": "foundation", "decode": "baselines"}),
        ]
    # MinD-Video: the encoder (mbm, contrastive), then the generator (diffusion, cotrain, decode)
    stages = [*head, ("foundation", {"dataset": data})]
    bindings = {"dataset": data, "foundation": "foundation"}
    if profile.encoder.init == "mbm":
        stages.append(("mbm", {"dataset": data}))
        bindings["mbm"] = "mbm"
        if profile.mbm.finetune_epochs:
            stages.append(("mbm_finetune", {"dataset": data, "mbm": "mbm"}))
            bindings["mbm"] = "mbm_finetune"
    stages.append(("contrastive", bindings))
    # the attention analysis: the encoder after each of its training stages (mbm: the MAE
    # that initialised it, fine-tuned or not), run after the last of them
    interpret = {"dataset": data, "contrastive": "contrastive"}
    if "mbm" in bindings:
        interpret["mbm"] = bindings["mbm"]
    if profile.stop_after == "contrastive":
        return [*stages, ("interpret", interpret)] if profile.interpret.enabled else stages
    stages.append(("diffusion", {"dataset": data, "foundation": "foundation"}))
    generator = {"dataset": data, "contrastive": "contrastive", "diffusion": "diffusion"}
    if profile.video_pretrain.enabled:  # the inflated UNet pretrained on fresh SynthCC clips
        stages.append(("video_pretrain", {"foundation": "foundation", "diffusion": "diffusion"}))
        generator["video_pretrain"] = "video_pretrain"
    if profile.align.enabled:  # the encoder with its condition adapter, as cotrain/decode read it
        stages.append(("align", {"dataset": data, "foundation": "foundation", **generator}))
        generator["contrastive"] = "align"
    if profile.cotrain.enabled:
        stages.append(("cotrain", dict(generator)))
        generator["cotrain"] = "cotrain"
        interpret["cotrain"] = "cotrain"
    if profile.interpret.enabled:
        stages.append(("interpret", interpret))
    decode = dict(generator)
    if profile.decode.condition == "caption":  # the generator's ceiling: captions, not fMRI
        decode["foundation"] = "foundation"
    stages.append(("decode", decode))
    stages.append(("evaluate", {"dataset": data, "foundation": "foundation", "decode": "decode"}))
    return stages


def pairing(data, subject: str) -> dict[str, Any]:
    """The PairingConfig fields of a stage slice: the subject and the profile's data settings."""
    from mindvideo.data.paired import PairingConfig

    fields = set(PairingConfig.model_fields) - {"subject"}
    return {"subject": subject, **{k: getattr(data, k) for k in fields}}


def stage_config(name: str, profile: Profile, subject: str) -> BaseModel:
    """The config slice of a stage, resolved from the profile (and the run's subject)."""
    from mindvideo.eval.judge_config import JudgeConfig
    from mindvideo.eval.protocols import get_protocol
    from mindvideo.models.clip_config import ClipConfig

    data, ev = profile.data, profile.eval
    if name == "simulate":
        return data.synth
    if name == "foundation":
        return stage_module(name).CONFIG(
            synthetic=data.source == "synth",
            judges=typed_section(profile, "eval.judges", JudgeConfig),
            clip=typed_section(profile, "eval.clip", ClipConfig),
            frame_judge=ev.frame_judge,
            video_judge=ev.video_judge,
            clip_checkpoint=ev.clip_checkpoint,
            clip_model=ev.clip_model,
        )
    if name == "baselines":
        return stage_module(name).CONFIG(
            **profile.baselines.model_dump(),
            **pairing(data, subject),
            methods=(profile.method,),
            split=scored_split(profile),
        )
    if name == "mbm":
        return profile.mbm.pretraining(
            corpus_root=data.corpus_root or profile.mbm.corpus_root,
            corpus_mask=data.corpus_mask or profile.mbm.corpus_mask,
            detrend_order=data.preprocess.detrend_order,
        )
    if name == "mbm_finetune":
        mbm = profile.mbm
        # the mbm section's optimiser, for finetune_epochs (warm-up at most a quarter of them)
        training = mbm.pretraining(
            epochs=mbm.finetune_epochs,
            lr=mbm.finetune_lr or mbm.lr,
            warmup_epochs=min(mbm.warmup_epochs, mbm.finetune_epochs / 4),
            corpus_root=None,
            corpus_mask=None,
        )
        return stage_module(name).CONFIG(
            subject=subject,
            preprocess=data.preprocess,
            voxels=profile.encoder.voxels,
            roi_mask=data.corpus_mask,
            training=training,
            val_segments=data.val_segments,
        )
    if name == "contrastive":
        encoder = profile.encoder.model_dump(exclude={"voxels"})
        return stage_module(name).CONFIG(
            **profile.contrastive.model_dump(),
            **pairing(data, subject),
            model=profile.mbm.model,
            encoder=encoder,
            voxels=profile.encoder.voxels,
            roi_mask=data.corpus_mask,
        )
    if name == "diffusion":
        synthetic = data.source == "synth"
        section = profile.diffusion.model_dump(exclude={"pretrained"})
        return stage_module(name).CONFIG(
            synthetic=synthetic,
            pretrained=None if synthetic else profile.diffusion.pretrained,
            model=section if synthetic else {},
        )
    if name == "video_pretrain":
        if data.source != "synth":
            raise ConfigError(
                f"{profile.source}: video_pretrain.enabled: true, but video pretraining renders "
                f"SynthCC clips and the data are {data.source}; set video_pretrain.enabled: false "
                "(real data inflates Stable Diffusion 1.5 as MinD-Video does)"
            )
        return stage_module(name).CONFIG(
            **profile.video_pretrain.model_dump(exclude={"enabled"}),
            world=data.synth.world,
            tr=data.synth.protocol.tr,
            frames_per_clip=data.frames_per_clip,
            generator=profile.generator,
        )
    if name == "align":
        return stage_module(name).CONFIG(
            **profile.align.model_dump(exclude={"enabled"}), **pairing(data, subject)
        )
    if name in ("cotrain", "decode"):
        _check_condition_width(profile)
    if name == "cotrain":
        return stage_module(name).CONFIG(
            **profile.cotrain.model_dump(exclude={"enabled"}),
            **pairing(data, subject),
            generator=profile.generator,
        )
    if name == "decode":
        return stage_module(name).CONFIG(
            **pairing(data, subject),
            generator=profile.generator,
            guidance=profile.guidance,
            decode=profile.decode,
            uncond=profile.cotrain.uncond if profile.cotrain.enabled else "zero_embedding",
            split=scored_split(profile),
        )
    if name == "interpret":
        if data.source != "synth" and profile.required("interpret.parcellation") is None:
            raise ConfigError(
                f"{profile.source}: interpret.parcellation is not set: on {data.source} data the "
                "attention analysis needs brain regions; give a CIFTI label map (.dlabel.nii, "
                "e.g. the Yeo 2011 networks) on the fMRI's surface mesh, in the profile or with "
                "--set interpret.parcellation=/path/to/file.dlabel.nii"
            )
        return stage_module(name).CONFIG(
            **profile.interpret.model_dump(exclude={"enabled"}),
            **pairing(data, subject),
            synthetic=data.source == "synth",
        )
    if name == "evaluate":
        get_protocol(ev.protocol, ev.extra_metrics)  # unknown names fail here, before any work
        return stage_module(name).CONFIG(
            protocol=ev.protocol,
            extra_metrics=ev.extra_metrics,
            frames=ev.frames,
            trials=ev.trials,
            exclude_scene_cuts=ev.exclude_scene_cuts,
            samples=ev.samples,
            split=scored_split(profile),
        )
    raise ConfigError(f"no stage named {name!r}; stages: {', '.join(STAGE_MODULES)}")


def scored_split(profile: Profile) -> str:
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


def _has_val_folders(data) -> bool:
    """Whether a real dataset has validation segments of its own (subject*/fmri/val*/)."""
    if data.source == "synth" or data.root is None or not Path(data.root).is_dir():
        return False
    root = Path(data.root)
    return any(root.glob("subject*/fmri/val*/")) or any(
        root.glob("video_fmri_dataset/subject*/fmri/val*/")
    )


def _check_condition_width(profile: Profile) -> None:
    """On SynthCC the UNet reads the synthetic CLIP's text tokens: the encoder's condition
    must be as wide (real SD 1.5 is checked when its weights load)."""
    from mindvideo.models.clip_config import ClipConfig

    if profile.data.source != "synth" or profile.align.enabled:
        return  # real data: checked when SD loads; align: the adapter outputs the CLIP's shape
    width = typed_section(profile, "eval.clip", ClipConfig).text_width
    if profile.encoder.cond_dim != width:
        raise ConfigError(
            f"{profile.source}: encoder.cond_dim {profile.encoder.cond_dim} but the SynthCC UNet "
            f"reads conditions of the CLIP's text width, eval.clip.text_width {width}; make "
            "them equal"
        )


# Suite rows renamed since runs were recorded, new name -> the name in their run keys, so that
# recorded runs (and committed exports) still match their plans.
RENAMED_VARIANTS = {"random-train-clip": "chance"}


def key_config(
    cfg: BaseModel,
    neutral: dict[tuple[str, ...], Any],
    renamed: dict[tuple[str, ...], dict[str, str]] | None = None,
) -> dict:
    """A stage config as its cache key reads it: the fields a stage added later (`neutral`:
    path -> the value that behaves as before the field existed) are left out while they hold
    that value, and values renamed since (`renamed`: path -> {new: old}) read as before, so
    entries cached before either keep their keys."""
    config = cfg.model_dump(mode="json")
    for path, names in (renamed or {}).items():
        *parents, leaf = path
        section = config
        for part in parents:
            section = section.get(part) or {}
        if isinstance(section.get(leaf), list):
            section[leaf] = [names.get(v, v) for v in section[leaf]]
        elif leaf in section:
            section[leaf] = names.get(section[leaf], section[leaf])
    for path, value in neutral.items():
        *parents, leaf = path
        section = config
        for part in parents:
            section = section.get(part) or {}
        if leaf in section and section[leaf] == value:
            del section[leaf]
    return config


def digest(payload: Any, n: int = 20) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass(frozen=True)
class StageNode:
    """One stage execution, identified by its content key."""

    name: str
    key: str
    config: BaseModel | None
    inputs: dict[str, str]  # role -> key of the upstream node
    seed: int | None  # None: the stage does not depend on the run seed
    external: Path | None = None  # a real dataset read in place

    @property
    def label(self) -> str:
        return f"{self.name}/{self.key}"


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


def is_seeded(module: ModuleType, cfg: BaseModel) -> bool:
    seeded = getattr(module, "SEEDED", True)
    return bool(seeded(cfg) if callable(seeded) else seeded)


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
    found = list_subjects(Path(data.root))
    if not found:
        raise ConfigError(f"data.root: {data.root} holds no subject*/fmri folders")
    return found


def local_paths(profile: Profile, stages: list[str]) -> dict[str, str]:
    """The profile keys naming local files and folders that a real-data run of these stages
    reads (key -> kind: dir, file, any, or name for a value that is not a path)."""
    if profile.data.source == "synth":
        return {}  # SynthCC: every model is trained in the run, the dataset simulated
    keys = {"data.root": "dir"}
    if "foundation" in stages:
        keys |= {
            "eval.frame_judge": "dir",
            "eval.video_judge": "dir",
            "eval.clip_checkpoint": "any",  # a checkpoint file, or an open_clip folder
            "eval.clip_model": "name",
        }
    if "mbm" in stages:
        keys |= {"data.corpus_root": "dir", "data.corpus_mask": "file"}
    if profile.encoder.voxels == "roi" and {"contrastive", "mbm_finetune"} & set(stages):
        keys["data.corpus_mask"] = "file"
    if "diffusion" in stages:
        keys["diffusion.pretrained"] = "dir"
    if "interpret" in stages:
        keys["interpret.parcellation"] = "file"
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
        elif kind == "dir" and not path.is_dir():
            problems.append(f"{profile.source}: {key}: {value} is a file; give a folder")
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
    plan: Plan, stages: list[tuple[str, dict[str, str]]], profile: Profile, subject: str, seed: int
) -> list[str]:
    by_name: dict[str, str] = {}
    keys = []
    if profile.data.source != "synth":
        root = Path(profile.data.root).resolve()
        key = digest({"external": str(root)})
        plan.nodes.setdefault(key, StageNode(EXTERNAL, key, None, {}, None, external=root))
        by_name[EXTERNAL] = key
    for name, bindings in stages:
        module = stage_module(name)
        cfg = stage_config(name, profile, subject)
        optional = set(getattr(module, "OPTIONAL_INPUTS", ()))
        missing = set(module.INPUTS) - optional - set(bindings)
        if missing:
            raise ConfigError(f"stage {name}: inputs {sorted(missing)} are not bound")
        inputs = {role: by_name[bindings[role]] for role in module.INPUTS if role in bindings}
        node_seed = seed if is_seeded(module, cfg) else None
        key = digest(
            {
                "stage": name,
                "version": module.VERSION,
                "config": key_config(
                    cfg, getattr(module, "KEY_NEUTRAL", {}), getattr(module, "KEY_RENAMED", {})
                ),
                "inputs": inputs,
                "seed": node_seed,
            }
        )
        plan.nodes.setdefault(key, StageNode(name, key, cfg, inputs, node_seed))
        by_name[name] = key
        keys.append(key)
    return keys
