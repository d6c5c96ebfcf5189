"""Embedding training tiles through the heatmap engine's embedding cache.

Slide tiles go through ``HeatmapEngine.embed_tiles`` (cached per slide, model, µm/px and
box), so regions already embedded — by the heatmap panel, by review scoring, by an earlier
probe — cost no encoder calls. Folder tiles are encoded directly.
"""

from __future__ import annotations

import numpy as np

from .finetune_data import ImageTiles, SlideTiles

_ENGINES: dict[int, object] = {}
_CACHE = None


def shared_cache():
    """The process-wide :class:`~napari_mrplip.heatmap.cache.EmbeddingCache` used for training tiles."""
    global _CACHE
    if _CACHE is None:
        from napari_mrplip.heatmap.cache import EmbeddingCache

        _CACHE = EmbeddingCache()
    return _CACHE


def engine_for(encoder, cache=None):
    """A ``HeatmapEngine`` for ``encoder`` (one per encoder object, sharing one cache)."""
    from napari_mrplip.heatmap.engine import HeatmapEngine

    key = id(encoder)
    eng = _ENGINES.get(key)
    if eng is None or eng.encoder is not encoder:
        eng = HeatmapEngine(encoder, cache=cache if cache is not None else shared_cache())
        _ENGINES.clear()  # keep only the latest encoder's engine alive
        _ENGINES[key] = eng
    return eng


def embed_part(encoder, part, local: np.ndarray) -> np.ndarray:
    """``(len(local), D)`` float32 embeddings of tiles ``local`` of one tile source."""
    if isinstance(part, ImageTiles):
        return np.asarray(encoder.encode_tiles(part.read(local)), np.float32)
    if not isinstance(part, SlideTiles):
        raise TypeError(f"unknown tile source {type(part).__name__}")
    scale = float(part.mpp) if part.mpp is not None else 0
    return engine_for(encoder).embed_tiles(part.slide, scale, part.boxes[np.asarray(local)])
