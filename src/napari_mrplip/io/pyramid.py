"""Lazy pyramid helpers shared by the backends: RGB conversion, rechunking, extra levels.

Everything here builds dask graphs only; no pixels are read until a chunk is computed.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

#: Levels are added (2x block mean) until the smallest level's longer side is at most this.
MIN_LEVEL_PX = 512
#: Target bytes per dask chunk when small native chunks (NDPI strips, 64 px tiles) are merged.
TARGET_CHUNK_BYTES = 1 << 20
#: Chunk side (px) of synthesised levels.
SYNTH_CHUNK_PX = 512


def to_rgb_uint8(arr: da.Array, axes: str) -> da.Array:
    """Convert a level with tifffile-style ``axes`` to ``(Y, X, 3)`` uint8, lazily.

    Parameters
    ----------
    arr : dask.array.Array
        Any layout tifffile or NGFF produces (``YXS``, ``CYX``, ``YX``, ``TCZYX`` ...).
    axes : str
        One character per dimension; ``Y`` and ``X`` are required, ``S``/``C`` are samples.

    Returns
    -------
    dask.array.Array
        ``(Y, X, 3)`` uint8: RGBA loses alpha, grey is repeated, >8-bit is rescaled.
    """
    axes = axes.upper()
    if axes == "YXS" and arr.shape[2] == 3 and arr.dtype == np.uint8:
        return arr  # already (Y, X, 3) uint8: add no graph layers
    if "Y" not in axes or "X" not in axes or len(axes) != arr.ndim:
        raise ValueError(f"cannot interpret axes {axes!r} for shape {arr.shape}")
    index, kept = [], []
    for i, ax in enumerate(axes):
        if ax in "YX":
            index.append(slice(None))
            kept.append(ax)
        elif ax in "SC" and "S" not in kept and "C" not in kept and arr.shape[i] > 1:
            index.append(slice(0, 3))
            kept.append("S")
        else:  # time, z, extra channels: take the first plane
            index.append(0)
    arr = arr[tuple(index)]
    order = [kept.index("Y"), kept.index("X")] + ([kept.index("S")] if "S" in kept else [])
    arr = arr.transpose(order)
    if arr.ndim == 2:
        arr = da.stack([arr] * 3, axis=-1)
    elif arr.shape[-1] < 3:
        arr = da.concatenate([arr[..., :1]] * 3, axis=-1)
    return _as_uint8(arr)


def _as_uint8(arr: da.Array) -> da.Array:
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
    h, w = (arr.shape[0] // 2) * 2, (arr.shape[1] // 2) * 2
    if h == 0 or w == 0:
        raise ValueError(f"level {arr.shape} is too small to halve")
    src = arr[:h, :w].rechunk(
        (min(2 * SYNTH_CHUNK_PX, h), min(2 * SYNTH_CHUNK_PX, w), arr.shape[2])
    )
    mean = da.coarsen(np.mean, src.astype(np.float32), {0: 2, 1: 2}, trim_excess=True)
    return (mean + 0.5).astype(np.uint8)


def extend_pyramid(levels: list[da.Array], min_px: int = MIN_LEVEL_PX) -> list[da.Array]:
    """Append lazily downsampled levels until the smallest one is at most ``min_px`` per side.

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
    while max(out[-1].shape[:2]) > min_px and min(out[-1].shape[:2]) >= 2:
        out.append(halve(out[-1]))
    return out
