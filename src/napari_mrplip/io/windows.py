"""Many equal windows of one level, read block by block so each stored tile is decoded once.

A lattice of 224 px windows over 256 px JPEG tiles touches about 3.8 stored tiles per window when
every window is read on its own, so each stored tile is decoded 3-4 times over. Reading
neighbouring windows as one region (a *block*) and cutting them out of it decodes each stored
tile once and pays the per-read overhead once per block. The pixels are those of
``Slide.read_region`` for each window: the same level coordinates (``round(x0 / downsample)``),
the same decode and the same white padding outside the level.
"""

from __future__ import annotations

import numpy as np

from .errors import TileReadError
from .region import inline_decoding
from .slide import Slide

#: Windows per block side: a block of 224 px windows is at most about 2,016 px square.
BLOCK_WINDOWS = 8


def level_origins(slide: Slide, level: int, xs0, ys0) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 origins -> the level pixel origins ``read_region`` uses (``round(x0 / ds)``)."""
    ds = float(slide.downsamples[level])
    xs = np.rint(np.asarray(xs0, np.float64) / ds).astype(np.int64)
    ys = np.rint(np.asarray(ys0, np.float64) / ds).astype(np.int64)
    return xs, ys


def group_windows(xl: np.ndarray, yl: np.ndarray, w: int, h: int) -> list[np.ndarray]:
    """Indices of windows grouped by block (``BLOCK_WINDOWS`` windows a side), in first-seen order.

    Parameters
    ----------
    xl, yl : (N,) int arrays
        Window origins in level pixels.
    w, h : int
        Window size in level pixels.
    """
    if len(xl) == 0:
        return []
    keys = (np.floor_divide(yl, BLOCK_WINDOWS * max(h, 1)) << 32) + np.floor_divide(
        xl, BLOCK_WINDOWS * max(w, 1)
    )
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    groups = [np.flatnonzero(inverse == g) for g in range(len(first))]
    return [groups[g] for g in np.argsort(first, kind="stable")]


def read_window_group(slide: Slide, level: int, xl: np.ndarray, yl: np.ndarray, w: int, h: int):
    """Read windows ``(xl[i], yl[i], w, h)`` of ``level`` as one region; ``(N, h, w, 3)`` uint8.

    Raises
    ------
    TileReadError
        If a stored tile under the block cannot be decoded (callers fall back to single windows
        to tell which windows are affected).
    """
    ds = float(slide.downsamples[level])
    bx, by = int(xl.min()), int(yl.min())
    bw, bh = int(xl.max()) + w - bx, int(yl.max()) + h - by
    with inline_decoding():  # callers read blocks on their own threads
        block = slide.read_region(bx * ds, by * ds, bw, bh, level)  # round(bx*ds/ds) == bx
    out = np.empty((len(xl), h, w, 3), np.uint8)
    for i, (x, y) in enumerate(zip((xl - bx).tolist(), (yl - by).tolist())):
        out[i] = block[y : y + h, x : x + w]
    return out


def read_windows(slide: Slide, level: int, xs0, ys0, w: int, h: int) -> tuple[np.ndarray, list]:
    """Windows at level-0 origins ``xs0, ys0`` (``w x h`` level pixels) read block by block.

    Returns
    -------
    tiles : (N, h, w, 3) uint8
        White where a window failed.
    errors : list of (index, message)
        One entry per window that could not be decoded.
    """
    xl, yl = level_origins(slide, level, xs0, ys0)
    out = np.empty((len(xl), h, w, 3), np.uint8)
    errors: list[tuple[int, str]] = []
    for idx in group_windows(xl, yl, w, h):
        try:
            out[idx] = read_window_group(slide, level, xl[idx], yl[idx], w, h)
            continue
        except TileReadError:
            pass
        for i in idx.tolist():  # find the windows the bad tile(s) belong to
            try:
                out[i] = read_window_group(slide, level, xl[i : i + 1], yl[i : i + 1], w, h)
            except TileReadError as e:
                out[i] = 255
                errors.append((i, str(e)))
    return out, errors
