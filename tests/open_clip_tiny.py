"""A tiny random open_clip ``CLIP`` written as a downloaded model folder, for loader tests.

One place for the config and the folder layout (``open_clip_config.json`` + weights) that the
encoder, evaluation and compare-panel tests load through the project's loaders.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def tiny_clip_cfg(image_size=32, patch_size=8, layers=1, context_length=32) -> dict:
    """open_clip ``model_cfg`` of a 16-d CLIP small enough for a CPU test."""
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": 32,
                       "layers": layers, "head_width": 16},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": 32,
                     "heads": 2, "layers": layers},
    }  # fmt: skip


def tiny_clip(cfg: dict, seed: int = 0):
    """A randomly initialised open_clip ``CLIP`` (seeded) in eval mode."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**cfg).eval()


def write_open_clip_dir(
    out: Path, model, cfg: dict, weights="open_clip_pytorch_model.bin", preprocess=None
) -> Path:
    """Write ``model`` as open_clip's hub folders are laid out; returns ``out``."""
    out.mkdir(parents=True)
    config = {"model_cfg": cfg, **({"preprocess_cfg": preprocess} if preprocess else {})}
    (out / "open_clip_config.json").write_text(json.dumps(config))
    if weights.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(out / weights))
    else:
        torch.save(model.state_dict(), out / weights)
    return out
