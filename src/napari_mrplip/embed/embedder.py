"""Tile embeddings of a slide through one cache: lattice tiles and arbitrary level-0 boxes.

:class:`SlideEmbedder` is what heatmaps, annotation review and fine-tuning embed through.
Sharing one (see :mod:`.pool`) means tiles one of them embedded cost the others nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from napari_mrplip.io.slide import Slide
from napari_mrplip.tiling.grid import TileGrid

from .batching import AdaptiveBatcher, decode_workers, default_batch_size, tile_allocator
from .cache import EmbeddingCache, GridKey, slide_id
from .reader import TileReader
from .tiles import read_tile

log = logging.getLogger(__name__)


@dataclass
class LatticeBatch:
    """One batch of lattice tiles, embedded and stored in the cache.

    Attributes
    ----------
    index : np.ndarray
        ``(B,)`` positions of these tiles in the caller's ``rows`` / ``cols``.
    ok : np.ndarray
        ``(B,)`` bool, False where the tile failed to decode (no embedding).
    emb : np.ndarray
        ``(ok.sum(), D)`` float32 embeddings of the tiles that decoded.
    errors : list of str
        One message per failed tile.
    """

    index: np.ndarray
    ok: np.ndarray
    emb: np.ndarray
    errors: list[str] = field(default_factory=list)


class SlideEmbedder:
    """Embeds a slide's tiles with one encoder, through one :class:`EmbeddingCache`.

    Parameters
    ----------
    encoder : EncoderBackend
    cache : EmbeddingCache, optional
        Shared cache (a private in-memory one by default).
    batch_size : int, optional
        Tiles per model call (device default: 256 on CUDA, 32 on CPU); halved on OOM.
    workers : int, optional
        Tile-decoding threads (default: the cores torch leaves free, ``batching.decode_workers``).
    """

    def __init__(self, encoder, cache: EmbeddingCache | None = None, batch_size=None, workers=None):
        self.encoder = encoder
        self.cache = cache if cache is not None else EmbeddingCache()
        self.device = str(encoder.device)
        self.batcher = AdaptiveBatcher(encoder, batch_size or default_batch_size(self.device))
        self.workers = max(1, int(workers or decode_workers(self.device)))
        self.tiles_encoded = 0
        self._count_lock = threading.Lock()

    @property
    def batch_size(self) -> int:
        return self.batcher.batch_size

    def _encode(self, tiles: np.ndarray) -> np.ndarray:
        emb = self.batcher.encode(tiles)
        with self._count_lock:
            self.tiles_encoded += len(emb)
        return emb

    # -- lattices -----------------------------------------------------------------------
    def grid_key(self, slide: Slide, grid: TileGrid) -> GridKey:
        """The cache key of ``grid`` on ``slide`` under this encoder."""
        return GridKey(
            slide_id(slide),
            str(self.encoder.model_id),
            grid.key,
            grid.shape,
            int(self.encoder.embed_dim),
        )

    def lattice_batches(
        self,
        slide: Slide,
        grid: TileGrid,
        rows: np.ndarray,
        cols: np.ndarray,
        first: int = 0,
        cancel: threading.Event | None = None,
    ) -> Iterator[LatticeBatch]:
        """Encode lattice tiles ``(rows, cols)`` batch by batch, storing each in the cache.

        Tiles decode on threads ahead of the model. ``first`` (if > 0) makes the first batch
        small, for a quick first partial result. Stops when ``cancel`` is set.
        """
        if len(rows) == 0:
            return
        key = self.grid_key(slide, grid)
        self.cache.register_grid(key, grid)  # boxes on this lattice find its embeddings
        boxes = grid.read_boxes(rows, cols)  # edge tiles read inside the slide
        reader = TileReader(
            slide,
            self.workers,
            prefetch=max(2, self.workers // 4),
            alloc=tile_allocator(self.device),
        )
        batches = reader.batches(boxes, grid.out_px, self.batch_size, first)
        with contextlib.closing(batches):
            for batch in batches:
                if cancel is not None and cancel.is_set():
                    return
                if batch.errors:
                    log.warning(
                        "%s: %d tile(s) failed to decode and are left empty: %s",
                        slide.name,
                        len(batch.errors),
                        batch.errors[0],
                    )
                emb = np.zeros((0, int(self.encoder.embed_dim)), np.float32)
                if batch.ok.any():
                    tiles = batch.tiles if batch.ok.all() else batch.tiles[batch.ok]
                    emb = self._encode(tiles)  # pinned buffer kept when all decoded
                    idx = batch.index[batch.ok]
                    self.cache.put(key, rows[idx], cols[idx], emb)
                yield LatticeBatch(batch.index, batch.ok, emb, batch.errors)

    # -- arbitrary boxes ----------------------------------------------------------------
    def embed_boxes(
        self,
        slide: Slide,
        boxes: Sequence[Sequence[float]],
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embeddings of level-0 boxes, read by :func:`.tiles.read_tile` at the model's input size.

        Parameters
        ----------
        boxes : sequence of (x0, y0, x1, y1)
            Level-0 px, ``(N, 4)``; the box size sets the scale (see :mod:`.tiles`).
        progress : callable, optional
            ``progress(n)`` after each batch, with the boxes finished in it.

        Returns
        -------
        np.ndarray
            ``(N, D)`` float32, L2-normalised; cached per (slide, model, input px, box).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        side = int(self.encoder.input_size)
        sid, mid = slide_id(slide), str(self.encoder.model_id)
        keys = [(sid, mid, side, tuple(round(float(v), 2) for v in b)) for b in boxes]
        out = np.zeros((len(keys), int(self.encoder.embed_dim)), np.float32)
        missing = []
        for i, k in enumerate(keys):
            e = self.cache.get_box(k)
            if e is None:
                missing.append(i)
            else:
                out[i] = e
        if missing:  # tiles a heatmap already embedded on its lattice (same pixels)
            emb, found = self.cache.lattice_lookup(sid, mid, side, boxes[missing])
            if emb is not None:
                for j, i in enumerate(missing):
                    if found[j]:
                        out[i] = emb[j]
                        self.cache.put_box(keys[i], emb[j])
                missing = [i for j, i in enumerate(missing) if not found[j]]
        if progress and len(keys) > len(missing):
            progress(len(keys) - len(missing))
        if not missing:
            return out
        same: dict[tuple, list[int]] = {}  # a box asked for twice is encoded once
        for i in missing:
            same.setdefault(keys[i], []).append(i)
        unique = [idx[0] for idx in same.values()]
        read = lambda i: read_tile(slide, boxes[i], side)  # noqa: E731
        with ThreadPoolExecutor(self.workers) as pool:
            for s in range(0, len(unique), self.batch_size):
                part = unique[s : s + self.batch_size]
                emb = self._encode(np.stack(list(pool.map(read, part))))
                for i, e in zip(part, emb):
                    out[same[keys[i]]] = e
                    self.cache.put_box(keys[i], e)
                if progress:
                    progress(sum(len(same[keys[i]]) for i in part))
        return out
