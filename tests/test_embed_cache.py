"""EmbeddingCache: LRU bound, gather/put by lattice position, zarr persistence."""

from __future__ import annotations

import numpy as np

from heatmap_tiny_encoder import TinyClipEncoder
from napari_mrplip.embed.cache import BLOCK, EmbeddingCache, GridKey
from napari_mrplip.heatmap.engine import HeatmapEngine
from test_heatmap_engine import request, tissue_slide


def key(dim=4, shape=(40, 50)):
    return GridKey("slide-abc", "model/x", "mpp0.5000_t224.00_k1_px224", shape, dim)


def test_gather_returns_what_was_put():
    c = EmbeddingCache()
    rng = np.random.default_rng(0)
    rows, cols = np.array([0, 17, 33]), np.array([1, 20, 49])
    emb = rng.random((3, 4), dtype=np.float32)
    c.put(key(), rows, cols, emb)
    got, filled = c.gather(key(), 0, 40, 0, 50)
    assert filled.sum() == 3
    np.testing.assert_array_equal(got[rows, cols], emb)
    got, filled = c.gather(key(), 15, 20, 18, 22)
    assert filled[2, 2] and filled.sum() == 1


def test_lru_is_bounded():
    c = EmbeddingCache(max_items=2 * BLOCK * BLOCK)
    for b in range(4):
        c.put(key(), np.array([b * BLOCK % 40]), np.array([b * BLOCK % 48]), np.ones((1, 4)))
    assert len(c._blocks) == 2


def test_disk_cache_survives_a_new_process_state(tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.random((5, 4), dtype=np.float32)
    rows, cols = np.array([0, 1, 16, 39, 39]), np.array([0, 1, 17, 48, 49])
    EmbeddingCache(disk_dir=tmp_path).put(key(), rows, cols, emb)
    fresh = EmbeddingCache(disk_dir=tmp_path)
    got, filled = fresh.gather(key(), 0, 40, 0, 50)
    assert filled.sum() == 5 and fresh.disk_reads > 0
    np.testing.assert_array_equal(got[rows, cols], emb)


def test_reopening_a_slide_reencodes_nothing(tmp_path):
    enc = TinyClipEncoder(input_size=32, embed_dim=32)
    slide = tissue_slide(seed=7)
    HeatmapEngine(enc, cache=EmbeddingCache(disk_dir=tmp_path)).compute(slide, request())
    calls = enc.image_encode_calls
    again = tissue_slide(seed=7)  # the same file opened again
    res = HeatmapEngine(enc, cache=EmbeddingCache(disk_dir=tmp_path)).compute(again, request())
    assert enc.image_encode_calls == calls and res.complete
