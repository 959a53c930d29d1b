"""The registry of stages: the `STAGE` of every module of mindvideo/stages/.

Modules are found by scanning the package's folders (`mindvideo.stages.__path__`), so a new
stage is one new module; `base` and `registry` are the interface, not stages, and modules whose
name starts with `_` are skipped.
"""

from __future__ import annotations

import importlib
import pkgutil

import mindvideo.stages
from mindvideo.errors import ConfigError
from mindvideo.stages.base import Stage

NOT_STAGES = ("base", "registry")
_CACHE: dict[tuple[str, ...], dict[str, Stage]] = {}


def _module_names() -> list[str]:
    found = pkgutil.iter_modules(list(mindvideo.stages.__path__))
    return sorted(m.name for m in found if m.name not in NOT_STAGES and not m.name.startswith("_"))


def stages() -> dict[str, Stage]:
    """Every registered stage by name, in pipeline order (their `order`)."""
    names = tuple(_module_names())
    if names not in _CACHE:
        found: dict[str, Stage] = {}
        for module_name in names:
            module = importlib.import_module(f"mindvideo.stages.{module_name}")
            stage = getattr(module, "STAGE", None)
            if not isinstance(stage, Stage):
                raise ConfigError(
                    f"{module.__file__}: a module of mindvideo/stages/ must define "
                    "STAGE = Stage(...) (mindvideo.stages.base); name it _<name>.py if it is "
                    "not a stage"
                )
            if stage.name in found:
                raise ConfigError(f"{module.__file__}: a second stage named {stage.name!r}")
            found[stage.name] = stage
        orders = {}
        for stage in found.values():
            if stage.order in orders:
                raise ConfigError(
                    f"stages {orders[stage.order]!r} and {stage.name!r} have the same order "
                    f"{stage.order}; give each its own place in the pipeline"
                )
            orders[stage.order] = stage.name
        _CACHE[names] = dict(sorted(found.items(), key=lambda item: item[1].order))
    return _CACHE[names]


def get_stage(name: str) -> Stage:
    registered = stages()
    if name not in registered:
        raise ConfigError(f"no stage named {name!r}; stages: {', '.join(registered)}")
    return registered[name]


def profile_sections() -> dict[str, type]:
    """The profile sections the stages own: section -> its model. Two stages may declare the
    same section only with the same model."""
    sections: dict[str, tuple[type, str]] = {}
    for stage in stages().values():
        for name, model in stage.sections.items():
            if name in sections and sections[name][0] is not model:
                raise ConfigError(
                    f"stages {sections[name][1]!r} and {stage.name!r} declare profile section "
                    f"{name!r} with different models ({sections[name][0].__name__}, "
                    f"{model.__name__})"
                )
            sections.setdefault(name, (model, stage.name))
    return {name: model for name, (model, _) in sections.items()}
