"""Dense (sub-tile) maps: a ``g x g`` grid of scores per tile from its patch tokens.

One image pass gives both the tile embedding and the patch-token embeddings projected into
the shared space (``encoder.encode_tiles_dense``, MR-PLIP models only): the tile map and the
dense map of a run come from the same pass, so a dense map costs no extra image encoding.
Each token is scored like a tile (softmax over prompts + background, or cosine). With 16 px
patches a 112 px tile gives 7 x 7 scores, a 224 px tile 14 x 14.

Token features are cached per (slide, model, lattice, tile) in a bounded LRU
(:class:`TokenCache`): ``g * g * D * 2`` bytes per tile in float16 (mrplip-tiny: 49 x 256 x 2
= 25 KB; a ViT-B/16 at 224 px: 196 x 512 x 2 = 200 KB), 512 MB by default.

Dense runs use the request's lattice without overlap or multi-magnification fusion (both
average neighbours, which is what a dense map is meant to avoid).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from napari_mrplip.embed.tiles import read_tiles_checked

from .result import HeatmapRequest, HeatmapResult
from .scoring import scores_from_sims

#: Tiles in a run's first batch (a quick first partial map), as ``engine.FIRST_BATCH``.
FIRST_BATCH = 8
#: Default memory bound of the token-feature cache.
TOKEN_CACHE_BYTES = 512 * 2**20


class DenseUnavailableError(ValueError):
    """The model cannot give patch-token maps (not an MR-PLIP ViT)."""


class TokenCache:
    """Bounded LRU of (tile ``(D,)``, tokens ``(g, g, D)`` float16) features, keyed by tile."""

    def __init__(self, max_bytes: int = TOKEN_CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._items.get(key)
            if v is not None:
                self._items.move_to_end(key)
            return v

    def put(self, key, value: tuple[np.ndarray, np.ndarray]) -> None:
        size = sum(v.nbytes for v in value)
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self._bytes -= sum(v.nbytes for v in old)


def dense_grid_of(encoder) -> int:
    """Tokens per tile side, or raise :class:`DenseUnavailableError`."""
    g = int(encoder.dense_grid or 0)
    if g <= 0 or not hasattr(encoder, "encode_tiles_dense"):
        raise DenseUnavailableError(
            f"{getattr(encoder, 'model_id', encoder)}: dense (sub-tile) maps need an MR-PLIP "
            "model with a ViT image tower; use tile maps with this model"
        )
    return g


def run_dense(
    engine, slide, request: HeatmapRequest, cache: TokenCache | None = None, cancel=None
) -> Iterator[tuple[HeatmapResult, HeatmapResult]]:
    """Yield ``(dense, tile)`` results batch by batch over the request's region.

    ``dense.scores`` is ``(P, rows * g, cols * g)`` with step ``tile / g``; ``tile`` is the
    tile map of the same encoder pass (no fusion, no overlap). Unscored cells are NaN.
    """
    g = dense_grid_of(engine.encoder)
    cache = cache if cache is not None else TokenCache()
    entries = list(request.prompts) + list(request.background)
    text = engine.prompts.embed(entries)
    grid = engine.grid_for(slide, replace(request, overlap=0.0))
    w0, h0 = slide.dimensions
    i0, i1, j0, j1 = grid.cells_for_box(request.region_level0 or (0, 0, w0, h0))
    keep = (
        engine._tissue(slide, grid)[i0:i1, j0:j1]
        if request.tissue_only
        else np.ones((i1 - i0, j1 - j0), bool)
    )  # fmt: skip
    run = _DenseRun(engine, slide, request, grid, (i0, j0), keep.shape, g, text)
    rr, cc = np.nonzero(keep)
    prefix = (engine.embedder.grid_key(slide, grid), g)
    todo = []
    for r, c in zip(rr, cc):
        hit = cache.get((*prefix, int(r + i0), int(c + j0)))
        if hit is None:
            todo.append((r, c))
        else:
            run.place(np.array([r]), np.array([c]), hit[0][None], hit[1][None])
    if not todo:
        yield run.results()
        return
    step = max(1, int(engine.batch_size))
    starts = [0, *range(min(FIRST_BATCH, step), len(todo), step)]  # a small first batch
    for a, b in zip(starts, [*starts[1:], len(todo)]):
        if cancel is not None and cancel.is_set():
            return
        r, c = (np.array(v) for v in zip(*todo[a:b]))
        emb, dense = run.encode(r + i0, c + j0)
        for n in range(len(r)):
            if emb[n] is not None:
                cache.put((*prefix, int(r[n] + i0), int(c[n] + j0)), (emb[n], dense[n]))
        ok = np.array([e is not None for e in emb])
        if ok.any():
            run.place(r[ok], c[ok], np.stack(emb[ok]), np.stack(dense[ok]))
        yield run.results()


class _DenseRun:
    """Score grids of one dense request, filled tile by tile."""

    def __init__(self, engine, slide, request, grid, origin, shape, g, text):
        self.engine, self.slide, self.request, self.grid, self.g = engine, slide, request, grid, g
        self.i0, self.j0 = origin
        self.text = text
        self.n = len(request.prompts)
        self.scale = float(getattr(engine.encoder, "logit_scale", 100.0))
        rows, cols = shape
        self.tile = np.full((self.n, rows, cols), np.nan, np.float32)
        self.dense = np.full((self.n, rows * g, cols * g), np.nan, np.float32)
        self.total = rows * cols
        self.done = 0

    def encode(self, rows, cols):
        """Read and encode tiles; entries are None for tiles that failed to decode."""
        boxes = self.grid.read_boxes(rows, cols)
        tiles, errors = read_tiles_checked(self.slide, boxes, self.grid.out_px)
        bad = {i for i, _ in errors}
        good = [i for i in range(len(rows)) if i not in bad]
        emb = np.empty(len(rows), dtype=object)
        dense = np.empty(len(rows), dtype=object)
        if good:
            e, d = self.engine.encoder.encode_tiles_dense(tiles[good])
            for k, i in enumerate(good):
                emb[i], dense[i] = e[k], d[k]
        return emb, dense

    def place(self, rr, cc, emb, dense) -> None:
        """Score tiles ``(rr, cc)`` (local indices) from their tile and token embeddings."""
        mode = self.request.mode
        self.tile[:, rr, cc] = scores_from_sims(emb @ self.text.T, self.n, mode, self.scale, 1).T
        sims = dense.astype(np.float32) @ self.text.T  # (N, g, g, P + B)
        tok = scores_from_sims(sims, self.n, mode, self.scale, axis=-1)  # (N, g, g, P)
        g = self.g
        shift_x, shift_y = self._edge_shift(rr + self.i0, cc + self.j0)
        for k, (r, c) in enumerate(zip(rr, cc)):
            sy, sx = int(shift_y[k]), int(shift_x[k])
            block = np.moveaxis(tok[k, sy:, sx:], -1, 0)
            self.dense[:, r * g : r * g + g - sy, c * g : c * g + g - sx] = block
        self.done += len(rr)

    def _edge_shift(self, rows, cols):
        """Tokens by which edge tiles were read shifted back inside the slide."""
        x, y = self.grid.origins(rows, cols)
        xr, yr = self.grid.read_origins(rows, cols)
        tp = self.grid.tile_level0 / self.g
        return np.round((x - xr) / tp).astype(int), np.round((y - yr) / tp).astype(int)

    def results(self) -> tuple[HeatmapResult, HeatmapResult]:
        s = self.grid.step_level0
        origin = (self.j0 * s, self.i0 * s)
        meta = {
            **self.engine._meta(self.request, self.grid, None, {"self": None}),
            "slide_dims_level0": tuple(int(v) for v in self.slide.dimensions),
        }
        kw = dict(prompts=list(self.request.prompts), origin_level0=origin,
                  tile_level0=self.grid.tile_level0, done=self.done, total=self.total,
                  mpp=self.slide.mpp, slide_dims_level0=meta["slide_dims_level0"])  # fmt: skip
        dense = HeatmapResult(self.dense.copy(), step_level0=s / self.g,
                              meta={**meta, "dense": self.g}, **kw)  # fmt: skip
        tile = HeatmapResult(self.tile.copy(), step_level0=s, meta=dict(meta), **kw)
        return dense, tile


def compute_dense(engine, slide, request: HeatmapRequest, cache: TokenCache | None = None):
    """Run :func:`run_dense` to completion; returns the final ``(dense, tile)`` results."""
    last = None
    for last in run_dense(engine, slide, request, cache):  # noqa: B007 - keep the last one
        pass
    return last
