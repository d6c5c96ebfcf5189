"""Display controls of the heatmap panel: threshold, fading colormap, outline, bilinear
display, colour bar and legend, the ranked top regions, and saving regions.

Thin: what to show is decided in ``heatmap.display`` (range, legend, alpha ramp, regions,
outlines); this module only sets layer properties and adds Shapes layers.
"""

from __future__ import annotations

import json

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    PushButton,
    Select,
)

from napari_mrplip.heatmap.display import legend_text, outline_rings, top_regions, value_range
from napari_mrplip.heatmap.result import HeatmapResult

from .layers import HEATMAP_KEY, HeatmapCanvas, heatmap_colormap
from .slide_mpp import over
from .view import camera

#: metadata key of the outline Shapes layer.
OUTLINE_KEY = "mrplip_heatmap_outline"
#: Narrowest colour span above the threshold.
MIN_SPAN = 0.02
#: How many regions the ranked list shows.
TOP_N = 10


def to_world(xy_level0: np.ndarray, slide_layer) -> np.ndarray:
    """``(K, 2)`` level-0 (x, y) boundary points -> ``(K, 2)`` world (y, x) of ``slide_layer``.

    Level-0 pixel ``i`` is centred at world ``i * scale + translate``, so its left edge,
    level-0 ``x = i``, sits half a pixel before that.
    """
    xy = np.asarray(xy_level0, np.float64)
    sy, sx = (float(v) for v in slide_layer.scale[-2:])
    ty, tx = (float(v) for v in slide_layer.translate[-2:])
    return np.stack([(xy[:, 1] - 0.5) * sy + ty, (xy[:, 0] - 0.5) * sx + tx], axis=1)


class DisplayControls(Container):
    """How heatmap layers look. ``apply`` restyles them; ``changed`` fires on any edit."""

    def __init__(self, **kwargs):
        self._canvas: HeatmapCanvas | None = None
        self._mode = "softmax"
        self._found = []
        self.focus = ComboBox(label="show for", choices=self._prompts)
        self.threshold = FloatSlider(label="threshold", min=0.0, max=1.0, step=0.01, value=0.5)
        self.fade = CheckBox(text="fade low values", value=True)
        self.outline = CheckBox(text="outline above threshold", value=False)
        self.bilinear = CheckBox(text="smooth (bilinear) display", value=True)
        self.colorbar = CheckBox(text="colour bar", value=True)
        self.legend = Label(label="legend", value="")
        self.regions = Select(label="top regions", choices=self._region_choices)
        self.save_path = FileEdit(label="regions file", mode="w", filter="*.geojson", value="")
        self.save_btn = PushButton(text="Save regions above threshold")
        super().__init__(widgets=[
            self.focus, self.threshold, self.fade, self.outline, self.bilinear, self.colorbar,
            self.legend, self.regions, self.save_path, self.save_btn,
        ], labels=True, **kwargs)  # fmt: skip
        self.margins = (0, 0, 0, 0)
        self.regions.native.setMaximumHeight(110)
        self.legend.native.setWordWrap(True)
        self.viewer = None
        self.slide_layer = None

    # -- state from the panel ---------------------------------------------------------
    def _prompts(self, widget=None) -> list[str]:
        return list(self._canvas.prompts) if self._canvas is not None else []

    def _region_choices(self, widget=None) -> list[tuple[str, int]]:
        return [
            (f"{i + 1}. peak {r.peak:.2f}, mean {r.mean:.2f}, {r.cells} cells", i)
            for i, r in enumerate(self._found)
        ]

    def channel(self) -> int:
        prompts = self._prompts()
        return prompts.index(self.focus.value) if self.focus.value in prompts else 0

    def limits(self) -> tuple[float, float, float]:
        """(threshold, low, high) in score units. Probabilities: the slider is the threshold
        itself (0-1) and colours span threshold -> ``value_range`` high; cosine: the slider
        is a fraction of the 1st-99th percentile range."""
        lo, hi = value_range(self._canvas.scores, self._mode)
        if self._mode != "cosine":
            thr = float(self.threshold.value)
            return thr, lo, max(hi, thr + MIN_SPAN)
        return lo + float(self.threshold.value) * (hi - lo), lo, hi

    # -- applying ---------------------------------------------------------------------
    def apply(
        self, viewer, canvas: HeatmapCanvas, slide_layer, mode: str, cmap: str, entries: int = 0
    ) -> None:
        """Restyle every per-prompt layer of ``canvas`` and refresh legend, regions, outline.

        On a new prompt set the threshold starts at chance, ``1 / entries`` (prompts +
        background) for probabilities: below it a prompt is less likely than a guess.
        """
        self.viewer, self.slide_layer, self._mode = viewer, slide_layer, mode
        if self._canvas is None or self._canvas.prompts != canvas.prompts:
            self._canvas = canvas
            self.focus.reset_choices()
            if mode == "softmax" and entries > 1:
                with self.threshold.changed.blocked():
                    self.threshold.value = round(1.0 / entries, 2)
        self._canvas = canvas
        thr, lo, hi = self.limits()
        focus = self.channel()
        for layer in viewer.layers:
            prompt = layer.metadata.get("prompt")
            if HEATMAP_KEY not in layer.metadata or prompt is None:
                continue
            layer.colormap = heatmap_colormap(cmap, bool(self.fade.value))
            layer.contrast_limits = (thr, max(hi, thr + 1e-6))
            layer.interpolation2d = "linear" if self.bilinear.value else "nearest"
            layer.colorbar.visible = bool(self.colorbar.value) and prompt == canvas.prompts[focus]
        self.legend.value = legend_text(canvas.prompts[focus], mode, thr, hi, thr)
        self._found = top_regions(canvas.scores[focus], canvas.origin_level0,
                                  canvas.step_level0, thr, TOP_N)  # fmt: skip
        with self.regions.changed.blocked():
            self.regions.reset_choices()
        self._show_outline(viewer, canvas, slide_layer, focus, thr)

    def _show_outline(self, viewer, canvas, slide_layer, focus: int, thr: float) -> None:
        old = [ly for ly in viewer.layers if OUTLINE_KEY in ly.metadata]
        for ly in old:
            viewer.layers.remove(ly)
        if not self.outline.value or slide_layer is None:
            return
        rings = outline_rings(canvas.scores[focus], canvas.origin_level0, canvas.step_level0,
                              thr, canvas.dims_level0)  # fmt: skip
        if not rings:
            return
        viewer.add_shapes(
            [to_world(r, slide_layer) for r in rings], shape_type="path", edge_width=2,
            edge_color="#00e5ff", name=f"outline: {canvas.prompts[focus]} ≥ {thr:.2f}",
            metadata={OUTLINE_KEY: True, **over(slide_layer)},
            units=tuple(slide_layer.units)[-2:],
        )  # fmt: skip
        viewer.layers.selection.active = slide_layer

    # -- actions ------------------------------------------------------------------------
    def go_to(self, index: int) -> tuple[float, float] | None:
        """Centre the view on region ``index`` of the list; returns the world (y, x)."""
        if self.viewer is None or not 0 <= index < len(self._found):
            return None
        x, y = self._found[index].centre_level0
        (wy, wx), = to_world(np.array([[x + 0.5, y + 0.5]]), self.slide_layer)  # fmt: skip
        camera(self.viewer).center = (wy, wx)
        return wy, wx

    def regions_result(self) -> HeatmapResult:
        """The focus prompt's scores as a result (for GeoJSON of the regions)."""
        c, i = self._canvas, self.channel()
        return HeatmapResult(
            c.scores[i : i + 1], [c.prompts[i]], c.origin_level0, c.step_level0,
            c.step_level0, mpp=c.mpp, slide_dims_level0=c.dims_level0,
        )  # fmt: skip

    def save_regions(self, path=None, inputs=()) -> tuple[int, str | None]:
        """Add the regions above the threshold as a Shapes layer and, if a path is given,
        write them as QuPath GeoJSON (never over an existing file). Returns (count, path)."""
        from napari_mrplip.heatmap.export import heatmap_to_geojson
        from napari_mrplip.outputs import write_text

        if self._canvas is None:
            raise ValueError("compute a heatmap first")
        thr, _, _ = self.limits()
        gj = heatmap_to_geojson(self.regions_result(), thr)
        polys = []
        for f in gj["features"]:
            rings = f["geometry"]["coordinates"]
            rings = rings if f["geometry"]["type"] == "Polygon" else [r for p in rings for r in p]
            polys.append(to_world(np.asarray(rings[0]), self.slide_layer))
        if polys:
            self.viewer.add_shapes(
                polys, shape_type="polygon", face_color="transparent", edge_color="#ffd400",
                edge_width=2, name=f"regions: {self._canvas.prompts[self.channel()]} ≥ {thr:.2f}",
                units=tuple(self.slide_layer.units)[-2:], metadata=over(self.slide_layer),
            )  # fmt: skip
        written = None
        if path and str(path) not in ("", "."):
            written = str(write_text(path, json.dumps(gj), inputs=inputs))
        return len(polys), written
