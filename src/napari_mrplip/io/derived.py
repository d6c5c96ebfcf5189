"""Fast reads at derived levels: a stored level's window reduced by repeated 2x block means.

Levels that :func:`~napari_mrplip.io.pyramid.extend_pyramid` appends are dask graphs of
:func:`~napari_mrplip.io.pyramid.halve` over the last stored level. Reading a region through that
graph costs far more than the arithmetic (about 1 s for 2048² at level 1 of a 2220 x 2967 SVS).
Here the same pixels are computed directly: the stored level's window (``2**n`` times larger,
through the backend's fast reader when it has one) is halved ``n`` times with exactly the
rounding ``halve`` uses, ``floor((a + b + c + d + 2) / 4)`` per step, so the result is identical,
bit for bit, to the dask level.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Stored-level pixels read and reduced at once (16 Mpx, 48 MiB RGB); larger reads go in bands.
BAND_PX = 1 << 24

#: ``read(level, x_level, y_level, w, h) -> (h, w, 3) uint8`` for an in-bounds window.
LevelReader = Callable[[int, int, int, int, int], np.ndarray]


def derived_source(shapes: list[tuple[int, ...]], native: int | None, level: int):
    """``(source_level, n)`` when ``level`` is ``n`` halvings of stored level ``source_level``.

    Parameters
    ----------
    shapes : list of tuple
        Level shapes, largest first (``(Y, X, 3)``).
    native : int or None
        Number of levels stored in the file (``Slide.native_levels``); the levels
        after them are the ``halve`` chain :func:`extend_pyramid` built from the last stored one.
    level : int
        The level being read.

    Returns
    -------
    tuple of int or None
        ``None`` for a stored level, or when the shapes are not those of that chain.
    """
    if not isinstance(native, int) or not 1 <= native <= level < len(shapes):
        return None
    source, n = native - 1, level - native + 1
    sh, sw = shapes[source][:2]
    if tuple(shapes[level][:2]) != (sh >> n, sw >> n):
        return None
    return source, n


def halve_block(img: np.ndarray) -> np.ndarray:
    """One 2x block mean of ``(2h, 2w, 3)`` uint8, rounded as ``halve`` rounds (half up).

    ``halve`` computes ``uint8(float32 mean + 0.5)``; the float32 sum of four bytes is exact, so
    that equals the integer ``(a + b + c + d + 2) >> 2`` computed here.

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W, 3)`` uint8; an odd last row or column is ignored (as ``halve`` trims it).

    Returns
    -------
    numpy.ndarray
        ``(H // 2, W // 2, 3)`` uint8.
    """
    h, w = img.shape[0] // 2, img.shape[1] // 2
    pairs = img[: 2 * h, : 2 * w].reshape(h, 2, w, 6)  # two vertically adjacent pixel pairs
    rows = np.add(pairs[:, 0], pairs[:, 1], dtype=np.uint16)
    total = np.add(rows[..., :3], rows[..., 3:])
    total += 2
    total >>= 2
    return total.astype(np.uint8)


def block_mean(img: np.ndarray, n: int) -> np.ndarray:
    """``n`` successive :func:`halve_block` steps: ``(H, W, 3)`` -> ``(H >> n, W >> n, 3)``."""
    for _ in range(n):
        img = halve_block(img)
    return img


def read_derived(read: LevelReader, source: int, n: int, x: int, y: int, w: int, h: int):
    """Read an in-bounds ``(h, w, 3)`` window of the level ``n`` halvings below ``source``.

    Parameters
    ----------
    read : callable
        Reads an in-bounds window of a stored level (the backend's fast path or its dask level).
    source, n : int
        The stored level and the number of halvings (from :func:`derived_source`).
    x, y, w, h : int
        The window in pixels of the derived level; it must lie inside that level, so the
        stored window ``(x, y, w, h) * 2**n`` lies inside the stored level.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8, equal to the dask level's pixels. Stored windows larger than
        :data:`BAND_PX` are read in horizontal bands, so memory stays bounded.
    """
    f = 1 << n
    out = np.empty((h, w, 3), dtype=np.uint8)
    band = max(1, BAND_PX // max(1, w * f * f))
    for r0 in range(0, h, band):
        r1 = min(h, r0 + band)
        src = read(source, x * f, (y + r0) * f, w * f, (r1 - r0) * f)
        out[r0:r1] = block_mean(src, n)
    return out
