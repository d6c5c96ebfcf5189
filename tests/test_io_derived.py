"""read_region at built (derived) levels: the fast reduction gives the dask level's exact pixels."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
from skimage import data

import napari_mrplip.io.derived as derived
from conftest import CMU_SVS, OS2_OME, _need
from napari_mrplip.io import open_slide
from napari_mrplip.io.backends.ome_zarr import ZarrRegionReader
from napari_mrplip.io.derived import block_mean, derived_source, halve_block, read_derived
from napari_mrplip.io.pyramid import halve
from napari_mrplip.io.writers import write_pyramid

#: (x, y, w, h) in pixels of the derived level: aligned, unaligned, across the right/bottom
#: edges, outside on the top/left, and the whole level (with padding).
WINDOWS = [
    (0, 0, 256, 256),
    (120, 240, 240, 120),
    (37, 101, 224, 224),
    (333, 77, 513, 257),
    (-13, -7, 100, 90),
    ("right", "bottom", 300, 200),
    (0, 0, "all", "all"),
]

_FULL: dict = {}


def _level(path, level) -> np.ndarray:
    """The dask level computed whole (cached per module run)."""
    key = (path, level)
    if key not in _FULL:
        with open_slide(path) as slide:
            _FULL[key] = slide.levels[level].compute()
    return _FULL[key]


def _expected(full: np.ndarray, xl: int, yl: int, w: int, h: int) -> np.ndarray:
    out = np.full((h, w, 3), 255, np.uint8)
    lh, lw = full.shape[:2]
    xa, ya, xb, yb = max(xl, 0), max(yl, 0), min(xl + w, lw), min(yl + h, lh)
    if xb > xa and yb > ya:
        out[ya - yl : yb - yl, xa - xl : xb - xl] = full[ya:yb, xa:xb]
    return out


def _window(full, window):
    lh, lw = full.shape[:2]
    x, y, w, h = window
    w = lw + 5 if w == "all" else w
    h = lh + 3 if h == "all" else h
    x = lw - w // 2 + 1 if x == "right" else x
    y = lh - h // 2 - 1 if y == "bottom" else y
    return x, y, w, h


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("path", [CMU_SVS, OS2_OME], ids=lambda p: p.name)
def test_derived_reads_equal_dask_level(path, level):
    path = _need(path)
    full = _level(path, level)
    with open_slide(path) as slide:
        assert slide.native_levels == 1
        assert derived_source([lv.shape for lv in slide.levels], 1, level) == (0, level)
        ds = slide.downsamples[level]
        for window in WINDOWS:
            xl, yl, w, h = _window(full, window)
            x0, y0 = int(round(xl * ds)), int(round(yl * ds))
            # read_region maps x0 back with round(x0 / ds); use the same level origin
            xl, yl = int(round(x0 / ds)), int(round(y0 / ds))
            got = slide.read_region(x0, y0, w, h, level)
            np.testing.assert_array_equal(got, _expected(full, xl, yl, w, h), err_msg=str(window))


def test_derived_read_decodes_only_its_stored_tiles(cmu_svs):
    with open_slide(cmu_svs) as slide:
        reader = slide.reader
        before = reader.tiles_decoded
        # level 1, 120x120 px at (120, 120): level-0 window 240..480, exactly one 240 px tile row
        out = slide.read_region(240, 240, 120, 120, level=1)
        assert reader.tiles_decoded - before == 1
        np.testing.assert_array_equal(out, _level(cmu_svs, 1)[120:240, 120:240])


def test_generic_path_and_bands_equal_dask(cmu_svs, monkeypatch):
    """Without the tile-by-tile reduction (any backend), and in small bands, pixels are the same."""
    monkeypatch.setattr(derived, "BAND_PX", 5000)
    full2 = _level(cmu_svs, 2)
    with open_slide(cmu_svs) as slide:
        got = read_derived(slide._read_stored, 0, 2, 11, 23, 301, 197)
        assert slide.reader.read_reduced(0, 5, 0, 0, 10, 10) is None  # 240 px tiles, 32 px blocks
    np.testing.assert_array_equal(got, full2[23:220, 11:312])


@pytest.mark.parametrize("reader", ["zarr", "none"])
def test_ome_zarr_single_level_derived_reads(tmp_path, reader):
    """OME-Zarr built levels: the stored window comes from the zarr reader, or (a slide without
    a fast reader) from its dask level; both give the dask level's pixels."""
    tissue = np.tile(data.immunohistochemistry(), (2, 3, 1))[:1021, :1533]  # odd sizes
    path = write_pyramid(tmp_path / "one.ome.zarr", [tissue], mpp=0.5, tile=256)
    with open_slide(path) as slide:
        assert isinstance(slide.reader, ZarrRegionReader) and slide.native_levels == 1
        if reader == "none":
            slide.reader = None
        for level in (1, 2):
            full = slide.levels[level].compute()
            got = slide.read_region(-4, 6, full.shape[1], full.shape[0], level)
            xl, yl = (
                int(round(-4 / slide.downsamples[level])),
                int(round(6 / slide.downsamples[level])),
            )
            np.testing.assert_array_equal(got, _expected(full, xl, yl, *full.shape[1::-1]))


def test_ndpi_like_strips_reduce_through_fast_path(tmp_path):
    """Stripped JPEG TIFF (16-row strips, like NDPI levels): stored strips reduced, same pixels."""
    tissue = np.tile(data.immunohistochemistry(), (2, 3, 1))[:1000, :1530]
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, tissue, rowsperstrip=8, photometric="rgb", compression="jpeg")
    with open_slide(path) as slide:
        reader = slide.reader
        assert reader.tiled[0] is not None and reader.tiled[0].tile_w == 1530
        before = reader.tiles_decoded
        full = slide.levels[1].compute()
        np.testing.assert_array_equal(
            slide.read_region(0, 0, 600, 600, 1), _expected(full, 0, 0, 600, 600)
        )
        full3 = slide.levels[2].compute()
        np.testing.assert_array_equal(
            slide.read_region(12, 40, 200, 200, 2), _expected(full3, 3, 10, 200, 200)
        )
        # all 1000 stored rows for level 1, then stored rows 40..840 for level 2: strips once each
        th = reader.tiled[0].tile_h
        assert reader.tiles_decoded - before == -(-1000 // th) + (839 // th - 40 // th + 1)


@pytest.mark.parametrize("shape", [(7, 9), (64, 64), (33, 130)])
def test_halve_block_is_pyramid_halve(shape):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    img[:2, :2] = 255  # saturated block: the sum needs more than 8 bits
    img[2:4, :2] = np.array([[1, 2], [2, 1]], np.uint8)[..., None]  # mean 1.5 rounds up to 2
    once = halve(da.from_array(img)).compute()
    assert (once[1, 0] == 2).all() and (once[0, 0] == 255).all()
    np.testing.assert_array_equal(halve_block(img), once)
    if min(shape) >= 8:
        twice = halve(halve(da.from_array(img))).compute()
        np.testing.assert_array_equal(block_mean(img, 2), twice)


def test_derived_source_refuses_stored_and_foreign_levels():
    shapes = [(1000, 800, 3), (500, 400, 3), (250, 200, 3)]
    assert derived_source(shapes, 3, 2) is None  # stored
    assert derived_source(shapes, 1, 0) is None
    assert derived_source(shapes, 1, 2) == (0, 2)
    assert derived_source([(1000, 800, 3), (333, 266, 3)], 1, 1) is None  # not a halve chain
    assert derived_source(shapes, None, 1) is None


def _ndpi_like(path, img: np.ndarray, blocks: int = 16):
    """A one-strip JPEG TIFF with restart markers and NDPI's McuStarts/format tags (as scanners
    write NDPI levels), so tifffile splits it into MCU-row tiles as it does real NDPI."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90, restart_marker_blocks=blocks)
    jpeg = buf.getvalue()
    sos = jpeg.index(b"\xff\xda")
    starts = [sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")]
    for i in range(starts[0], len(jpeg) - 1):  # after each RSTn marker (FFD0..FFD7)
        if jpeg[i] == 0xFF and 0xD0 <= jpeg[i + 1] <= 0xD7:
            starts.append(i + 2)
    tags = [(271, "s", 0, "Hamamatsu", True), (65420, "I", 1, 1, True)]
    tags.append((65426, "I", len(starts), starts, True))
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            iter([jpeg]),
            shape=img.shape,
            dtype=np.uint8,
            photometric="ycbcr",
            subsampling=(2, 2),
            compression="jpeg",
            rowsperstrip=img.shape[0],
            extratags=tags,
        )
    return path


def test_ndpi_restart_marker_tiles_use_fast_path(tmp_path):
    """NDPI: the JPEG's restart intervals are read as tiles, pixels equal to the zarr level."""
    img = np.tile(data.immunohistochemistry(), (2, 3, 1))[:1000, :1536]
    path = _ndpi_like(tmp_path / "fake.ndpi.tif", img)
    with open_slide(path) as slide:
        info, reader = slide.reader.tiled[0], slide.reader
        assert slide.metadata["format"] == "ndpi"
        assert info is not None and (info.tile_h, info.tile_w) == (16, 256)  # one MCU row
        l0 = slide.levels[0].compute()
        np.testing.assert_array_equal(slide.read_region(301, 417, 224, 224), l0[417:641, 301:525])
        # 224 rows from 417 cross MCU rows 26..40 and columns 1..2
        assert reader.tiles_decoded == 15 * 2
        np.testing.assert_array_equal(slide.read_region(0, 0, 1536, 1000), l0)
        l1 = slide.levels[1].compute()
        np.testing.assert_array_equal(slide.read_region(0, 0, 768, 500, 1), l1)
    assert np.abs(l0.astype(int) - img).mean() < 4  # it is the image, through lossy JPEG
