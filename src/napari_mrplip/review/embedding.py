"""Tile embeddings for annotation scoring, cached per (slide, model, µm/px, box).

When a heatmap engine is given, its ``embed_tiles`` does the work (sharing the engine's
embedding cache with the heatmap panel); otherwise tiles are read at the wanted µm/px and
embedded here in batches, with an in-memory cache bounded by ``max_items``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from napari_mrplip.tiling.geometry import read_tile_at_mpp


class TileEmbedder:
    """Embeds level-0 boxes of a slide at a µm/px.

    Parameters
    ----------
    encoder : EncoderBackend
    engine : HeatmapEngine, optional
        Used through ``engine.embed_tiles(slide, mpp, boxes)`` when given.
    batch_size : int
        Tiles per ``encode_tiles`` call.
    max_items : int
        Embeddings kept in the local cache.
    """

    def __init__(self, encoder, engine=None, batch_size: int = 32, max_items: int = 100_000):
        self.encoder, self.engine = encoder, engine
        self.batch_size, self.max_items = max(1, int(batch_size)), int(max_items)
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def embed(
        self,
        slide,
        target_mpp: float,
        boxes: np.ndarray,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """``(N, D)`` float32 embeddings of ``boxes`` ``(N, 4)`` = (x0, y0, x1, y1) level-0 px.

        ``progress(n)`` is called with the number of tiles finished after each batch.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if self.engine is not None:
            out = np.asarray(self.engine.embed_tiles(slide, target_mpp, boxes), np.float32)
            if progress:
                progress(len(boxes))
            return out
        keys = [self._key(slide, target_mpp, b) for b in boxes]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if progress and len(missing) < len(keys):
            progress(len(keys) - len(missing))
        for start in range(0, len(missing), self.batch_size):
            idx = missing[start : start + self.batch_size]
            tiles = np.stack([self._read(slide, target_mpp, boxes[i]) for i in idx])
            emb = np.asarray(self.encoder.encode_tiles(tiles), np.float32)
            for i, e in zip(idx, emb):
                self._put(keys[i], e)
            if progress:
                progress(len(idx))
        return np.stack([self._cache[k] for k in keys]).astype(np.float32)

    def _key(self, slide, mpp: float, box: np.ndarray) -> tuple:
        return (str(slide.path), self.encoder.model_id, round(float(mpp), 5), *np.round(box, 2))

    def _read(self, slide, mpp: float, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = box
        return read_tile_at_mpp(slide, (x0, y0, x1 - x0, y1 - y0), mpp, self.encoder.input_size)

    def _put(self, key: tuple, emb: np.ndarray) -> None:
        self._cache[key] = emb
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_items:
            self._cache.popitem(last=False)
