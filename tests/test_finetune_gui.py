"""Fine-tune panel in a real napari viewer (Xvfb): Shapes labels on the CMU SVS -> linear probe -> metrics."""

from __future__ import annotations

import json

import numpy as np
import open_clip  # noqa: F401  (import torch's stack before Qt starts threads: avoids a crash)
import pytest
import torch  # noqa: F401

from finetune_tiny import tiny_checkpoint

pytestmark = [pytest.mark.gui, pytest.mark.slow]

#: Level-0 pixel rectangles (x0, y0, x1, y1) on CMU-1-Small-Region: tissue and glass.
TISSUE = [(1150, 900, 1550, 1300), (1000, 1650, 1300, 2050)]
GLASS = [(0, 0, 400, 400), (150, 1150, 450, 1450)]


def _open_slide_layer(viewer, path):
    from napari_mrplip._napari.reader import napari_get_reader

    for data, kwargs, kind in napari_get_reader(str(path))(str(path)):
        assert kind == "image"
        return viewer.add_image(data, **kwargs)


def _rect_world(layer, box):
    mpp = float(layer.scale[-1])
    x0, y0, x1, y1 = (v * mpp for v in box)
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])


def _widget(make_napari_viewer, cmu_svs, tmp_path, monkeypatch, mode="linear"):
    from napari_mrplip._napari.finetune_widget import FinetuneWidget

    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    slide_layer = _open_slide_layer(viewer, cmu_svs)
    rects = [_rect_world(slide_layer, b) for b in TISSUE + GLASS]
    shapes = viewer.add_shapes(rects, shape_type="rectangle", name="labels")
    shapes.features = {"label": ["tissue"] * len(TISSUE) + ["background"] * len(GLASS)}
    w = FinetuneWidget(viewer)
    w.model.add_path(tiny_checkpoint(tmp_path))
    w.labels_layer.value = shapes
    w.slide_layer.value = slide_layer
    w.mpp.value = 2.0
    w.epochs.value = 5
    w.mode.value = mode
    w.out_dir.value = tmp_path / f"ft-{mode}"
    return viewer, shapes, w


def test_shapes_layer_trains_linear_probe_and_shows_metrics(
    make_napari_viewer, cmu_svs, tmp_path, monkeypatch, qtbot
):
    from napari_mrplip.models import catalog

    _, _, w = _widget(make_napari_viewer, cmu_svs, tmp_path, monkeypatch)
    w.train()
    qtbot.waitUntil(
        lambda: w.last_metrics is not None or w.status.value.startswith("error"), timeout=120_000
    )
    assert w.last_metrics is not None, w.status.value
    ft = w.last_metrics["finetuned"]
    assert set(ft["recall"]) <= {"tissue", "background"} and ft["n"] > 0
    assert "balanced accuracy" in w.results.value
    assert (
        not w.confusion.native.isHidden() and w.confusion.value.shape[0] > 100
    )  # the PNG is shown
    out = (tmp_path / "ft-linear").resolve()
    assert (out / "confusion.png").is_file()
    assert any(e.spec == str(out) and e.kind == "finetuned" for e in catalog.list_models())
    assert str(out) in w.model.specs  # the picker was refreshed
    qtbot.waitUntil(lambda: w.train_button.enabled, timeout=10_000)


def test_dead_training_process_shows_error_and_keeps_the_regions(
    make_napari_viewer, cmu_svs, tmp_path, monkeypatch, qtbot
):
    viewer, shapes, w = _widget(make_napari_viewer, cmu_svs, tmp_path, monkeypatch, mode="prompt")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "mrplip_config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"garbage")
    w.model.add_path(broken)
    before = [d.copy() for d in shapes.data]
    w.train()
    qtbot.waitUntil(lambda: w.status.value.startswith("error"), timeout=120_000)
    assert "exited with code" in w.status.value or "mrplip_config.json" in w.status.value
    assert "broken-model" in w.status.value
    regions = json.loads((tmp_path / "ft-prompt.regions.geojson").read_text())
    assert len(regions["features"]) == 4
    assert (
        all(np.array_equal(a, b) for a, b in zip(before, shapes.data)) and shapes in viewer.layers
    )
    assert w.train_button.enabled
