"""A slide without µm/px in a real viewer (Xvfb): stated once in one panel, used by all.

The slide is a crop of the sample H&E written without a pixel size (``no_mpp_slide``). The
models are tiny random open_clip CLIPs (plumbing: what is measured here is geometry and
which µm/px each panel uses, not what the model says).
Run: ``QT_API=pyqt6 xvfb-run -a .venv/bin/python -m pytest tests/test_slide_mpp_gui.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

# torch (and triton, through torchvision) before any OpenGL canvas exists (workers.py)
import open_clip  # noqa: F401
import pytest

from _review_encoder import TinyClipEncoder as ReviewEncoder
from heatmap_tiny_encoder import TinyClipEncoder
from napari_mrplip.io import stated_mpp as sm

pytestmark = pytest.mark.gui

DATA = Path(__file__).parent / "data" / "qupath_export.geojson"


def _engine_factory(spec, device, batch_size):
    from napari_mrplip.embed.cache import EmbeddingCache
    from napari_mrplip.heatmap.engine import HeatmapEngine

    return HeatmapEngine(TinyClipEncoder(input_size=32, seed=hash(spec) % 7), cache=EmbeddingCache())


@pytest.fixture
def geojson(tmp_path) -> Path:
    """A copy: the review panel autosaves its sidecar beside the annotations."""
    return Path(shutil.copy2(DATA, tmp_path / "annotations.geojson"))


@pytest.fixture
def viewer_no_mpp(make_napari_viewer, no_mpp_slide, tmp_path):
    path = Path(shutil.copy2(no_mpp_slide, tmp_path / "tcga-like.ome.tif"))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-mrplip")
    return viewer, layer, path


def _panels(viewer):
    from napari_mrplip._napari.compare_widget import CompareWidget
    from napari_mrplip._napari.finetune_widget import FinetuneWidget
    from napari_mrplip._napari.heatmap_widget import HeatmapWidget
    from napari_mrplip._napari.pretrain_widget import PretrainWidget
    from napari_mrplip._napari.review_widget import ReviewWidget
    from napari_mrplip.embed.embedder import SlideEmbedder

    review = ReviewWidget(viewer)
    review._embedders[review.model.value] = SlideEmbedder(ReviewEncoder(seed=1))
    panels = {
        "heatmap": HeatmapWidget(viewer, engine_factory=_engine_factory),
        "review": review,
        "compare": CompareWidget(viewer, engine_factory=_engine_factory),
        "finetune": FinetuneWidget(viewer),
        "pretrain": PretrainWidget(viewer),
    }
    for name, panel in panels.items():
        viewer.window.add_dock_widget(panel, name=name)
    return panels


def _run(job, qtbot, panel):
    assert job is not None, panel.status.value
    qtbot.waitUntil(lambda: job.finished, timeout=240_000)
    assert job.error is None, panel.status.value
    return job


def _world_box(layer) -> np.ndarray:
    """(2, 2) world [[y0, x0], [y1, x1]] of a layer's data (pixel edges)."""
    return np.asarray(layer.extent.world)[:, -2:]


def test_stated_once_in_one_panel_used_by_every_panel_and_command(
    viewer_no_mpp, qtbot, geojson
):
    viewer, slide_layer, path = viewer_no_mpp
    slide = slide_layer.metadata["slide"]
    assert slide.mpp is None and [str(u) for u in slide_layer.units] == ["pixel", "pixel"]
    p = _panels(viewer)
    for name, panel in p.items():  # every panel asks, none invents a value
        assert panel.slide_mpp.refresh() == "unknown: state it", name
        assert panel.slide_mpp.editable, name
    heat = p["heatmap"]
    heat.magnification.value = "5x (2 µm/px)"
    assert heat.run_whole_slide() is None
    assert "records no µm/px: state it in the 'slide µm/px' row" in heat.status.value
    review = p["review"]
    assert review.load_geojson(geojson), review.status.value
    assert review.score() is None and "state it in the 'slide µm/px' row" in review.status.value
    shapes = review.layer
    shapes_before = _world_box(shapes) / _world_box(slide_layer)[1]  # as a slide fraction

    # -- stated once, in the review panel ---------------------------------------------------
    review.slide_mpp.value.value = 0.5
    review.slide_mpp.set_btn.clicked()
    assert (slide.mpp, sm.source_of(slide)) == (0.5, "stated")
    assert tuple(slide_layer.scale[-2:]) == (0.5, 0.5)
    assert [str(u) for u in slide_layer.units] == ["micrometer", "micrometer"]
    assert np.allclose(_world_box(slide_layer)[1], np.array([1536, 1536]) * 0.5 - 0.25, atol=0.3)
    # the review shapes (drawn in pixels) moved with the slide: same place on it
    np.testing.assert_allclose(
        _world_box(shapes) / _world_box(slide_layer)[1], shapes_before, rtol=1e-6
    )
    assert [str(u) for u in shapes.units] == ["micrometer", "micrometer"]
    for name, panel in p.items():
        assert panel.slide_mpp.refresh() == "0.5 µm/px, stated", name
    # ... and a command in another process uses it
    code = "import sys; from napari_mrplip.cli import main; sys.exit(main(sys.argv[1:]))"
    info = subprocess.run(
        [sys.executable, "-c", code, "info", str(path), "--json"],
        capture_output=True, text=True, env=dict(os.environ),
    )  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert (json.loads(info.stdout)[0]["mpp"], json.loads(info.stdout)[0]["mpp_source"]) == (
        0.5, "stated",
    )  # fmt: skip

    # -- review scores at a magnification ---------------------------------------------------
    review.magnification.value = "20x (0.5 µm/px)"
    job = _run(review.score(), qtbot, review)
    assert job.mpp == 0.5 and "scored" in review.status.value
    assert any(s.status == "scored" for s in review.scores.values())

    # -- the heatmap panel scores at µm/px, its layers on the slide -------------------------
    job = _run(heat.run_whole_slide(), qtbot, heat)
    assert job.request.target_mpp == 2.0
    assert job.last.meta["mpp_scored"] == pytest.approx(2.0) and job.last.mpp == 0.5
    heat_layers = [ly for ly in viewer.layers if "mrplip_heatmap" in ly.metadata]
    assert heat_layers
    for ly in heat_layers:
        box, slide_box = _world_box(ly), _world_box(slide_layer)
        # the map covers the slide (cut at its edge), in µm: within one 64 µm tile
        assert np.all(np.abs(box - slide_box) <= 64 + 1e-6), (box, slide_box)
        assert [str(u) for u in ly.units] == ["micrometer", "micrometer"]

    # -- the compare panel scores at µm/px too, its difference map on the slide -------------
    cmp_ = p["compare"]
    cmp_.magnification.value = "5x (2 µm/px)"
    _run(cmp_.run_view(), qtbot, cmp_)
    diff = [ly for ly in viewer.layers if "mrplip_difference" in ly.metadata]
    assert diff and all(np.all(_world_box(ly)[1] <= _world_box(slide_layer)[1] + 64) for ly in diff)

    # -- the pretrain panel passes it to its subprocess; fine-tuning too -------------------
    pre = p["pretrain"]
    args = pre.build_args()
    assert args[args.index("--slide-mpp") + 1] == "0.5"
    assert args[args.index("--slides") + 1] == str(path)
    pre.out.value = Path(pre.out.value).with_name("pretrain-run")
    proc = pre.start()  # the subprocess's own command line carries it
    try:
        assert proc is not None, pre.status.value
        assert proc.argv[proc.argv.index("--slide-mpp") + 1] == "0.5"
    finally:
        if pre.process is not None and pre.process.running:
            pre.process.kill()
        qtbot.waitUntil(lambda: not pre._timer.isActive(), timeout=60_000)  # the panel saw it
    ft = p["finetune"]
    ft.source.value, ft.mode.value = "GeoJSON", "prompt"
    ft.geojson.value = geojson
    ft_args = ft._cli_args(Path(pre.out.value).with_name("ft"))
    assert ft_args[ft_args.index("--slide-mpp") + 1] == "0.5"


def test_a_heatmap_drawn_in_pixels_follows_when_the_mpp_is_stated(viewer_no_mpp, qtbot):
    viewer, slide_layer, _ = viewer_no_mpp
    from napari_mrplip._napari.heatmap_widget import HeatmapWidget

    heat = HeatmapWidget(viewer, engine_factory=_engine_factory)
    viewer.window.add_dock_widget(heat, name="heatmap")
    heat.follow.value = False
    heat.magnification.value = "visible level"
    _run(heat.run_whole_slide(), qtbot, heat)
    [layer] = [ly for ly in viewer.layers if "mrplip_heatmap" in ly.metadata][:1]
    before = _world_box(layer) / _world_box(slide_layer)[1]
    viewer.camera.center, viewer.camera.zoom = (0.0, 700.0, 300.0), 0.8
    seen = _on_screen(viewer, slide_layer)
    heat.slide_mpp.apply(0.25)
    assert tuple(slide_layer.scale[-2:]) == (0.25, 0.25)
    np.testing.assert_allclose(_world_box(layer) / _world_box(slide_layer)[1], before, rtol=1e-6)
    # the camera follows: the same slide pixel at the centre, at the same screen size
    np.testing.assert_allclose(_on_screen(viewer, slide_layer), seen, rtol=1e-6)


def _on_screen(viewer, slide_layer) -> np.ndarray:
    """(slide pixel y, x under the camera centre, screen px per slide px)."""
    c = np.asarray(viewer.camera.center[-2:])
    s, t = np.asarray(slide_layer.scale[-2:]), np.asarray(slide_layer.translate[-2:])
    return np.array([*((c - t) / s), viewer.camera.zoom * s[0]])


def test_the_layer_scale_set_by_hand_is_adopted(viewer_no_mpp, geojson):
    viewer, slide_layer, path = viewer_no_mpp
    from napari_mrplip._napari.review_widget import ReviewWidget

    review = ReviewWidget(viewer)
    assert review.load_geojson(geojson), review.status.value
    before = _world_box(review.layer) / _world_box(slide_layer)[1]
    slide_layer.scale = (0.25, 0.25)  # as from the console; units stay pixels
    np.testing.assert_allclose(  # the review shapes follow at once
        _world_box(review.layer) / _world_box(slide_layer)[1], before, rtol=1e-6
    )
    assert review.slide_mpp.refresh() == "0.25 µm/px, stated"
    slide = slide_layer.metadata["slide"]
    assert (slide.mpp, sm.source_of(slide)) == (0.25, "stated")
    assert [str(u) for u in slide_layer.units] == ["micrometer", "micrometer"]
    assert sm.stated_mpp(path) == 0.25  # remembered for the next process


def test_a_file_with_its_own_mpp_is_shown_and_kept(make_napari_viewer, cmu_svs):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(cmu_svs), plugin="napari-mrplip")
    from napari_mrplip._napari.heatmap_widget import HeatmapWidget

    heat = HeatmapWidget(viewer)
    assert heat.slide_mpp.refresh() == "0.499 µm/px, from the file"
    assert not heat.slide_mpp.editable
    assert heat.slide_mpp.apply(0.25) is None and "records 0.499" in heat.slide_mpp.note.value
    assert layer.metadata["slide"].mpp == pytest.approx(0.499)
    assert not sm.registry_path().exists()


def test_stated_in_the_shell_opens_in_micrometres(make_napari_viewer, no_mpp_slide, tmp_path):
    path = Path(shutil.copy2(no_mpp_slide, tmp_path / "shell.ome.tif"))
    code = "import sys; from napari_mrplip.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", code, "info", str(path), "--slide-mpp", "0.25"],
        capture_output=True, text=True, env=dict(os.environ),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-mrplip")
    assert tuple(layer.scale[-2:]) == (0.25, 0.25)
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    from napari_mrplip._napari.review_widget import ReviewWidget

    assert ReviewWidget(viewer).slide_mpp.refresh() == "0.25 µm/px, stated"
