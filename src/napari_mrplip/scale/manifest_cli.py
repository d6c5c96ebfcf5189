"""``mrplip manifest``: the command module (options and run live in ``scale.cli``)."""

from __future__ import annotations

from .cli import configure_manifest as configure
from .cli import run_manifest as run

__all__ = ["configure", "run"]
