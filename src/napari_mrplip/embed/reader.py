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
from napari_mrplip.io.windows import group_windows, level_origins

from .tiles import plan_reads, read_tiles_checked


@dataclass
class TileBatch:
    """One batch of decoded tiles.

    Attributes
    ----------
    index : np.ndarray
        ``(B,)`` positions of these tiles in the caller's tile list.
    tiles : np.ndarray
        ``(B, S, S, 3)`` uint8; failed tiles are white.
    ok : np.ndarray
        ``(B,)`` bool, False where the tile failed to decode.
    errors : list of str
        One message per failed tile.
    """

    index: np.ndarray
    tiles: np.ndarray
    ok: np.ndarray
    errors: list[str] = field(default_factory=list)


class TileReader:
    """Decodes level-0 boxes through the one tile reader (:mod:`.tiles`) on ``workers``
    threads, ``prefetch`` batches ahead.

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
        self, boxes: np.ndarray, tile_px: int, batch_size: int, first: int = 0
    ) -> Iterator[TileBatch]:
        """Yield :class:`TileBatch` es of ``(S, S)`` tiles for level-0 ``boxes`` ``(N, 4)`` in order.

        ``first`` (if > 0) makes the first batch smaller, so a first partial result comes
        quickly; the rest are ``batch_size``.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
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
                    pending.append((s, e, self._submit(pool, boxes[s:e], tile_px)))
                    nxt += 1
                s, e, jobs = pending.popleft()
                yield self._collect(tile_px, s, e - s, jobs)
        finally:
            for _, _, jobs in pending:
                for _, f in jobs:
                    f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, pool, boxes: np.ndarray, tile_px: int) -> list:
        """One job per block of neighbouring boxes read alike (each stored tile decoded once)."""
        levels, widths, heights = plan_reads(self.slide, boxes, tile_px)
        plans = np.stack([levels, widths, heights], axis=1)
        jobs = []
        for level, w, h in dict.fromkeys(map(tuple, plans.tolist())):
            same = np.flatnonzero((plans == (level, w, h)).all(axis=1))
            xl, yl = level_origins(
                self.slide, level, np.rint(boxes[same, 0]), np.rint(boxes[same, 1])
            )
            for idx in group_windows(xl, yl, w, h):
                sub = same[idx]
                jobs.append((sub, pool.submit(read_tiles_checked, self.slide, boxes[sub], tile_px)))
        return jobs

    def _collect(self, tile_px: int, start: int, b: int, jobs: list) -> TileBatch:
        s = int(tile_px)
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


#: Largest stored level (in pixels) :func:`fast_thumbnail` reads whole.
MAX_THUMB_SOURCE_PX = 64_000_000


def fast_thumbnail(slide: Slide, max_px: int) -> np.ndarray:
    """A thumbnail (longer side <= ``max_px``) from the coarsest *stored* level that suffices.

    Reads that level through the slide's fast region reader and block-averages it, which
    is much cheaper than going through lazily synthesised levels. Falls back to
    ``slide.thumbnail`` when that level is too large to read at once.
    """
    w0, h0 = slide.dimensions
    native = slide.native_levels
    level = min(slide.best_level_for_downsample(max(max(w0, h0) / max_px, 1.0)), native - 1)
    lh, lw = slide.level_shape(level)
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
