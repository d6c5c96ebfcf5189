"""Which tiles represent an annotation: the slide's tile lattice clipped to the polygon.

Tiles come from the same global lattice the heatmap engine uses (origin at the slide's
top-left, step = tile footprint), so an annotation reuses embeddings the heatmap already
computed. A tile counts when at least ``min_coverage`` of it lies inside the polygon; a
polygon too small (or too thin) for any such tile gets one tile centred on a point inside it.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

#: Candidate tiles examined per annotation at most (the lattice is strided beyond this).
MAX_CANDIDATES = 250_000


def polygon_tiles(
    geometry: BaseGeometry,
    tile_level0: float,
    slide_size: tuple[int, int],
    *,
    min_coverage: float = 0.5,
    max_tiles: int = 64,
) -> np.ndarray:
    """Tile boxes covering a polygon.

    Parameters
    ----------
    geometry : Polygon or MultiPolygon
        Level-0 px.
    tile_level0 : float
        Tile side in level-0 px (lattice step; no overlap).
    slide_size : (int, int)
        Level-0 (width, height); tiles must start inside the slide.
    min_coverage : float
        Fraction of a tile's area that must fall inside the polygon.
    max_tiles : int
        At most this many tiles, spread evenly over the polygon (row-major subsample).

    Returns
    -------
    np.ndarray
        ``(N, 4)`` float64 boxes ``(x0, y0, x1, y1)`` in level-0 px; ``N == 0`` only when
        the polygon lies outside the slide.
    """
    if tile_level0 <= 0:
        raise ValueError(f"tile size must be positive, got {tile_level0}")
    w, h = slide_size
    clipped = geometry.intersection(shapely.box(0, 0, w, h))
    if clipped.is_empty or clipped.area <= 0:
        return np.zeros((0, 4))
    boxes = _lattice_boxes(clipped, tile_level0)
    if len(boxes):
        cover = shapely.area(shapely.intersection(shapely.box(*boxes.T), clipped))
        boxes = boxes[cover >= min_coverage * tile_level0**2]
    if not len(boxes):
        return _centred_tile(clipped, tile_level0)
    if len(boxes) > max_tiles:
        boxes = boxes[np.linspace(0, len(boxes) - 1, max_tiles).round().astype(int)]
    return boxes


def _lattice_boxes(geom: BaseGeometry, tile: float) -> np.ndarray:
    """Lattice tiles intersecting the bounds of ``geom`` (strided if there are too many)."""
    x0, y0, x1, y1 = geom.bounds
    c0, c1 = math.floor(x0 / tile), math.ceil(x1 / tile)
    r0, r1 = math.floor(y0 / tile), math.ceil(y1 / tile)
    n = (c1 - c0) * (r1 - r0)
    stride = max(1, math.ceil(math.sqrt(n / MAX_CANDIDATES)))
    cols = np.arange(c0, c1, stride)
    rows = np.arange(r0, r1, stride)
    cc, rr = np.meshgrid(cols, rows)
    xs, ys = cc.ravel() * tile, rr.ravel() * tile
    return np.stack([xs, ys, xs + tile, ys + tile], axis=1).astype(np.float64)


def _centred_tile(geom: BaseGeometry, tile: float) -> np.ndarray:
    """One tile centred on the centroid (or a point surely inside a concave polygon)."""
    pt = geom.centroid
    if not geom.contains(pt):
        pt = geom.representative_point()
    half = tile / 2
    return np.array([[pt.x - half, pt.y - half, pt.x + half, pt.y + half]])
