"""Pyramid helpers shared by the backends: RGB conversion, rechunking, extra levels.

The level *shapes* of a built pyramid are arithmetic (:func:`pyramid_shapes`); the dask graphs
(:func:`extend_pyramid`) are built only when a slide's ``levels`` are first used, so no pixels
are read, and dask is not even imported, until then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import dask.array as da

#: Levels are added (2x block mean) until the smallest level's longer side is at most this.
MIN_LEVEL_PX = 512
#: Target bytes per dask chunk when small native chunks (NDPI strips, 64 px tiles) are merged.
TARGET_CHUNK_BYTES = 1 << 20
#: Chunk side (px) of synthesised levels.
SYNTH_CHUNK_PX = 512


def to_rgb_uint8(arr, axes: str, window: tuple[int, int, int, int] | None = None):
    """Convert a level with tifffile-style ``axes`` to ``(Y, X, 3)`` uint8.

    The same arithmetic serves a dask level (lazily, a graph) and a window read from a zarr or
    numpy array (eagerly), so both give the same pixels.

    Parameters
    ----------
    arr : array-like
        Any layout tifffile or NGFF produces (``YXS``, ``CYX``, ``YX``, ``TCZYX`` ...): a dask,
        zarr or numpy array.
    axes : str
        One character per dimension; ``Y`` and ``X`` are required, ``S``/``C`` are samples.
    window : (y, x, h, w), optional
        Convert only this window of the Y and X axes (indexing ``arr`` reads only it).

    Returns
    -------
    array
        ``(Y, X, 3)`` (or ``(h, w, 3)``) uint8, of ``arr``'s kind (numpy for a zarr array):
        RGBA loses alpha, grey is repeated, >8-bit is rescaled.
    """
    axes = axes.upper()
    y, x, h, w = window if window is not None else (0, 0, None, None)
    rows = slice(y, None if h is None else y + h)
    cols = slice(x, None if w is None else x + w)
    if axes == "YXS" and arr.shape[2] == 3 and np.dtype(arr.dtype) == np.uint8:
        return arr if window is None else np.asarray(arr[rows, cols])  # add no graph layers
    check_axes(axes, arr.shape)
    index, kept = [], []
    for i, ax in enumerate(axes):
        if ax in "YX":
            index.append(rows if ax == "Y" else cols)
            kept.append(ax)
        elif ax in "SC" and "S" not in kept and "C" not in kept and arr.shape[i] > 1:
            index.append(slice(0, 3))
            kept.append("S")
        else:  # time, z, extra channels: take the first plane
            index.append(0)
    arr = arr[tuple(index)]
    arr = arr if window is None else np.asarray(arr)
    order = [kept.index("Y"), kept.index("X")] + ([kept.index("S")] if "S" in kept else [])
    arr = arr.transpose(order)
    if arr.ndim == 2:  # numpy functions dispatch to dask for dask arrays (NEP 18)
        arr = np.stack([arr] * 3, axis=-1)
    elif arr.shape[-1] < 3:
        arr = np.concatenate([arr[..., :1]] * 3, axis=-1)
    return _as_uint8(arr)


def check_axes(axes: str, shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``axes`` names every dimension of ``shape``, Y and X included."""
    axes = axes.upper()
    if "Y" not in axes or "X" not in axes or len(axes) != len(shape):
        raise ValueError(f"cannot interpret axes {axes!r} for shape {tuple(shape)}")


def _as_uint8(arr):
    dtype = np.dtype(arr.dtype)
    if dtype == np.uint8:
        return arr
    if dtype.kind in "ui":
        top = float(np.iinfo(dtype).max)
        return (arr.astype(np.float32) * (255.0 / top)).clip(0, 255).round().astype(np.uint8)
    if dtype.kind == "b":
        return arr.astype(np.uint8) * 255
    return (arr.astype(np.float32).clip(0, 1) * 255).round().astype(np.uint8)


def merged_chunks(
    shape: tuple[int, ...], native: tuple[int, ...], itemsize: int = 1
) -> tuple[int, ...]:
    """Dask chunk sizes for a level whose native chunks are small (NDPI strips, 64-256 px tiles).

    Returns whole multiples of ``native`` along Y and X giving ~0.5-1 MiB chunks, so that each
    native chunk is read once and no rechunk graph is needed (pass to ``from_zarr(chunks=)``).
    """
    cy, cx = max(1, native[0]), max(1, native[1])
    bpp = int(np.prod(shape[2:])) * itemsize
    ky = kx = 1
    while cy * ky * cx * kx * bpp < TARGET_CHUNK_BYTES // 2:
        grow_y = cy * ky < shape[0] and (cy * ky <= cx * kx or cx * kx >= shape[1])
        if grow_y:
            ky *= 2
        elif cx * kx < shape[1]:
            kx *= 2
        else:
            break
    return (min(cy * ky, shape[0]), min(cx * kx, shape[1]), *shape[2:])


def halve(arr: da.Array) -> da.Array:
    """One 2x block-mean downsample of a ``(Y, X, 3)`` uint8 level (odd edges trimmed)."""
    import dask.array as da

    h, w = (arr.shape[0] // 2) * 2, (arr.shape[1] // 2) * 2
    if h == 0 or w == 0:
        raise ValueError(f"level {arr.shape} is too small to halve")
    src = arr[:h, :w].rechunk(
        (min(2 * SYNTH_CHUNK_PX, h), min(2 * SYNTH_CHUNK_PX, w), arr.shape[2])
    )
    mean = da.coarsen(np.mean, src.astype(np.float32), {0: 2, 1: 2}, trim_excess=True)
    return (mean + 0.5).astype(np.uint8)


def pyramid_shapes(shapes: list[tuple[int, int]], min_px: int = MIN_LEVEL_PX) -> list:
    """The ``(h, w)`` of the stored levels followed by those :func:`extend_pyramid` appends.

    Each built level halves the last one (odd edges trimmed: ``(h // 2, w // 2)``) until the
    longer side is at most ``min_px`` (or a side would drop below 1).

    Parameters
    ----------
    shapes : list of (h, w)
        Stored levels, largest first.
    min_px : int
        Stop when the longer side of the last level is ``<= min_px``.
    """
    out = [(int(h), int(w)) for h, w in shapes]
    while max(out[-1]) > min_px and min(out[-1]) >= 2:
        out.append((out[-1][0] // 2, out[-1][1] // 2))
    return out


def extend_pyramid(levels: list[da.Array], min_px: int = MIN_LEVEL_PX) -> list[da.Array]:
    """Append lazily downsampled levels (:func:`halve`) down to the shapes of :func:`pyramid_shapes`.

    Parameters
    ----------
    levels : list of dask.array.Array
        Native levels, largest first, each ``(Y, X, 3)``.
    min_px : int
        Stop when the longer side of the last level is ``<= min_px``.

    Returns
    -------
    list of dask.array.Array
        The native levels followed by the synthesised ones.
    """
    out = list(levels)
    extra = len(pyramid_shapes([lv.shape[:2] for lv in levels], min_px)) - len(levels)
    for _ in range(extra):
        out.append(halve(out[-1]))
    return out
