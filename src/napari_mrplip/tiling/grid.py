"""Tile grids over a slide at a µm/px or a pyramid level, for the heatmap engine.

A :class:`TileGrid` is a *global* lattice over the whole slide: tile ``(r, c)`` covers
level-0 ``[c*step, c*step + tile) x [r*step, r*step + tile)``. Because the lattice never
depends on the viewport, the same tile gets the same index whatever region asks for it,
which is what makes the embedding cache hit when the user pans.

Overlap is expressed as ``k`` tiles per footprint: ``step = tile / k`` (overlap 0 -> k=1,
0.5 -> k=2, 0.75 -> k=4). Score grids have one *cell* per step; tile ``(r, c)`` covers cells
``r..r+k-1`` x ``c..c+k-1``, so overlap averaging is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from napari_mrplip.io.slide import Slide

from .geometry import level_for_box

#: Largest overlap accepted: 8 tiles per footprint side (64 tiles cover each cell).
MAX_OVERLAP = 0.875

#: Default tile budget: lattice positions (rows x cols) one request may plan. A 100,000 px
#: square slide at 0.5 µm/px with overlap 0.75 is ~3.2 M; past it a run must say
#: ``max_tiles`` (CLI ``--max-tiles``) explicitly.
MAX_TILES = 4_000_000


class TileBudgetError(ValueError):
    """A lattice would hold more tiles than the budget allows; nothing was allocated."""


def overlap_to_k(overlap: float) -> int:
    """Tiles per footprint for an overlap fraction (rounded to ``1 - 1/k``)."""
    if not (isinstance(overlap, int | float) and 0.0 <= overlap <= MAX_OVERLAP):
        raise ValueError(
            f"overlap must be between 0 and {MAX_OVERLAP} (0, 0.5, 0.75, 0.875), got {overlap}"
        )
    return max(1, int(round(1.0 / (1.0 - overlap))))


def check_tile_budget(grid: TileGrid, max_tiles: int | None = None, what: str = "") -> None:
    """Refuse a lattice with more than ``max_tiles`` positions, before anything is allocated.

    Raises
    ------
    TileBudgetError
        Naming the count, the budget and what to change.
    """
    budget = MAX_TILES if max_tiles is None else int(max_tiles)
    rows, cols = grid.shape
    n = rows * cols
    if n > budget:
        raise TileBudgetError(
            f"{what + ': ' if what else ''}this would plan {n:,} tiles ({rows:,} x {cols:,}), "
            f"over the budget of {budget:,}. Score at a coarser µm/px or with less overlap, "
            "or pass --max-tiles N to allow more"
        )


@dataclass(frozen=True)
class TileGrid:
    """A lattice of square tiles over a slide.

    Attributes
    ----------
    width_level0, height_level0 : int
        Slide size in level-0 px.
    tile_level0 : float
        Tile footprint side in level-0 px.
    k : int
        Tiles per footprint along each axis (overlap factor); ``step = tile / k``.
    read_level : int
        Pyramid level tiles are read from.
    read_px : int
        Tile side in pixels at ``read_level``.
    out_px : int
        Tile side handed to the model (its input size).
    mpp : float or None
        µm/px the model sees; ``None`` for level-based grids on slides without mpp.
    """

    width_level0: int
    height_level0: int
    tile_level0: float
    k: int
    read_level: int
    read_px: int
    out_px: int
    mpp: float | None = None

    @property
    def step_level0(self) -> float:
        return self.tile_level0 / self.k

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles (and of score cells) over the whole slide."""
        s = self.step_level0
        return max(1, math.ceil(self.height_level0 / s)), max(1, math.ceil(self.width_level0 / s))

    @property
    def key(self) -> str:
        """Stable string naming the lattice (for cache keys).

        ``_in``: edge tiles are read inside the slide (:meth:`read_origins`); caches written
        before that held padded edge tiles and are not reused.
        """
        scale = f"mpp{self.mpp:.4f}" if self.mpp is not None else f"lvl{self.read_level}"
        return f"{scale}_t{self.tile_level0:.2f}_k{self.k}_px{self.out_px}_in"

    def origins(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer level-0 (x, y) of tile top-left corners for index arrays."""
        s = self.step_level0
        return np.round(np.asarray(cols) * s).astype(np.int64), np.round(
            np.asarray(rows) * s
        ).astype(np.int64)

    def read_origins(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 (x, y) to *read* each tile from: its origin, moved inside the slide.

        The lattice's last row and column reach past the slide's edge; reading them there
        would show the model white padding the scanner never saw. Their window is shifted
        back to end at the edge (same size), so every encoded pixel is slide.
        """
        x, y = self.origins(rows, cols)
        tile = int(round(self.tile_level0))
        x_max, y_max = max(0, self.width_level0 - tile), max(0, self.height_level0 - tile)
        return np.minimum(x, x_max), np.minimum(y, y_max)

    def read_boxes(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``(N, 4)`` level-0 boxes (x0, y0, x1, y1) read for tiles ``(rows, cols)``.

        Corners from :meth:`read_origins` (edge tiles moved inside the slide), side
        ``tile_level0``: what ``embed.tiles.read_tiles`` turns into ``out_px`` tiles.
        """
        x, y = self.read_origins(rows, cols)
        x, y = x.astype(np.float64), y.astype(np.float64)
        return np.stack([x, y, x + self.tile_level0, y + self.tile_level0], axis=1).reshape(-1, 4)

    def cells_for_box(self, box_level0) -> tuple[int, int, int, int]:
        """Cell range ``(i0, i1, j0, j1)`` (half-open) covering a level-0 box, clipped."""
        x0, y0, x1, y1 = box_level0
        s = self.step_level0
        rows, cols = self.shape
        i0, i1 = max(0, math.floor(y0 / s)), min(rows, math.ceil(y1 / s))
        j0, j1 = max(0, math.floor(x0 / s)), min(cols, math.ceil(x1 / s))
        if i1 <= i0 or j1 <= j0:
            raise ValueError(f"region {tuple(box_level0)} does not intersect the slide")
        return i0, i1, j0, j1

    def tiles_for_cells(self, i0: int, i1: int, j0: int, j1: int) -> tuple[int, int, int, int]:
        """Tile range ``(r0, r1, c0, c1)`` of every tile covering any cell in the range."""
        return max(0, i0 - self.k + 1), i1, max(0, j0 - self.k + 1), j1

    def scaled(self, factor: float, slide: Slide) -> TileGrid | None:
        """The same lattice at ``factor`` x the µm/px (2 = parent, 0.5 = children).

        Returns ``None`` when the slide cannot supply that resolution (children finer than
        level 0) or the grid has no physical scale.
        """
        tile = self.tile_level0 * factor
        if tile < self.out_px * 0.99 or self.mpp is None:
            return None
        level, read_px = _read_plan(slide, tile, self.out_px)
        return replace(
            self, tile_level0=tile, read_level=level, read_px=read_px, mpp=self.mpp * factor
        )


def _read_plan(slide: Slide, tile_level0: float, out_px: int) -> tuple[int, int]:
    """Level a tile is read from and its side there, by the one level rule
    (:func:`~napari_mrplip.tiling.geometry.level_for_box`, as ``embed.tiles`` reads it)."""
    level = level_for_box(slide, tile_level0, tile_level0, out_px)
    return level, max(1, int(round(tile_level0 / slide.downsamples[level])))


def make_grid(
    slide: Slide,
    out_px: int,
    *,
    target_mpp: float | None = None,
    level: int | None = None,
    overlap: float = 0.0,
) -> TileGrid:
    """Lattice whose tiles show the model ``out_px`` px at ``target_mpp`` (or at ``level``).

    Parameters
    ----------
    slide : Slide
        The slide (its ``mpp`` is needed for ``target_mpp``).
    out_px : int
        Model input size.
    target_mpp : float, optional
        µm/px to score at. Needs ``slide.mpp``.
    level : int, optional
        Pyramid level to score at when ``target_mpp`` is None (level-based: no physical scale).
    overlap : float
        Fraction of a tile its neighbours share, rounded to ``1 - 1/k``.
    """
    from napari_mrplip.io.errors import MissingMppError
    from napari_mrplip.io.stated_mpp import HOW_TO_STATE

    if out_px <= 0:
        raise ValueError(f"model input size must be positive, got {out_px}")
    k = overlap_to_k(overlap)
    w, h = slide.dimensions
    if target_mpp is not None:
        if target_mpp <= 0:
            raise ValueError(f"target µm/px must be positive, got {target_mpp}")
        if slide.mpp is None:
            raise MissingMppError(
                f"{slide.path}: the slide has no µm/px in its metadata, so it cannot be scored "
                f"at {target_mpp} µm/px; {HOW_TO_STATE}, or score at a pyramid level instead."
            )
        tile = out_px * target_mpp / slide.mpp
        read_level, read_px = _read_plan(slide, tile, out_px)
        return TileGrid(w, h, tile, k, read_level, read_px, out_px, float(target_mpp))
    level = 0 if level is None else int(level)
    if not 0 <= level < slide.n_levels:
        raise ValueError(f"{slide.path}: level {level} does not exist (0..{slide.n_levels - 1})")
    tile = out_px * slide.downsamples[level]
    mpp = None if slide.mpp is None else slide.mpp * slide.downsamples[level]
    read_level, read_px = _read_plan(slide, tile, out_px)
    return TileGrid(w, h, tile, k, read_level, read_px, out_px, mpp)


def tissue_tiles(
    grid: TileGrid, rows: np.ndarray, cols: np.ndarray, mask: np.ndarray, min_fraction=0.05
) -> np.ndarray:
    """Which tiles hold tissue, from a thumbnail mask covering the whole slide.

    Uses a summed-area table, so it is O(tiles) whatever the tile size.

    Parameters
    ----------
    rows, cols : np.ndarray
        ``(N,)`` tile indices.
    mask : np.ndarray
        ``(Y, X)`` bool tissue mask of a thumbnail of the whole slide.

    Returns
    -------
    np.ndarray
        ``(N,)`` bool.
    """
    mh, mw = mask.shape
    fx, fy = mw / grid.width_level0, mh / grid.height_level0
    sat = np.zeros((mh + 1, mw + 1), np.int64)
    sat[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    x, y = grid.origins(rows, cols)
    x0 = np.clip(np.floor(x * fx).astype(int), 0, mw - 1)
    y0 = np.clip(np.floor(y * fy).astype(int), 0, mh - 1)
    x1 = np.clip(np.ceil((x + grid.tile_level0) * fx).astype(int), x0 + 1, mw)
    y1 = np.clip(np.ceil((y + grid.tile_level0) * fy).astype(int), y0 + 1, mh)
    inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return inside / ((x1 - x0) * (y1 - y0)) >= min_fraction


def parent_index(grid: TileGrid, parent: TileGrid, idx: np.ndarray, axis: int) -> np.ndarray:
    """Index along ``axis`` (0 rows, 1 cols) of the parent tile nearest each tile's centre."""
    centre = np.asarray(idx) * grid.step_level0 + grid.tile_level0 / 2
    p = np.floor((centre - parent.tile_level0 / 2) / parent.step_level0 + 0.5).astype(np.int64)
    return np.clip(p, 0, parent.shape[axis] - 1)


def child_range(
    grid: TileGrid, child: TileGrid, idx: np.ndarray, axis: int
) -> tuple[np.ndarray, int]:
    """First child index (along one axis) per tile, and the number of children per axis.

    Children are the child-grid tiles whose centres fall inside the tile's footprint.
    """
    lo = np.ceil(
        (np.asarray(idx) * grid.step_level0 - child.tile_level0 / 2) / child.step_level0 - 1e-9
    ).astype(np.int64)
    n = max(1, int(round(grid.tile_level0 / child.step_level0)))
    return np.clip(lo, 0, max(0, child.shape[axis] - n)), n
