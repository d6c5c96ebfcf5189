"""The "Compare models" panel: A, B and A - B on the same view, in a real viewer.

Run under Xvfb: ``QT_API=pyqt6 xvfb-run -a .venv/bin/python -m pytest tests/test_widget_compare.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_mrplip._napari.layers import HeatmapCanvas
from open_clip_tiny import tiny_clip, tiny_clip_cfg, write_open_clip_dir


def _canvas(scores, origin, step):
    return HeatmapCanvas(np.asarray(scores, np.float32), ["p"], origin, step)


def test_difference_on_a_shared_grid():
    # A: 4 x 4 cells of 10 px; B: 2 x 2 cells of 20 px over the same 40 x 40 px
    a = _canvas(np.arange(16).reshape(1, 4, 4) / 16, (0.0, 0.0), 10.0)
    b = _canvas([[[0.0, 0.5], [1.0, np.nan]]], (0.0, 0.0), 20.0)
    from napari_mrplip._napari.compare import difference, on_grid

    looked_up = on_grid(b, a)[0]
    assert looked_up[0, 0] == looked_up[1, 1] == 0.0 and looked_up[0, 3] == 0.5
    assert looked_up[3, 0] == 1.0 and np.isnan(looked_up[3, 3])
    d = difference(a, b)[0]
    assert d[0, 2] == pytest.approx(2 / 16 - 0.5) and np.isnan(d[2, 2])
    shifted = on_grid(b, _canvas(np.zeros((1, 1, 2)), (30.0, 0.0), 10.0))[0]
    assert shifted[0, 0] == 0.5 and np.isnan(shifted[0, 1])  # outside B's grid: NaN


@pytest.mark.gui
def test_compare_panel_draws_a_b_and_difference(
    make_napari_viewer, qtbot, cmu_svs, tmp_path, monkeypatch
):
    from napari_mrplip._napari.compare import on_grid
    from napari_mrplip._napari.compare_widget import DIFF_KEY, CompareWidget

    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    cfg = tiny_clip_cfg(image_size=64, patch_size=16)
    other = write_open_clip_dir(tmp_path / "random-clip", tiny_clip(cfg), cfg)

    viewer = make_napari_viewer()
    [slide_layer] = viewer.open(str(cmu_svs), plugin="napari-mrplip")
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_a.value = "mrplip-demo"
    widget.model_b.add_path(str(other))
    widget.magnification.value = "5x (2 µm/px)"
    job = widget.run_view()
    assert job is not None, widget.status.value
    qtbot.waitUntil(lambda: job.finished, timeout=240_000)
    assert job.error is None, widget.status.value
    names = [ly.name for ly in viewer.layers]
    assert "A - B: dense nuclei" in names and "A - B: pink stroma" in names
    assert any(n.startswith("A (mrplip-demo): dense nuclei") for n in names)
    assert any(n.startswith("B (random-clip): dense nuclei") for n in names)
    diff = next(ly for ly in viewer.layers if ly.metadata.get(DIFF_KEY))
    a, b = widget.canvases["A"], widget.canvases["B"]
    assert a.step_level0 != b.step_level0  # 112 px vs 64 px tiles: different grids
    d = diff.data
    assert np.isfinite(d).any() and np.nanmax(np.abs(d)) <= 1.0
    assert np.allclose(d, a.scores[0] - on_grid(b, a)[0], equal_nan=True)
    assert diff.scale[-1] == pytest.approx(slide_layer.scale[-1] * a.step_level0, rel=1e-6)
