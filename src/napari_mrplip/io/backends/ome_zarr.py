"""OME-Zarr backend: NGFF 0.4 (``attrs["multiscales"]``) and 0.5 (``attrs["ome"]["multiscales"]``),
zarr v2 and v3 layouts. Levels are dask arrays over the zarr arrays."""

from __future__ import annotations

from pathlib import Path

import dask.array as da

from napari_mrplip.io.errors import SlideOpenError
from napari_mrplip.io.limits import check_level_shapes
from napari_mrplip.io.pyramid import extend_pyramid, to_rgb_uint8
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
        yx = (letters.index("Y"), letters.index("X")) if "Y" in letters else (-2, -1)
        check_level_shapes(path, [(a.shape[yx[0]], a.shape[yx[1]]) for a in arrays], None)
        native = [to_rgb_uint8(da.from_zarr(a), letters) for a in arrays]
    except (KeyError, ValueError, TypeError) as e:
        raise SlideOpenError(
            f"{path}: malformed OME-NGFF multiscales ({type(e).__name__}: {e})"
        ) from e
    if any(0 in lv.shape for lv in native):
        raise SlideOpenError(f"{path}: the image is empty (shape {native[0].shape})")
    version = (attrs.get("ome") or {}).get("version") or ms.get("version")
    return Slide(
        path=path,
        levels=extend_pyramid(native),
        mpp=_mpp(ms, axes, letters),
        native_levels=len(native),
        metadata={
            "backend": NAME,
            "format": "ome-zarr",
            "ngff_version": version,
            "axes": letters,
        },
    )
