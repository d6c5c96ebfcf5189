"""Test helpers for the scale stage, importable by dask workers and torchrun ranks.

``CountingCaptioner`` is the real StainCaptioner that appends one line per captioned tile
to a log file (so calls are counted across processes and runs), and can SIGKILL its own
process once, at the start of a batch, after a given number of captioned tiles.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import numpy as np

from napari_mrplip.data.captioners import StainCaptioner
from napari_mrplip.models.protocol import EncoderBase

TINY_ENCODER = {
    "name": "mrplip-scale-test",
    "embed_dim": 32,
    "image_size": 32,
    "context_length": 48,
    "keyword_context_length": 8,
    "vision": {"kind": "vit", "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text": {"layers": 1, "width": 32, "heads": 2},
    "fusion": {"layers": 1, "width": 32, "heads": 2},
    "mrtva": {"proj_dim": 32, "pred_dim": 16},
}


def features_config(feature_dim: int) -> dict:
    """A test-sized MR-PLIP reading ``feature_dim``-d features (all five losses)."""
    cfg = {**TINY_ENCODER, "name": "mrplip-scale-features"}
    cfg["vision"] = {"kind": "features", "feature_dim": feature_dim, "width": 32}
    return cfg


def write_tiny_encoder(path: Path, seed: int = 0) -> Path:
    """A random-weight MR-PLIP checkpoint loadable by ``get_encoder`` (the frozen tower)."""
    import torch

    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.config import MRPLIPConfig
    from napari_mrplip.models.mrplip import build_model

    torch.manual_seed(seed)
    save_model(build_model(MRPLIPConfig.from_dict(TINY_ENCODER)), path)
    return path


class CountingCaptioner(StainCaptioner):
    """StainCaptioner logging every captioned tile; optionally kills its process once."""

    def __init__(self, log: str, kill_after: int | None = None, flag: str | None = None):
        super().__init__()
        self.log, self.kill_after, self.flag = str(log), kill_after, flag

    def caption_batch(self, tiles, magnifications):
        if self.kill_after is not None and not Path(self.flag).exists():
            if count_lines(self.log) >= self.kill_after:
                Path(self.flag).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        out = super().caption_batch(tiles, magnifications)
        with open(self.log, "a", encoding="utf-8") as f:
            for t, m in zip(tiles, magnifications):
                f.write(json.dumps([hashlib.sha1(np.ascontiguousarray(t)).hexdigest(), m]) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return out


def count_lines(path) -> int:
    try:
        return len(Path(path).read_text().splitlines())
    except FileNotFoundError:
        return 0


class CountingEncoder(EncoderBase):
    """Wraps an EncoderBackend: counts encoded tiles; optionally kills its process once,
    at the start of an ``encode_tiles`` call, after ``kill_after`` calls."""

    def __init__(self, encoder, kill_after: int | None = None):
        self.inner, self.kill_after = encoder, kill_after
        self.input_size, self.model_id = encoder.input_size, encoder.model_id
        self.calls = self.tiles = 0

    def encode_tiles(self, tiles):
        if self.kill_after is not None and self.calls >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls += 1
        self.tiles += len(tiles)
        return self.inner.encode_tiles(tiles)


def embed_until_killed(manifest: str, store: str, encoder_dir: str, kill_after: int) -> None:
    """Child-process entry: embed every slide of ``manifest``, SIGKILLed after some bags."""
    from napari_mrplip.data.feature_embed import embed_slide_bags
    from napari_mrplip.data.feature_store import FeatureStore, group_by_slide
    from napari_mrplip.data.manifest import read_manifest
    from napari_mrplip.models.encoders import get_encoder

    records = read_manifest(manifest)
    enc = CountingEncoder(get_encoder(encoder_dir, device="cpu"), kill_after)
    st = FeatureStore.open(store)
    for idx in group_by_slide(records).values():
        embed_slide_bags(st, [records[i] for i in idx], enc, bags_per_shard=1)
