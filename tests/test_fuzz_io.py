"""Bad input: truncated, mutated, non-slide and hostile files give clear errors, never hangs or crashes.

Every mutated file is generated here from a real slide or a small generated pyramid. Each case
runs under a timeout; the only outcomes allowed are a slide that reads (or raises
TileReadError for a damaged tile) or a SlideOpenError naming the file.
"""

from __future__ import annotations

import shutil
import struct
import warnings

import numpy as np
import pytest
import tifffile

from napari_mrplip.io import MissingMppError, SlideOpenError, TileReadError, open_slide
from napari_mrplip.io.safe import BlankTileWarning, safe_levels
from napari_mrplip.io.writers import write_pyramid


def _mutated(tmp_path, src, name, mutate):
    data = bytearray(src.read_bytes())
    mutate(data)
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


def _open_or_clear_error(path):
    """Open and read a little; only SlideOpenError (naming the file) or TileReadError may escape."""
    try:
        slide = open_slide(path)
    except SlideOpenError as e:
        assert path.name in str(e)
        return "refused"
    with slide:
        try:
            slide.read_region(0, 0, 512, 512)
            slide.read_region(0, 0, 64, 64, level=len(slide.levels) - 1)
        except TileReadError as e:
            assert path.name in str(e) and "level" in str(e)
            return "tile error"
    return "read"


@pytest.fixture(scope="module")
def small_tiff(tmp_path_factory):
    """A 1024² JPEG-tiled OME-TIFF pyramid of real tissue."""
    from skimage import data

    img = np.tile(data.immunohistochemistry(), (2, 2, 1))
    return write_pyramid(tmp_path_factory.mktemp("fuzz") / "small.ome.tif", img, mpp=0.5)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("keep", [0, 4, 7, 16, 200, 5000, 100_000, 1_000_000, 1_200_000])
def test_truncated_svs_is_refused(tmp_path, cmu_svs, keep):
    path = _mutated(tmp_path, cmu_svs, f"cut{keep}.svs", lambda d: d.__delitem__(slice(keep, None)))
    with pytest.raises(SlideOpenError, match=f"cut{keep}.svs"):
        open_slide(path)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "name, content",
    [
        ("notes.svs", b"this is not a slide\n" * 50),
        ("empty.tif", b""),
        ("png.tif", b"\x89PNG\r\n\x1a\n" + bytes(200)),
        ("dir.zarr", None),
    ],
)
def test_non_slide_files_are_refused(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(SlideOpenError, match=name.replace(".", r"\.")):
        open_slide(path)


@pytest.mark.timeout(30)
def test_truncated_after_main_image_opens_without_lost_macro(tmp_path, cmu_svs):
    # the last 40 kB hold only the macro image's IFD: the slide itself is intact
    path = _mutated(tmp_path, cmu_svs, "tail.svs", lambda d: d.__delitem__(slice(1_900_000, None)))
    with open_slide(path) as slide:
        assert "macro" not in slide.associated and "label" in slide.associated
        assert slide.read_region(0, 0, 64, 64).shape == (64, 64, 3)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(SlideOpenError, match="no such file"):
        open_slide(tmp_path / "absent.svs")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(24))
def test_flipped_header_and_ifd_bytes(tmp_path, cmu_svs, seed):
    rng = np.random.default_rng(seed)
    with tifffile.TiffFile(cmu_svs) as tf:
        ifd = tf.pages[0].offset

    def flip(d):
        region = (0, 16) if seed < 6 else (ifd, ifd + 300)
        for pos in rng.integers(region[0], region[1], size=1 + seed % 4):
            d[pos] ^= 1 << int(rng.integers(0, 8))

    path = _mutated(tmp_path, cmu_svs, f"flip{seed}.svs", flip)
    assert _open_or_clear_error(path) in {"refused", "tile error", "read"}


def _tag_value_offset(path, code):
    """File offset of a tag's (first) value and its struct format."""
    with tifffile.TiffFile(path) as tf:
        tag = tf.pages[0].tags[code]
        return tag.valueoffset, tf.byteorder + {3: "H", 4: "I", 16: "Q"}[int(tag.dtype)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "code", [256, 257, 322, 323]
)  # ImageWidth, ImageLength, TileWidth, TileLength
def test_huge_declared_sizes(tmp_path, small_tiff, code):
    offset, fmt = _tag_value_offset(small_tiff, code)
    value = 0xFFF0 if fmt[-1] == "H" else 2**31 - 16
    path = _mutated(
        tmp_path,
        small_tiff,
        f"huge{code}.ome.tif",
        lambda d: struct.pack_into(fmt, d, offset, value),
    )
    assert _open_or_clear_error(path) in {"refused", "tile error"}


@pytest.mark.timeout(30)
def test_huge_byte_count_is_refused(tmp_path, small_tiff):
    offset, fmt = _tag_value_offset(small_tiff, 325)  # TileByteCounts
    path = _mutated(
        tmp_path,
        small_tiff,
        "bytecount.ome.tif",
        lambda d: struct.pack_into(fmt, d, offset, 2 ** (8 * struct.calcsize(fmt)) - 16),
    )
    with pytest.raises(SlideOpenError, match="bytecount.ome.tif.*past the end"):
        open_slide(path)


def _corrupt_tile(tmp_path, src, index=5):
    with tifffile.TiffFile(src) as tf:
        page = tf.pages[0]
        off, n = page.dataoffsets[index], page.databytecounts[index]
        cols = -(-page.imagewidth // page.tilewidth)
        th, tw = page.tilelength, page.tilewidth

    def garble(d):
        d[off + 2 : off + n] = bytes(range(256)) * ((n - 2) // 256) + bytes((n - 2) % 256)

    return (
        _mutated(tmp_path, src, "corrupt.ome.tif", garble),
        (index // cols) * th,
        (index % cols) * tw,
    )


def test_corrupt_tile_raises_tile_read_error(tmp_path, small_tiff):
    path, y, x = _corrupt_tile(tmp_path, small_tiff)
    with open_slide(path) as slide:
        np.testing.assert_array_equal(
            slide.read_region(0, 0, 256, 256), tifffile.imread(small_tiff)[:256, :256]
        )
        with pytest.raises(
            TileReadError, match=rf"corrupt\.ome\.tif: level 0, tile row {y // 256} col {x // 256}"
        ):
            slide.read_region(x + 10, y + 10, 100, 100)
        with pytest.raises(TileReadError, match="corrupt.ome.tif"):
            slide.levels[0][y : y + 10, x : x + 10].compute()  # the zarr path fails too


def test_corrupt_tile_shows_blank_once_in_viewer_levels(tmp_path, small_tiff):
    path, y, x = _corrupt_tile(tmp_path, small_tiff)
    with open_slide(path) as slide, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        levels = safe_levels(slide)
        whole = levels[0].compute()
        levels[1].compute()  # the synthesised/native level above it also survives
        levels[0][y : y + 5, x : x + 5].compute()
    blank = [w for w in caught if issubclass(w.category, BlankTileWarning)]
    assert len(blank) == 1 and "corrupt.ome.tif" in str(blank[0].message)
    assert (whole[y : y + 256, x : x + 256] == 255).all()
    cy, cx = levels[0].chunksize[:2]  # the failing dask chunk is blank, the others are intact
    assert y < cy and x < cx
    np.testing.assert_array_equal(whole[cy:, cx:], tifffile.imread(small_tiff)[cy:, cx:])


@pytest.mark.timeout(30)
def test_zero_size_image_is_refused(tmp_path):
    src = tmp_path / "one.tif"
    tifffile.imwrite(src, np.zeros((16, 16, 3), np.uint8), photometric="rgb", tile=(16, 16))
    offset, fmt = _tag_value_offset(src, 256)  # ImageWidth -> 0
    path = _mutated(tmp_path, src, "zero.tif", lambda d: struct.pack_into(fmt, d, offset, 0))
    with pytest.raises(SlideOpenError, match="zero.tif"):
        open_slide(path)


@pytest.mark.timeout(30)
def test_unknown_compression_is_refused(tmp_path, small_tiff):
    offset, fmt = _tag_value_offset(small_tiff, 259)
    path = _mutated(
        tmp_path, small_tiff, "codec.ome.tif", lambda d: struct.pack_into(fmt, d, offset, 60123)
    )
    with pytest.raises(SlideOpenError, match="codec.ome.tif.*compression"):
        open_slide(path)


def test_missing_mpp_is_none_and_require_mpp_says_what_to_do(tmp_path):
    path = tmp_path / "nompp.tif"
    tifffile.imwrite(
        path, np.full((300, 300, 3), 128, np.uint8), tile=(128, 128), photometric="rgb"
    )
    with open_slide(path) as slide:
        assert slide.mpp is None and slide.level_mpp(0) is None
        with pytest.raises(MissingMppError, match="nompp.tif.*mpp="):
            slide.require_mpp()
    with open_slide(path, mpp=0.5) as slide:
        assert slide.require_mpp() == 0.5


def test_copy_of_real_slide_still_opens(tmp_path, cmu_svs):
    path = tmp_path / "copy.svs"
    shutil.copy(cmu_svs, path)
    assert _open_or_clear_error(path) == "read"
