"""Class prompts for evaluation: class names, or a per-class prompt JSON in CONCH's shape.

CONCH publishes its CRC100K prompts as ``{"0": {"classnames": {"ADI": ["adipose", "fat",
...], ...}, "templates": ["CLASSNAME.", "a photomicrograph showing CLASSNAME.", ...]}}``.
Accepted here: that shape, the inner object alone, or ``{"CLASS": ["name", ...]}`` (then the
shared template list of :mod:`napari_mrplip.models.prompts` is used). CONCH's
``CLASSNAME`` placeholder becomes ``{}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MAX_PROMPT_FILE = 8 << 20


class PromptFileError(ValueError):
    """The prompt file cannot be used (message names the file and the fix)."""


@dataclass(frozen=True)
class ClassPrompts:
    """Synonyms per class (in class order) and the templates they go into (``{}``-style)."""

    synonyms: dict[str, list[str]]
    templates: tuple[str, ...] | None  # None: the shared default list


def _template(t: str) -> str:
    return t.replace("{", "{{").replace("}", "}}").replace("CLASSNAME", "{}")


def from_names(classes: list[str]) -> ClassPrompts:
    """Class names as their own single synonym ("dense_nuclei" -> "dense nuclei")."""
    return ClassPrompts({c: [c.replace("_", " ")] for c in classes}, None)


def read_prompt_file(path: str | Path) -> ClassPrompts:
    """Parse a prompt JSON (see the module docstring)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_PROMPT_FILE:
            raise PromptFileError(f"{path} is larger than {MAX_PROMPT_FILE >> 20} MiB")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        if isinstance(e, PromptFileError):
            raise
        raise PromptFileError(f"cannot read prompt file {path}: {e}") from e
    if isinstance(raw, dict) and len(raw) == 1 and isinstance(next(iter(raw.values())), dict):
        inner = next(iter(raw.values()))
        if "classnames" in inner:
            raw = inner
    templates = None
    if isinstance(raw, dict) and "classnames" in raw:
        templates = raw.get("templates")
        raw = raw["classnames"]
    ok = (
        isinstance(raw, dict)
        and raw
        and all(
            isinstance(v, list) and v and all(isinstance(s, str) and s.strip() for s in v)
            for v in raw.values()
        )
    )
    if not ok:
        raise PromptFileError(
            f'{path}: expected {{"CLASS": ["name", ...], ...}} or CONCH\'s '
            '{"0": {"classnames": {...}, "templates": [...]}} with non-empty name lists'
        )
    if templates is not None:
        if not (
            isinstance(templates, list)
            and templates
            and all(isinstance(t, str) and "CLASSNAME" in t for t in templates)
        ):
            raise PromptFileError(f"{path}: every template must be a string holding CLASSNAME")
        templates = tuple(_template(t) for t in templates)
    return ClassPrompts({str(k): [s.strip() for s in v] for k, v in raw.items()}, templates)


def align(prompts: ClassPrompts, classes: list[str], source: str) -> ClassPrompts:
    """The data's classes first (in order), then prompt-only classes, which still compete
    as candidates (CONCH scores every class of its prompt set). Every data class needs
    prompts."""
    missing = [c for c in classes if c not in prompts.synonyms]
    if missing:
        raise PromptFileError(
            f"{source}: no prompts for class(es) {missing}; the prompt file has "
            f"{sorted(prompts.synonyms)}. Add them or rename the class folders"
        )
    order = list(classes) + [c for c in prompts.synonyms if c not in classes]
    return ClassPrompts({c: prompts.synonyms[c] for c in order}, prompts.templates)
