"""One model and one embedding cache per process: panels and commands share them."""

from __future__ import annotations

import numpy as np
from shapely.geometry import box

from _review_encoder import TinyClipEncoder
from napari_mrplip.annotations.model import Annotation
from napari_mrplip.embed import pool
from napari_mrplip.heatmap.engine import HeatmapEngine
from napari_mrplip.heatmap.result import HeatmapRequest
from napari_mrplip.io import open_slide
from napari_mrplip.review.scoring import score_annotations
from napari_mrplip.review.tiles import polygon_tiles


def test_annotations_scored_after_a_heatmap_over_the_same_tiles_cost_no_encoder_call(cmu_svs):
    slide = open_slide(cmu_svs)
    encoder = TinyClipEncoder(seed=7)
    mpp = 2.0
    engine = HeatmapEngine(encoder, cache=pool.shared_cache())
    request = HeatmapRequest(("dense nuclei", "stroma"), target_mpp=mpp, tissue_only=False)
    engine.compute(slide, request)
    after_heatmap = encoder.image_encode_calls
    assert after_heatmap > 0
    tile = encoder.input_size * mpp / slide.mpp
    anns = [
        Annotation(id=f"a{i}", geometry=box(x, y, x + 3 * tile, y + 2 * tile), label=lab)
        for i, (x, y, lab) in enumerate([(300, 400, "tumour"), (1000, 1500, "stroma")])
    ]
    n_tiles = sum(len(polygon_tiles(a.geometry, tile, slide.dimensions)) for a in anns)
    assert n_tiles >= 8
    scores = score_annotations(anns, slide, encoder, target_mpp=mpp)  # the pool's embedder
    assert sum(s.n_tiles for s in scores) == n_tiles
    assert encoder.image_encode_calls == after_heatmap  # counted: 0 encoder calls
    # and the embeddings are those of the same pixels, encoded afresh
    fresh = TinyClipEncoder(seed=7)
    boxes = polygon_tiles(anns[0].geometry, tile, slide.dimensions)
    from napari_mrplip.embed.embedder import SlideEmbedder

    want = SlideEmbedder(fresh).embed_boxes(slide, boxes)
    got = pool.embedder_for(encoder).embed_boxes(slide, boxes)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_two_users_of_one_model_hold_one_model(tmp_path, monkeypatch):
    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.mrplip import build_model
    from napari_mrplip.models.synthetic import micro_config

    spec = str(save_model(build_model(micro_config()), tmp_path / "m"))
    loads = []
    from napari_mrplip.models import encoders

    real = encoders.get_encoder
    monkeypatch.setattr(encoders, "get_encoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    heatmap_panel = pool.encoder_for(spec, "auto")  # what HeatmapWidget.make_engine asks for
    review_panel = pool.encoder_for(spec)  # what ReviewWidget._embedder asks for
    assert heatmap_panel is review_panel and len(loads) == 1
    assert pool.embedder_for(review_panel).cache is pool.shared_cache()
    # the CLI commands resolve the device first ("cpu" here); they still get the same model
    from napari_mrplip.embed.batching import resolve_device
    from napari_mrplip.heatmap.jobs import load_encoder

    assert load_encoder(spec, resolve_device(None)) is heatmap_panel and len(loads) == 1
