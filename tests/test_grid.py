"""Tile grid geometry: µm/px and level lattices, viewport -> tiles, tissue, parent/child."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_mrplip.io.errors import MissingMppError
from napari_mrplip.io.slide import Slide
from napari_mrplip.tiling.grid import (
    child_range,
    make_grid,
    overlap_to_k,
    parent_index,
    tissue_tiles,
)
from napari_mrplip.tiling.viewport import camera_box_level0, clip_box


def slide(w=4000, h=3000, mpp=0.25, levels=(1, 4, 16)) -> Slide:
    lv = [da.zeros((h // d, w // d, 3), np.uint8, chunks=(512, 512, 3)) for d in levels]
    return Slide(path="/tmp/geom.svs", levels=lv, mpp=mpp)


def test_mpp_grid_reads_from_coarser_level_and_resizes():
    g = make_grid(slide(), 224, target_mpp=0.5)
    assert g.tile_level0 == pytest.approx(448.0)
    assert g.read_level == 0 and g.read_px == 448  # no level at 2x: read level 0, downscale
    g = make_grid(slide(), 224, target_mpp=1.0)
    assert g.read_level == 1 and g.read_px == 224  # level 1 is exactly 1.0 µm/px
    assert g.shape == (int(np.ceil(3000 / 896)), int(np.ceil(4000 / 896)))


def test_rounding_noise_is_not_resampled():
    g = make_grid(slide(mpp=0.499), 224, target_mpp=0.5, overlap=0.0)
    assert g.read_px == 224 and g.tile_level0 == pytest.approx(224 * 0.5 / 0.499)


def test_level_grid_without_mpp_and_missing_mpp_error():
    s = slide(mpp=None)
    g = make_grid(s, 64, level=1)
    assert g.mpp is None and g.tile_level0 == 256 and g.read_level == 1 and g.read_px == 64
    with pytest.raises(MissingMppError, match="--slide-mpp"):
        make_grid(s, 64, target_mpp=0.5)


def test_overlap_k_and_step():
    assert [overlap_to_k(o) for o in (0, 0.5, 0.75, 0.3)] == [1, 2, 4, 1]
    g = make_grid(slide(), 100, target_mpp=0.25, overlap=0.75)
    assert g.k == 4 and g.step_level0 == 25
    with pytest.raises(ValueError):
        overlap_to_k(1.0)


def test_viewport_to_cells_and_tiles():
    g = make_grid(slide(), 100, target_mpp=0.25, overlap=0.5)  # tile 100, step 50
    cells = g.cells_for_box((120, 0, 260, 99))
    assert cells == (0, 2, 2, 6)
    assert g.tiles_for_cells(*cells) == (0, 2, 1, 6)
    with pytest.raises(ValueError, match="does not intersect"):
        g.cells_for_box((5000, 5000, 6000, 6000))


def test_camera_box():
    box = camera_box_level0((500.0, 1000.0), zoom=2.0, canvas_px=(1920, 1080), world_per_px=0.5)
    assert box == (1040, 460, 2960, 1540)
    assert clip_box((-10, -10, 50, 60), 40, 40) == (0, 0, 40, 40)
    assert clip_box((50, 50, 60, 60), 40, 40) is None


def test_parent_and_children_at_2x_steps():
    s = slide()
    g = make_grid(s, 100, target_mpp=0.5)  # tile 200 level-0 px
    parent, child = g.scaled(2.0, s), g.scaled(0.5, s)
    assert parent.tile_level0 == 400 and child.tile_level0 == 100
    np.testing.assert_array_equal(parent_index(g, parent, np.arange(6), 1), [0, 0, 1, 1, 2, 2])
    lo, n = child_range(g, child, np.arange(3), 0)
    assert n == 2 and list(lo) == [0, 2, 4]
    # a child grid finer than level 0 does not exist
    assert make_grid(s, 100, target_mpp=0.25).scaled(0.5, s) is None


def test_tissue_tiles_from_mask():
    g = make_grid(slide(w=1000, h=1000, mpp=1.0, levels=(1,)), 100, target_mpp=1.0)
    mask = np.zeros((100, 100), bool)
    mask[:50, :50] = True  # top-left quarter of the slide
    rr, cc = np.mgrid[0:10, 0:10]
    t = tissue_tiles(g, rr.ravel(), cc.ravel(), mask).reshape(10, 10)
    assert t[:5, :5].all() and not t[5:].any() and not t[:, 5:].any()
