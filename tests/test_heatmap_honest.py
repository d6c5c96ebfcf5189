"""Honest heatmap values: NaN where nothing was scored, in every format; nothing outside the
slide; files say how they were scored (µm/px, model, prompts, mode)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from heatmap_tiny_encoder import TinyClipEncoder
from napari_mrplip.heatmap.engine import HeatmapEngine
from napari_mrplip.heatmap.export import (
    export_array,
    heatmap_to_geojson,
    read_heatmap_metadata,
    write_heatmap,
)
from napari_mrplip.heatmap.result import HeatmapRequest, HeatmapResult
from napari_mrplip.tiling.grid import make_grid
from test_heatmap_engine import tissue_slide


@pytest.fixture(scope="module")
def glass_result():
    """A real engine run (tissue only) on a slide whose size is not a multiple of the tile."""
    slide = tissue_slide(w=1003, h=701)
    eng = HeatmapEngine(TinyClipEncoder(input_size=32, embed_dim=32), batch_size=32)
    req = HeatmapRequest(("dense nuclei", "pink stroma"), ("background",), target_mpp=1.0)
    return eng.compute(slide, req), slide


def _read(path):
    if str(path).endswith("zarr"):
        import zarr

        return np.asarray(zarr.open_group(str(path), mode="r")["0"])
    return tifffile.imread(path)


@pytest.mark.parametrize("suffix", [".ome.tif", ".ome.zarr"])
def test_unscored_cells_are_nan_in_files(glass_result, tmp_path, suffix):
    res, slide = glass_result
    unscored = np.isnan(res.scores[0])
    assert unscored.any() and (~unscored).any()  # glass skipped, tissue scored
    path = write_heatmap(res, tmp_path / f"h{suffix}", upsample=2)
    arr = _read(path)
    cells = arr[0, ::2, ::2][: unscored.shape[0], : unscored.shape[1]]
    np.testing.assert_array_equal(np.isnan(cells), unscored[: cells.shape[0], : cells.shape[1]])
    meta = read_heatmap_metadata(path)
    assert meta["prompts"] == ["dense nuclei", "pink stroma"]
    assert meta["background"] == ["background"]
    assert meta["mode"] == "softmax" and "probability" in meta["value_meaning"]
    assert meta["model_id"] == "tiny-clip-32-32-seed0"
    assert meta["mpp_scored"] == 1.0 and meta["slide_mpp"] == 0.5
    assert meta["slide_dims_level0"] == [1003, 701] and meta["unscored"] == "NaN"


def test_export_stays_inside_the_slide(glass_result):
    res, slide = glass_result
    step = res.step_level0  # 64 level-0 px; 1003 / 64 = 15.7 cells
    assert res.scores.shape[2] * step > slide.dimensions[0]  # lattice reaches past the edge
    arr, pixel = export_array(res, upsample=4)
    _, h, w = arr.shape
    assert w * pixel < slide.dimensions[0] + pixel and w * pixel >= slide.dimensions[0]
    assert h * pixel < slide.dimensions[1] + pixel and h * pixel >= slide.dimensions[1]


def test_geojson_never_outlines_unscored_and_stays_inside(glass_result):
    res, slide = glass_result
    gj = heatmap_to_geojson(res, threshold=-1.0)  # every scored cell qualifies
    json.dumps(gj)
    from shapely.geometry import shape

    area = sum(shape(f["geometry"]).area for f in gj["features"])
    w, h = slide.dimensions
    for f in gj["features"]:
        x0, y0, x1, y1 = shape(f["geometry"]).bounds
        assert x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h
    scored = (~np.isnan(res.scores)).sum() * res.step_level0**2
    assert area <= scored + 1e-6  # NaN cells (glass) are never part of a region
    assert area < 2 * w * h * 0.9  # two prompts, glass excluded


def test_nan_threshold_geojson_on_all_nan():
    res = HeatmapResult(np.full((1, 3, 3), np.nan, np.float32), ["x"], (0, 0), 8, 8, 0, 9, 1.0)
    assert heatmap_to_geojson(res, threshold=-np.inf)["features"] == []


def test_edge_tiles_are_read_inside_the_slide():
    slide = tissue_slide(w=1003, h=701)
    grid = make_grid(slide, 32, target_mpp=1.0)
    rows, cols = grid.shape
    x, y = grid.read_origins(np.array([rows - 1]), np.array([cols - 1]))
    assert x[0] + grid.tile_level0 == 1003 and y[0] + grid.tile_level0 == 701
    x, y = grid.read_origins(np.array([0, 1]), np.array([0, 1]))
    np.testing.assert_array_equal(x, [0, 64])
