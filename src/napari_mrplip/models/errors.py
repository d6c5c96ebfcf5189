"""Errors raised by the models package."""

from __future__ import annotations


class ModelLoadError(ValueError):
    """A model, checkpoint or configuration could not be loaded.

    The message names the file or spec and says what to do about it.
    """


class ConfigError(ValueError):
    """An MR-PLIP configuration is malformed (unknown key, wrong type, bad value)."""
