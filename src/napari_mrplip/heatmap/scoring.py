"""From tile embeddings to score grids: prompt scores, overlap averaging, fusion, smoothing.

All functions are NaN-aware: NaN marks a tile not (yet) scored, outside tissue, or whose
pixels failed to decode, and NaN never leaks into a neighbour's average.
"""

from __future__ import annotations

import numpy as np

from napari_mrplip.models.zeroshot import scaled_softmax

#: Default (parent, self, children) weights for multi-magnification fusion.
DEFAULT_FUSION = (0.25, 0.5, 0.25)


def prompt_scores(
    emb: np.ndarray, text: np.ndarray, n_prompts: int, mode: str, logit_scale: float
) -> np.ndarray:
    """Per-tile scores for the first ``n_prompts`` text vectors.

    Parameters
    ----------
    emb : np.ndarray
        ``(N, D)`` L2-normalised tile embeddings.
    text : np.ndarray
        ``(P + B, D)`` L2-normalised prompt vectors (prompts, then background prompts).
    n_prompts : int
        P: how many leading columns are returned.
    mode : str
        ``"softmax"``: softmax of ``logit_scale * cosine`` over all P + B prompts,
        in [0, 1]; ``"cosine"``: raw cosine similarity in [-1, 1].

    Returns
    -------
    np.ndarray
        ``(N, P)`` float32.
    """
    sims = np.asarray(emb, np.float32) @ np.asarray(text, np.float32).T
    return scores_from_sims(sims, n_prompts, mode, logit_scale, axis=1)


def scores_from_sims(
    sims: np.ndarray, n_prompts: int, mode: str, logit_scale: float, axis: int = 0
) -> np.ndarray:
    """Scores from cosine similarities laid out with prompts along ``axis``.

    ``sims`` has P + B entries along ``axis``; the first ``n_prompts`` are returned (see
    :func:`prompt_scores` for the modes). NaN similarities give NaN scores.
    """
    idx = [slice(None)] * sims.ndim
    idx[axis] = slice(0, n_prompts)
    if mode == "cosine":
        return np.ascontiguousarray(sims[tuple(idx)], dtype=np.float32)
    if mode != "softmax":
        raise ValueError(f"unknown scoring mode {mode!r}; use 'softmax' or 'cosine'")
    if sims.shape[axis] < 2:
        raise ValueError(
            "softmax over a single prompt is always 1: add a second prompt or a background "
            "prompt, or use mode='cosine'"
        )
    return np.ascontiguousarray(scaled_softmax(sims, logit_scale, axis=axis)[tuple(idx)])


def overlap_average(tiles: np.ndarray, k: int, tile_origin, cell_range) -> np.ndarray:
    """Average the scores of the overlapping tiles that cover each grid cell.

    Tile ``(r, c)`` covers cells ``r..r+k-1`` x ``c..c+k-1``.

    Parameters
    ----------
    tiles : np.ndarray
        ``(P, R, C)`` tile scores, NaN where missing; tile ``[:, a, b]`` is lattice tile
        ``(r0 + a, c0 + b)``.
    k : int
        Tiles per footprint.
    tile_origin : (int, int)
        ``(r0, c0)``.
    cell_range : (int, int, int, int)
        ``(i0, i1, j0, j1)`` cells to return.

    Returns
    -------
    np.ndarray
        ``(P, i1 - i0, j1 - j0)`` float32, NaN where no valid tile covers a cell.
    """
    r0, c0 = tile_origin
    i0, i1, j0, j1 = cell_range
    p, nr, nc = tiles.shape
    if k == 1 and i0 >= r0 and j0 >= c0 and i1 - r0 <= nr and j1 - c0 <= nc:
        return np.array(tiles[:, i0 - r0 : i1 - r0, j0 - c0 : j1 - c0], np.float32)
    total = np.zeros((p, i1 - i0, j1 - j0), np.float64)
    count = np.zeros((1, i1 - i0, j1 - j0), np.float64)
    valid = ~np.isnan(tiles)
    vals = np.where(valid, tiles, 0.0)
    for dr in range(k):
        for dc in range(k):
            # cell (i, j) receives tile (i - dr, j - dc): local tile index a = i - dr - r0
            a0, b0 = i0 - dr - r0, j0 - dc - c0
            ia, ib = max(0, -a0), min(i1 - i0, nr - a0)
            ja, jb = max(0, -b0), min(j1 - j0, nc - b0)
            if ib <= ia or jb <= ja:
                continue
            src = (slice(None), slice(a0 + ia, a0 + ib), slice(b0 + ja, b0 + jb))
            total[:, ia:ib, ja:jb] += vals[src]
            count[:, ia:ib, ja:jb] += valid[src][:1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count
    return out.astype(np.float32)


def fuse(
    own: np.ndarray,
    parent: np.ndarray | None,
    children: np.ndarray | None,
    weights: tuple[float, float, float],
) -> np.ndarray:
    """Weighted mean of a tile's score with its parent's and its children's.

    Parameters
    ----------
    own, parent, children : np.ndarray
        ``(P, R, C)`` aligned per tile (``children`` already averaged over each tile's
        children); NaN or ``None`` drops that term and renormalises the other weights.
    weights : (float, float, float)
        (parent, self, children), non-negative.

    Returns
    -------
    np.ndarray
        ``(P, R, C)`` float32; NaN wherever ``own`` is NaN.
    """
    wp, ws, wc = weights
    if min(weights) < 0 or ws <= 0:
        raise ValueError(f"fusion weights must be >= 0 with self > 0, got {weights}")
    num = ws * np.nan_to_num(own)
    den = np.full(own.shape, ws, np.float64)
    for w, x in ((wp, parent), (wc, children)):
        if x is None or w == 0:
            continue
        ok = ~np.isnan(x)
        num = num + w * np.where(ok, x, 0.0)
        den = den + w * ok
    out = (num / den).astype(np.float32)
    out[np.isnan(own)] = np.nan
    return out


def block_mean(grid: np.ndarray, lo_r: np.ndarray, lo_c: np.ndarray, n: int) -> np.ndarray:
    """Mean over the ``n x n`` block starting at ``(lo_r[a], lo_c[b])`` for every (a, b).

    ``grid`` is ``(P, Rc, Cc)`` with NaN for missing; returns ``(P, len(lo_r), len(lo_c))``.
    """
    p = grid.shape[0]
    total = np.zeros((p, len(lo_r), len(lo_c)), np.float64)
    count = np.zeros((1, len(lo_r), len(lo_c)), np.float64)
    valid = ~np.isnan(grid)
    vals = np.where(valid, grid, 0.0)
    rows_max, cols_max = grid.shape[1] - 1, grid.shape[2] - 1
    for dr in range(n):
        rr = np.minimum(lo_r + dr, rows_max)
        for dc in range(n):
            cc = np.minimum(lo_c + dc, cols_max)
            total += vals[:, rr][:, :, cc]
            count += valid[:1, rr][:, :, cc]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).astype(np.float32)


def smooth(scores: np.ndarray, sigma: float) -> np.ndarray:
    """NaN-aware Gaussian smoothing of ``(P, Y, X)`` scores, ``sigma`` in cells (0 = off)."""
    if sigma <= 0:
        return scores
    from scipy.ndimage import gaussian_filter

    valid = ~np.isnan(scores)
    num = gaussian_filter(np.where(valid, scores, 0.0), sigma=(0, sigma, sigma))
    den = gaussian_filter(valid.astype(np.float64), sigma=(0, sigma, sigma))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (num / den).astype(np.float32)
    out[~valid] = np.nan
    return out
