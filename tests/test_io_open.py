"""open_slide on real public slides and on pyramids generated here, through every backend."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from skimage import data

from napari_mrplip.io import Slide, SlideOpenError, open_slide
from napari_mrplip.io.writers import write_pyramid

EXPECTED_MPP = {
    "CMU-1-Small-Region.svs": 0.499,
    # OME PhysicalSizeX/Y of the Bio-Formats exports (µm), averaged
    "OS-1-detail.ome.tif": (0.2270972430394695 + 0.22710240047237298) / 2,
    "OS-2-ndpi.ome.tif": (0.2270972430394695 + 0.22710240047237298) / 2,
}


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    """(1024, 1024, 3) uint8: real IHC tissue from scikit-image, tiled 2x2."""
    return np.tile(data.immunohistochemistry(), (2, 2, 1))


def test_shared_slides_open_as_pyramids(shared_slide):
    with open_slide(shared_slide) as slide:
        assert isinstance(slide, Slide)
        assert len(slide.levels) >= 3
        assert all(
            lv.dtype == np.uint8 and lv.ndim == 3 and lv.shape[2] == 3 for lv in slide.levels
        )
        sizes = [lv.shape[0] * lv.shape[1] for lv in slide.levels]
        assert sizes == sorted(sizes, reverse=True)
        assert max(slide.levels[-1].shape[:2]) <= 512
        assert slide.mpp == pytest.approx(EXPECTED_MPP[shared_slide.name], rel=1e-6)
        assert slide.metadata["backend"] == "tifffile"


@pytest.mark.parametrize("box", [(0, 0, 256, 256), (100, 200, 700, 500), (1000, 1000, 1101, 101)])
def test_shared_slides_pixels_equal_tifffile(shared_slide, box):
    ref = tifffile.imread(shared_slide)  # tifffile's own decode of level 0
    x, y, w, h = box
    with open_slide(shared_slide) as slide:
        got = slide.read_region(x, y, w, h)
        lazy = slide.levels[0][y : y + h, x : x + w].compute()
    want = np.full((h, w, 3), 255, np.uint8)
    part = ref[y : y + h, x : x + w]
    want[: part.shape[0], : part.shape[1]] = part
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(lazy, part)


def test_svs_metadata_and_associated_images(cmu_svs):
    with open_slide(cmu_svs) as slide:
        assert slide.magnification == 20.0
        assert slide.metadata["format"] == "svs"
        assert set(slide.associated) == {"thumbnail", "label", "macro"}
        label = slide.associated["label"]()
        assert label.shape == (463, 387, 3) and label.dtype == np.uint8
        assert all(lv.shape[:2] != (463, 387) for lv in slide.levels)
        assert slide.dimensions == (2220, 2967)


def test_synthesised_levels_are_block_means(os1_ome):
    with open_slide(os1_ome) as slide:
        l0 = slide.levels[0].compute().astype(np.float32)
        l1 = slide.levels[1].compute()
    h, w = l1.shape[:2]
    mean = l0[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).mean(axis=(1, 3))
    assert np.abs(l1.astype(np.float32) - mean).max() <= 0.5 + 1e-3


def test_read_region_at_level_uses_level0_origin(cmu_svs):
    with open_slide(cmu_svs) as slide:
        l1 = slide.levels[1].compute()
        ds = slide.downsamples[1]
        got = slide.read_region(int(round(300 * ds)), int(round(400 * ds)), 128, 64, level=1)
    np.testing.assert_array_equal(got, l1[400:464, 300:428])


def test_read_region_pads_white_outside(cmu_svs):
    with open_slide(cmu_svs) as slide:
        out = slide.read_region(2200, -10, 40, 30)
    assert (out[:10] == 255).all() and (out[:, 20:] == 255).all()
    assert not (out[10:, :20] == 255).all()


def test_openslide_backend_matches_tifffile(cmu_svs):
    pytest.importorskip("openslide")
    with open_slide(cmu_svs, backend="openslide") as a, open_slide(cmu_svs) as b:
        assert a.mpp == pytest.approx(0.499) and a.magnification == 20.0
        np.testing.assert_array_equal(
            a.read_region(500, 600, 300, 200), b.read_region(500, 600, 300, 200)
        )


def test_ome_tiff_subifd_pyramid_roundtrip(tmp_path, tissue):
    path = write_pyramid(tmp_path / "t.ome.tif", tissue, mpp=0.25, tile=256, compression="zlib")
    with open_slide(path) as slide:
        assert slide.native_levels == 3
        assert [lv.shape[0] for lv in slide.levels] == [1024, 512, 256]
        assert slide.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(slide.read_region(0, 0, 1024, 1024), tissue)
        ref1 = tifffile.imread(path, level=1)
        np.testing.assert_array_equal(
            slide.read_region(200, 300, 300, 100, level=1), ref1[150:250, 100:400]
        )


def test_page_pyramid_and_resolution_tags(tmp_path, tissue):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            tissue,
            tile=(128, 128),
            compression="zlib",
            photometric="rgb",
            resolution=(20000, 20000),
            resolutionunit="CENTIMETER",
        )
        for k in (2, 4):
            tw.write(
                tissue[::k, ::k],
                tile=(128, 128),
                compression="zlib",
                photometric="rgb",
                subfiletype=1,
            )
    with open_slide(path) as slide:
        assert [lv.shape[0] for lv in slide.levels] == [1024, 512, 256]
        assert slide.mpp == pytest.approx(0.5)  # 20000 px/cm
        np.testing.assert_array_equal(slide.read_region(0, 0, 256, 256, level=2), tissue[::4, ::4])


def test_stripped_tiff_without_unit_has_no_mpp(tmp_path, tissue):
    path = tmp_path / "strips.tif"
    tifffile.imwrite(
        path, tissue, rowsperstrip=64, photometric="rgb", resolution=(3, 3), resolutionunit="NONE"
    )
    with open_slide(path) as slide:
        assert slide.mpp is None  # ResolutionUnit NONE says nothing physical
        assert len(slide.levels) == 2
        np.testing.assert_array_equal(slide.read_region(10, 100, 500, 300), tissue[100:400, 10:510])
    with open_slide(path, mpp=0.5) as slide:
        assert slide.mpp == 0.5 and slide.level_mpp(1) == 1.0


def test_rgba_and_grey_tiffs_become_rgb(tmp_path, tissue):
    rgba = np.dstack([tissue, np.full(tissue.shape[:2], 200, np.uint8)])
    tifffile.imwrite(
        tmp_path / "rgba.tif", rgba, tile=(256, 256), photometric="rgb", extrasamples=[2]
    )
    tifffile.imwrite(tmp_path / "grey.tif", tissue[..., 0], tile=(256, 256))
    with open_slide(tmp_path / "rgba.tif") as slide:
        np.testing.assert_array_equal(slide.read_region(0, 0, 300, 300), tissue[:300, :300])
    with open_slide(tmp_path / "grey.tif") as slide:
        out = slide.read_region(0, 0, 300, 300)
        assert out.shape == (300, 300, 3)
        np.testing.assert_array_equal(out[..., 2], tissue[:300, :300, 0])


def test_ome_zarr_v05_roundtrip(tmp_path, tissue):
    path = write_pyramid(tmp_path / "t.ome.zarr", tissue, mpp=0.5, tile=256)
    with open_slide(path) as slide:
        assert slide.metadata["backend"] == "ome_zarr" and slide.metadata["ngff_version"] == "0.5"
        assert slide.mpp == pytest.approx(0.5)
        assert [lv.shape[0] for lv in slide.levels] == [1024, 512, 256]
        np.testing.assert_array_equal(slide.read_region(0, 0, 1024, 1024), tissue)


def test_ome_zarr_v04_zarr2_with_nanometre_units(tmp_path, tissue):
    root = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w", zarr_format=2)
    cyx = np.ascontiguousarray(tissue.transpose(2, 0, 1))
    datasets = []
    for i, k in enumerate((1, 2)):
        root.create_array(str(i), data=cyx[:, ::k, ::k], chunks=(3, 256, 256))
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [{"type": "scale", "scale": [1, 250 * k, 250 * k]}],
            }
        )
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "nanometer"},
        {"name": "x", "type": "space", "unit": "nanometer"},
    ]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    with open_slide(tmp_path / "v04.zarr") as slide:
        assert slide.mpp == pytest.approx(0.25)
        assert slide.native_levels == 2 and len(slide.levels) == 2
        np.testing.assert_array_equal(slide.read_region(5, 7, 100, 100), tissue[7:107, 5:105])


def test_zarr_group_without_multiscales_is_refused(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array(
        "a", shape=(4, 4), dtype="u1"
    )
    with pytest.raises(SlideOpenError, match="plain.zarr.*multiscales"):
        open_slide(tmp_path / "plain.zarr")
