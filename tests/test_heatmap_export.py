"""Heatmap export: OME-TIFF/OME-Zarr round trips and GeoJSON polygons in level-0 px."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_mrplip.heatmap.export import export_array, heatmap_to_geojson, write_heatmap
from napari_mrplip.heatmap.result import HeatmapResult


def make_result(origin=(0.0, 0.0), step=64.0, mpp=0.5) -> HeatmapResult:
    rng = np.random.default_rng(0)
    scores = rng.random((2, 6, 9)).astype(np.float32)
    scores[:, 0, 0] = np.nan
    return HeatmapResult(scores, ["tumour", "stroma"], origin, step, step, 54, 54, mpp)


def test_ome_tiff_round_trip(tmp_path):
    res = make_result()
    path = write_heatmap(res, tmp_path / "h.ome.tif", upsample=4)
    with tifffile.TiffFile(path) as tf:
        arr = tf.series[0].levels[0].asarray()
        ome = tf.ome_metadata
        page = tf.series[0].levels[0].pages[0]
    assert arr.shape == (2, 24, 36) and arr.dtype == np.float32
    expect = res.scores.repeat(4, 1).repeat(4, 2)
    np.testing.assert_array_equal(arr, expect)  # NaN where unscored (equal_nan)
    assert np.isnan(arr[:, :4, :4]).all()
    assert 'Name="tumour"' in ome and 'Name="stroma"' in ome
    # pixel = 64 / 4 = 16 level-0 px at 0.5 µm/px = 8 µm
    assert 'PhysicalSizeX="8.0"' in ome and 'PhysicalSizeY="8.0"' in ome
    assert page.tags["ImageWidth"].value == 36
    assert (arr[~np.isnan(arr)] >= 0).all() and (arr[~np.isnan(arr)] <= 1).all()


def test_region_result_is_padded_to_slide_origin():
    res = make_result(origin=(128.0, 64.0))
    arr, pixel = export_array(res, upsample=2)
    assert pixel == 32.0
    a = np.asarray(arr)
    assert a.shape == (2, (6 + 1) * 2, (9 + 2) * 2)
    np.testing.assert_array_equal(a[:, 2:4, 4:6], res.scores[:, :1, :1].repeat(2, 1).repeat(2, 2))
    assert np.isnan(a[:, :2]).all() and np.isnan(a[:, :, :4]).all()  # padding: nothing computed


def test_ome_zarr_written(tmp_path):
    import zarr

    res = make_result()
    path = write_heatmap(res, tmp_path / "h.ome.zarr", upsample=2)
    root = zarr.open_group(str(path), mode="r")
    ms = root.attrs["ome"]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][1:] == [16.0, 16.0]
    assert [c["label"] for c in root.attrs["ome"]["omero"]["channels"]] == ["tumour", "stroma"]
    np.testing.assert_allclose(np.asarray(root["0"])[:, ::2, ::2], res.scores)
    assert np.isnan(root["0"].fill_value)


def test_geojson_polygons_in_level0_px():
    scores = np.zeros((2, 5, 6), np.float32)
    scores[0, 1:3, 2:5] = 0.9  # one 2x3-cell block
    scores[0, 4, 0] = 0.8  # a second single cell
    scores[1, 0, 0] = np.nan
    res = HeatmapResult(scores, ["tumour", "stroma"], (100.0, 50.0), 10.0, 10.0, 30, 30, 0.5)
    gj = heatmap_to_geojson(res, threshold=0.5)
    json.dumps(gj)
    feats = gj["features"]
    assert len(feats) == 2
    assert {f["properties"]["classification"]["name"] for f in feats} == {"tumour"}
    assert all(f["properties"]["objectType"] == "annotation" for f in feats)
    big = max(feats, key=lambda f: len(f["geometry"]["coordinates"][0]))
    xs = [p[0] for p in big["geometry"]["coordinates"][0]]
    ys = [p[1] for p in big["geometry"]["coordinates"][0]]
    assert (min(xs), max(xs), min(ys), max(ys)) == (120.0, 150.0, 60.0, 80.0)
    assert big["properties"]["measurements"]["mean score"] == pytest.approx(0.9)


def test_geojson_hole_is_kept():
    scores = np.ones((1, 5, 5), np.float32)
    scores[0, 2, 2] = 0.0
    res = HeatmapResult(scores, ["tumour"], (0.0, 0.0), 4.0, 4.0, 25, 25, None)
    (feat,) = heatmap_to_geojson(res, 0.5)["features"]
    rings = feat["geometry"]["coordinates"]
    assert len(rings) == 2  # exterior and the one-cell hole
    hole = np.array(rings[1])
    assert hole[:, 0].min() == 8.0 and hole[:, 0].max() == 12.0
