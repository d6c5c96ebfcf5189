"""Layer adapters and view geometry of the heatmap panel (no Qt needed except where marked)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mrplip.heatmap.result import HeatmapResult
from napari_mrplip.io.slide import Slide


def _result(origin, step=100.0, shape=(2, 3, 4), fill=0.5, mpp=0.5, prompts=("a", "b")):
    scores = np.full(shape, fill, np.float32)
    return HeatmapResult(scores, list(prompts), origin, step, step, done=1, total=1, mpp=mpp)


def test_canvas_pastes_results_on_one_lattice_and_keeps_earlier_ones():
    from napari_mrplip._napari.layers import HeatmapCanvas

    first = _result((0.0, 0.0), fill=0.2)
    canvas = HeatmapCanvas.for_result(first, (1000, 700))
    assert canvas.scores.shape == (2, 7, 10)
    assert np.isnan(canvas.scores).all()
    canvas.paste(first)
    second = _result((300.0, 200.0), fill=0.9)
    assert canvas.accepts(second)
    canvas.paste(second)
    assert canvas.scores[0, 0, 0] == pytest.approx(0.2)
    assert canvas.scores[0, 2, 3] == pytest.approx(0.9)  # overwritten by the newer result
    assert canvas.scores[0, 4, 6] == pytest.approx(0.9)
    assert np.isnan(canvas.scores[0, 6, 9])
    # NaN cells of a partial result never erase what is already there
    partial = _result((0.0, 0.0), fill=np.nan)
    canvas.paste(partial)
    assert canvas.scores[0, 0, 0] == pytest.approx(0.2)


def test_canvas_rejects_other_lattices_and_clips_at_edges():
    from napari_mrplip._napari.layers import HeatmapCanvas

    canvas = HeatmapCanvas.for_result(_result((0.0, 0.0)), (1000, 700))
    assert not canvas.accepts(_result((50.0, 0.0)))  # half a step off
    assert not canvas.accepts(_result((0.0, 0.0), step=150.0))  # lattices that do not nest
    assert canvas.accepts(_result((0.0, 0.0), step=200.0))  # coarser, nested: merged (refine)
    assert not canvas.accepts(_result((0.0, 0.0), prompts=("a", "c")))
    canvas.paste(_result((900.0, 600.0), fill=0.7))  # hangs over the right/bottom edge
    assert canvas.scores[1, 6, 9] == pytest.approx(0.7)
    # a lattice whose origin is not a multiple of the step keeps its phase
    odd = HeatmapCanvas.for_result(_result((130.0, 40.0)), (1000, 700))
    assert odd.origin_level0 == (30.0 - 100.0, 40.0 - 100.0)
    assert odd.accepts(_result((230.0, 140.0)))


def test_placement_maps_grid_cells_onto_slide_world():
    from napari.layers import Image

    from napari_mrplip._napari.layers import placement_on

    res = _result((224.0, 448.0), step=224.0, mpp=0.5)
    slide_layer = Image(np.zeros((10, 10)), scale=(0.5, 0.5), translate=(0.0, 0.0))
    scale, translate = placement_on(res, slide_layer)
    assert scale == pytest.approx((112.0, 112.0))
    # cell (0, 0) covers level-0 px x in [224, 448): its centre in world = 0.5 * (224 + 111.5)
    assert translate == pytest.approx((0.5 * (448 + 111.5), 0.5 * (224 + 111.5)))
    # a slide layer in level-0 px (no mpp) with an offset: same placement in its units
    px_layer = Image(np.zeros((10, 10)), scale=(1.0, 1.0), translate=(10.0, 20.0))
    scale, translate = placement_on(res, px_layer)
    assert scale == pytest.approx((224.0, 224.0))
    assert translate == pytest.approx((448 + 111.5 + 10, 224 + 111.5 + 20))


def test_argmax_labels_and_legend():
    from napari_mrplip._napari.layers import argmax_labels, legend, legend_html

    scores = np.array([[[0.1, 0.8, np.nan]], [[0.9, 0.2, np.nan]]], np.float32)
    assert argmax_labels(scores).tolist() == [[2, 1, 0]]
    leg = legend(["tumour", "stroma"])
    assert leg[1][0] == "tumour" and leg[2][0] == "stroma"
    assert leg[1][1] != leg[2][1]
    assert "tumour" in legend_html(["tumour", "stroma"])


def test_viewport_and_visible_level():
    import dask.array as da

    from napari_mrplip._napari.view import viewport_level0, visible_level

    # camera at world (500, 400) µm, zoom 2 screen px/µm, 1000x800 canvas, 0.5 µm/px slide
    box = viewport_level0((500.0, 400.0), 2.0, (1000, 800), (0.5, 0.5), (0.0, 0.0), (4000, 3000))
    assert box == (400, 500, 1200, 1500)
    clipped = viewport_level0((0.0, 0.0), 0.01, (1000, 800), (0.5, 0.5), (0, 0), (4000, 3000))
    assert clipped == (0, 0, 4000, 3000)
    levels = [da.zeros((4096 // d, 4096 // d, 3), np.uint8) for d in (1, 4, 16)]
    slide = Slide(path="/tmp/x.tif", levels=levels, mpp=0.5)
    assert visible_level(slide, zoom=2.0, scale=0.5) == 0  # 1 screen px per level-0 px
    assert visible_level(slide, zoom=0.5, scale=0.5) == 1  # 4 level-0 px per screen px
    assert visible_level(slide, zoom=0.01, scale=0.5) == 2
