"""MR-PLIP models, losses, tokenizer, checkpoints and published-model encoders.

Submodules import torch; this package root stays light so ``models.protocol`` can be
imported without a deep-learning stack. The common entry points are importable from here
lazily: ``build_model``, ``load_model``, ``save_model``, ``load_config``, ``get_encoder``.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "build_model": "napari_mrplip.models.mrplip",
    "MRPLIP": "napari_mrplip.models.mrplip",
    "load_model": "napari_mrplip.models.checkpoint",
    "save_model": "napari_mrplip.models.checkpoint",
    "load_config": "napari_mrplip.models.config",
    "MRPLIPConfig": "napari_mrplip.models.config",
    "get_encoder": "napari_mrplip.models.encoders",
    "get_tokenizer": "napari_mrplip.models.tokenizer",
    "ModelLoadError": "napari_mrplip.models.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
