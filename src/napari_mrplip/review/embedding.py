"""Tile embeddings for annotation scoring, through the heatmap engine's cached ``embed_tiles``.

Sharing the engine (and so its :class:`~napari_mrplip.heatmap.cache.EmbeddingCache`) with
the heatmap panel means tiles the heatmap already embedded cost nothing here, and
re-scoring after a relabel encodes no image at all.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class TileEmbedder:
    """Embeds level-0 boxes of a slide at a µm/px, in chunks (for progress reports).

    Parameters
    ----------
    encoder : EncoderBackend
    engine : HeatmapEngine, optional
        The engine to embed through; one is made for ``encoder`` when omitted.
    chunk : int
        Boxes per ``engine.embed_tiles`` call (progress granularity).
    """

    def __init__(self, encoder, engine=None, chunk: int = 64):
        if engine is None:
            from napari_mrplip.heatmap.engine import HeatmapEngine

            engine = HeatmapEngine(encoder)
        self.encoder, self.engine, self.chunk = encoder, engine, max(1, int(chunk))

    def embed(
        self,
        slide,
        target_mpp: float,
        boxes: np.ndarray,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """``(N, D)`` float32 embeddings of ``boxes`` ``(N, 4)`` = (x0, y0, x1, y1) level-0 px.

        ``progress(n)`` is called with the number of boxes finished after each chunk.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = []
        for start in range(0, len(boxes), self.chunk):
            part = boxes[start : start + self.chunk]
            out.append(
                np.asarray(self.engine.embed_tiles(slide, float(target_mpp), part), np.float32)
            )
            if progress:
                progress(len(part))
        if not out:
            return np.zeros((0, int(self.encoder.embed_dim)), np.float32)
        return np.concatenate(out)
