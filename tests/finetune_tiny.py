"""A tiny randomly initialised MR-PLIP encoder for fine-tuning tests (no weights downloaded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch


def tiny_config():
    from napari_mrplip.models.config import load_config

    cfg = load_config("mrplip-tiny")
    return dataclasses.replace(
        cfg,
        image_size=32,
        embed_dim=32,
        context_length=24,
        vision=dataclasses.replace(cfg.vision, layers=2, width=32, head_width=16, patch_size=8),
        text=dataclasses.replace(cfg.text, layers=2, width=32, heads=2),
        fusion=dataclasses.replace(cfg.fusion, layers=1, width=32, heads=2),
        mrtva=dataclasses.replace(cfg.mrtva, proj_dim=16, pred_dim=8),
    )


def tiny_checkpoint(tmp: Path, seed: int = 0) -> Path:
    """Save a tiny random MR-PLIP checkpoint to ``tmp/tiny`` and return its directory."""
    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.mrplip import build_model

    torch.manual_seed(seed)
    out = tmp / "tiny"
    save_model(build_model(tiny_config()).eval(), out)
    return out


def tiny_encoder(tmp: Path, seed: int = 0):
    """``get_encoder`` on a freshly saved tiny checkpoint."""
    from napari_mrplip.models.encoders import get_encoder

    return get_encoder(str(tiny_checkpoint(tmp, seed)), device="cpu")


def synthetic_tiles(n: int, kind: str, seed: int = 0) -> list[np.ndarray]:
    """Simple but distinct tiles: white glass, pink stroma, purple nuclei-like dots."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if kind == "background":
            t = np.full((32, 32, 3), 240, np.uint8) + rng.integers(
                0, 10, (32, 32, 3), dtype=np.uint8
            )
        elif kind == "stroma":
            t = np.stack(
                [
                    rng.normal(230, 10, (32, 32)),
                    rng.normal(150, 15, (32, 32)),
                    rng.normal(190, 10, (32, 32)),
                ],
                -1,
            )
        else:
            t = np.stack(
                [
                    rng.normal(120, 20, (32, 32)),
                    rng.normal(60, 20, (32, 32)),
                    rng.normal(160, 20, (32, 32)),
                ],
                -1,
            )
        out.append(np.clip(t, 0, 255).astype(np.uint8))
    return out


def make_encoder(tmp: Path, seed: int = 0):
    """The tiny random encoder, loaded through ``get_encoder``."""
    return tiny_encoder(tmp, seed)
