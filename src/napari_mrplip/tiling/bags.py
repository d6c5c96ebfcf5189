"""Multi-magnification bags: a parent tile on tissue and its descendants, chosen by µm/px.

A bag over magnifications ``(m0, m1, ..., mK)`` (coarsest first) holds one parent tile at
``m0`` and, for each finer magnification, the tiles covering its ancestor's sub-grid: with
``(5, 10, 20)`` a parent has 4 children at 10x (its quadrants) and 16 grandchildren at 20x.
Every tile is ``tile_px`` pixels at its own magnification, so its level-0 footprint shrinks
by the magnification ratio. ``children_per_parent=k`` keeps a seeded random subset of ``k``
children per tile (a CPU run can use 1 + 1 + 1 tiles instead of 1 + 4 + 16); the bag's
structure (``mag_index``, ``parent_index``) is then the same for every bag.

Boxes are ``(x0, y0, w, h)`` in level-0 pixels, integers.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from napari_mrplip.io.slide import Slide

from .geometry import (
    MPP_RTOL,
    magnification_to_mpp,
    native_level_count,
    resize_rgb,
    slide_mpp_or_raise,
)
from .tissue import tissue_fraction, tissue_mask

__all__ = ["BagSpec", "TileSpec", "bag_structure", "sample_bags"]

#: The tissue thumbnail is sized so that a parent spans this many thumbnail pixels, within
#: ``THUMBNAIL_PX_RANGE`` (the mask's median filter and hole filling cost grows with its area).
PARENT_THUMB_PX = 24
THUMBNAIL_PX_RANGE = (256, 2048)


#: Largest native level (pixels) read whole for the tissue thumbnail (8k x 8k).
NATIVE_THUMB_MAX_PX = 8192 * 8192


@dataclass(frozen=True)
class TileSpec:
    """One tile of a bag.

    Attributes
    ----------
    box : (x0, y0, w, h)
        Footprint in level-0 pixels.
    magnification : float
        Nominal objective power (5, 10, 20 ...).
    mpp : float
        Target µm/px of the tile (``magnification_to_mpp(magnification)``).
    mag_index : int
        0 for the parent (coarsest), 1 for its children, ...
    parent : int
        Index within the bag of the tile this one subdivides; -1 for the root.
    """

    box: tuple[int, int, int, int]
    magnification: float
    mpp: float
    mag_index: int
    parent: int


@dataclass(frozen=True)
class BagSpec:
    """A parent tile and its descendants, in breadth-first order (parent first).

    Attributes
    ----------
    tiles : tuple of TileSpec
    slide_mpp : float
        Level-0 µm/px the boxes were computed with.
    tile_px : int
        Pixel side of every tile at its own magnification.
    tissue_fraction : float
        Tissue fraction of the parent box on the thumbnail's tissue mask.
    """

    tiles: tuple[TileSpec, ...]
    slide_mpp: float
    tile_px: int
    tissue_fraction: float

    @property
    def parent(self) -> TileSpec:
        return self.tiles[0]

    @property
    def magnifications(self) -> tuple[float, ...]:
        return tuple(sorted({t.magnification for t in self.tiles}))

    def to_dict(self) -> dict:
        """JSON-ready dict (boxes as lists)."""
        d = asdict(self)
        d["tiles"] = [{**t, "box": list(t["box"])} for t in d["tiles"]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BagSpec:
        tiles = tuple(
            TileSpec(
                box=tuple(int(v) for v in t["box"]),
                magnification=float(t["magnification"]),
                mpp=float(t["mpp"]),
                mag_index=int(t["mag_index"]),
                parent=int(t["parent"]),
            )
            for t in d["tiles"]
        )
        return cls(tiles, float(d["slide_mpp"]), int(d["tile_px"]), float(d["tissue_fraction"]))


def _ratios(magnifications: tuple[float, ...]) -> list[int]:
    """Integer subdivision factor between consecutive magnifications (e.g. 5->10: 2)."""
    mags = [float(m) for m in magnifications]
    if not mags or any(m <= 0 for m in mags) or mags != sorted(mags) or len(set(mags)) != len(mags):
        raise ValueError(f"magnifications must be positive and increasing, got {magnifications}")
    ratios = []
    for lo, hi in zip(mags[:-1], mags[1:]):
        r = hi / lo
        if abs(r - round(r)) > 1e-6:
            raise ValueError(
                f"magnification {hi} is not an integer multiple of {lo}: children must tile "
                "their parent exactly (use e.g. (5, 10, 20) or (2.5, 5, 10))"
            )
        ratios.append(int(round(r)))
    return ratios


def _children(box, r: int) -> list[tuple[int, int, int, int]]:
    x0, y0, w, h = box
    cw, ch = w // r, h // r
    return [(x0 + i * cw, y0 + j * ch, cw, ch) for j in range(r) for i in range(r)]


def bag_structure(
    magnifications: tuple[float, ...], children_per_parent: int | None = None
) -> tuple[list[int], list[int]]:
    """``(mag_index, parent_index)`` lists shared by every bag of these settings."""
    ratios = _ratios(tuple(magnifications))
    mag_index, parent_index, frontier = [0], [-1], [0]
    for level, r in enumerate(ratios, start=1):
        k = r * r if children_per_parent is None else min(children_per_parent, r * r)
        nxt = []
        for p in frontier:
            for _ in range(k):
                nxt.append(len(mag_index))
                mag_index.append(level)
                parent_index.append(p)
        frontier = nxt
    return mag_index, parent_index


def _expand(parent_box, mags, mpps, ratios, children_per_parent, rng) -> list[TileSpec]:
    tiles = [TileSpec(tuple(parent_box), float(mags[0]), mpps[0], 0, -1)]
    frontier = [0]
    for level, r in enumerate(ratios, start=1):
        nxt = []
        for p in frontier:
            kids = _children(tiles[p].box, r)
            if children_per_parent is not None and children_per_parent < len(kids):
                pick = sorted(rng.choice(len(kids), size=children_per_parent, replace=False))
                kids = [kids[i] for i in pick]
            for box in kids:
                nxt.append(len(tiles))
                tiles.append(TileSpec(box, float(mags[level]), mpps[level], level, p))
        frontier = nxt
    return tiles


def _parent_side_level0(tile_px: int, parent_mpp: float, slide_mpp: float, ratios) -> int:
    """Parent footprint in level-0 px, rounded so that every descendant box is integral."""
    unit = int(np.prod(ratios)) if ratios else 1
    side = tile_px * parent_mpp / slide_mpp
    return max(unit, int(round(side / unit)) * unit)


def _candidates(mask, scale, side, slide_wh, rng) -> list[tuple[int, int, float]]:
    """Parent corners on a half-overlapping grid (random offset) with their tissue fraction."""
    w0, h0 = slide_wh
    stride = max(1, side // 2)
    ox = int(rng.integers(0, stride)) if w0 - side >= stride else 0
    oy = int(rng.integers(0, stride)) if h0 - side >= stride else 0
    out = []
    for y in range(oy, h0 - side + 1, stride):
        for x in range(ox, w0 - side + 1, stride):
            box = (x * scale, y * scale, (x + side) * scale, (y + side) * scale)
            out.append((x, y, tissue_fraction(mask, box)))
    return out


def _thumbnail(slide: Slide, max_px: int) -> np.ndarray:
    """Thumbnail from the coarsest native level when that level is small enough to read whole.

    A derived (lazily downsampled) level costs a dask recompute per read; for slides with a
    native level of at most ``NATIVE_THUMB_MAX_PX`` pixels, reading it and resizing is faster.
    """
    n_native = native_level_count(slide)
    level = n_native - 1
    lh, lw = slide.level_shape(level)
    if n_native == slide.n_levels or lh * lw > NATIVE_THUMB_MAX_PX or max(lh, lw) <= max_px:
        return slide.thumbnail(max_px)
    img = slide.read_region(0, 0, lw, lh, level)
    scale = max_px / max(lh, lw)
    return resize_rgb(img, (max(1, round(lh * scale)), max(1, round(lw * scale))))


def sample_bags(
    slide: Slide,
    n_parents: int,
    magnifications: tuple[float, ...] = (5, 10, 20),
    tile_px: int = 112,
    seed: int = 0,
    slide_mpp: float | None = None,
    children_per_parent: int | None = None,
    min_tissue: float = 0.5,
    thumbnail_px: int | None = None,
) -> list[BagSpec]:
    """Sample up to ``n_parents`` bags whose parents lie on tissue.

    Parameters
    ----------
    slide : Slide
    n_parents : int
        Bags wanted. Fewer are returned when the slide has fewer tissue positions
        (parents overlap by at most half a side); none when it has no tissue.
    magnifications : tuple of float
        Increasing objective powers, each an integer multiple of the previous.
    tile_px : int
        Pixel side of every tile at its own magnification. With the default 112 px at
        (5, 10, 20) a parent covers 224 µm (449 level-0 px at 0.5 µm/px).
    seed : int
        Seeds the grid offset, the choice of parents and of children subsets.
    slide_mpp : float, optional
        Level-0 µm/px when the file states none.
    children_per_parent : int, optional
        Keep only this many (random) children per tile; ``None`` keeps all.
    min_tissue : float
        Minimum tissue fraction of a parent on the thumbnail's tissue mask (``tiling.tissue``).
    thumbnail_px : int, optional
        Thumbnail size for the tissue mask; by default a parent spans about 24 of its pixels
        (between 256 and 2048 px).

    Returns
    -------
    list of BagSpec

    Raises
    ------
    MissingMppError
        When the slide has no mpp and ``slide_mpp`` is not given.
    ValueError
        When a parent is larger than the slide (lower ``tile_px`` or raise the magnifications).
    """
    mpp0 = slide_mpp_or_raise(slide, slide_mpp)
    mags = tuple(float(m) for m in magnifications)
    ratios = _ratios(mags)
    if children_per_parent is not None and children_per_parent < 1:
        raise ValueError(f"children_per_parent must be >= 1 or None, got {children_per_parent}")
    mpps = [magnification_to_mpp(m) for m in mags]
    if mpps[-1] < mpp0 * (1 - MPP_RTOL):
        warnings.warn(
            f"{slide.name}: {mags[-1]:g}x ({mpps[-1]:g} µm/px) is finer than the slide's "
            f"{mpp0:g} µm/px; those tiles will be upsampled",
            stacklevel=2,
        )
    side = _parent_side_level0(tile_px, mpps[0], mpp0, ratios)
    w0, h0 = slide.dimensions
    if side > min(w0, h0):
        raise ValueError(
            f"{slide.name}: the largest bag (a {tile_px} px parent at {mags[0]:g}x) covers {side} "
            f"level-0 px, more than the slide ({w0}x{h0} px at {mpp0:g} µm/px). Drop the lowest "
            f"magnification (e.g. --magnifications {' '.join(f'{m:g}' for m in mags[1:]) or '20'}) "
            f"or use smaller tiles (--tile-px {max(16, tile_px * min(w0, h0) // side // 2)})."
        )
    if thumbnail_px is None:
        lo, hi = THUMBNAIL_PX_RANGE
        thumbnail_px = int(np.clip(PARENT_THUMB_PX * max(w0, h0) / side, lo, hi))
    thumb = _thumbnail(slide, thumbnail_px)
    mask = tissue_mask(thumb)
    scale = thumb.shape[1] / w0
    rng = np.random.default_rng(seed)
    cands = [c for c in _candidates(mask, scale, side, (w0, h0), rng) if c[2] >= min_tissue]
    order = rng.permutation(len(cands))[:n_parents]
    bags = []
    for i in sorted(order):
        x, y, frac = cands[i]
        tiles = _expand((x, y, side, side), mags, mpps, ratios, children_per_parent, rng)
        bags.append(BagSpec(tuple(tiles), mpp0, tile_px, frac))
    return bags
