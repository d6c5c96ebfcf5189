"""OpenSlide backend (optional extra) for what tifffile cannot read: MRXS, VSI, SCN, BIF, VMS.

``openslide`` is imported lazily; without the extra this backend reports that it is not
installed. ``Slide.read_region`` calls OpenSlide's ``read_region`` (RGBA -> RGB on white) through
:class:`OpenSlideRegionReader`; the levels' dask arrays, whose chunks read the same way, are built
on first access (:class:`~napari_mrplip.io.levels.LazyLevels`), so reading imports no dask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_mrplip.io.errors import SlideOpenError, TileReadError
from napari_mrplip.io.levels import LazyLevels
from napari_mrplip.io.slide import Slide

NAME = "openslide"
#: Extensions tried with OpenSlide; TIFF-family files go to the tifffile backend first.
EXTENSIONS = {
    ".mrxs",
    ".vsi",
    ".scn",
    ".bif",
    ".vms",
    ".vmu",
    ".svslide",
    ".ndpi",
    ".svs",
    ".tif",
    ".tiff",
}
CHUNK_PX = 512


def can_open(path: Path) -> bool:
    """True when OpenSlide is installed and recognises the file's vendor format."""
    try:
        path = Path(path)
        if path.suffix.lower() not in EXTENSIONS or not path.exists():
            return False
        import openslide

        return openslide.OpenSlide.detect_format(str(path)) is not None
    except (ImportError, OSError, ValueError):
        return False


class _LevelArray:
    """Array-like view of one OpenSlide level for ``dask.array.from_array``."""

    def __init__(self, osr, level: int, path: Path):
        self.osr, self.level, self.path = osr, level, path
        w, h = osr.level_dimensions[level]
        self.shape, self.dtype, self.ndim = (h, w, 3), np.dtype(np.uint8), 3
        self.ds = osr.level_downsamples[level]

    def __getitem__(self, key) -> np.ndarray:
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        return read_rgb(self.osr, self.path, x0, y0, x1 - x0, y1 - y0, self.level, self.ds)


class OpenSlideRegionReader:
    """Reads in-bounds windows of stored levels with OpenSlide (the ``RegionReader`` fast path)."""

    def __init__(self, osr, path: Path):
        self.osr, self.path = osr, Path(path)

    def read(self, level: int, x_level: int, y_level: int, w: int, h: int) -> np.ndarray:
        """``(h, w, 3)`` uint8 window of ``level`` (level pixel coordinates)."""
        ds = self.osr.level_downsamples[level]
        return read_rgb(self.osr, self.path, x_level, y_level, w, h, level, ds)


def _dask_levels(osr, path: Path) -> list:
    """The stored levels as dask arrays of :class:`_LevelArray` chunks (imports dask)."""
    import dask.array as da

    return [
        da.from_array(_LevelArray(osr, i, path), chunks=(CHUNK_PX, CHUNK_PX, 3), asarray=False)
        for i in range(osr.level_count)
    ]


def read_rgb(osr, path: Path, x, y, w, h, level: int, ds: float) -> np.ndarray:
    """``read_region`` at level coordinates, RGBA composited on white, as ``(h, w, 3)`` uint8."""
    import openslide

    try:
        rgba = np.asarray(osr.read_region((int(x * ds), int(y * ds)), level, (w, h)))
    except openslide.OpenSlideError as e:
        raise TileReadError(f"{path}: level {level} at x={x}, y={y} ({w}x{h}): {e}") from e
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = (rgba[..., :3] * alpha + 255 * (255 - alpha)) // 255
    return rgb.astype(np.uint8)


def _float(props, key) -> float | None:
    try:
        v = float(props.get(key))
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def open(path: Path) -> Slide:  # noqa: A001 - the backend protocol's name
    """Open a vendor slide with OpenSlide; raises :class:`SlideOpenError` naming the file."""
    try:
        import openslide
    except ImportError as e:
        raise SlideOpenError(
            f"{path}: needs OpenSlide; pip install 'napari-mrplip[openslide]'"
        ) from e
    path = Path(path)
    try:
        osr = openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as e:
        raise SlideOpenError(f"{path}: OpenSlide cannot open it ({e})") from e
    shapes = [(h, w) for w, h in osr.level_dimensions]
    props = osr.properties
    mpps = [
        v
        for v in (
            _float(props, openslide.PROPERTY_NAME_MPP_X),
            _float(props, openslide.PROPERTY_NAME_MPP_Y),
        )
        if v
    ]
    associated = {
        k: (lambda k=k: np.asarray(osr.associated_images[k].convert("RGB")))
        for k in osr.associated_images
    }
    slide = Slide(
        path=path,
        levels=LazyLevels(shapes, lambda: _dask_levels(osr, path)),
        reader=OpenSlideRegionReader(osr, path),
        mpp=sum(mpps) / len(mpps) if mpps else None,
        magnification=_float(props, openslide.PROPERTY_NAME_OBJECTIVE_POWER),
        associated=associated,
        native_levels=osr.level_count,
        metadata={
            "backend": NAME,
            "format": props.get(openslide.PROPERTY_NAME_VENDOR),
            "properties": dict(props),
        },
    )
    slide.closers.append(osr.close)
    return slide
