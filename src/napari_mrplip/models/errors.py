"""Errors raised by the models package."""

from __future__ import annotations


class ModelLoadError(ValueError):
    """A model, checkpoint or configuration could not be loaded.

    The message names the file or spec and says what to do about it.
    """


class ConfigError(ValueError):
    """An MR-PLIP configuration is malformed (unknown key, wrong type, bad value)."""


class NoTextTowerError(ValueError):
    """Text prompts were given to a vision-only tile encoder (UNI, Virchow, ...).

    The message names the model and says what it can be used for instead (fine-tuning, a
    linear probe, a fine-tuned checkpoint with class vectors).
    """
