"""Scoring math: softmax/cosine, overlap averaging, fusion weights, smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mrplip.heatmap.scoring import (
    block_mean,
    fuse,
    overlap_average,
    prompt_scores,
    smooth,
)


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_softmax_over_prompts_and_background():
    emb = unit([[1, 0, 0], [0, 1, 0]])
    text = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])  # 2 prompts + 1 background
    s = prompt_scores(emb, text, 2, "softmax", 10.0)
    e = np.exp(10.0)
    assert s.shape == (2, 2)
    assert s[0, 0] == pytest.approx(e / (e + 2))
    assert s[0, 1] == pytest.approx(1 / (e + 2))
    c = prompt_scores(emb, text, 2, "cosine", 10.0)
    np.testing.assert_allclose(c, [[1, 0], [0, 1]], atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        prompt_scores(emb, text, 2, "sigmoid", 1.0)


def test_overlap_average_matches_brute_force():
    """Synthetic scorer: tile (r, c) scores r*10 + c; each cell = mean of covering tiles."""
    rng = np.random.default_rng(0)
    k, R, C = 2, 5, 6
    tiles = (np.arange(R)[:, None] * 10 + np.arange(C)[None]).astype(np.float32)[None]
    tiles = np.concatenate([tiles, rng.random((1, R, C), dtype=np.float32)])
    tiles[:, 2, 3] = np.nan  # a missing tile
    r0, c0 = 3, 4  # tile range starts at lattice (3, 4)
    cells = (4, 8, 5, 10)
    out = overlap_average(tiles, k, (r0, c0), cells)
    assert out.shape == (2, 4, 5)
    for i in range(*cells[:2]):
        for j in range(*cells[2:]):
            vals = [
                tiles[:, r - r0, c - c0]
                for r in range(i - k + 1, i + 1)
                for c in range(j - k + 1, j + 1)
                if 0 <= r - r0 < R and 0 <= c - c0 < C and not np.isnan(tiles[0, r - r0, c - c0])
            ]
            expect = np.mean(vals, axis=0) if vals else np.full(2, np.nan)
            np.testing.assert_allclose(out[:, i - 4, j - 5], expect, rtol=1e-6)


def test_overlap_k1_is_identity():
    tiles = np.random.default_rng(1).random((3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(overlap_average(tiles, 1, (0, 0), (0, 4, 0, 4)), tiles)


def test_fusion_weights_math():
    own = np.array([[[0.8, 0.2, np.nan]]], np.float32)
    parent = np.array([[[0.4, np.nan, 0.5]]], np.float32)
    kids = np.array([[[0.6, 1.0, 0.5]]], np.float32)
    out = fuse(own, parent, kids, (0.25, 0.5, 0.25))
    assert out[0, 0, 0] == pytest.approx(0.25 * 0.4 + 0.5 * 0.8 + 0.25 * 0.6)
    # missing parent: weights renormalised over self and children
    assert out[0, 0, 1] == pytest.approx((0.5 * 0.2 + 0.25 * 1.0) / 0.75)
    assert np.isnan(out[0, 0, 2])  # own missing stays missing
    np.testing.assert_array_equal(fuse(own, None, None, (0.3, 1.0, 0.3)), own)
    with pytest.raises(ValueError):
        fuse(own, parent, kids, (0.5, 0.0, 0.5))


def test_block_mean_of_children():
    grid = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    grid[0, 0, 1] = np.nan
    out = block_mean(grid, np.array([0, 2]), np.array([0, 2]), 2)
    assert out[0, 0, 0] == pytest.approx(np.mean([0, 4, 5]))
    assert out[0, 1, 1] == pytest.approx(np.mean([10, 11, 14, 15]))


def test_smooth_keeps_nan_and_constant():
    x = np.full((1, 8, 8), 0.7, np.float32)
    x[0, 0, 0] = np.nan
    y = smooth(x, 1.5)
    assert np.isnan(y[0, 0, 0])
    np.testing.assert_allclose(y[0, 1:, 1:], 0.7, rtol=1e-5)
    assert smooth(x, 0) is x
