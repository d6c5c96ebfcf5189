"""What a heatmap overlay shows, decided without napari: value range, legend text, the
fade-to-transparent alpha ramp, outlines and the ranked list of top regions.

The panel (``_napari/heatmap_display.py``) only turns these into layer properties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .export import mask_polygons, scored_above
from .result import VALUE_MEANING

#: Fraction of the displayed range over which the faded colormap goes from transparent to
#: opaque (values at the top of the range are fully opaque, low ones barely visible).
FADE_KNEE = 0.6


#: Narrowest span of the probability colour scale above its low end (0.1 = 10 points).
MIN_PROB_SPAN = 0.1


def value_range(scores: np.ndarray, mode: str) -> tuple[float, float]:
    """(low, high) of the colour scale (the colour bar shows it).

    Probabilities: low 0, high the 99th percentile of the scored values (at least
    ``MIN_PROB_SPAN``, at most 1): a map whose values all sit near chance (0.3-0.45 with three
    prompts) still uses the whole colormap instead of fading out. Cosine: the 1st-99th
    percentile (cosines of one model sit in a narrow band).
    """
    vals = np.asarray(scores, np.float32)
    vals = vals[~np.isnan(vals)]
    if mode != "cosine":
        hi = float(np.percentile(vals, 99)) if vals.size else 1.0
        return 0.0, float(min(1.0, max(hi, MIN_PROB_SPAN)))
    if vals.size == 0:
        return -1.0, 1.0
    lo, hi = (float(v) for v in np.percentile(vals, [1, 99]))
    return (lo, hi) if hi > lo else (lo - 1e-3, lo + 1e-3)


def legend_text(prompt: str, mode: str, low: float, high: float, threshold: float) -> str:
    """One line: prompt, what a value means, the colour range and the threshold."""
    meaning = VALUE_MEANING.get(mode, "score").split(",")[0]
    return f"{prompt}: {meaning}; colours {low:.2f} → {high:.2f}; hidden below {threshold:.2f}"


def alpha_ramp(n: int = 256, fade: bool = True, knee: float = FADE_KNEE) -> np.ndarray:
    """``(n,)`` alpha over the colour scale: 0 at the bottom (at or below the threshold is
    transparent), then linear to 1 at ``knee`` of the range (``fade``) or at once."""
    x = np.linspace(0.0, 1.0, n)
    alpha = np.clip(x / knee, 0.0, 1.0) if fade else np.ones(n)
    alpha[0] = 0.0
    return alpha.astype(np.float32)


@dataclass(frozen=True)
class Region:
    """A connected group of cells at or above the threshold.

    Attributes
    ----------
    peak, mean : float
        Highest and mean score of its cells.
    cells : int
        Number of grid cells.
    centre_level0 : (float, float)
        (x, y) level-0 px of its highest cell's centre (where to point the view).
    box_level0 : (float, float, float, float)
        (x0, y0, x1, y1) level-0 px.
    """

    peak: float
    mean: float
    cells: int
    centre_level0: tuple[float, float]
    box_level0: tuple[float, float, float, float]


def top_regions(
    grid: np.ndarray, origin_level0, step_level0: float, threshold: float, n: int = 10
) -> list[Region]:
    """The ``n`` regions (8-connected cells >= ``threshold``) with the highest peak score.

    Parameters
    ----------
    grid : np.ndarray
        ``(rows, cols)`` scores, NaN where unscored (never part of a region).
    """
    from scipy import ndimage

    mask = scored_above(grid, threshold)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return []
    idx = np.arange(1, count + 1)
    vals = np.where(mask, grid, -np.inf)
    peaks = ndimage.maximum(vals, labels, idx)
    where = ndimage.maximum_position(vals, labels, idx)
    means = ndimage.mean(np.nan_to_num(grid), labels, idx)
    sizes = ndimage.sum(mask, labels, idx)
    slices = ndimage.find_objects(labels)
    x0, y0 = origin_level0
    s = float(step_level0)
    out = []
    for i in np.argsort(-np.asarray(peaks), kind="stable")[:n]:
        r, c = where[i]
        sl = slices[i]
        out.append(Region(
            float(peaks[i]), float(means[i]), int(sizes[i]),
            (x0 + (c + 0.5) * s, y0 + (r + 0.5) * s),
            (x0 + sl[1].start * s, y0 + sl[0].start * s, x0 + sl[1].stop * s, y0 + sl[0].stop * s),
        ))  # fmt: skip
    return out


def outline_rings(
    grid: np.ndarray, origin_level0, step_level0: float, threshold: float, dims_level0=None
) -> list[np.ndarray]:
    """Boundaries of the cells >= ``threshold``: ``(K, 2)`` (x, y) level-0 rings (exteriors
    and holes), clipped to the slide when its size is given."""
    from shapely import box

    polys = mask_polygons(scored_above(grid, threshold), origin_level0, step_level0)
    rings = []
    clip = None if dims_level0 is None else box(0, 0, *dims_level0)
    for poly in polys:
        if clip is not None:
            poly = poly.intersection(clip)
        for part in getattr(poly, "geoms", [poly]):
            if part.is_empty or part.geom_type != "Polygon":
                continue
            rings.append(np.asarray(part.exterior.coords))
            rings += [np.asarray(h.coords) for h in part.interiors]
    return rings


#: Longest side of a displayed raster (cells are subdivided up to this, at most 8x).
DISPLAY_MAX_SIDE = 2048


def display_raster(
    scores: np.ndarray, origin_level0, step_level0: float, dims_level0, smooth: bool = True,
    max_side: int = DISPLAY_MAX_SIDE,
) -> tuple[np.ndarray, tuple[float, float], float]:  # fmt: skip
    """The score grid as a display raster that stops at the slide's edge.

    Each cell becomes ``u x u`` pixels (``u`` up to 8, the raster at most ``max_side``), so
    the lattice's last row and column, which reach past the slide, are cut at its edge to
    ``step / u``. ``smooth``: NaN-aware bilinear interpolation between cell centres (what
    a pathologist reads as a field, not blocks); unscored cells stay NaN, with their exact
    footprint.

    Parameters
    ----------
    scores : np.ndarray
        ``(P, R, C)`` float32, NaN where unscored.

    Returns
    -------
    raster : np.ndarray
        ``(P, H, W)`` float32.
    origin_level0 : (float, float)
        (x, y) of pixel (0, 0)'s corner.
    pixel_level0 : float
        Level-0 px per raster pixel.
    """
    p, rows, cols = scores.shape
    u = int(max(1, min(8, max_side // max(rows, cols, 1))))
    pixel = float(step_level0) / u
    valid = ~np.isnan(scores)
    if smooth and u > 1:
        from scipy.ndimage import zoom

        kw = {"zoom": (1, u, u), "order": 1, "grid_mode": True, "mode": "nearest"}
        num = zoom(np.where(valid, scores, 0.0).astype(np.float32), **kw)
        den = zoom(valid.astype(np.float32), **kw)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = num / den
        out[~valid.repeat(u, 1).repeat(u, 2)] = np.nan
    else:
        out = scores.repeat(u, 1).repeat(u, 2)
    x0, y0 = (float(v) for v in origin_level0)
    if dims_level0 is not None:
        w, h = dims_level0
        j0, i0 = max(0, int(np.ceil(-x0 / pixel - 1e-9))), max(0, int(np.ceil(-y0 / pixel - 1e-9)))
        j1 = max(j0 + 1, int(np.ceil((w - x0) / pixel - 1e-6)))
        i1 = max(i0 + 1, int(np.ceil((h - y0) / pixel - 1e-6)))
        out = out[:, i0:i1, j0:j1]
        x0, y0 = x0 + j0 * pixel, y0 + i0 * pixel
    return np.ascontiguousarray(out, np.float32), (x0, y0), pixel
