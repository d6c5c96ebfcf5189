"""Contracts owned by the skeleton: Slide geometry, tissue mask, catalogue, placement, CLI."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest

from napari_mrplip.cli import COMMANDS, main
from napari_mrplip.heatmap.result import HeatmapResult
from napari_mrplip.io.slide import Slide
from napari_mrplip.models import catalog
from napari_mrplip.tiling.tissue import tissue_fraction, tissue_mask


def _gradient_slide() -> Slide:
    y, x = np.mgrid[0:600, 0:800]
    img = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    l0 = da.from_array(img, chunks=(128, 128, 3))
    l1 = da.from_array(img[::2, ::2], chunks=(128, 128, 3))
    return Slide(path="/tmp/gradient.tif", levels=[l0, l1], mpp=0.5), img


def test_read_region_matches_array_and_pads_white():
    slide, img = _gradient_slide()
    np.testing.assert_array_equal(slide.read_region(10, 20, 30, 40), img[20:60, 10:40])
    out = slide.read_region(-5, 590, 20, 20)
    assert (out[:5] == 255).all() or (out[:, :5] == 255).all()
    np.testing.assert_array_equal(out[0:10, 5:20], img[590:600, 0:15])
    assert (out[10:] == 255).all()


def test_read_region_level1_uses_level0_origin():
    slide, img = _gradient_slide()
    assert slide.downsamples == [1.0, 2.0]
    np.testing.assert_array_equal(
        slide.read_region(100, 200, 8, 8, level=1), img[::2, ::2][100:108, 50:58]
    )
    assert slide.level_mpp(1) == 1.0


def test_read_region_rejects_bad_arguments():
    slide, _ = _gradient_slide()
    with pytest.raises(ValueError, match="level 5"):
        slide.read_region(0, 0, 4, 4, level=5)
    with pytest.raises(ValueError, match="non-negative"):
        slide.read_region(0, 0, -1, 4)
    with pytest.raises(ValueError, match="too large"):
        slide.read_region(0, 0, 1 << 17, 1 << 17)


def test_thumbnail_bounded_and_best_level():
    slide, _ = _gradient_slide()
    th = slide.thumbnail(200)
    assert max(th.shape[:2]) == 200 and th.dtype == np.uint8
    assert slide.best_level_for_downsample(3.0) == 1
    assert slide.best_level_for_downsample(1.5) == 0


def test_tissue_mask_separates_tissue_from_glass():
    img = np.full((100, 100, 3), 240, np.uint8)
    img[20:60, 30:80] = (180, 80, 160)  # H&E-ish purple
    mask = tissue_mask(img)
    assert mask[20:60, 30:80].mean() > 0.95
    assert mask[70:, :].mean() < 0.01
    assert tissue_fraction(mask, (30, 20, 80, 60)) > 0.95
    assert tissue_fraction(mask, (0, 80, 100, 100)) == 0.0


def test_tissue_mask_all_glass_is_empty():
    rng = np.random.default_rng(0)
    img = (235 + rng.integers(0, 5, (64, 64, 3))).astype(np.uint8)
    assert tissue_mask(img).sum() == 0


def test_catalog_registers_and_skips_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    assert [e.name for e in catalog.list_models()] == [catalog.DEMO_MODEL]
    ck = tmp_path / "run1"
    ck.mkdir()
    catalog.register_model(ck, name="my run")
    catalog.register_model(ck, name="my run again")  # refresh, not duplicate
    names = [e.name for e in catalog.list_models()]
    assert names == [catalog.DEMO_MODEL, "my run again"]
    ck.rmdir()
    assert [e.name for e in catalog.list_models()] == [catalog.DEMO_MODEL]
    (tmp_path / "home" / "models.json").write_text("{not json")
    assert [e.name for e in catalog.list_models()] == [catalog.DEMO_MODEL]
    assert json.loads("[]") == []


def test_napari_placement_half_step():
    res = HeatmapResult(
        np.zeros((1, 2, 3), np.float32), ["a"], (1000.0, 2000.0), 224.0, 224.0, mpp=0.5
    )
    scale, translate = res.napari_placement()
    assert scale == (112.0, 112.0)
    # cell (0, 0) covers level-0 px 1000..1223 in x: centre 1111.5 -> 555.75 µm
    assert translate == (0.5 * (2000 + 111.5), 0.5 * (1000 + 111.5))


def test_cli_usage_and_unknown_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err
