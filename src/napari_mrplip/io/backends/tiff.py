"""tifffile backend: Aperio SVS, tiled TIFF (page or SubIFD pyramids), OME-TIFF, NDPI, stripped TIFF.

Level shapes come from the TIFF pages; ``read_region`` goes through
:class:`~napari_mrplip.io.region.TiffRegionReader`, which decodes tile bytes directly. The levels'
dask arrays, over tifffile's zarr store (``series.aszarr()``), are built on first access
(:class:`~napari_mrplip.io.levels.LazyLevels`), so opening and reading import neither dask nor zarr.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_mrplip.io.errors import SlideOpenError
from napari_mrplip.io.levels import LazyLevels
from napari_mrplip.io.limits import MAX_PAGES, check_level_shapes
from napari_mrplip.io.pyramid import merged_chunks, to_rgb_uint8
from napari_mrplip.io.region import NamedErrors, TiffRegionReader, tiled_level
from napari_mrplip.io.slide import Slide

from ._tiff_meta import ome_mpp_mag, resolution_mpp, svs_mpp_mag

if TYPE_CHECKING:
    import dask.array as da

NAME = "tifffile"
_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Formats that are TIFF containers but are better read by OpenSlide when it is installed.
_OPENSLIDE_FIRST = {".scn", ".bif"}
#: Series names that are associated images, never the main image.
ASSOCIATED = {"label", "macro", "thumbnail", "overview"}


def _parse_errors() -> tuple[type[BaseException], ...]:
    import tifffile

    return (
        tifffile.TiffFileError,
        ValueError,
        NotImplementedError,
        ZeroDivisionError,
        IndexError,
        KeyError,
        TypeError,
        struct.error,
        OSError,
        EOFError,
        RuntimeError,
    )


def can_open(path: Path) -> bool:
    """True for a regular file starting with a TIFF/BigTIFF signature (reads 4 bytes)."""
    try:
        path = Path(path)
        if not path.is_file():
            return False
        if path.suffix.lower() in _OPENSLIDE_FIRST and importlib.util.find_spec("openslide"):
            return False
        with path.open("rb") as fh:
            return fh.read(4) in _MAGIC
    except (OSError, ValueError):
        return False


def open(path: Path) -> Slide:  # noqa: A001 - the backend protocol's name
    """Open a TIFF-family slide lazily; raises :class:`SlideOpenError` naming the file."""
    import tifffile

    path = Path(path)
    errors = _parse_errors()
    try:
        tf = tifffile.TiffFile(path)
    except errors as e:
        raise SlideOpenError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from e
    try:
        return _build(path, tf)
    except SlideOpenError:
        tf.close()
        raise
    except errors as e:
        tf.close()
        raise SlideOpenError(f"{path}: malformed TIFF structure ({type(e).__name__}: {e})") from e


def _main_series(path: Path, tf):
    pages = tf.pages
    pages.useframes = True
    if len(pages) > MAX_PAGES:
        raise SlideOpenError(
            f"{path}: holds {len(pages)} TIFF pages, more than the limit of {MAX_PAGES}; "
            "it is an image stack, not a slide"
        )
    candidates = [
        s
        for s in tf.series
        if s.name.strip().lower() not in ASSOCIATED and "Y" in s.axes and "X" in s.axes
    ]
    if not candidates:
        raise SlideOpenError(f"{path}: TIFF holds no image series with Y and X axes")

    def area(s):
        return int(s.shape[s.axes.index("Y")]) * int(s.shape[s.axes.index("X")])

    main = max(candidates, key=area)
    if area(main) == 0:
        raise SlideOpenError(f"{path}: the image is empty (shape {tuple(main.shape)})")
    return main


def _check_page(path: Path, level: int, page, file_size: int) -> None:
    """Refuse pages whose declared layout does not fit the file (truncated, corrupt, hostile)."""
    import tifffile

    page = getattr(page, "keyframe", None) or page  # a TiffFrame shares its keyframe's layout

    if page.compression != 1 and page.compression not in tifffile.TIFF.DECOMPRESSORS:
        raise SlideOpenError(
            f"{path}: level {level} uses TIFF compression {int(page.compression)}, which this "
            "plugin cannot decode; convert the file (e.g. with bfconvert or vips) to JPEG tiles."
        )
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    expected = int(np.prod(page.chunked)) if not page.is_ndpi else len(offsets)
    if len(offsets) != len(counts) or len(offsets) != expected:
        raise SlideOpenError(
            f"{path}: level {level} declares {tuple(page.shape)} px in {expected} tiles/strips but "
            f"stores {len(offsets)} offsets and {len(counts)} byte counts; the file is corrupt."
        )
    bad = (counts > 0) & ((offsets < 0) | (offsets + counts > file_size))
    if bad.any():
        raise SlideOpenError(
            f"{path}: level {level}: {int(bad.sum())} of {len(bad)} tiles lie past the end of "
            f"the file ({file_size} bytes); the file is truncated or corrupt. Copy it again."
        )


def _level_shapes(series) -> list[tuple[int, int]]:
    """``(h, w)`` of each stored level, from the series' page shapes."""
    return [
        (int(lvl.shape[lvl.axes.index("Y")]), int(lvl.shape[lvl.axes.index("X")]))
        for lvl in series.levels
    ]


def _check_tile_tables(path: Path, series, file_size: int) -> None:
    """Check every page of every level before anything is read or allocated."""
    check_level_shapes(path, _level_shapes(series), file_size)
    for i, lvl in enumerate(series.levels):
        if 0 in tuple(lvl.shape):
            raise SlideOpenError(f"{path}: the image is empty (level {i} shape {tuple(lvl.shape)})")
        for page in lvl.pages:
            if page is not None and hasattr(page, "dataoffsets"):
                _check_page(path, i, page, file_size)


def _levels(path: Path, series) -> list[da.Array]:
    """The stored levels as dask arrays over tifffile's zarr store (imports dask and zarr)."""
    import dask.array as da
    import zarr

    store = series.aszarr()
    z = zarr.open(store, mode="r")
    arrays = [z[str(i)] for i in range(len(series.levels))] if len(series.levels) > 1 else [z]
    levels = []
    for arr, lvl in zip(arrays, series.levels):
        if arr.ndim < 2 or 0 in arr.shape:
            raise SlideOpenError(f"{path}: the image is empty (shape {tuple(arr.shape)})")
        chunks = merged_chunks(arr.shape, arr.chunks) if lvl.axes == "YXS" else arr.chunks
        d = da.from_array(
            NamedErrors(arr, path, len(levels)),
            chunks=chunks,
            asarray=False,
            inline_array=True,
            name=f"tiff-{id(arr):x}-{len(levels)}",
        )
        levels.append(to_rgb_uint8(d, lvl.axes))
    return levels


def _associated(tf, main) -> dict:
    out = {}
    for s in tf.series:
        key = s.name.strip().lower()
        if s is main or key not in ASSOCIATED or key in out:
            continue

        def load(s=s):
            return np.asarray(to_rgb_uint8(s.asarray(), s.axes))

        out[key] = load
    return out


def _mpp_mag(tf, main) -> tuple[float | None, float | None]:
    page = main.pages[0] if main.pages else tf.pages[0]
    if tf.is_svs:
        return svs_mpp_mag(page.description)
    if tf.is_ome and tf.ome_metadata:
        mpp, mag = ome_mpp_mag(tf.ome_metadata, tf.series.index(main))
        if mpp is not None:
            return mpp, mag
    return resolution_mpp(page), None


def _build(path: Path, tf) -> Slide:
    main = _main_series(path, tf)
    file_size = tf.filehandle.size
    _check_tile_tables(path, main, file_size)
    levels = LazyLevels(_level_shapes(main), lambda: _levels(path, main))
    mpp, mag = _mpp_mag(tf, main)
    fmt = "svs" if tf.is_svs else "ome-tiff" if tf.is_ome else "ndpi" if tf.is_ndpi else "tiff"
    first = main.levels[0].pages[0]
    tiled = [
        tiled_level(lvl.pages[0], file_size) if len(lvl.pages) == 1 else None for lvl in main.levels
    ]
    reader = TiffRegionReader(path, tiled, levels)
    slide = Slide(
        path=path,
        levels=levels,
        mpp=mpp,
        magnification=mag,
        reader=reader,
        associated=_associated(tf, main),
        native_levels=levels.native_count,
        metadata={
            "backend": NAME,
            "format": fmt,
            "compression": getattr(first.compression, "name", str(first.compression)),
            "tile": (first.tilelength, first.tilewidth) if first.is_tiled else None,
            "description": first.description[:4096],
        },
    )
    slide.closers += [tf.close, reader.close]
    return slide
