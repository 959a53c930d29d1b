"""The error a researcher sees when their data or config is wrong."""

from __future__ import annotations

from typing import Any


class MindVideoError(Exception):
    """Base class: the message says what is wrong, where, and what to do."""


class DataError(MindVideoError):
    """A dataset file or folder is missing, malformed or inconsistent."""


class ConfigError(MindVideoError):
    """A config value is invalid or inconsistent with the data."""


def typed_section(profile: Any, key: str, model: type) -> Any:
    """Validate a lazily typed profile section (e.g. eval.judges, a pydantic `model`), with
    errors naming the profile's file and the dotted keys."""
    from pydantic import ValidationError

    raw = profile
    for part in key.split("."):
        raw = getattr(raw, part)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        lines = [f"{profile.source or profile.profile}: invalid config"]
        for err in e.errors():
            loc = ".".join([key, *(str(x) for x in err["loc"])])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            shown = repr(err["input"])
            if err["type"] != "extra_forbidden" and len(shown) <= 80:
                msg += f" (got {shown})"  # from the file or an override: say which value
            lines.append(f"  {loc}: {msg}")
        raise ConfigError("\n".join(lines)) from None
