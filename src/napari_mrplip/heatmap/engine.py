"""The prompt-heatmap engine: tiles -> cached embeddings -> prompt scores -> placed grid.

``HeatmapEngine.run`` is a generator: it yields a :class:`HeatmapResult` after every batch
(cached tiles first, then new tiles nearest the region's centre first) and stops as soon as
a ``cancel`` event is set. Re-prompting over tiles already embedded encodes no image at
all: only the (cached) text embeddings and one matrix product run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np

from napari_mrplip.embed.cache import EmbeddingCache, GridKey, slide_id
from napari_mrplip.embed.embedder import SlideEmbedder
from napari_mrplip.embed.reader import fast_thumbnail
from napari_mrplip.io.slide import Slide
from napari_mrplip.models.prompts import PromptEmbedder, PromptError, validate_prompts
from napari_mrplip.tiling.grid import TileGrid, check_tile_budget, make_grid, tissue_tiles
from napari_mrplip.tiling.tissue import tissue_mask

from .passes import Pass, assemble, children_range, make_pass, parent_range
from .result import HeatmapRequest, HeatmapResult
from .scoring import DEFAULT_FUSION
from .similarity import PromptScorer, SimilarityCache

log = logging.getLogger(__name__)

#: µm/px scored at when a request names neither a µm/px nor a level (20x).
DEFAULT_MPP = 0.5
#: Size of the very first batch of a run (a quick first partial result).
FIRST_BATCH = 8
#: Thumbnail size for the tissue mask (about one thumbnail pixel per tile on a 100k px slide).
THUMB_PX = 640


class HeatmapEngine:
    """Scores free-text prompts over a slide's tiles with an encoder backend.

    Parameters
    ----------
    encoder : EncoderBackend
        Image/text encoder; optional capabilities (``is_mrplip``, ``native_mpp``, ...) come
        with defaults from ``models.protocol.EncoderBase``.
    cache : EmbeddingCache, optional
        Shared embedding cache (a private in-memory one by default).
    batch_size : int, optional
        Tiles per model call (device default: 256 on CUDA, 32 on CPU); halved on OOM.
    workers : int, optional
        Tile-decoding threads (default: the cores torch leaves free).
    embedder : SlideEmbedder, optional
        Embed through this one (e.g. the process-wide one of :mod:`napari_mrplip.embed.pool`)
        instead of a new one built from the arguments above.
    """

    def __init__(
        self,
        encoder,
        cache: EmbeddingCache | None = None,
        batch_size=None,
        workers=None,
        embedder: SlideEmbedder | None = None,
    ):
        self.encoder = encoder
        self.embedder = embedder or SlideEmbedder(encoder, cache, batch_size, workers)
        self.cache = self.embedder.cache
        self.prompts = PromptEmbedder(encoder)
        self.sims = SimilarityCache()
        self._masks: dict[str, np.ndarray] = {}
        self._lattice_tissue: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def batch_size(self) -> int:
        return self.embedder.batch_size

    @property
    def tiles_encoded(self) -> int:
        """Tiles the encoder has embedded through this engine's embedder."""
        return self.embedder.tiles_encoded

    # -- planning -----------------------------------------------------------------------
    def grid_for(self, slide: Slide, request: HeatmapRequest) -> TileGrid:
        """The lattice a request is scored on (µm/px if the slide has one, else a level)."""
        mpp = request.target_mpp
        if mpp is None and request.level is None and slide.mpp is not None:
            mpp = self.encoder.native_mpp or DEFAULT_MPP
        grid = make_grid(
            slide,
            int(self.encoder.input_size),
            target_mpp=mpp,
            level=request.level,
            overlap=request.overlap,
        )
        check_tile_budget(grid, request.max_tiles, str(slide.path))
        return grid

    def fusion_weights(self, request: HeatmapRequest) -> tuple[float, float, float] | None:
        """(parent, self, children) weights, or None when fusion is off."""
        if request.fusion is not None:
            w = tuple(float(v) for v in request.fusion)
            return None if w[0] == 0 and w[2] == 0 else w
        return DEFAULT_FUSION if self.encoder.is_mrplip else None

    def _key(self, slide: Slide, grid: TileGrid) -> GridKey:
        return self.embedder.grid_key(slide, grid)

    def prepare(self, slide: Slide) -> None:
        """Compute the slide's tissue mask now (e.g. when the slide is opened), not on the
        first request; safe to call from a background thread."""
        self._mask(slide)

    def _mask(self, slide: Slide) -> np.ndarray:
        sid = slide_id(slide)
        with self._lock:
            if sid not in self._masks:
                self._masks[sid] = tissue_mask(fast_thumbnail(slide, THUMB_PX))
            return self._masks[sid]

    def _tissue(self, slide: Slide, grid: TileGrid) -> np.ndarray:
        """``(rows, cols)`` tissue flags of a whole lattice, computed once per slide and grid."""
        k = (slide_id(slide), grid.key)
        if k not in self._lattice_tissue:
            mask = self._mask(slide)
            rr, cc = np.mgrid[0 : grid.shape[0], 0 : grid.shape[1]]
            flags = tissue_tiles(grid, rr.ravel(), cc.ravel(), mask).reshape(grid.shape)
            with self._lock:
                self._lattice_tissue[k] = flags
        return self._lattice_tissue[k]

    def _passes(self, slide, request, grid, tile_range, weights, scorer) -> dict[str, Pass]:
        tissue_of = (lambda g: self._tissue(slide, g)) if request.tissue_only else None
        key = self._key(slide, grid)
        own = make_pass("self", grid, key, tile_range, scorer, tissue_of)
        passes = {"self": own}
        if weights is None:
            return passes
        for name, factor, rng, w in (
            ("parent", 2.0, parent_range, weights[0]),
            ("children", 0.5, children_range, weights[2]),
        ):
            g = grid.scaled(factor, slide)
            if g is None or w == 0:
                continue
            key = self._key(slide, g)
            passes[name] = make_pass(name, g, key, rng(own, g), scorer, tissue_of)
        return passes

    # -- running ------------------------------------------------------------------------
    def run(
        self,
        slide: Slide,
        request: HeatmapRequest,
        cancel: threading.Event | None = None,
        progress: bool = True,
    ) -> Iterator[HeatmapResult]:
        """Yield progressive results, batch by batch; the last one has ``done == total``.

        ``progress=False`` yields only the final result (no map assembled per batch: a
        whole-slide run on a GPU spends its time encoding, not re-assembling partial maps).

        Tiles outside tissue (``request.tissue_only``) and tiles that fail to decode stay
        NaN; failures are counted in ``result.meta["failed_tiles"]`` and logged.

        Raises
        ------
        PromptError
            Empty prompt list, or softmax over fewer than two prompts in total.
        MissingMppError
            ``request.target_mpp`` set on a slide without µm/px.
        """
        validate_prompts(request.prompts, request.background)
        if request.mode == "softmax" and len(request.prompts) + len(request.background) < 2:
            raise PromptError(
                "softmax scoring needs at least two prompts in total: add another prompt or a "
                "background prompt (e.g. 'background'), or use mode='cosine'"
            )
        text = self.prompts.embed(list(request.prompts) + list(request.background))
        grid = self.grid_for(slide, request)
        w0, h0 = slide.dimensions
        region = request.region_level0 or (0, 0, w0, h0)
        cells = grid.cells_for_box(region)
        weights = self.fusion_weights(request)
        n = len(request.prompts)
        scale = float(self.encoder.logit_scale)
        entries = list(request.prompts) + list(request.background)
        scorer = PromptScorer(self.sims, self.cache, entries, text, n, request.mode, scale)
        tiles = grid.tiles_for_cells(*cells)
        passes = self._passes(slide, request, grid, tiles, weights, scorer)
        meta = self._meta(request, grid, weights, passes)
        meta["slide_dims_level0"] = (int(w0), int(h0))
        build = lambda: assemble(  # noqa: E731
            passes,
            cells,
            request.prompts,
            weights or (0, 1, 0),
            request.smooth_sigma,
            slide.mpp,
            meta,
        )
        centre = ((region[0] + region[2]) / 2, (region[1] + region[3]) / 2)
        todo = {name: p.todo(centre) for name, p in passes.items()}
        if not any(len(t[0]) for t in todo.values()):
            yield build()
            return
        first = FIRST_BATCH
        for name, p in passes.items():
            for _ in self._encode_pass(slide, p, *todo[name], scorer, cancel, first):
                first = 0
                if cancel is not None and cancel.is_set():
                    return
                if progress:
                    yield build()
        if not progress:
            yield build()

    def _encode_pass(self, slide, p: Pass, rr, cc, scorer, cancel, first=0) -> Iterator[int]:
        """Encode a pass's missing tiles batch by batch, scoring each batch."""
        rows, cols = rr + p.r0, cc + p.c0
        for batch in self.embedder.lattice_batches(slide, p.grid, rows, cols, first, cancel):
            r, c = rr[batch.index], cc[batch.index]
            p.failed[r[~batch.ok], c[~batch.ok]] = True
            if batch.ok.any():
                r, c = r[batch.ok], c[batch.ok]
                p.filled[r, c] = True
                p.scores[:, r, c] = scorer.new_tiles(p.key, r + p.r0, c + p.c0, batch.emb).T
            yield len(batch.index)

    def _meta(self, request, grid: TileGrid, weights, passes) -> dict:
        return {
            "grid": grid.key,
            "mpp_scored": grid.mpp,
            "level": grid.read_level,
            "overlap_k": grid.k,
            "mode": request.mode,
            "fusion": weights,
            "passes": list(passes),
            "background": list(request.background),
            "tissue_only": bool(request.tissue_only),
            "model_id": str(self.encoder.model_id),
        }

    def compute(self, slide: Slide, request: HeatmapRequest) -> HeatmapResult:
        """Run to completion and return the final result."""
        final = None
        for final in self.run(slide, request, progress=False):  # noqa: B007 - the last one
            pass
        return final


__all__ = ["HeatmapEngine"]
