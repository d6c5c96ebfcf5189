"""The npe2 reader hook and sample data, without a viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mrplip._napari.reader import napari_get_reader, read_slide
from napari_mrplip._napari.sample import SAMPLE_SLIDE, sample_slide
from napari_mrplip.io import Slide


def test_reader_declines_what_it_cannot_take(tmp_path):
    (tmp_path / "notes.tif").write_text("not a tiff")
    (tmp_path / "plain").mkdir()
    for path in [
        tmp_path / "notes.tif",
        tmp_path / "absent.svs",
        tmp_path / "plain",
        [str(tmp_path / "a.svs"), str(tmp_path / "b.svs")],
        42,
        None,
    ]:
        assert napari_get_reader(path) is None


def test_reader_layer_tuple(cmu_svs):
    reader = napari_get_reader(str(cmu_svs))
    assert callable(reader)
    [(levels, meta, kind)] = reader([str(cmu_svs)])
    assert kind == "image"
    assert len(levels) >= 3 and levels[0].shape == (2967, 2220, 3)
    assert meta["rgb"] and meta["multiscale"] and meta["contrast_limits"] == (0, 255)
    assert meta["scale"] == pytest.approx((0.499, 0.499))
    assert meta["units"] == ("micrometer", "micrometer") and meta["axis_labels"] == ("y", "x")
    assert meta["name"] == cmu_svs.name and meta["metadata"]["path"] == str(cmu_svs)
    slide = meta["metadata"]["slide"]
    assert isinstance(slide, Slide)
    np.testing.assert_array_equal(
        levels[1][:64, :64].compute(), slide.levels[1][:64, :64].compute()
    )


def test_reader_uses_pixels_when_mpp_is_unknown(tmp_path):
    import tifffile

    path = tmp_path / "nompp.tif"
    tifffile.imwrite(
        path, np.full((600, 700, 3), 200, np.uint8), tile=(256, 256), photometric="rgb"
    )
    [(_, meta, _)] = read_slide(path)
    assert meta["scale"] == (1.0, 1.0) and meta["units"] == ("pixel", "pixel")


def test_sample_is_the_bundled_svs_through_the_reader():
    assert SAMPLE_SLIDE.is_file() and (SAMPLE_SLIDE.parent / "ATTRIBUTION.md").is_file()
    [(levels, meta, kind)] = sample_slide()
    assert kind == "image" and meta["scale"] == pytest.approx((0.499, 0.499))
    assert meta["metadata"]["slide"].magnification == 20.0
