"""The one tile reader: level-0 boxes -> ``(N, S, S, 3)`` uint8 tiles, the same pixels for everyone.

Heatmap lattices and boxes, review polygons, every fine-tuning source and pretraining bags
read their tiles here, so a model is scored on the pixels it was trained on.

**Box.** ``(x0, y0, x1, y1)`` in level-0 pixels (floats allowed), the one box
representation of the project. A box that reaches past the slide's edge is read as it is:
the part outside the slide is white (255), as ``Slide.read_region`` pads.

**Level rule** (``tiling.geometry.level_for_box``). A box of level-0 side ``w x h`` read as a ``S x S`` tile wants a downsample of
``min(w, h) / S`` (the µm/px the tile will have, divided by level 0's). The tile is read from
the *coarsest level, stored or built, whose downsample does not exceed that* (1 % tolerance
for metadata rounding: ``Slide.best_level_for_downsample``). Built levels are the ``halve``
chain ``io.pyramid`` appends; they read through ``io.derived``'s fast path with identical
pixels, so no consumer needs to know whether a level is stored. Reading no coarser than the
target keeps all the detail the tile can show; reading the coarsest such level keeps the
read (and the resampling) small.

**Resampler** (``tiling.geometry.resize_rgb``). The region read at that level,
``round(w / ds) x round(h / ds)`` pixels, is resized to ``S x S`` by Pillow's bilinear filter without ``reducing_gap``,
which is antialiased (its triangle kernel is widened by the scale factor when shrinking, so
every source pixel contributes). A region already ``S x S`` is returned unchanged. Tile
folders and thumbnails are resized by the same function.
"""

from __future__ import annotations

import numpy as np

from napari_mrplip.tiling.geometry import level_for_box, resize_rgb


def plan_reads(slide, boxes: np.ndarray, tile_px: int):
    """Per box: the level it is read from and its window size there, by the level rule.

    Returns
    -------
    levels, widths, heights : np.ndarray
        ``(N,)`` int64 each.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if len(boxes) and not ((bw > 0) & (bh > 0)).all():
        bad = boxes[~((bw > 0) & (bh > 0))][0]
        raise ValueError(f"empty tile box {tuple(bad)}: x1 > x0 and y1 > y0 are needed")
    sizes, inverse = np.unique(np.stack([bw, bh], axis=1), axis=0, return_inverse=True)
    per_size = [level_for_box(slide, w, h, tile_px) for w, h in sizes.tolist()]  # lattices: one
    levels = (
        np.asarray(per_size, np.int64)[inverse.reshape(-1)] if len(boxes) else np.zeros(0, np.int64)
    )
    ds = np.asarray(slide.downsamples, np.float64)[levels] if len(boxes) else np.ones(0)
    widths = np.maximum(1, np.rint(bw / ds)).astype(np.int64)
    heights = np.maximum(1, np.rint(bh / ds)).astype(np.int64)
    return levels, widths, heights


def read_tiles_checked(slide, boxes_level0, tile_px: int) -> tuple[np.ndarray, list]:
    """:func:`read_tiles`, but a box that fails to decode comes out white and is listed.

    Boxes read from the same level with the same window size are read block by block
    (``io.windows``: each stored tile decoded once per block), with the pixels of
    ``Slide.read_region`` for each box.

    Returns
    -------
    tiles : np.ndarray
        ``(N, tile_px, tile_px, 3)`` uint8.
    errors : list of (int, str)
        ``(index, message)`` per box that could not be decoded.
    """
    from napari_mrplip.io.windows import read_windows

    boxes = np.asarray(boxes_level0, dtype=np.float64).reshape(-1, 4)
    errors: list[tuple[int, str]] = []
    levels, widths, heights = plan_reads(slide, boxes, tile_px)
    x0, y0 = np.rint(boxes[:, 0]), np.rint(boxes[:, 1])  # level-0 px, as read_region rounds
    plans = np.stack([levels, widths, heights], axis=1) if len(boxes) else np.zeros((0, 3))
    if len(boxes) and (plans == (levels[0], tile_px, tile_px)).all():  # a lattice at its level
        raw, errs = read_windows(slide, int(levels[0]), x0, y0, int(tile_px), int(tile_px))
        return raw, sorted(errs)
    out = np.empty((len(boxes), int(tile_px), int(tile_px), 3), np.uint8)
    for level, w, h in {tuple(p) for p in plans.tolist()}:
        idx = np.flatnonzero((plans == (level, w, h)).all(axis=1))
        raw, errs = read_windows(slide, int(level), x0[idx], y0[idx], int(w), int(h))
        for k, i in enumerate(idx.tolist()):
            out[i] = resize_rgb(raw[k], int(tile_px))
        errors += [(int(idx[k]), msg) for k, msg in errs]
    return out, sorted(errors)


def read_tiles(slide, boxes_level0, tile_px: int) -> np.ndarray:
    """Level-0 boxes ``(N, 4)`` = (x0, y0, x1, y1) as ``(N, tile_px, tile_px, 3)`` uint8 tiles.

    Parameters
    ----------
    slide : Slide
    boxes_level0 : array-like
        ``(N, 4)`` level-0 boxes; parts outside the slide come out white.
    tile_px : int
        Output side S.

    Raises
    ------
    TileReadError
        When a box cannot be decoded (names the file, level and tile).
    ValueError
        For an empty box.
    """
    tiles, errors = read_tiles_checked(slide, boxes_level0, tile_px)
    if errors:
        from napari_mrplip.io.errors import TileReadError

        raise TileReadError(errors[0][1])
    return tiles


def read_tile(slide, box_level0, tile_px: int) -> np.ndarray:
    """One level-0 box ``(x0, y0, x1, y1)`` as a ``(tile_px, tile_px, 3)`` uint8 tile."""
    return read_tiles(slide, np.asarray(box_level0, np.float64)[None], tile_px)[0]


def xywh_to_boxes(xywh) -> np.ndarray:
    """``(N, 4)`` (x0, y0, w, h) -> ``(N, 4)`` (x0, y0, x1, y1), float64 (e.g. manifest records)."""
    a = np.asarray(xywh, dtype=np.float64).reshape(-1, 4).copy()
    a[:, 2:] += a[:, :2]
    return a
