"""Heatmap export: float32 OME-TIFF / OME-Zarr pyramids and thresholded GeoJSON regions.

The raster is written at ``pixel = step / upsample`` level-0 px (nearest-neighbour, so each
grid cell becomes an exact ``upsample x upsample`` block) and padded from the slide's
origin, so pixel ``i`` covers level-0 ``[i * pixel, (i + 1) * pixel)`` exactly as a pyramid
level of the slide does: with PhysicalSize = ``mpp * pixel`` it overlays the slide in
napari and QuPath. It stops at the slide's edge (the lattice's last row and column may reach
past it). Cells never scored (glass, failed tiles) are NaN: a value nothing computed is not
0. The file records how it was scored (:func:`heatmap_metadata`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from napari_mrplip.heatmap.result import HeatmapResult

#: Target written pixel size in level-0 px (each grid cell is upsampled towards it).
TARGET_PIXEL_LEVEL0 = 16.0

#: Colours QuPath shows per class, cycled by prompt index.
PALETTE = [(228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0),
           (166, 86, 40), (247, 129, 191), (153, 153, 153)]  # fmt: skip


def export_array(result: HeatmapResult, upsample: int | None = None, nan_value=None):
    """The lazily upsampled, origin-padded ``(P, Y, X)`` float32 dask array and its pixel size.

    Unscored cells and the padding are NaN (or ``nan_value``); the array is clipped to the
    slide (``result.slide_dims_level0``) to the nearest written pixel.

    Returns
    -------
    array : dask.array.Array
        ``(P, Y, X)`` float32.
    pixel_level0 : float
        Level-0 px per written pixel.
    """
    import dask.array as da

    step = float(result.step_level0)
    u = upsample or max(1, int(round(step / TARGET_PIXEL_LEVEL0)))
    pixel = step / u
    scores = np.asarray(result.scores, np.float32)
    if nan_value is not None:
        scores = np.nan_to_num(scores, nan=float(nan_value))
    x0, y0 = result.origin_level0
    pad_c, pad_r = int(round(x0 / step)), int(round(y0 / step))
    fill = np.float32(np.nan if nan_value is None else nan_value)
    arr = da.from_array(scores, chunks=(1, 64, 64))
    arr = da.pad(arr, ((0, 0), (pad_r, 0), (pad_c, 0)), constant_values=fill)
    if u > 1:
        arr = da.repeat(da.repeat(arr, u, axis=1), u, axis=2)
    if result.slide_dims_level0 is not None:
        w, h = result.slide_dims_level0
        arr = arr[:, : max(1, math.ceil(h / pixel - 1e-6)), : max(1, math.ceil(w / pixel - 1e-6))]
    return arr.astype(np.float32), pixel


def heatmap_metadata(result: HeatmapResult, pixel_level0: float | None = None) -> dict:
    """How a heatmap was scored, as JSON-able data written into every exported file.

    Keys: ``software``, ``prompts``, ``background``, ``mode``, ``value_meaning``,
    ``model_id``, ``mpp_scored`` (µm/px the model saw), ``slide_mpp`` (level 0),
    ``step_level0``/``tile_level0``, ``origin_level0``, ``slide_dims_level0``,
    ``pixel_level0`` (level-0 px per written pixel), ``unscored`` ("NaN"), and the
    engine's ``fusion``, ``overlap_k``, ``tissue_only``, ``grid`` when known.
    """
    from napari_mrplip import __version__

    meta = result.meta
    out = {
        "software": f"napari-mrplip {__version__}",
        "prompts": list(result.prompts),
        "background": list(meta.get("background", [])),
        "mode": meta.get("mode", "softmax"),
        "value_meaning": result.value_meaning,
        "model_id": meta.get("model_id"),
        "mpp_scored": meta.get("mpp_scored"),
        "slide_mpp": result.mpp,
        "step_level0": float(result.step_level0),
        "tile_level0": float(result.tile_level0),
        "origin_level0": [float(v) for v in result.origin_level0],
        "slide_dims_level0": None if result.slide_dims_level0 is None
        else [int(v) for v in result.slide_dims_level0],
        "pixel_level0": pixel_level0,
        "unscored": "NaN",
    }  # fmt: skip
    for k in ("fusion", "overlap_k", "tissue_only", "grid", "dense"):
        if k in meta:
            out[k] = meta[k]
    return json.loads(json.dumps(out, default=_plain))


def _plain(v):
    return v.item() if hasattr(v, "item") else list(v) if isinstance(v, tuple) else str(v)


def write_heatmap(
    result: HeatmapResult,
    path: str | Path,
    upsample: int | None = None,
    nan_value=None,
    *,
    overwrite: bool = False,
    inputs=(),
) -> Path:
    """Write a heatmap as a float32 pyramid, one channel per prompt (named after it).

    Parameters
    ----------
    result : HeatmapResult
    path : str or Path
        ``*.ome.tif``/``*.ome.tiff`` -> OME-TIFF; ``*.ome.zarr``/``*.zarr`` -> OME-Zarr.
    upsample : int, optional
        Written pixels per grid cell side (default: cells become ~16 level-0 px).
    nan_value : float or None
        Value for unscored cells; ``None`` (default) keeps NaN, which viewers show as
        transparent and statistics skip.
    overwrite, inputs
        Output policy (``napari_mrplip.outputs``): replace an existing ``path`` only with
        ``overwrite``; never replace one of ``inputs`` (the slide).

    Returns
    -------
    Path
    """
    from napari_mrplip.io.writers import write_pyramid

    path = Path(path)
    arr, pixel = export_array(result, upsample, nan_value)
    mpp = None if result.mpp is None else result.mpp * pixel
    tile = 256 if min(arr.shape[1:]) >= 256 else 16 * max(1, math.ceil(min(arr.shape[1:]) / 16))
    return write_pyramid(
        path,
        arr,
        mpp=mpp,
        tile=tile,
        compression="zlib",
        channel_names=list(result.prompts),
        attributes=heatmap_metadata(result, pixel),
        overwrite=overwrite,
        inputs=inputs,
    )


def read_heatmap_metadata(path: str | Path) -> dict:
    """The provenance :func:`write_heatmap` stored in an OME-TIFF or OME-Zarr heatmap."""
    from napari_mrplip.io.writers import ATTR_NAMESPACE

    path = Path(path)
    if path.name.lower().endswith("zarr"):
        import zarr

        return dict(zarr.open_group(str(path), mode="r").attrs.get(ATTR_NAMESPACE, {}))
    import tifffile

    with tifffile.TiffFile(path) as tf:
        ome = tifffile.xml2dict(tf.ome_metadata or "<OME/>")
    desc = ome.get("OME", {}).get("Image", {}).get("Description")
    if not desc:
        raise ValueError(f"{path}: no napari-mrplip heatmap metadata (written by another tool?)")
    return json.loads(desc)


def _cell_runs(mask: np.ndarray):
    """Yield ``(row, col_start, col_end)`` for each horizontal run of True cells."""
    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 1)))
    diff = np.diff(padded, axis=1)
    for r in range(mask.shape[0]):
        starts = np.flatnonzero(diff[r] == 1)
        ends = np.flatnonzero(diff[r] == -1)
        yield from ((r, s, e) for s, e in zip(starts, ends))


def mask_polygons(mask: np.ndarray, origin_level0, step_level0: float):
    """Polygons (shapely) of the True cells of a ``(rows, cols)`` mask, in level-0 px."""
    from shapely import box, union_all

    x0, y0 = origin_level0
    boxes = [
        box(
            x0 + s * step_level0,
            y0 + r * step_level0,
            x0 + e * step_level0,
            y0 + (r + 1) * step_level0,
        )
        for r, s, e in _cell_runs(mask)
    ]
    if not boxes:
        return []
    merged = union_all(boxes)
    return list(getattr(merged, "geoms", [merged]))


def heatmap_to_geojson(result: HeatmapResult, threshold: float = 0.5) -> dict:
    """Regions where a prompt's score >= ``threshold`` as a QuPath GeoJSON FeatureCollection.

    Coordinates are level-0 px (QuPath's image space); each polygon is one ``annotation``
    feature classified by its prompt, with its mean score as a measurement. Unscored (NaN)
    cells are never part of a region, and regions are clipped to the slide.
    """
    features = []
    for p, name in enumerate(result.prompts):
        grid = result.scores[p]
        mask = scored_above(grid, threshold)
        for poly in mask_polygons(mask, result.origin_level0, result.step_level0):
            mean = _mean_inside(grid, mask, poly, result)
            poly = _clip_to_slide(poly, result.slide_dims_level0)
            if poly is not None:
                features.append(_feature(poly, name, p, mean))
    return {"type": "FeatureCollection", "features": features}


def scored_above(grid: np.ndarray, threshold: float) -> np.ndarray:
    """``(rows, cols)`` bool: scored (not NaN) and >= ``threshold``."""
    with np.errstate(invalid="ignore"):
        return ~np.isnan(grid) & (grid >= threshold)


def _clip_to_slide(poly, dims_level0):
    """``poly`` intersected with the slide rectangle (None if nothing is left)."""
    if dims_level0 is None:
        return poly
    from shapely import box

    clipped = poly.intersection(box(0, 0, *dims_level0))
    if clipped.is_empty or clipped.area <= 0:
        return None
    if clipped.geom_type not in ("Polygon", "MultiPolygon"):
        clipped = clipped.buffer(0)
    return clipped


def _mean_inside(grid, mask, poly, result) -> float:
    """Mean score of the cells whose centres lie inside ``poly``."""
    from shapely import contains_xy

    x0, y0 = result.origin_level0
    s = result.step_level0
    bx0, by0, bx1, by1 = poly.bounds
    c0, c1 = int(round((bx0 - x0) / s)), int(round((bx1 - x0) / s))
    r0, r1 = int(round((by0 - y0) / s)), int(round((by1 - y0) / s))
    rr, cc = np.mgrid[r0:r1, c0:c1]
    inside = contains_xy(poly, x0 + (cc + 0.5) * s, y0 + (rr + 0.5) * s) & mask[r0:r1, c0:c1]
    vals = grid[r0:r1, c0:c1][inside]
    return float(np.nanmean(vals)) if vals.size else float("nan")


def _feature(poly, name: str, index: int, mean: float) -> dict:
    from shapely.geometry import mapping

    geom = mapping(poly.normalize())
    return {
        "type": "Feature",
        "geometry": {"type": geom["type"], "coordinates": _listify(geom["coordinates"])},
        "properties": {
            "objectType": "annotation",
            "classification": {"name": name, "color": list(PALETTE[index % len(PALETTE)])},
            "measurements": {"mean score": mean},
        },
    }


def _listify(coords):
    if isinstance(coords, (tuple, list)):
        if coords and isinstance(coords[0], (int, float)):
            return [float(c) for c in coords]
        return [_listify(c) for c in coords]
    return coords
