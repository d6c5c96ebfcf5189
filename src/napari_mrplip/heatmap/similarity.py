"""Cosine-similarity grids per (lattice, prompt), so a new prompt costs one column.

Softmax scoring needs every prompt's similarity to every tile. Those of prompts already
seen are kept here as lattice-sized float32 grids (NaN = not computed yet), so typing one
more prompt over 100,000 cached tiles computes one similarity per tile, not ten, and the
rest is an element-wise softmax.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from napari_mrplip.embed.cache import EmbeddingCache, GridKey
from napari_mrplip.heatmap.scoring import scores_from_sims


class SimilarityCache:
    """LRU of ``(rows, cols)`` similarity grids keyed by (lattice, prompt text).

    Parameters
    ----------
    max_grids : int
        Grids kept (one per lattice and prompt entry).
    """

    def __init__(self, max_grids: int = 256):
        self.max_grids = max(1, int(max_grids))
        self._grids: OrderedDict[tuple[GridKey, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _grid(self, key: GridKey, entry: str) -> np.ndarray:
        k = (key, entry)
        g = self._grids.get(k)
        if g is None:
            g = np.full(key.shape, np.nan, np.float32)
            self._grids[k] = g
            while len(self._grids) > self.max_grids:
                self._grids.popitem(last=False)
        else:
            self._grids.move_to_end(k)
        return g

    def region(
        self,
        key: GridKey,
        entries: list[str],
        text: np.ndarray,
        tiles: tuple[int, int, int, int],
        cache: EmbeddingCache,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Similarities of every entry to the cached tiles of a tile range.

        Parameters
        ----------
        entries : list of str
            Prompt entries (E of them), the keys of the grids.
        text : np.ndarray
            ``(E, D)`` their L2-normalised vectors.
        tiles : (r0, r1, c0, c1)

        Returns
        -------
        sims : np.ndarray
            ``(E, R, C)`` float32, NaN where the tile is not embedded.
        filled : np.ndarray
            ``(R, C)`` bool, tiles whose similarities to every entry are known.
        """
        r0, r1, c0, c1 = tiles
        with self._lock:
            grids = [self._grid(key, e) for e in entries]
            sims = np.stack([g[r0:r1, c0:c1] for g in grids])
        cached = cache.filled_mask(key, r0, r1, c0, c1)
        # stale: an entry lacks the similarity of a tile the cache has (never-embedded
        # tiles, e.g. glass, stay NaN without making the entry stale)
        stale = [i for i in range(len(entries)) if (np.isnan(sims[i]) & cached).any()]
        if stale:
            t = text[stale]
            fresh, _ = cache.map_filled(key, r0, r1, c0, c1, lambda e: e @ t.T, len(stale))
            with self._lock:
                for j, i in enumerate(stale):
                    sims[i] = np.where(cached, fresh[j], sims[i])
                    grids[i][r0:r1, c0:c1] = sims[i]
        # a tile is scored when every entry's similarity is known (also after its embedding
        # left the LRU)
        filled = ~np.isnan(sims).any(axis=0)
        return sims, filled

    def store(self, key: GridKey, entries: list[str], rows, cols, sims: np.ndarray) -> None:
        """Record ``sims`` ``(N, E)`` of newly embedded tiles at lattice ``rows``, ``cols``."""
        with self._lock:
            for i, e in enumerate(entries):
                self._grid(key, e)[rows, cols] = sims[:, i]


class PromptScorer:
    """Scores of one request's prompts: from cached similarities, or for new embeddings.

    Parameters
    ----------
    entries : list of str
        Prompts then background prompts (E entries).
    text : np.ndarray
        ``(E, D)`` their vectors.
    n_prompts : int
        P, the returned channels.
    """

    def __init__(self, sims: SimilarityCache, cache: EmbeddingCache, entries, text, n_prompts,
                 mode: str, logit_scale: float):  # fmt: skip
        self.sims, self.cache = sims, cache
        self.entries, self.text, self.n = list(entries), np.asarray(text, np.float32), n_prompts
        self.mode, self.scale = mode, float(logit_scale)

    def region(self, key: GridKey, tiles) -> tuple[np.ndarray, np.ndarray]:
        """``(P, R, C)`` scores of the cached tiles in ``tiles`` and the ``(R, C)`` filled mask."""
        sims, filled = self.sims.region(key, self.entries, self.text, tiles, self.cache)
        return scores_from_sims(sims, self.n, self.mode, self.scale, axis=0), filled

    def new_tiles(self, key: GridKey, rows, cols, emb: np.ndarray) -> np.ndarray:
        """``(N, P)`` scores of freshly embedded tiles (their similarities are recorded)."""
        sims = np.asarray(emb, np.float32) @ self.text.T
        self.sims.store(key, self.entries, rows, cols, sims)
        return scores_from_sims(sims, self.n, self.mode, self.scale, axis=1)
