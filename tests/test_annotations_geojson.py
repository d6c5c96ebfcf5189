"""QuPath GeoJSON I/O: lossless round trip, relabel, review records, bad input, state sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_mrplip.annotations.geojson import (
    GeoJSONError,
    GeoJSONWarning,
    read_annotations,
    read_document,
    write_annotations,
)
from napari_mrplip.annotations.model import REVIEW_KEY, set_label
from napari_mrplip.review.state import ReviewState, ReviewStateError, sidecar_path

DATA = Path(__file__).parent / "data" / "qupath_export.geojson"


def _read(path):
    with pytest.warns(GeoJSONWarning):
        return read_document(path)


def _by_id(doc_json):
    return {f.get("id"): f for f in doc_json["features"]}


def test_reads_qupath_export():
    doc = _read(DATA)
    anns = {a.id: a for a in doc.annotations}
    assert len(anns) == 4  # the MultiPoint feature is skipped
    hole = anns["6b1c2f0e-8a41-4d3b-9f0a-1e2d3c4b5a61"]
    assert hole.label == "Stroma" and len(hole.geometry.interiors) == 1
    assert hole.geometry.area == 1000 * 900 - 200 * 200
    multi = anns["0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"]
    assert multi.geometry.geom_type == "MultiPolygon" and len(multi.geometry.geoms) == 2
    assert anns["9e8f7a6b-5c4d-4e3f-a2b1-c0d9e8f7a6b5"].label is None
    assert "MultiPoint" in doc.warnings[0] and "c1d2e3f4" in doc.warnings[0]


def test_round_trip_keeps_every_feature_and_property(tmp_path):
    doc = _read(DATA)
    out = doc.write(tmp_path / "out.geojson")
    before, after = json.loads(DATA.read_text()), json.loads(out.read_text())
    assert after["type"] == "FeatureCollection"
    assert [f.get("id") for f in after["features"]] == [f.get("id") for f in before["features"]]
    assert after == before  # unreviewed, unscored: byte-for-byte in meaning


def test_relabel_and_review_survive_round_trip(tmp_path):
    doc = _read(DATA)
    glass = next(a for a in doc.annotations if a.label == "Other")
    set_label(glass, "Tumor", doc.annotations)
    glass.review.status, glass.review.model_label = "relabelled", "Tumor"
    glass.review.agreement, glass.review.confidence = 0.1, 0.8
    out = doc.write(tmp_path / "out.geojson")
    before, after = _by_id(json.loads(DATA.read_text())), _by_id(json.loads(out.read_text()))
    feat = after[glass.file_id]
    assert feat["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert feat["properties"][REVIEW_KEY] == {
        "status": "relabelled", "original_label": "Other", "model_label": "Tumor",
        "agreement": 0.1, "confidence": 0.8,
    }  # fmt: skip
    for key, value in before[glass.file_id]["properties"].items():
        if key != "classification":
            assert feat["properties"][key] == value
    assert feat["geometry"] == before[glass.file_id]["geometry"]
    again = {a.id: a for a in _read(out).annotations}[glass.id]
    assert again.label == "Tumor" and again.review.status == "relabelled"
    assert again.review.original_label == "Other"


def test_relabel_unlabelled_and_string_classification():
    doc = _read(DATA)
    bare = next(a for a in doc.annotations if a.label is None)
    set_label(bare, "Brand new class", doc.annotations)
    assert bare.properties["classification"] == {"name": "Brand new class"}
    with pytest.raises(ValueError, match="non-empty"):
        set_label(bare, " ")


def test_bare_list_string_classification_and_name_fallback(tmp_path):
    feats = [
        {"type": "Feature", "id": "PathAnnotationObject",
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
         "properties": {"classification": "Tumor", "measurements": [{"name": "x", "value": float("nan")}]}},
        {"type": "Feature", "id": "PathAnnotationObject",
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [5, 0], [5, 5], [0, 0]]]},
         "properties": {"name": "Stroma"}},
    ]  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps(feats))
    anns = read_annotations(path)
    assert [a.label for a in anns] == ["Tumor", "Stroma"]
    assert [a.id for a in anns] == ["feature-0", "feature-1"]  # duplicate ids made unique
    set_label(anns[0], "Stroma", anns)
    assert anns[0].properties["classification"] == "Stroma"
    out = json.loads(
        write_annotations(anns, tmp_path / "new.geojson").read_text().replace("NaN", "null")
    )
    assert [f["id"] for f in out["features"]] == ["PathAnnotationObject"] * 2


def test_self_intersecting_polygon_is_repaired_and_reported(tmp_path):
    bowtie = [[[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]]
    path = tmp_path / "bowtie.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "b", "geometry": {"type": "Polygon", "coordinates": bowtie},
         "properties": {"classification": {"name": "Tumor"}}}]}))  # fmt: skip
    with pytest.warns(GeoJSONWarning, match="repaired.*Self-intersection"):
        doc = read_document(path)
    ann = doc.annotations[0]
    assert ann.geometry.is_valid and ann.geometry.area == pytest.approx(5000)
    written = json.loads(doc.write(tmp_path / "fixed.geojson").read_text())
    assert written["features"][0]["geometry"]["type"] == "MultiPolygon"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json at all", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8|not valid JSON"),
        ('{"type": "Polygon", "coordinates": []}', "expected a GeoJSON FeatureCollection"),
        ('{"type": "FeatureCollection", "features": 3}', "no 'features' list"),
        ('"just a string"', "expected a GeoJSON FeatureCollection"),
        ("[" * 100000 + "]" * 100000, "nested too deeply|expected"),
    ],
)
def test_bad_files_raise_clear_errors_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.geojson"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GeoJSONError, match=match) as info:
        read_document(path)
    assert str(path) in str(info.value)


def test_points_lines_empty_and_garbage_features_are_skipped_and_kept(tmp_path):
    poly = {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]]}
    feats = [
        {"type": "Feature", "id": "pt", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}},
        {"type": "Feature", "id": "ln", "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}},
        {"type": "Feature", "id": "empty", "geometry": {"type": "Polygon", "coordinates": []}},
        {"type": "Feature", "id": "flat", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]}},
        {"type": "Feature", "id": "junk", "geometry": {"type": "Polygon", "coordinates": [[["a", "b"]]]}},
        {"type": "Feature", "id": "ok", "geometry": poly, "properties": {"classification": {"name": "T"}}},
        42,
    ]  # fmt: skip
    path = tmp_path / "mixed.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with pytest.warns(GeoJSONWarning) as rec:
        doc = read_document(path)
    msg = str(rec[0].message)
    for word in ("Point", "LineString", "empty polygon", "malformed", "not a Feature", str(path)):
        assert word in msg
    assert [a.id for a in doc.annotations] == ["ok"]
    out = json.loads(doc.write(tmp_path / "o.geojson").read_text())
    assert out["features"] == feats


def test_no_usable_polygons_and_size_limits(tmp_path):
    path = tmp_path / "points.geojson"
    pt = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [pt]}))
    with pytest.raises(GeoJSONError, match="no Polygon or MultiPolygon"):
        read_document(path)
    with pytest.raises(GeoJSONError, match="larger than"):
        read_document(DATA, max_bytes=100)
    with pytest.raises(GeoJSONError, match="vertices"):
        read_document(DATA, max_vertices=10)
    with pytest.raises(GeoJSONError, match="features exceed"):
        read_document(DATA, max_features=2)


def test_review_state_sidecar_restores_labels_and_decisions(tmp_path):
    src = tmp_path / "a.geojson"
    src.write_bytes(DATA.read_bytes())
    anns = _read(src).annotations
    state = ReviewState.for_file(src)
    assert state.path == sidecar_path(src) and state.path.parent == tmp_path
    set_label(anns[2], "Stroma", anns)
    anns[2].review.status = "relabelled"
    anns[0].review.status = "flagged"
    state.save(anns)
    fresh = _read(src).annotations
    assert ReviewState.for_file(src).restore(fresh) == 4
    assert fresh[2].label == "Stroma" and fresh[2].review.status == "relabelled"
    assert fresh[2].properties["classification"]["color"] == [150, 200, 150]
    assert fresh[0].review.status == "flagged" and fresh[0].label == "Stroma"
    state.path.write_text("{ truncated")
    with pytest.raises(ReviewStateError, match=str(state.path)):
        ReviewState.for_file(src).restore(fresh)
