"""Pyramid writers: OME-TIFF with SubIFDs and OME-Zarr (NGFF 0.5), lazy and chunked.

``write_pyramid`` accepts ``(Y, X, 3)`` uint8 RGB or ``(C, Y, X)`` float (e.g. heatmap scores),
as numpy or dask arrays, or a list of levels largest first. Pixels are computed one tile row
(OME-TIFF) or one chunk (OME-Zarr) at a time, so memory stays bounded by a row of tiles.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_mrplip.outputs import atomic_output

if TYPE_CHECKING:
    import dask.array as da

#: Namespace of provenance written by ``write_pyramid(attributes=...)``.
ATTR_NAMESPACE = "napari-mrplip"
#: Stop adding levels when the longer side is at most this many pixels.
MIN_SIDE_PX = 256


def _is_rgb(arr) -> bool:
    return arr.ndim == 3 and arr.shape[-1] == 3 and np.dtype(arr.dtype) == np.uint8


def _halve(arr: da.Array, rgb: bool) -> da.Array:
    """2x block mean of ``(Y, X, 3)`` (rgb) or ``(C, Y, X)`` arrays, odd edges trimmed."""
    import dask.array as da

    ya = 0 if rgb else 1
    h, w = arr.shape[ya] // 2 * 2, arr.shape[ya + 1] // 2 * 2
    src = arr[:h, :w] if rgb else arr[:, :h, :w]
    chunks = {ya: min(1024, h), ya + 1: min(1024, w)}
    src = src.rechunk(chunks).astype(np.float32)
    mean = da.coarsen(np.mean, src, {ya: 2, ya + 1: 2}, trim_excess=True)
    return (mean + 0.5).astype(np.uint8) if rgb else mean.astype(arr.dtype)


def build_levels(array, rgb: bool, min_side: int = MIN_SIDE_PX) -> list[da.Array]:
    """A lazy 2x pyramid of ``array`` down to ``min_side`` px."""
    import dask.array as da

    levels = [da.asarray(array)]
    ya = 0 if rgb else 1
    while max(levels[-1].shape[ya : ya + 2]) > min_side and min(levels[-1].shape[ya : ya + 2]) >= 2:
        levels.append(_halve(levels[-1], rgb))
    return levels


def _check(levels: Sequence, path: Path) -> bool:
    rgb = _is_rgb(levels[0])
    for lv in levels:
        if lv.ndim != 3 or (rgb and not _is_rgb(lv)) or 0 in lv.shape:
            raise ValueError(
                f"{path}: write_pyramid needs (Y, X, 3) uint8 or (C, Y, X) levels, got "
                f"{lv.shape} {lv.dtype}"
            )
    return rgb


def write_pyramid(
    path: str | Path,
    levels_or_array,
    mpp: float | None = None,
    tile: int = 256,
    compression: str | None = "auto",
    channel_names: Sequence[str] | None = None,
    attributes: dict | None = None,
    *,
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write a multiscale image as OME-TIFF (SubIFDs) or OME-Zarr (NGFF 0.5).

    The file or folder is written under a temporary name and renamed into place
    (``napari_mrplip.outputs``): an existing output is replaced only with ``overwrite``,
    an input never, and a failed write leaves nothing behind.

    Parameters
    ----------
    path : str or Path
        ``*.ome.tif``/``*.ome.tiff``/``*.tif`` -> OME-TIFF; ``*.zarr``/``*.ome.zarr`` -> OME-Zarr.
    levels_or_array : array or list of arrays
        ``(Y, X, 3)`` uint8 RGB or ``(C, Y, X)`` float32 (numpy or dask). A single array gets
        lazily built 2x levels down to ~256 px; a list is written as given (largest first).
    mpp : float, optional
        µm/px of level 0, stored as OME PhysicalSize / NGFF scale with unit micrometer.
    tile : int
        Tile (TIFF) or chunk (Zarr) side in pixels; a multiple of 16 for TIFF.
    compression : {"auto", "jpeg", "zlib", None}
        ``"auto"``: JPEG for RGB uint8, zlib otherwise. JPEG needs uint8 RGB.
    channel_names : sequence of str, optional
        Names of the C channels (e.g. the prompts of a heatmap).
    attributes : dict, optional
        JSON-able provenance (e.g. how a heatmap was scored): OME-TIFF gets it as JSON in
        the OME ``Description`` and as a ``MapAnnotation`` (namespace ``napari-mrplip``);
        OME-Zarr as the root attribute ``"napari-mrplip"``. Float OME-Zarr arrays have fill
        value NaN (unwritten chunks read as "not computed", not 0).
    overwrite : bool
        Replace an existing file or folder at ``path``.
    inputs : sequence of path
        Files the output must never replace (e.g. the slide a heatmap was computed from).

    Returns
    -------
    Path
        The written path.
    """
    path = Path(path)
    levels = list(levels_or_array) if isinstance(levels_or_array, (list, tuple)) else None
    if levels is None:
        rgb = _is_rgb(levels_or_array)
        levels = build_levels(levels_or_array, rgb)
    rgb = _check(levels, path)
    if compression == "auto":
        compression = "jpeg" if rgb else "zlib"
    if compression == "jpeg" and not rgb:
        raise ValueError(f"{path}: JPEG needs (Y, X, 3) uint8 RGB; use compression='zlib'")
    if compression not in ("jpeg", "zlib", None):
        raise ValueError(
            f"{path}: compression must be 'auto', 'jpeg', 'zlib' or None, got {compression!r}"
        )
    if mpp is not None and not mpp > 0:
        raise ValueError(f"{path}: mpp must be positive, got {mpp}")
    names = [n.lower() for n in path.name.split(".")[1:]]
    if not names or names[-1] not in ("zarr", "tif", "tiff"):
        raise ValueError(f"{path}: unknown output format; use .ome.tif or .ome.zarr")
    zarr_out = names[-1] == "zarr"
    with atomic_output(path, overwrite=overwrite, inputs=inputs, directory=zarr_out) as tmp:
        args = (tmp, levels, rgb, mpp, tile, compression, channel_names, attributes)
        if zarr_out:
            _write_zarr(*args, name=path.stem)
        else:
            _write_ome_tiff(*args)
    return path


def _tiles(level: da.Array, tile: int, rgb: bool) -> Iterator[np.ndarray]:
    """Yield the level's tiles row by row (one row of tiles computed at a time)."""
    planes = [level] if rgb else [level[c] for c in range(level.shape[0])]
    for plane in planes:
        h, w = plane.shape[:2]
        for y in range(0, h, tile):
            row = np.asarray(plane[y : y + tile].compute())
            for x in range(0, w, tile):
                yield row[:, x : x + tile]


def _write_ome_tiff(path, levels, rgb, mpp, tile, compression, channel_names, attributes) -> Path:
    import json

    import tifffile

    meta: dict = {"axes": "YXS" if rgb else "CYX"}
    if mpp is not None:
        meta.update(
            PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm"
        )
    if channel_names is not None and not rgb:
        meta["Channel"] = {"Name": list(channel_names)}
    if attributes:
        meta["Description"] = json.dumps(attributes)
        meta["MapAnnotation"] = {"Namespace": ATTR_NAMESPACE, **{
            str(k): v if isinstance(v, str) else json.dumps(v) for k, v in attributes.items()
        }}  # fmt: skip
    opts = dict(
        tile=(tile, tile),
        compression=compression,
        photometric="rgb" if rgb else "minisblack",
        compressionargs={"level": 90} if compression == "jpeg" else None,
    )
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        for i, lv in enumerate(levels):
            extra = {"subifds": len(levels) - 1, "metadata": meta} if i == 0 else {"subfiletype": 1}
            if i == 0 and mpp is not None:
                extra.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
            tw.write(_tiles(lv, tile, rgb), shape=lv.shape, dtype=lv.dtype, **opts, **extra)
    return path


def _write_zarr(
    path, levels, rgb, mpp, tile, compression, channel_names, attributes, name=""
) -> Path:
    import dask.array as da
    import zarr
    from zarr.codecs import GzipCodec, ZstdCodec

    compressors = {"jpeg": ZstdCodec(level=3), "zlib": GzipCodec(level=6), None: None}[compression]
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    datasets = []
    h0 = levels[0].shape[0] if rgb else levels[0].shape[1]
    for i, lv in enumerate(levels):
        arr = da.asarray(lv)
        arr = arr.transpose(2, 0, 1) if rgb else arr  # NGFF: channel axis before y, x
        z = root.create_array(
            str(i),
            shape=arr.shape,
            dtype=arr.dtype,
            chunks=(arr.shape[0], tile, tile),
            compressors=compressors,
            dimension_names=["c", "y", "x"],
            fill_value=np.nan if np.issubdtype(arr.dtype, np.floating) else 0,
        )
        da.store(arr.rechunk((arr.shape[0], tile, tile)), z, lock=False)
        ds = h0 / arr.shape[1]
        scale = [1.0, (mpp or 1.0) * ds, (mpp or 1.0) * ds]
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    unit = {"unit": "micrometer"} if mpp is not None else {}
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", **unit},
        {"name": "x", "type": "space", **unit},
    ]
    ome: dict = {
        "version": "0.5",
        "multiscales": [{"name": name or path.stem, "axes": axes, "datasets": datasets}],
    }
    labels = ["red", "green", "blue"] if rgb else list(channel_names or [])
    if labels:
        ome["omero"] = {"channels": [{"label": n} for n in labels]}
    root.attrs["ome"] = ome
    if attributes:
        root.attrs[ATTR_NAMESPACE] = attributes
    return path
