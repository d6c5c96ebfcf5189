"""Annotation review panel in a real napari viewer (Xvfb): load, layer placement, score,
table order, focus, keyboard decisions, autosave + restore, save, Shapes-layer input.

The model here is a tiny random open_clip CLIP (plumbing only); the claim that mislabelled
annotations rank first is tested with the embedded model in test_review_acceptance.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _review_encoder import TinyClipEncoder

pytestmark = pytest.mark.gui

DATA = Path(__file__).parent / "data" / "qupath_export.geojson"


@pytest.fixture
def viewer_with_slide(make_napari_viewer, cmu_svs):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(cmu_svs), plugin="napari-mrplip")
    return viewer, layer


@pytest.fixture
def geojson(tmp_path):
    path = tmp_path / "annotations.geojson"
    path.write_bytes(DATA.read_bytes())
    return path


def _widget(viewer):
    from napari_mrplip._napari.review_widget import ReviewWidget
    from napari_mrplip.embed.embedder import SlideEmbedder

    widget = ReviewWidget(viewer)
    widget._embedders["tiny"] = SlideEmbedder(TinyClipEncoder(seed=1))
    widget.model.add_path(Path.cwd())  # any extra spec; the tiny model is registered under it
    widget._embedders[widget.model.value] = widget._embedders.pop("tiny")
    return widget


def _score(widget, qtbot):
    job = widget.score()
    assert job is not None, widget.status.value
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.error is None, job.error
    return job


def test_load_places_annotations_in_world_units(viewer_with_slide, geojson):
    viewer, slide_layer = viewer_with_slide
    widget = _widget(viewer)
    assert widget.load_geojson(geojson), widget.status.value
    assert "MultiPoint" in widget.status.value  # the skipped feature is reported
    layer = widget.layer
    assert len(layer.data) == 5  # 3 polygons + a 2-part MultiPolygon (outer rings)
    mpp = slide_layer.scale[-1]
    assert np.allclose(layer.scale[-2:], slide_layer.scale[-2:])
    # GeoJSON vertex (x=400, y=600) of the first annotation, in µm, pixel edges not centres
    assert np.allclose(
        layer.data_to_world(layer.data[0][0]), [(600 - 0.5) * mpp, (400 - 0.5) * mpp]
    )
    assert list(layer.features["label"])[:3] == ["Stroma", "Tumor", "Tumor"]
    # and back: the layer's shapes give the same annotations (outer rings; parts regrouped)
    from napari_mrplip._napari.shapes import annotations_from_shapes

    back, notes = annotations_from_shapes(layer, slide_layer)
    assert notes == [] and [a.id for a in back] == [a.id for a in widget.annotations]
    for a, b in zip(widget.annotations, back):
        assert a.label == b.label and a.geometry.geom_type == b.geometry.geom_type
        assert np.allclose(a.geometry.bounds, b.geometry.bounds, atol=1e-3)


def test_score_review_with_keys_autosave_restore_and_save(
    viewer_with_slide, geojson, qtbot, tmp_path
):
    from qtpy.QtCore import Qt

    viewer, _ = viewer_with_slide
    widget = _widget(viewer)
    widget.load_geojson(geojson)
    _score(widget, qtbot)
    assert "scored 4" in widget.status.value
    ranked = widget.ranked()
    dis = [
        widget.scores[a.id].disagreement for a in ranked if widget.scores[a.id].status == "scored"
    ]
    assert dis == sorted(dis, reverse=True) and len(dis) == 3
    assert widget.table.widget.rowCount() == 4
    # first row selected: the camera centres on its bounding box
    first = ranked[0]
    x0, y0, x1, y1 = first.geometry.bounds
    centre = widget.layer.data_to_world([(y0 + y1) / 2 - 0.5, (x0 + x1) / 2 - 0.5])
    from napari_mrplip._napari.view import camera

    assert np.allclose(camera(viewer).center[-2:], centre, atol=1.0)
    # keyboard: A accepts row 0, F flags row 1, R relabels row 2 to "Stroma"
    table = widget.table.widget
    qtbot.keyClick(table, Qt.Key.Key_A)
    qtbot.keyClick(table, Qt.Key.Key_F)
    widget.relabel_to.value = "Stroma"
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_R)
    statuses = [a.review.status for a in ranked[:3]]
    assert statuses == ["accepted", "flagged", "relabelled"]
    assert ranked[2].label == "Stroma"
    assert widget.state.path.exists()
    # a fresh panel on the same file restores labels, decisions and scores
    again = _widget(viewer)
    again.load_geojson(geojson)
    restored = {a.id: a for a in again.annotations}
    for a in ranked[:3]:
        assert restored[a.id].review.status == a.review.status and restored[a.id].label == a.label
    assert set(again.scores) == set(widget.scores)
    out = widget.save(tmp_path / "reviewed.geojson")
    saved = {f["id"]: f for f in json.loads(out.read_text())["features"]}
    orig = {f["id"]: f for f in json.loads(DATA.read_text())["features"]}
    assert set(saved) == set(orig)
    for fid, feat in orig.items():
        for key, value in feat["properties"].items():
            if key != "classification":
                assert saved[fid]["properties"][key] == value
    assert saved[ranked[2].file_id]["properties"]["classification"]["name"] == "Stroma"


def test_shapes_layer_with_labels_becomes_annotations(viewer_with_slide, qtbot):
    viewer, slide_layer = viewer_with_slide
    mpp = slide_layer.scale[-1]
    # drawn in world units (µm) on a layer whose scale is 1
    rect = np.array([[100, 100], [100, 300], [300, 300], [300, 100]], float) * mpp
    shapes = viewer.add_shapes(
        [rect, rect + 500 * mpp, np.array([[0, 0], [50, 50]])],
        shape_type=["rectangle", "ellipse", "line"],
        features={"class": ["tumour", "stroma", "x"]},
        name="drawn",
    )
    widget = _widget(viewer)
    assert widget.use_shapes_layer(shapes), widget.status.value
    assert "skipped 1 open shape" in widget.status.value
    tumour, stroma = widget.annotations
    assert tumour.label == "tumour" and stroma.label == "stroma"
    # world (100 µm-ish corners) back to level-0 px, within half a pixel of 100..300
    assert np.allclose(tumour.geometry.bounds, [100.5, 100.5, 300.5, 300.5], atol=0.01)
    assert stroma.geometry.area == pytest.approx(np.pi * 100 * 100, rel=0.01)
    _score(widget, qtbot)
    assert {s.status for s in widget.scores.values()} == {"scored"}


def test_bad_inputs_reported_in_status(viewer_with_slide, tmp_path):
    viewer, _ = viewer_with_slide
    widget = _widget(viewer)
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "Topology"}')
    assert not widget.load_geojson(bad)
    assert "error" in widget.status.value and str(bad) in widget.status.value
    assert widget.score() is None and "load annotations first" in widget.status.value
    no_labels = viewer.add_shapes(
        [np.array([[0, 0], [0, 9], [9, 9]])], shape_type="polygon", name="unlabelled"
    )
    assert not widget.use_shapes_layer(no_labels)
    assert "no label feature" in widget.status.value
