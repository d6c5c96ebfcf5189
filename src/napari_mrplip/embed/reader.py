"""Tile decoding on a thread pool, overlapping with model compute through bounded prefetch.

Decoders (imagecodecs, OpenSlide) release the GIL, so a few threads keep the model fed
while it runs. At most ``prefetch`` batches are in flight: memory stays bounded whatever the
number of tiles, and abandoning the iterator (cancel) drops the queued reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from napari_mrplip.io.slide import Slide
from napari_mrplip.io.windows import group_windows, level_origins, read_windows
from napari_mrplip.tiling.grid import TileGrid


@dataclass
class TileBatch:
    """One batch of decoded tiles.

    Attributes
    ----------
    index : np.ndarray
        ``(B,)`` positions of these tiles in the caller's tile list.
    tiles : np.ndarray
        ``(B, S, S, 3)`` uint8, S = the grid's ``out_px``; failed tiles are white.
    ok : np.ndarray
        ``(B,)`` bool, False where the tile failed to decode.
    errors : list of str
        One message per failed tile.
    """

    index: np.ndarray
    tiles: np.ndarray
    ok: np.ndarray
    errors: list[str] = field(default_factory=list)


def resize_tile(tile: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``(h, w, 3)`` uint8 tile to ``(size, size, 3)`` (area-like for downscaling)."""
    from PIL import Image

    if tile.shape[0] == size and tile.shape[1] == size:
        return tile
    img = Image.fromarray(np.ascontiguousarray(tile))
    return np.asarray(img.resize((size, size), Image.BILINEAR, reducing_gap=2.0))


def read_tile(slide: Slide, grid: TileGrid, x: int, y: int) -> np.ndarray:
    """Read the tile whose level-0 top-left corner is (x, y), at the model's input size."""
    tile = slide.read_region(int(x), int(y), grid.read_px, grid.read_px, grid.read_level)
    return resize_tile(tile, grid.out_px)


class TileReader:
    """Decodes grid tiles on ``workers`` threads, ``prefetch`` batches ahead.

    Parameters
    ----------
    slide : Slide
    workers : int
        Decoding threads (>= 1).
    prefetch : int
        Batches decoded ahead of the consumer (>= 1).
    alloc : callable, optional
        ``alloc(shape) -> np.ndarray`` uint8 batch buffer (pinned memory on CUDA).
    """

    def __init__(
        self, slide: Slide, workers: int = 2, prefetch: int = 2, alloc: Callable | None = None
    ):
        self.slide = slide
        self.workers = max(1, int(workers))
        self.prefetch = max(1, int(prefetch))
        self.alloc = alloc or (lambda shape: np.empty(shape, np.uint8))

    def batches(
        self, grid: TileGrid, xs: np.ndarray, ys: np.ndarray, batch_size: int, first: int = 0
    ) -> Iterator[TileBatch]:
        """Yield :class:`TileBatch` es for tiles at level-0 corners ``xs``, ``ys`` in order.

        ``first`` (if > 0) makes the first batch smaller, so a first partial result comes
        quickly; the rest are ``batch_size``.
        """
        n = len(xs)
        batch_size = max(1, int(batch_size))
        head = min(first, batch_size) if first > 0 else batch_size
        bounds = [0, *range(head, n, batch_size), n] if n > head else [0, n]
        pending: deque[tuple[int, int, list]] = deque()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mrplip-tiles")
        try:
            nxt = 0
            while nxt < len(bounds) - 1 or pending:
                while nxt < len(bounds) - 1 and len(pending) < self.prefetch:
                    s, e = bounds[nxt], bounds[nxt + 1]
                    pending.append((s, e, self._submit(pool, grid, xs[s:e], ys[s:e])))
                    nxt += 1
                s, e, jobs = pending.popleft()
                yield self._collect(grid, s, e - s, jobs)
        finally:
            for _, _, jobs in pending:
                for _, f in jobs:
                    f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, pool, grid: TileGrid, xs: np.ndarray, ys: np.ndarray) -> list:
        """One job per block of neighbouring tiles (each stored tile decoded once per block)."""
        xl, yl = level_origins(self.slide, grid.read_level, xs, ys)
        groups = group_windows(xl, yl, grid.read_px, grid.read_px)
        return [(idx, pool.submit(read_tile_group, self.slide, grid, xs[idx], ys[idx]))
                for idx in groups]  # fmt: skip

    def _collect(self, grid: TileGrid, start: int, b: int, jobs: list) -> TileBatch:
        s = grid.out_px
        tiles = self.alloc((b, s, s, 3))
        ok = np.ones(b, bool)
        errors = []
        for idx, f in jobs:
            group, errs = f.result()
            tiles[idx] = group
            for i, message in errs:
                ok[idx[i]] = False
                errors.append(message)
        return TileBatch(np.arange(start, start + b), tiles, ok, errors)


def read_tile_group(slide: Slide, grid: TileGrid, xs: np.ndarray, ys: np.ndarray):
    """Tiles at level-0 corners ``xs, ys`` read as one block: ``((n, S, S, 3), errors)``.

    Pixel-identical to :func:`read_tile` for each tile; failed tiles are white and listed in
    ``errors`` as ``(index, message)``.
    """
    raw, errors = read_windows(slide, grid.read_level, xs, ys, grid.read_px, grid.read_px)
    if grid.read_px == grid.out_px:
        return raw, errors
    return np.stack([resize_tile(t, grid.out_px) for t in raw]), errors


#: Largest stored level (in pixels) :func:`fast_thumbnail` reads whole.
MAX_THUMB_SOURCE_PX = 64_000_000


def fast_thumbnail(slide: Slide, max_px: int) -> np.ndarray:
    """A thumbnail (longer side <= ``max_px``) from the coarsest *stored* level that suffices.

    Reads that level through the slide's fast region reader and block-averages it, which
    is much cheaper than going through lazily synthesised levels. Falls back to
    ``slide.thumbnail`` when that level is too large to read at once.
    """
    w0, h0 = slide.dimensions
    native = int(slide.metadata.get("native_levels", len(slide.levels)) or 1)
    level = min(slide.best_level_for_downsample(max(max(w0, h0) / max_px, 1.0)), native - 1)
    lh, lw = slide.levels[level].shape[:2]
    if lh * lw > MAX_THUMB_SOURCE_PX:
        return slide.thumbnail(max_px)
    from PIL import Image

    img = slide.read_region(0, 0, lw, lh, level)
    f = max(1, -(-max(lh, lw) // max_px))
    if f == 1:
        return img
    ph, pw = -(-lh // f) * f, -(-lw // f) * f
    padded = np.full((ph, pw, 3), 255, np.uint8)
    padded[:lh, :lw] = img
    return np.asarray(Image.fromarray(padded).reduce(f))  # box average of f x f blocks
