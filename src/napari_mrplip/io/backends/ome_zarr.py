"""OME-Zarr backend: NGFF 0.4 (``attrs["multiscales"]``) and 0.5 (``attrs["ome"]["multiscales"]``),
zarr v2 and v3 layouts.

``read_region`` reads windows of the zarr arrays directly (:class:`ZarrRegionReader`); the
levels' dask arrays are built on first access (:class:`~napari_mrplip.io.levels.LazyLevels`), so
opening and reading import zarr (the format's own library) but not dask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_mrplip.io.errors import SlideOpenError, TileReadError
from napari_mrplip.io.levels import LazyLevels
from napari_mrplip.io.limits import check_level_shapes
from napari_mrplip.io.pyramid import check_axes, to_rgb_uint8
from napari_mrplip.io.slide import Slide

from ._tiff_meta import UNIT_TO_UM

NAME = "ome_zarr"
_MARKERS = ("zarr.json", ".zattrs", ".zgroup")


def can_open(path: Path) -> bool:
    """True for a directory holding a zarr group (``zarr.json`` or ``.zgroup``/``.zattrs``)."""
    try:
        path = Path(path)
        return path.is_dir() and any((path / m).is_file() for m in _MARKERS)
    except OSError:
        return False


def _multiscales(attrs: dict) -> list:
    ome = attrs.get("ome")
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list):
        return ome["multiscales"]
    ms = attrs.get("multiscales")
    return ms if isinstance(ms, list) else []


def _axes(ms: dict, ndim: int) -> tuple[str, list[dict]]:
    """Axis letters (tifffile style: C for channel, Y, X, T, Z) and the axis dicts."""
    axes = ms.get("axes") or [{"name": n} for n in "tczyx"[-ndim:]]
    axes = [{"name": a} if isinstance(a, str) else a for a in axes]
    letters = "".join(
        "C"
        if a.get("type") == "channel" or a.get("name", "").lower() == "c"
        else a.get("name", "?")[:1].upper()
        for a in axes
    )
    return letters, axes


def _mpp(ms: dict, axes: list[dict], letters: str) -> float | None:
    transforms = ms["datasets"][0].get("coordinateTransformations") or []
    scale = next((t.get("scale") for t in transforms if t.get("type") == "scale"), None)
    if not scale or len(scale) != len(letters):
        return None
    values = []
    for ax in ("Y", "X"):
        i = letters.index(ax)
        factor = UNIT_TO_UM.get(str(axes[i].get("unit", "")).lower())
        if factor is not None and float(scale[i]) > 0:
            values.append(float(scale[i]) * factor)
    return sum(values) / len(values) if values else None


class ZarrRegionReader:
    """Reads in-bounds windows of stored levels straight from the zarr arrays.

    Parameters
    ----------
    path : Path
        The OME-Zarr directory (named in errors).
    arrays : list of zarr.Array
        The stored levels, largest first, in the layout ``axes`` describes.
    axes : str
        tifffile-style axis letters (``CYX``, ``TCZYX`` ...).
    """

    def __init__(self, path: Path, arrays: list, axes: str):
        self.path, self.arrays, self.axes = Path(path), arrays, axes

    def read(self, level: int, x_level: int, y_level: int, w: int, h: int) -> np.ndarray:
        """``(h, w, 3)`` uint8 window of ``level``, converted as the dask level converts it."""
        try:
            window = (y_level, x_level, h, w)
            return to_rgb_uint8(self.arrays[level], self.axes, window=window)
        except Exception as e:  # codec errors from zarr/numcodecs vary by codec
            raise TileReadError(
                f"{self.path}: failed to read level {level} at x={x_level}, y={y_level} "
                f"({w}x{h} px): {type(e).__name__}: {e}"
            ) from e


def _dask_levels(arrays: list, axes: str) -> list:
    """The stored levels as ``(Y, X, 3)`` uint8 dask arrays (imports dask)."""
    import dask.array as da

    return [to_rgb_uint8(da.from_zarr(a), axes) for a in arrays]


def open(path: Path) -> Slide:  # noqa: A001 - the backend protocol's name
    """Open an OME-Zarr image group lazily; raises :class:`SlideOpenError` naming the path."""
    import zarr

    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except (ValueError, KeyError, OSError, TypeError, zarr.errors.BaseZarrError) as e:
        raise SlideOpenError(f"{path}: not a readable zarr group ({type(e).__name__}: {e})") from e
    multiscales = _multiscales(attrs)
    if not multiscales or not multiscales[0].get("datasets"):
        raise SlideOpenError(f"{path}: zarr group has no OME-NGFF 'multiscales' metadata")
    ms = multiscales[0]
    try:
        arrays = [group[d["path"]] for d in ms["datasets"]]
        letters, axes = _axes(ms, arrays[0].ndim)
        for a in arrays:
            check_axes(letters, a.shape)
        shapes = [(a.shape[letters.index("Y")], a.shape[letters.index("X")]) for a in arrays]
        check_level_shapes(path, shapes, None)
    except (KeyError, ValueError, TypeError) as e:
        raise SlideOpenError(
            f"{path}: malformed OME-NGFF multiscales ({type(e).__name__}: {e})"
        ) from e
    empty = next((a.shape for a in arrays if 0 in a.shape), None)
    if empty is not None:
        raise SlideOpenError(f"{path}: the image is empty (shape {tuple(empty)})")
    version = (attrs.get("ome") or {}).get("version") or ms.get("version")
    return Slide(
        path=path,
        levels=LazyLevels(shapes, lambda: _dask_levels(arrays, letters)),
        reader=ZarrRegionReader(path, arrays, letters),
        mpp=_mpp(ms, axes, letters),
        native_levels=len(arrays),
        metadata={
            "backend": NAME,
            "format": "ome-zarr",
            "ngff_version": version,
            "axes": letters,
        },
    )
