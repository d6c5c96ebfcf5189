"""Prompt heatmap panel in a real napari viewer: form, bad input, model picker.

Run under Xvfb: ``QT_API=pyqt6 xvfb-run -a .venv/bin/python -m pytest tests/test_widget_heatmap_gui.py``.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_mrplip.io.slide import Slide

pytestmark = pytest.mark.gui


def _pyramid_slide(mpp=0.5) -> Slide:
    from skimage.data import immunohistochemistry

    img = np.pad(immunohistochemistry(), ((0, 512), (0, 512), (0, 0)), constant_values=245)
    levels = [da.from_array(img, chunks=(256, 256, 3)), da.from_array(img[::2, ::2], chunks=256)]
    return Slide(path="/tmp/ihc.tif", levels=levels, mpp=mpp)


def add_slide_layer(viewer, slide: Slide):
    """A slide layer shaped like the plugin reader's (metadata["slide"], world in µm)."""
    unit = slide.mpp or 1.0
    return viewer.add_image(
        slide.levels,
        rgb=True,
        multiscale=True,
        contrast_limits=(0, 255),
        scale=(unit, unit),
        name=slide.name,
        metadata={"slide": slide, "path": str(slide.path)},
    )


@pytest.fixture
def panel(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    from napari_mrplip._napari.heatmap_widget import HeatmapWidget

    viewer = make_napari_viewer()
    widget = HeatmapWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prompt heatmap")
    return viewer, widget


def test_panel_needs_a_slide_and_prompts(panel):
    viewer, widget = panel
    assert widget.run_view() is None
    assert "open a slide" in widget.status.value
    add_slide_layer(viewer, _pyramid_slide())
    assert widget.slide_layer.value is not None  # picked up from layers.events.inserted
    widget.prompts.value = "  \n\n"
    assert widget.run_view() is None
    assert "at least one prompt" in widget.status.value
    assert widget.job is None
    assert len(viewer.layers) == 1  # nothing added, viewer usable


def test_slide_without_mpp_needs_visible_level(panel):
    viewer, widget = panel
    add_slide_layer(viewer, _pyramid_slide(mpp=None))
    widget.magnification.value = "20x (0.5 µm/px)"
    assert widget.run_whole_slide() is None
    assert "µm/px" in widget.status.value and "visible level" in widget.status.value
    widget.magnification.value = "visible level"
    _, slide = widget.current_slide()
    request = widget.build_request(slide, None, 1)
    assert request.target_mpp is None and request.level == 1
    assert request.prompts == ("dense nuclei", "pink stroma")


def test_model_picker_lists_catalogue_and_browsed_dirs(panel, tmp_path):
    from napari_mrplip.models import catalog

    viewer, widget = panel
    assert widget.model.value == catalog.DEMO_MODEL
    ckpt = tmp_path / "run" / "final"
    ckpt.mkdir(parents=True)
    (ckpt / "mrplip_config.json").write_text("{}")
    catalog.register_model(ckpt, name="my-run")
    widget.model.refresh()
    assert str(ckpt.resolve()) in widget.model.specs
    other = tmp_path / "QuiltNet-B-32"
    other.mkdir()
    (other / "open_clip_config.json").write_text("{}")
    widget.model.browse.value = other
    assert widget.model.value == str(other.resolve())
    assert any("open_clip" in label for label, _ in widget.model.entries)


@pytest.mark.parametrize("name", ["Prompt heatmap", "Pretrain", "Annotation review", "Fine-tune"])
def test_panels_open_from_the_plugin_menu_with_the_viewer_injected(make_napari_viewer, name):
    """npe2 instantiates the widget and passes the viewer (annotation napari.viewer.Viewer)."""
    viewer = make_napari_viewer()
    add_slide_layer(viewer, _pyramid_slide())
    _, widget = viewer.window.add_plugin_dock_widget("napari-mrplip", name)
    assert type(widget).__name__ in {"HeatmapWidget", "PretrainWidget", "ReviewWidget", "FinetuneWidget"}
    assert widget.viewer is not None
    if name == "Prompt heatmap":
        layer, slide = widget.current_slide()
        assert slide.mpp == 0.5 and layer.name == "ihc.tif"
        assert widget.build_request(slide).prompts == ("dense nuclei", "pink stroma")
        from napari_mrplip._napari.view import view_state

        state = view_state(widget.viewer, layer, slide)  # through npe2's PublicOnlyProxy
        assert not state.empty and 0 <= state.level < len(slide.levels)
    elif name == "Pretrain":
        assert widget.slide_paths() == ["/tmp/ihc.tif"]


def shown(child, panel) -> bool:
    """Would ``child`` be on screen when the (hidden, docked) panel is shown?"""
    return child.native.isVisibleTo(panel.native)


def test_vocabulary_warning_for_tumour_with_embedded_model(panel):
    viewer, widget = panel
    widget.model.value = "mrplip-demo"
    widget.prompts.value = "tumour\ndense nuclei"
    assert shown(widget.vocab.warning, widget) and "'tumour'" in widget.vocab.warning.value
    assert "dense nuclei" not in widget.vocab.warning.value
    assert shown(widget.vocab.known, widget) and "pink stroma" in widget.vocab.known.choices
    widget.vocab.known.value = "pink stroma"  # offered prompt is added
    assert widget.prompts.value.splitlines()[-1] == "pink stroma"
    widget.prompts.value = "dense nuclei\npink stroma"
    assert not shown(widget.vocab.warning, widget)
