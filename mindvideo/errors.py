"""The error a researcher sees when their data or config is wrong."""

from __future__ import annotations


class MindVideoError(Exception):
    """Base class: the message says what is wrong, where, and what to do."""


class DataError(MindVideoError):
    """A dataset file or folder is missing, malformed or inconsistent."""


class ConfigError(MindVideoError):
    """A config value is invalid or inconsistent with the data."""
