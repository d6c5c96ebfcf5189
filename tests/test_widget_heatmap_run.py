"""Prompt heatmap panel end to end in a real viewer: reader -> panel -> engine -> layers.

The model is a real MR-PLIP checkpoint: a randomly initialised ``mrplip-tiny`` saved with
``models.checkpoint.save_model`` and chosen through the panel's model picker (so it loads
through ``models.encoders.get_encoder``), plus the embedded ``mrplip-demo`` once it ships.
Run under Xvfb: ``QT_API=pyqt6 xvfb-run -a .venv/bin/python -m pytest tests/test_widget_heatmap_run.py``.
"""

from __future__ import annotations

import numpy as np

# torch and triton (via open_clip -> torchvision) must load before any OpenGL canvas exists:
# see napari_mrplip._napari.workers.import_torch_safely
import open_clip  # noqa: F401
import pytest
import torch

pytestmark = pytest.mark.gui

PROMPTS = "dense nuclei\npink stroma"


@pytest.fixture(scope="module")
def tiny_mrplip(tmp_path_factory):
    """A random-weight mrplip-tiny checkpoint directory (no download, no training)."""
    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.config import load_config
    from napari_mrplip.models.mrplip import build_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("models") / "tiny-random"
    save_model(build_model(load_config("mrplip-tiny")), out)
    return out


@pytest.fixture
def opened(make_napari_viewer, cmu_svs, tmp_path, monkeypatch):
    """A viewer with the CMU SVS opened through the plugin reader and the panel docked.

    The process-wide embedding cache starts empty here: panels share it (``embed.pool``), so
    another test that embedded this slide with the same seeded model would otherwise make these
    runs cache hits, whatever order the tests run in.
    """
    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("napari_mrplip.embed.pool._CACHE", None)
    from napari_mrplip._napari.heatmap_widget import HeatmapWidget

    viewer = make_napari_viewer()
    [slide_layer] = viewer.open(str(cmu_svs), plugin="napari-mrplip")
    widget = HeatmapWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prompt heatmap")
    assert widget.slide_layer.value is slide_layer
    return viewer, widget, slide_layer


def _run(widget, qtbot, start, timeout_ms=240_000):
    job = start()
    assert job is not None, widget.status.value
    qtbot.waitUntil(lambda: job.finished, timeout=timeout_ms)
    assert job.error is None, widget.status.value
    return job


def _heat_layers(viewer):
    return [ly for ly in viewer.layers if "mrplip_heatmap" in ly.metadata]


def test_two_prompts_make_float_layers_over_the_slide_extent(opened, qtbot, tiny_mrplip):
    viewer, widget, slide_layer = opened
    widget.model.value = str(tiny_mrplip)
    widget.prompts.value = PROMPTS
    widget.magnification.value = "5x (2 µm/px)"
    job = _run(widget, qtbot, widget.run_whole_slide)
    layers = _heat_layers(viewer)
    assert [ly.name for ly in layers] == ["heatmap: dense nuclei", "heatmap: pink stroma"]
    step_world = job.last.step_level0 * slide_layer.scale[-1]
    slide_extent = np.asarray(slide_layer.extent.world)
    for ly in layers:
        assert ly.data.dtype == np.float32
        thr, _, high = widget.display.limits()
        assert tuple(ly.contrast_limits) == pytest.approx((thr, high))  # from the threshold
        assert ly.blending == "translucent" and ly.opacity == pytest.approx(widget.opacity.value)
        np.testing.assert_allclose(np.asarray(ly.extent.world), slide_extent, atol=step_world)
        scored = ly.data[~np.isnan(ly.data)]
        assert scored.size > 0 and scored.min() >= 0 and scored.max() <= 1
    assert job.results >= 2  # filled in batch by batch
    assert widget.progress.value == widget.progress.max == job.last.total
    assert "cpu" in widget.info.value or "cuda" in widget.info.value
    # re-prompting over embedded tiles encodes no image at all
    engine = widget.engine()
    encoded = engine.tiles_encoded
    widget.prompts.value = "lymphocytes\nfat"
    _run(widget, qtbot, widget.run_whole_slide)
    assert engine.tiles_encoded == encoded
    assert {ly.name for ly in _heat_layers(viewer)} >= {"heatmap: lymphocytes", "heatmap: fat"}


def test_argmax_output_is_a_labels_layer_with_legend(opened, qtbot, tiny_mrplip):
    viewer, widget, _ = opened
    widget.model.value = str(tiny_mrplip)
    widget.prompts.value = PROMPTS
    widget.magnification.value = "2.5x (4 µm/px)"
    widget.output.value = "argmax labels"
    _run(widget, qtbot, widget.run_whole_slide)
    [labels] = _heat_layers(viewer)
    assert labels.name == "heatmap: argmax"
    assert labels.metadata["legend"] == {1: "dense nuclei", 2: "pink stroma"}
    assert set(np.unique(labels.data)) <= {0, 1, 2} and labels.data.max() > 0
    assert "dense nuclei" in widget.legend.value and "pink stroma" in widget.legend.value


def test_bad_model_is_reported_in_the_panel(opened, qtbot, tmp_path):
    viewer, widget, _ = opened
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    widget.model.value = str(empty)
    job = widget.run_whole_slide()
    qtbot.waitUntil(lambda: job.finished, timeout=120_000)
    assert job.error is not None
    assert widget.status.value.startswith("error:") and "not-a-model" in widget.status.value
    assert not _heat_layers(viewer)


def _tissue_vs_glass(widget, slide_layer, result):
    """Mean score of each prompt on tissue and on glass cells (Otsu mask of the thumbnail)."""
    from skimage.transform import resize

    from napari_mrplip.tiling.tissue import tissue_mask

    slide = slide_layer.metadata["slide"]
    canvas = widget.canvas
    mask = tissue_mask(slide.thumbnail(512))
    w0, h0 = slide.dimensions
    rows, cols = canvas.scores.shape[1:]
    # the fraction of tissue under each grid cell
    ys = (canvas.origin_level0[1] + (np.arange(rows) + 0.5) * canvas.step_level0) / h0
    xs = (canvas.origin_level0[0] + (np.arange(cols) + 0.5) * canvas.step_level0) / w0
    frac = resize(mask.astype(float), (512, 512), order=1)
    yi = np.clip((ys * 511).round().astype(int), 0, 511)
    xi = np.clip((xs * 511).round().astype(int), 0, 511)
    tissue = frac[np.ix_(yi, xi)] > 0.9
    glass = frac[np.ix_(yi, xi)] < 0.1
    assert tissue.sum() >= 3 and glass.sum() >= 3
    return [(np.nanmean(s[tissue]), np.nanmean(s[glass])) for s in canvas.scores]


@pytest.mark.slow
def test_embedded_model_scores_tissue_prompts_higher_on_tissue_than_glass(opened, qtbot):
    from napari_mrplip.models.checkpoint import is_checkpoint_dir, resolve_checkpoint

    if not is_checkpoint_dir(resolve_checkpoint("mrplip-demo")):
        pytest.skip("the embedded mrplip-demo weights are not in this checkout yet")
    viewer, widget, slide_layer = opened
    widget.model.value = "mrplip-demo"
    widget.prompts.value = PROMPTS
    widget.background.value = "background"
    widget.tissue_only.value = False  # score the glass too
    widget.magnification.value = "5x (2 µm/px)"
    job = _run(widget, qtbot, widget.run_whole_slide)
    means = _tissue_vs_glass(widget, slide_layer, job.last)
    for prompt, (on_tissue, on_glass) in zip(PROMPTS.split("\n"), means):
        print(f"{prompt!r}: mean score on tissue {on_tissue:.3f}, on glass {on_glass:.3f}")
        assert on_tissue > on_glass, f"{prompt!r}: tissue {on_tissue:.3f} <= glass {on_glass:.3f}"
    shot = viewer.screenshot(canvas_only=True)
    assert shot.ndim == 3 and shot.shape[2] == 4


def _look_at(viewer, x_um: float, y_um: float, zoom: float) -> None:
    from napari_mrplip._napari.view import camera

    cam = camera(viewer)
    cam.zoom = zoom
    cam.center = (y_um, x_um)


def test_follow_the_view_encodes_only_new_tiles_and_cancels_superseded_work(
    opened, qtbot, tiny_mrplip
):
    from napari_mrplip._napari.view import view_state

    viewer, widget, slide_layer = opened
    slide = slide_layer.metadata["slide"]
    widget.model.value = str(tiny_mrplip)
    widget.prompts.value = PROMPTS
    widget.magnification.value = "5x (2 µm/px)"  # fixed lattice whatever the zoom
    widget.tissue_only.value = False
    _look_at(viewer, 300, 400, zoom=1.5)
    assert widget.follow.value  # on by default: the first run starts following the view
    first = widget.run_view()
    qtbot.waitUntil(lambda: first.finished, timeout=240_000)
    assert first.error is None, widget.status.value
    engine = widget.engine()
    after_first = engine.tiles_encoded
    assert after_first > 0
    region1 = view_state(viewer, slide_layer, slide).region_level0

    # pan right: the debounced follower starts a new job that encodes only the new tiles
    _look_at(viewer, 700, 400, zoom=1.5)
    assert widget.follower.pending
    qtbot.waitUntil(lambda: widget.job is not first and widget.job.finished, timeout=240_000)
    second = widget.job
    assert second.request.region_level0 != region1
    new_tiles = engine.tiles_encoded - after_first
    from napari_mrplip.heatmap.engine import HeatmapEngine

    assert widget.make_engine(str(tiny_mrplip), "auto", 0).encoder is engine.encoder  # one model
    fresh = HeatmapEngine(engine.encoder)  # same region from scratch: a private, empty cache
    fresh.compute(slide, second.request)
    assert 0 < new_tiles < fresh.tiles_encoded

    # back to the first view: everything is cached, nothing is encoded
    before = engine.tiles_encoded
    _look_at(viewer, 300, 400, zoom=1.5)
    qtbot.waitUntil(lambda: widget.job is not second and widget.job.finished, timeout=240_000)
    assert engine.tiles_encoded == before

    # a computation superseded by a view change is cancelled
    widget.follow.value = False
    widget.magnification.value = "10x (1 µm/px)"  # a lattice with nothing cached yet
    big = widget.run_whole_slide()
    qtbot.waitUntil(lambda: big.results >= 1, timeout=240_000)
    widget.follow.value = True
    assert big.cancelled and widget.job is not big
    qtbot.waitUntil(lambda: big.finished and widget.job.finished, timeout=240_000)
    assert big.last is None or big.last.done < big.last.total
    assert widget.job.error is None and not widget.job.cancelled


def test_display_threshold_outline_regions_and_save(opened, qtbot, tmp_path):
    import json

    from napari_mrplip._napari.view import camera

    viewer, widget, slide_layer = opened
    widget.model.value = "mrplip-demo"
    widget.prompts.value = PROMPTS
    widget.magnification.value = "5x (2 µm/px)"
    _run(widget, qtbot, widget.run_whole_slide)
    assert widget.follow.value and widget.follower is not None  # follows from the first run
    d = widget.display
    d.threshold.value = 0.3
    thr = d.limits()[0]
    heat = _heat_layers(viewer)
    high = d.limits()[2]
    vals = widget.canvas.scores[~np.isnan(widget.canvas.scores)]
    assert high == pytest.approx(max(0.1, min(1.0, np.percentile(vals, 99))), abs=0.02) or (
        high == pytest.approx(thr + 0.02)
    )
    assert all(tuple(ly.contrast_limits) == pytest.approx((thr, high)) for ly in heat)
    assert all(ly.interpolation2d == "linear" for ly in heat)
    assert [ly.colorbar.visible for ly in heat] == [True, False]  # the focus prompt's only
    assert heat[0].colormap.colors[0, 3] == 0  # at/below the threshold: transparent
    assert "probability" in d.legend.value
    # regions: ranked by peak, each above the threshold; clicking one centres the view
    regs = d._found
    assert regs and all(r.peak >= thr for r in regs)
    assert [r.peak for r in regs] == sorted((r.peak for r in regs), reverse=True)
    d.regions.value = [1] if len(regs) > 1 else [0]
    i = d.regions.value[0]
    x, y = regs[i].centre_level0
    wy, wx = camera(viewer).center[-2:]
    assert abs(wx - x * slide_layer.scale[-1]) < 1 and abs(wy - y * slide_layer.scale[-2]) < 1
    # outline: a Shapes layer of paths inside the slide
    d.outline.value = True
    (outline,) = [ly for ly in viewer.layers if "mrplip_heatmap_outline" in ly.metadata]
    w, h = widget.canvas.dims_level0
    s = np.asarray(slide_layer.scale[-2:])  # pixel i spans world [(i - 0.5) s, (i + 0.5) s]
    pts = np.concatenate(outline.data)
    assert (pts >= -0.5 * s - 1e-4).all() and (pts <= (np.array([h, w]) - 0.5) * s + 1e-4).all()
    # save regions: Shapes layer + QuPath GeoJSON, never over an existing file
    d.save_path.value = str(tmp_path / "regions.geojson")
    n, path = widget.save_regions()
    gj = json.loads(open(path).read())
    assert n == len(gj["features"]) > 0
    assert {f["properties"]["classification"]["name"] for f in gj["features"]} == {"dense nuclei"}
    assert any(ly.name.startswith("regions: dense nuclei") for ly in viewer.layers)
    assert widget.save_regions() is None and "exists" in widget.status.value


def test_zoom_from_2_5x_to_20x_refines_the_view_and_keeps_the_coarse_map(opened, qtbot):
    viewer, widget, slide_layer = opened
    widget.model.value = "mrplip-demo"
    widget.prompts.value = PROMPTS
    widget.tissue_only.value = False
    widget.magnification.value = "2.5x (4 µm/px)"
    _run(widget, qtbot, widget.run_whole_slide)  # the coarse map; follow the view is on
    coarse = widget.canvas.scores.copy()
    coarse_step = widget.canvas.step_level0
    assert set(widget.canvas.computed_at()) == {4.0}
    widget.magnification.value = "20x (0.5 µm/px)"
    _look_at(viewer, 500, 700, zoom=3.0)  # zoom in: the follower scores the view at 20x
    qtbot.waitUntil(lambda: widget.job.request.target_mpp == 0.5 and widget.job.finished,
                    timeout=240_000)  # fmt: skip
    canvas = widget.canvas
    k = int(round(coarse_step / canvas.step_level0))
    assert k == 8 and canvas.scores.shape[1:] == (coarse.shape[1] * k, coarse.shape[2] * k)
    at = canvas.resolution.computed_at
    fine = at == 0.5
    assert fine.any() and (at == 4.0).any()
    assert "0.5 µm/px" in widget.resolution.value and "4 µm/px" in widget.resolution.value
    up = coarse.repeat(k, 1).repeat(k, 2)
    # outside the refined view the coarse map is kept exactly
    np.testing.assert_array_equal(canvas.scores[:, ~fine], up[:, ~fine])
    # inside, the map is sharper: it varies within coarse cells
    blocks = canvas.scores[0][fine]
    assert blocks.std() > 0 and not np.allclose(blocks, up[0][fine])
    layer = _heat_layers(viewer)[0]
    assert layer.data.shape[0] >= canvas.scores.shape[1] // 8  # the layer shows the fine canvas
