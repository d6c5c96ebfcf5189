"""Tiles inside polygons, scoring annotations, ranking (real tiny open_clip model, real Slide)."""

from __future__ import annotations

import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from _review_encoder import TinyClipEncoder
from napari_mrplip.annotations.model import Annotation
from napari_mrplip.embed.embedder import SlideEmbedder
from napari_mrplip.io.errors import MissingMppError
from napari_mrplip.io.slide import Slide
from napari_mrplip.review.ranking import apply_scores, rank
from napari_mrplip.review.scoring import (
    NO_TILES,
    SCORED,
    UNLABELLED,
    AnnotationScore,
    ScoringError,
    score_annotations,
)
from napari_mrplip.review.tiles import polygon_tiles


@pytest.fixture(scope="module")
def encoder():
    return TinyClipEncoder(seed=0)


@pytest.fixture
def slide():
    """1024 x 768 px at 0.5 µm/px: white glass on the left, textured pink/purple on the right."""
    rng = np.random.default_rng(0)
    img = np.full((768, 1024, 3), 245, np.uint8)
    tissue = rng.integers(0, 60, (768, 512, 1)) + np.array([150, 60, 150])
    img[:, 512:] = np.clip(tissue, 0, 255).astype(np.uint8)
    return Slide(Path("synthetic.tif"), [da.from_array(img, chunks=(256, 256, 3))], mpp=0.5)


def _ann(i, geom, label):
    return Annotation(id=f"a{i}", geometry=geom, label=label)


def test_polygon_tiles_clip_to_polygon_respect_holes_and_cap():
    square = box(0, 0, 320, 320)
    boxes = polygon_tiles(square, 64, (1000, 1000))
    assert len(boxes) == 25 and boxes.min() == 0 and boxes.max() == 320
    holed = Polygon(square.exterior.coords, [box(64, 64, 256, 256).exterior.coords])
    assert len(polygon_tiles(holed, 64, (1000, 1000))) == 25 - 9
    assert len(polygon_tiles(square, 64, (1000, 1000), max_tiles=7)) == 7
    # 60 % of a tile inside passes a 0.5 coverage, 40 % does not
    assert len(polygon_tiles(box(0, 0, 64 * 3 + 38, 64), 64, (1000, 1000))) == 4
    assert len(polygon_tiles(box(0, 0, 64 * 3 + 26, 64), 64, (1000, 1000))) == 3


def test_tiny_thin_and_outside_polygons():
    tiny = box(100, 100, 110, 108)
    (b,) = polygon_tiles(tiny, 64, (1000, 1000))
    assert np.allclose([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], [105, 104])
    ring = Polygon(box(0, 0, 200, 200).exterior.coords, [box(5, 5, 195, 195).exterior.coords])
    (b,) = polygon_tiles(ring, 64, (1000, 1000))  # concave: centroid is in the hole
    assert ring.intersects(box(*b))
    assert polygon_tiles(box(2000, 2000, 2100, 2100), 64, (1000, 1000)).shape == (0, 4)
    multi = MultiPolygon([box(0, 0, 128, 128), box(512, 512, 640, 640)])
    assert len(polygon_tiles(multi, 64, (1000, 1000))) == 8


def test_score_annotations_statuses_probabilities_and_cache(slide, encoder):
    anns = [
        _ann(0, box(0, 0, 400, 700), "glass"),
        _ann(1, box(600, 0, 1000, 700), "tissue"),
        _ann(2, box(550, 100, 700, 300), None),
        _ann(3, box(5000, 5000, 5100, 5100), "tissue"),
    ]
    embedder, seen = SlideEmbedder(encoder), []
    scores = score_annotations(
        anns,
        slide,
        encoder,
        target_mpp=1.0,
        embedder=embedder,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert [s.status for s in scores] == [SCORED, SCORED, UNLABELLED, NO_TILES]
    assert "outside the slide" in scores[3].message
    for s in scores[:3]:
        assert set(s.probs) == {"glass", "tissue"} and sum(s.probs.values()) == pytest.approx(
            1, abs=1e-5
        )
        assert s.n_tiles >= 1 and s.model_label in s.probs
    assert scores[0].agreement == pytest.approx(scores[0].probs["glass"])
    assert scores[0].best_other_label == "tissue"
    assert scores[0].disagreement == pytest.approx(
        scores[0].probs["tissue"] - scores[0].probs["glass"]
    )
    assert seen[-1][0] == seen[-1][1] == sum(s.n_tiles for s in scores)
    calls = encoder.image_encode_calls
    again = score_annotations(anns, slide, encoder, target_mpp=1.0, embedder=embedder)
    assert encoder.image_encode_calls == calls  # every tile came from the cache
    assert [a.probs for a in again] == [s.probs for s in scores]


def test_scoring_bad_requests(slide, encoder):
    one = [_ann(0, box(0, 0, 100, 100), "tumour")]
    with pytest.raises(ScoringError, match="background"):
        score_annotations(one, slide, encoder)
    ok = score_annotations(one, slide, encoder, extra_labels=["background"], target_mpp=2.0)
    assert ok[0].status == SCORED
    slide.mpp = None
    with pytest.raises(MissingMppError, match="synthetic.tif"):
        score_annotations(one, slide, encoder, extra_labels=["background"])
    slide.mpp = 0.5
    cancel = threading.Event()
    cancel.set()
    assert score_annotations(one, slide, encoder, extra_labels=["x"], cancel=cancel) == []


def test_ranking_puts_disagreement_first_and_unscorable_last():
    def s(i, status, agree=None, other=None, conf=None):
        return AnnotationScore(
            f"a{i}", "x", status, agreement=agree, best_other_prob=other, confidence=conf
        )

    scores = [
        s(0, SCORED, 0.9, 0.1),
        s(1, NO_TILES),
        s(2, SCORED, 0.2, 0.7),
        s(3, UNLABELLED, conf=0.6),
        s(4, SCORED, 0.5, 0.5),
    ]
    assert [x.annotation_id for x in rank(scores)] == ["a2", "a4", "a0", "a3", "a1"]


def test_apply_scores_fills_review_records(slide, encoder):
    anns = [_ann(0, box(0, 0, 300, 300), "glass"), _ann(1, box(600, 0, 900, 300), "tissue")]
    anns[0].review.status = "flagged"
    apply_scores(anns, score_annotations(anns, slide, encoder, target_mpp=1.0))
    for a in anns:
        assert a.review.model_label in {"glass", "tissue"} and 0 <= a.review.agreement <= 1
        assert a.review.original_label == a.label
    assert anns[0].review.status == "flagged"


def test_many_small_annotations_share_model_batches(slide, encoder):
    """192 one-tile polygons: tiles are batched across annotations, not one call each."""
    tile = encoder.input_size * 1.0 / slide.mpp
    anns = [
        _ann(i, box(x, y, x + tile * 0.9, y + tile * 0.9), "glass" if i % 2 else "tissue")
        for i, (x, y) in enumerate((c * tile, r * tile) for r in range(12) for c in range(16))
    ]
    embedder = SlideEmbedder(encoder, batch_size=64)
    before, seen = encoder.image_encode_calls, []
    scores = score_annotations(anns, slide, encoder, target_mpp=1.0, embedder=embedder,
                               progress=lambda d, t: seen.append(d))  # fmt: skip
    assert len(scores) == 192 and all(s.n_tiles == 1 for s in scores if s.status == SCORED)
    tiles = sum(s.n_tiles for s in scores)
    assert encoder.image_encode_calls - before <= -(-tiles // 64) + 1  # batches, not annotations
    assert seen == sorted(seen) and seen[-1] == tiles
