"""Pure numpy part of the model comparison: two heatmap canvases on one grid (no Qt)."""

from __future__ import annotations

import numpy as np

from .layers import HeatmapCanvas


def on_grid(src: HeatmapCanvas, dst: HeatmapCanvas) -> np.ndarray:
    """``src``'s scores looked up at the cell centres of ``dst``'s grid: ``(P, rows, cols)``.

    Nearest-cell lookup in level-0 coordinates; NaN where ``src`` has no cell.
    """
    _, rows, cols = dst.scores.shape
    cy = dst.origin_level0[1] + (np.arange(rows) + 0.5) * dst.step_level0
    cx = dst.origin_level0[0] + (np.arange(cols) + 0.5) * dst.step_level0
    r = np.floor((cy - src.origin_level0[1]) / src.step_level0).astype(int)
    c = np.floor((cx - src.origin_level0[0]) / src.step_level0).astype(int)
    ok_r = (r >= 0) & (r < src.scores.shape[1])
    ok_c = (c >= 0) & (c < src.scores.shape[2])
    out = np.full(dst.scores.shape, np.nan, np.float32)
    sub = src.scores[:, r[ok_r]][:, :, c[ok_c]]
    out[:, np.flatnonzero(ok_r)[:, None], np.flatnonzero(ok_c)[None, :]] = sub
    return out


def difference(a: HeatmapCanvas, b: HeatmapCanvas) -> np.ndarray:
    """``A - B`` per prompt on A's grid (NaN where either is unscored)."""
    if a.prompts != b.prompts:
        raise ValueError(f"the two maps score different prompts: {a.prompts} vs {b.prompts}")
    return (a.scores - on_grid(b, a)).astype(np.float32)
