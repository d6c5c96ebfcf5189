"""Overlay logic without napari: value range, alpha ramp, top regions, outlines."""

from __future__ import annotations

import numpy as np

from napari_mrplip.heatmap.display import (
    alpha_ramp,
    legend_text,
    outline_rings,
    top_regions,
    value_range,
)


def test_value_range_probability_vs_cosine():
    s = np.array([[np.nan, 0.1, 0.2], [0.3, 0.25, 0.15]], np.float32)
    lo, hi = value_range(s, "softmax")  # up to the 99th percentile: near-chance maps stay visible
    assert lo == 0.0 and 0.29 < hi <= 0.3
    assert value_range(np.full((1, 2), 0.01, np.float32), "softmax") == (0.0, 0.1)
    lo, hi = value_range(s, "cosine")
    assert 0.1 <= lo < 0.12 and 0.29 < hi <= 0.3
    assert "probability" in legend_text("x", "softmax", 0, 1, 0.5)
    assert "cosine" in legend_text("x", "cosine", 0.1, 0.3, 0.2)


def test_alpha_ramp_bottom_transparent_and_fades():
    a = alpha_ramp(256, fade=True)
    assert a[0] == 0 and a[-1] == 1 and np.all(np.diff(a[1:]) >= 0) and 0 < a[50] < 1
    b = alpha_ramp(256, fade=False)
    assert b[0] == 0 and (b[1:] == 1).all()


def test_top_regions_ranked_by_peak_and_skip_nan():
    g = np.full((6, 8), 0.1, np.float32)
    g[1:3, 1:3] = 0.7  # region A, peak 0.7
    g[4, 6] = 0.95  # region B, one cell, peak 0.95
    g[0, 7] = np.nan
    regs = top_regions(g, origin_level0=(100.0, 50.0), step_level0=10.0, threshold=0.5)
    assert [r.cells for r in regs] == [1, 4]
    assert regs[0].peak == np.float32(0.95) and regs[0].centre_level0 == (165.0, 95.0)
    assert regs[1].box_level0 == (110.0, 60.0, 130.0, 80.0)
    assert top_regions(g, (0, 0), 10.0, threshold=0.99) == []


def test_outline_rings_clipped_to_slide():
    g = np.zeros((4, 4), np.float32)
    g[2:, 2:] = 1.0  # the block reaching past a 35 x 35 slide
    (ring,) = outline_rings(g, (0.0, 0.0), 10.0, 0.5, dims_level0=(35, 35))
    assert ring[:, 0].max() == 35 and ring[:, 1].max() == 35 and ring[:, 0].min() == 20
