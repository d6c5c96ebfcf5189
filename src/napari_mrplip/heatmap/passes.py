"""The per-magnification work of one heatmap request, and assembling its result.

A request is served by one to three *passes*: the tiles at the requested µm/px ("self"),
and for multi-magnification fusion the tiles at twice the µm/px ("parent", context) and
half ("children", detail). Each pass knows its tile range, which tiles hold tissue, which
embeddings the cache already has, and the prompt scores computed so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_mrplip.embed.cache import GridKey
from napari_mrplip.io.windows import BLOCK_WINDOWS
from napari_mrplip.tiling.grid import TileGrid, child_range, parent_index

from .result import HeatmapResult
from .scoring import block_mean, fuse, overlap_average, smooth


@dataclass
class Pass:
    """Tiles ``[r0, r1) x [c0, c1)`` of one lattice and their state.

    Attributes
    ----------
    filled, tissue, failed : np.ndarray
        ``(R, C)`` bool.
    scores : np.ndarray
        ``(P, R, C)`` float32, NaN where not scored.
    """

    name: str
    grid: TileGrid
    key: GridKey
    r0: int
    r1: int
    c0: int
    c1: int
    filled: np.ndarray
    tissue: np.ndarray
    scores: np.ndarray
    failed: np.ndarray = field(default=None)

    def todo(self, centre_level0: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Local (row, col) of tissue tiles still to encode, nearest the centre first.

        Tiles go block by block (``BLOCK_WINDOWS`` cells a side, nearest block first, then
        nearest tile in it), so that a batch holds whole blocks of neighbours, which the tile
        reader decodes together (each stored tile once).
        """
        rr, cc = np.nonzero(self.tissue & ~self.filled)
        gr, gc = rr + self.r0, cc + self.c0
        half = self.grid.tile_level0 / 2
        x, y = self.grid.origins(gr, cc + self.c0)
        d = (x + half - centre_level0[0]) ** 2 + (y + half - centre_level0[1]) ** 2
        b = BLOCK_WINDOWS
        bx, by = self.grid.origins((gr // b) * b, (gc // b) * b)
        span = b * self.grid.step_level0 / 2
        db = (bx + span - centre_level0[0]) ** 2 + (by + span - centre_level0[1]) ** 2
        order = np.lexsort((d, gc // b, gr // b, db))
        return rr[order], cc[order]

    @property
    def total(self) -> int:
        return int(self.tissue.sum())

    @property
    def done(self) -> int:
        return int((self.tissue & (self.filled | self.failed)).sum())


def make_pass(
    name: str,
    grid: TileGrid,
    key: GridKey,
    tile_range: tuple[int, int, int, int],
    scorer,
    tissue_of=None,
) -> Pass:
    """Score what the cache holds for a tile range.

    ``scorer.region(key, tiles)`` gives the cached tiles' scores; ``tissue_of(grid)``
    returns the lattice's ``(rows, cols)`` tissue mask (None = every tile counts).
    """
    r0, r1, c0, c1 = tile_range
    scores, filled = scorer.region(key, tile_range)
    if tissue_of is None:
        tissue = np.ones(filled.shape, bool)
    else:
        tissue = tissue_of(grid)[r0:r1, c0:c1]
        scores[:, ~tissue] = np.nan
    return Pass(name, grid, key, r0, r1, c0, c1, filled, tissue, scores, np.zeros_like(filled))


def parent_range(own: Pass, parent: TileGrid) -> tuple[int, int, int, int]:
    """Parent tile range covering every tile of ``own``."""
    pr = parent_index(own.grid, parent, np.array([own.r0, own.r1 - 1]), 0)
    pc = parent_index(own.grid, parent, np.array([own.c0, own.c1 - 1]), 1)
    return int(pr[0]), int(pr[1]) + 1, int(pc[0]), int(pc[1]) + 1


def children_range(own: Pass, child: TileGrid) -> tuple[int, int, int, int]:
    """Child tile range covering the children of every tile of ``own``."""
    lr, n = child_range(own.grid, child, np.array([own.r0, own.r1 - 1]), 0)
    lc, _ = child_range(own.grid, child, np.array([own.c0, own.c1 - 1]), 1)
    rows, cols = child.shape
    return int(lr[0]), min(rows, int(lr[1]) + n), int(lc[0]), min(cols, int(lc[1]) + n)


def fused_tile_scores(own: Pass, parent: Pass | None, child: Pass | None, weights) -> np.ndarray:
    """``(P, R, C)`` tile scores of ``own`` fused with its parents' and children's."""
    if parent is None and child is None:
        return own.scores
    rows, cols = np.arange(own.r0, own.r1), np.arange(own.c0, own.c1)
    par = kid = None
    if parent is not None:
        pr = parent_index(own.grid, parent.grid, rows, 0) - parent.r0
        pc = parent_index(own.grid, parent.grid, cols, 1) - parent.c0
        par = parent.scores[:, pr][:, :, pc]
    if child is not None:
        lr, n = child_range(own.grid, child.grid, rows, 0)
        lc, _ = child_range(own.grid, child.grid, cols, 1)
        kid = block_mean(child.scores, lr - child.r0, lc - child.c0, n)
    return fuse(own.scores, par, kid, weights)


def assemble(
    passes: dict[str, Pass],
    cells: tuple[int, int, int, int],
    prompts: list[str],
    weights,
    sigma: float,
    mpp: float | None,
    meta: dict,
) -> HeatmapResult:
    """Build the :class:`HeatmapResult` for the cell range from the passes' current scores."""
    own = passes["self"]
    tiles = fused_tile_scores(own, passes.get("parent"), passes.get("children"), weights)
    scores = overlap_average(tiles, own.grid.k, (own.r0, own.c0), cells)
    scores = smooth(scores, sigma)
    s = own.grid.step_level0
    i0, _, j0, _ = cells
    done = sum(p.done for p in passes.values())
    total = sum(p.total for p in passes.values())
    failed = sum(int(p.failed.sum()) for p in passes.values())
    return HeatmapResult(
        scores=scores,
        prompts=list(prompts),
        origin_level0=(j0 * s, i0 * s),
        step_level0=s,
        tile_level0=own.grid.tile_level0,
        done=done,
        total=total,
        mpp=mpp,
        meta={**meta, "failed_tiles": failed},
        slide_dims_level0=meta.get("slide_dims_level0"),
    )
