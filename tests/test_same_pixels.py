"""Same pixels everywhere: every consumer reads a box through the one tile reader.

The same level-0 boxes go through the heatmap lattice, the heatmap box path, a review
polygon, fine-tuning from GeoJSON and from a tile folder written from the slide, and a
pretraining bag; pixels must be identical and embeddings equal. Real tissue (skimage's IHC
image, tiled to 2048 px) written as an OME-TIFF two ways: every level stored, and level 0
only (the reader builds the rest), at µm/px 0.25-8, with boxes inside and across the edge.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from heatmap_tiny_encoder import TinyClipEncoder
from napari_mrplip.data.bag_tiles import read_bag_tiles
from napari_mrplip.embed.embedder import SlideEmbedder
from napari_mrplip.embed.reader import TileReader
from napari_mrplip.embed.tiles import read_tiles
from napari_mrplip.finetune.run import embed as finetune_embed
from napari_mrplip.finetune.sources import tiles_from_folder, tiles_from_geojson
from napari_mrplip.heatmap.engine import HeatmapEngine
from napari_mrplip.heatmap.result import HeatmapRequest
from napari_mrplip.io import open_slide
from napari_mrplip.io.writers import write_pyramid
from napari_mrplip.review.tiles import polygon_tiles
from napari_mrplip.tiling.geometry import level_for_box

SLIDE_MPP = 0.25
SIDE = 2048
MPPS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _tissue() -> np.ndarray:
    from skimage.data import immunohistochemistry

    ihc = immunohistochemistry()
    row = np.concatenate([ihc, ihc[:, ::-1]] * 2, axis=1)
    return np.ascontiguousarray(np.concatenate([row, row[::-1]] * 2, axis=0)[:SIDE, :SIDE])


@pytest.fixture(scope="module", params=["stored", "built"])
def slide(request, tmp_path_factory):
    img = _tissue()
    out = tmp_path_factory.mktemp("px") / f"{request.param}.ome.tif"
    import dask.array as da

    levels = None if request.param == "stored" else [da.from_array(img, chunks=(256, 256, 3))]
    write_pyramid(out, levels or img, mpp=SLIDE_MPP, tile=256, compression="zlib")
    s = open_slide(out)
    native = s.native_levels
    assert (native > 3) if request.param == "stored" else (native == 1 and len(s.levels) > 2)
    return s


@pytest.fixture(scope="module")
def encoder():
    return TinyClipEncoder(input_size=32, embed_dim=32, seed=4)


def _boxes(slide, side0: float) -> np.ndarray:
    """Lattice-aligned boxes inside the slide, plus two across its right and bottom edges."""
    w, h = slide.dimensions
    inside = [(0, 0), (side0, side0), (2 * side0, 0)]
    inside = [(x, y) for x, y in inside if x + side0 <= w and y + side0 <= h]
    across = [(w - side0 / 3, side0 * 0.5), (side0 * 0.25, h - side0 / 2)]
    return np.array([(x, y, x + side0, y + side0) for x, y in inside + across], np.float64)


def _geojson(path, boxes) -> None:
    feats = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        feats.append({
            "type": "Feature",
            "id": f"a{i}",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"classification": {"name": f"c{i % 2}"}},
        })  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


def _folder(root, tiles) -> None:
    for i, t in enumerate(tiles):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(t).save(d / f"t{i:03d}.png")


@pytest.mark.parametrize("mpp", MPPS)
def test_same_pixels_and_embeddings_through_every_consumer(slide, encoder, mpp, tmp_path):
    s = encoder.input_size
    side0 = s * mpp / SLIDE_MPP
    boxes = _boxes(slide, side0)
    ref = read_tiles(slide, boxes, s)
    ds = slide.downsamples[level_for_box(slide, side0, side0, s)]
    assert ds <= mpp / SLIDE_MPP * 1.01 and (ds * 2 > mpp / SLIDE_MPP or ds == max(slide.downsamples))
    emb_ref = SlideEmbedder(encoder).embed_boxes(slide, boxes)
    np.testing.assert_allclose(emb_ref, encoder.encode_tiles(ref), atol=1e-5)

    # heatmap lattice: the boxes the engine reads for lattice tiles are read alike
    engine = HeatmapEngine(encoder)
    grid = engine.grid_for(slide, HeatmapRequest(("a", "b"), target_mpp=mpp))
    rr, cc = np.mgrid[0 : min(2, grid.shape[0]), 0 : min(3, grid.shape[1])]
    lat_boxes = grid.read_boxes(rr.ravel(), cc.ravel())
    lat = next(TileReader(slide, workers=2).batches(lat_boxes, s, batch_size=64))
    np.testing.assert_array_equal(lat.tiles, read_tiles(slide, lat_boxes, s))
    batches = list(engine.embedder.lattice_batches(slide, grid, rr.ravel(), cc.ravel()))
    lat_emb = np.concatenate([b.emb for b in batches])
    np.testing.assert_allclose(lat_emb, SlideEmbedder(encoder).embed_boxes(slide, lat_boxes), atol=1e-5)

    # review: a polygon equal to a lattice box gives that box back, embedded the same way
    import shapely

    inside = boxes[: len(boxes) - 2]
    for b in inside:
        got = polygon_tiles(shapely.box(*b), side0, slide.dimensions)
        np.testing.assert_allclose(got, b[None], atol=1e-9)

    # fine-tuning from GeoJSON: the same boxes, pixels and embeddings
    _geojson(tmp_path / "a.geojson", boxes)
    data = tiles_from_geojson(
        tmp_path / "a.geojson", slide, tile_px=s, mpp=mpp, stride_frac=1.0, min_inside=0.0
    )
    got_boxes = np.concatenate([p.boxes for p in data.parts])
    order = np.lexsort((got_boxes[:, 1], got_boxes[:, 0]))
    want = np.lexsort((boxes[:, 1], boxes[:, 0]))
    np.testing.assert_allclose(got_boxes[order], boxes[want], atol=1e-6)
    idx = np.arange(len(data))
    np.testing.assert_array_equal(data.read(idx)[order], ref[want])
    ft = finetune_embed(encoder, data, idx, batch_size=8)
    np.testing.assert_allclose(ft[order], emb_ref[want], atol=1e-5)

    # fine-tuning from a tile folder written from the slide
    _folder(tmp_path / "tiles", ref)
    folder = tiles_from_folder(tmp_path / "tiles")
    names = [f"t{i:03d}" for i in range(len(ref))]
    by_class = sorted(range(len(ref)), key=lambda i: (i % 2, names[i]))
    np.testing.assert_array_equal(folder.read(np.arange(len(folder))), ref[by_class])
    fe = finetune_embed(encoder, folder, np.arange(len(folder)), batch_size=8)
    np.testing.assert_allclose(fe, emb_ref[by_class], atol=1e-5)

    # pretraining bag (manifest boxes are x, y, w, h), before any augmentation
    recs = [{"box": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "mpp": mpp} for b in boxes]
    np.testing.assert_array_equal(read_bag_tiles(slide, recs, s, SLIDE_MPP), ref)


def test_boxes_across_the_edge_are_white_outside(slide):
    w, h = slide.dimensions
    tile = read_tiles(slide, [(w - 16, 0, w + 16, 32)], 32)[0]
    assert (tile[:, 16:] == 255).all() and (tile[:, :16] < 255).any()
