"""Fast region reads from tiled (or stripped) TIFF levels: tile bytes by offset, decoded directly.

No dask graph and no zarr store sit on this path: for each tile under the window the reader
``pread``s its bytes (offset and length checked against the file size) and hands them to the
page's own decoder (imagecodecs underneath, JPEG tables included), on a small thread pool when a
region covers several tiles.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .derived import block_mean
from .errors import TileReadError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import dask.array as da

#: Exceptions tifffile/imagecodecs raise on bad tile bytes (imagecodecs' *Error are RuntimeErrors).
DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
    NotImplementedError,
    struct.error,
    OSError,
    EOFError,
)
#: A single encoded tile larger than this is treated as corrupt (a 4096² raw RGB tile is 48 MiB).
MAX_TILE_BYTES = 64 << 20

#: Reads covering at most this many tiles are decoded in the calling thread.
INLINE_TILES = 4
_WORKERS = max(1, min(8, (os.cpu_count() or 2)) - 1)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _reset_pool_after_fork() -> None:
    """A forked child (DataLoader worker) inherits the pool object but not its threads."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_reset_pool_after_fork)


_INLINE = threading.local()


@contextlib.contextmanager
def inline_decoding():
    """Decode every tile of the reads in this block in the calling thread.

    For callers that already read on many threads (the batched tile reader): a nested pool
    would only add threads fighting for the GIL. Measured on a 16-core host, JPEG decodes/s
    peak at 8 threads and fall at 16 (docs/performance.md, GPU).
    """
    before = getattr(_INLINE, "on", False)
    _INLINE.on = True
    try:
        yield
    finally:
        _INLINE.on = before


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="mrplip-tiles")
        return _POOL


@dataclass
class TiledLevel:
    """One pyramid level stored as a grid of encoded tiles (or full-width strips) in a TIFF page."""

    page: object = field(repr=False)  # tifffile.TiffPage
    height: int
    width: int
    tile_h: int
    tile_w: int
    offsets: np.ndarray = field(repr=False)
    bytecounts: np.ndarray = field(repr=False)
    decode: object = field(default=None, repr=False)  # the page's decoder closure

    def __post_init__(self):
        self.decode = self.page.decode

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of tiles."""
        return -(-self.height // self.tile_h), -(-self.width // self.tile_w)


def tiled_level(page, file_size: int) -> TiledLevel | None:
    """A :class:`TiledLevel` for ``page`` when the fast path can read it, else ``None``.

    The fast path takes contiguous uint8 RGB pages (tiled, or stripped with whole-width
    strips) whose tile table is consistent. NDPI pages count as tiled: tifffile splits their
    JPEG at its restart markers (``McuStarts``) into MCU-row tiles decoded with a patched JPEG
    header (``page.jpegheader``). Unusual layouts go through zarr instead.
    """
    if page.planarconfig != 1 or page.samplesperpixel != 3 or page.imagedepth != 1:
        return None
    if page.is_ndpi and page.is_tiled and page.jpegheader is None:
        return None
    if np.dtype(page.dtype) != np.uint8 or page.photometric not in (2, 6):
        return None
    if page.is_tiled:
        th, tw = page.tilelength, page.tilewidth
    else:
        th, tw = min(page.rowsperstrip, page.imagelength), page.imagewidth
    if th <= 0 or tw <= 0:
        return None
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    level = TiledLevel(page, page.imagelength, page.imagewidth, th, tw, offsets, counts)
    rows, cols = level.grid
    if len(offsets) != rows * cols or len(counts) != len(offsets):
        return None
    bad = (counts > 0) & (
        (offsets < 0) | (offsets + counts > file_size) | (counts > MAX_TILE_BYTES)
    )
    if bad.any():
        return None
    return level


class TiffRegionReader:
    """Reads windows of tiled TIFF levels; other levels fall back to their dask arrays.

    Parameters
    ----------
    path : Path
        The TIFF file (opened here with ``os.open`` for thread-safe ``pread``).
    tiled : list of TiledLevel or None
        Per pyramid level, the fast-path description or ``None``.
    levels : sequence of dask.array.Array
        The slide's levels (a :class:`~napari_mrplip.io.levels.LazyLevels`), indexed only for
        levels without a fast path.

    Attributes
    ----------
    tiles_decoded : int
        Number of tiles decoded so far (tests use it to prove reads touch only their tiles).
    """

    def __init__(self, path: Path, tiled: list[TiledLevel | None], levels: Sequence[da.Array]):
        self.path = Path(path)
        self.tiled = list(tiled) + [None] * (len(levels) - len(tiled))
        self.levels = levels
        self.tiles_decoded = 0
        self._count_lock = threading.Lock()
        self._fd: int | None = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, level: int, x_level: int, y_level: int, w: int, h: int) -> np.ndarray:
        """Read an in-bounds ``(h, w, 3)`` uint8 window of ``level`` (level pixel coordinates)."""
        info = self.tiled[level]
        if info is None:
            return self._read_dask(level, x_level, y_level, w, h)
        out = np.empty((h, w, 3), dtype=np.uint8)
        r0, r1 = y_level // info.tile_h, (y_level + h - 1) // info.tile_h
        c0, c1 = x_level // info.tile_w, (x_level + w - 1) // info.tile_w
        jobs = [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        self._run(jobs, (info, level, x_level, y_level, w, h, out))
        return out

    def read_reduced(self, level: int, n: int, x: int, y: int, w: int, h: int) -> np.ndarray | None:
        """A window of the level ``n`` halvings below stored ``level``, reduced tile by tile.

        Each tile is decoded and reduced with :func:`~napari_mrplip.io.derived.block_mean` in the
        worker that decoded it (no full-size intermediate). ``x, y, w, h`` are in pixels of the
        derived level and must lie inside it. Returns ``None`` (the caller reduces a whole
        window instead) when ``level`` has no fast path or its tiles are not multiples of
        ``2**n``, so that blocks would straddle tiles (whole-width strips are fine).
        """
        info, f = self.tiled[level], 1 << n
        if info is None:
            return None
        rows, cols = info.grid  # blocks may only cross the image edge, never a tile border
        if (rows > 1 and info.tile_h % f) or (cols > 1 and info.tile_w % f):
            return None
        out = np.empty((h, w, 3), dtype=np.uint8)
        xs, ys, ws, hs = x * f, y * f, w * f, h * f
        r0, r1 = ys // info.tile_h, (ys + hs - 1) // info.tile_h
        c0, c1 = xs // info.tile_w, (xs + ws - 1) // info.tile_w
        jobs = [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        self._run(jobs, (info, level, xs, ys, ws, hs, out, n), self._paste_reduced)
        return out

    def _run(self, jobs: list[tuple[int, int]], args: tuple, paste=None) -> None:
        """Decode ``jobs`` (tile row, col): small reads inline; large ones shared with the pool.

        The calling thread works too, pulling tiles from the same queue, so a busy machine that
        is slow to wake the pool's threads never makes a read slower than a sequential one.
        """
        paste = paste or self._paste
        if len(jobs) <= INLINE_TILES or getattr(_INLINE, "on", False):
            for r, c in jobs:
                paste(r, c, *args)
            return
        queue, lock = iter(jobs), threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    job = next(queue, None)
                if job is None:
                    return
                paste(*job, *args)

        futures = [_pool().submit(work) for _ in range(min(_WORKERS, len(jobs) - 1))]
        try:
            work()
        finally:
            for fut in futures:
                fut.result()

    def _paste(self, r, c, info: TiledLevel, level, x, y, w, h, out: np.ndarray) -> None:
        tile = self.decode_tile(info, level, r, c)
        ty, tx = r * info.tile_h, c * info.tile_w
        ya, yb = max(y, ty), min(y + h, ty + info.tile_h, info.height)
        xa, xb = max(x, tx), min(x + w, tx + info.tile_w, info.width)
        if tile is None:
            out[ya - y : yb - y, xa - x : xb - x] = 255
        else:
            out[ya - y : yb - y, xa - x : xb - x] = tile[ya - ty : yb - ty, xa - tx : xb - tx]

    def _paste_reduced(self, r, c, info: TiledLevel, level, x, y, w, h, out, n: int) -> None:
        """Like ``_paste`` for a stored window ``(x, y, w, h)``, pasting ``block_mean(tile, n)``."""
        tile = self.decode_tile(info, level, r, c)
        ty, tx, f = r * info.tile_h, c * info.tile_w, 1 << n
        ya, yb = max(y, ty), min(y + h, ty + info.tile_h)
        xa, xb = max(x, tx), min(x + w, tx + info.tile_w)
        dst = out[(ya - y) // f : (yb - y) // f, (xa - x) // f : (xb - x) // f]
        if tile is None:
            dst[...] = 255
        else:
            dst[...] = block_mean(tile[ya - ty : yb - ty, xa - tx : xb - tx], n)

    def decode_tile(self, info: TiledLevel, level: int, row: int, col: int) -> np.ndarray | None:
        """Decode one tile to ``(tile_h, tile_w, 3)`` (``None`` for an empty, sparse tile)."""
        index = row * info.grid[1] + col
        offset, count = int(info.offsets[index]), int(info.bytecounts[index])
        if count == 0:
            return None
        where = f"{self.path}: level {level}, tile row {row} col {col} (x={col * info.tile_w}, y={row * info.tile_h} at that level)"
        if self._fd is None:
            raise TileReadError(f"{where}: the slide was closed")
        try:
            data = os.pread(self._fd, count, offset)
            if len(data) != count:
                raise EOFError(f"file ends {count - len(data)} bytes early")
            page = info.page
            tile = info.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)[
                0
            ]
            tile = np.asarray(tile).reshape(-1, tile.shape[-2], tile.shape[-1])
        except DECODE_ERRORS as e:
            raise TileReadError(f"{where}: cannot decode tile ({type(e).__name__}: {e})") from e
        if tile.shape[0] < min(info.tile_h, info.height - row * info.tile_h) or tile.shape[1] < min(
            info.tile_w, info.width - col * info.tile_w
        ):
            raise TileReadError(
                f"{where}: tile decoded to {tile.shape}, expected {info.tile_h}x{info.tile_w}"
            )
        with self._count_lock:
            self.tiles_decoded += 1
        return tile

    def _read_dask(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        try:
            return np.asarray(self.levels[level][y : y + h, x : x + w].compute(scheduler="threads"))
        except TileReadError:
            raise
        except DECODE_ERRORS as e:
            raise TileReadError(
                f"{self.path}: failed to read level {level} at x={x}, y={y} ({w}x{h} px): {e}"
            ) from e


class NamedErrors:
    """Array-like over a zarr array whose decode failures become :class:`TileReadError`.

    Wraps the zarr store tifffile provides, so that dask levels fail with the file, level and
    window in the message instead of a bare codec error.
    """

    def __init__(self, array, path: Path, level: int):
        self.array, self.path, self.level = array, Path(path), level
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), array.ndim

    def __getitem__(self, key) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except DECODE_ERRORS as e:
            window = ", ".join(
                f"{k.start}:{k.stop}" if isinstance(k, slice) else str(k) for k in key
            )
            raise TileReadError(
                f"{self.path}: level {self.level}, window [{window}]: cannot decode "
                f"({type(e).__name__}: {e})"
            ) from e
