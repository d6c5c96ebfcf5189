"""Layer adapters: :class:`HeatmapResult` -> napari Image / Labels layers over the slide.

Heatmaps are pasted into a whole-slide *canvas* grid (one cell per tile step), so that
successive viewport results (follow the view) accumulate instead of replacing each other;
the canvas is reset when the grid changes (another level, model or prompt set). Layers are
placed in the slide layer's world units: ``result.napari_placement()`` gives the grid's
placement in µm (or level-0 px), which is mapped through the slide layer's scale and
translate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from napari_mrplip.heatmap.result import HeatmapResult

from .slide_mpp import over

#: metadata key marking layers this package made (value: the canvas key string).
HEATMAP_KEY = "mrplip_heatmap"
#: Perceptual colormaps offered in the panel.
COLORMAPS = ("inferno", "viridis", "magma", "plasma", "cividis", "turbo")
#: Distinct colours for the argmax Labels layer (label i+1 -> PALETTE[i % len]).
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
    "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990",
)  # fmt: skip


@dataclass
class HeatmapCanvas:
    """A whole-slide score grid that progressive and per-viewport results are pasted into.

    Attributes
    ----------
    scores : np.ndarray
        ``(P, rows, cols)`` float32, NaN where nothing was scored yet.
    prompts : list of str
    origin_level0 : tuple of float
        (x, y) level-0 px of cell (0, 0); congruent to every pasted result's origin.
    step_level0 : float
    mpp : float or None
    """

    scores: np.ndarray
    prompts: list[str]
    origin_level0: tuple[float, float]
    step_level0: float
    mpp: float | None = None
    tag: str = ""
    done_cells: set = field(default_factory=set, repr=False)
    dims_level0: tuple[int, int] | None = None
    resolution: object = field(default=None, repr=False)  # heatmap.refine.ResolutionMap

    @classmethod
    def for_result(cls, result: HeatmapResult, dims_level0: tuple[int, int], tag: str = ""):
        """An empty canvas over a slide of ``dims_level0`` = (w, h) on ``result``'s grid."""
        step = float(result.step_level0)
        ox = result.origin_level0[0] % step
        oy = result.origin_level0[1] % step
        if ox > 0:
            ox -= step
        if oy > 0:
            oy -= step
        cols = max(1, math.ceil((dims_level0[0] - ox) / step))
        rows = max(1, math.ceil((dims_level0[1] - oy) / step))
        scores = np.full((len(result.prompts), rows, cols), np.nan, dtype=np.float32)
        dims = (int(dims_level0[0]), int(dims_level0[1]))
        return cls(scores, list(result.prompts), (ox, oy), step, result.mpp, tag, dims_level0=dims)

    def accepts(self, result: HeatmapResult, tag: str = "") -> bool:
        """True when ``result`` can be merged: same prompts and tag, and a lattice nested
        with the canvas's (same step, or a whole ratio finer or coarser, on its grid)."""
        from napari_mrplip.heatmap.refine import ratio

        if tag != self.tag or list(result.prompts) != self.prompts:
            return False
        s, c = result.step_level0, self.step_level0
        if ratio(c, s) is None and ratio(s, c) is None:
            return False
        fine = min(s, c)
        fx = (result.origin_level0[0] - self.origin_level0[0]) / fine
        fy = (result.origin_level0[1] - self.origin_level0[1]) / fine
        return abs(fx - round(fx)) < 1e-3 and abs(fy - round(fy)) < 1e-3

    def merge(self, result: HeatmapResult) -> None:
        """Paste a same-step result, or refine with a finer one (fused with the coarse cells
        under it) or fill holes with a coarser one (``heatmap.refine``)."""
        from napari_mrplip.heatmap.refine import ResolutionMap, refine

        if self.resolution is None:
            at = np.full(self.scores.shape[1:], np.nan, np.float32)
            self.resolution = ResolutionMap(self.scores, at, self.step_level0, self.origin_level0)
        scale = result.meta.get("mpp_scored") or result.tile_level0
        res = refine(self.resolution, result.scores, result.origin_level0, result.step_level0,
                     float(scale))  # fmt: skip
        self.resolution, self.scores, self.step_level0 = res, res.scores, res.step_level0

    def computed_at(self) -> dict[float, int]:
        """Cells per scale (µm/px of the tiles) the canvas was computed at, finest first."""
        return {} if self.resolution is None else self.resolution.summary()

    def _offset(self, result: HeatmapResult) -> tuple[int, int] | None:
        fx = (result.origin_level0[0] - self.origin_level0[0]) / self.step_level0
        fy = (result.origin_level0[1] - self.origin_level0[1]) / self.step_level0
        if abs(fx - round(fx)) > 1e-3 or abs(fy - round(fy)) > 1e-3:
            return None
        return int(round(fy)), int(round(fx))

    def paste(self, result: HeatmapResult) -> None:
        """Copy ``result``'s scored cells (non-NaN) into the canvas, clipping at its edges."""
        r0, c0 = self._offset(result)
        _, rows, cols = self.scores.shape
        src = np.asarray(result.scores, dtype=np.float32)
        ra, ca = max(r0, 0), max(c0, 0)
        rb, cb = min(r0 + src.shape[1], rows), min(c0 + src.shape[2], cols)
        if rb <= ra or cb <= ca:
            return
        part = src[:, ra - r0 : rb - r0, ca - c0 : cb - c0]
        dst = self.scores[:, ra:rb, ca:cb]
        np.copyto(dst, part, where=~np.isnan(part))

    def as_result(self) -> HeatmapResult:
        """The canvas as a :class:`HeatmapResult` (for placement and export)."""
        return HeatmapResult(
            scores=self.scores,
            prompts=self.prompts,
            origin_level0=self.origin_level0,
            step_level0=self.step_level0,
            tile_level0=self.step_level0,
            mpp=self.mpp,
            slide_dims_level0=self.dims_level0,
        )


def placement_on(
    result: HeatmapResult, slide_layer
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, translate) of ``result``'s grid in the world of ``slide_layer``.

    ``result.napari_placement()`` is in µm when ``result.mpp`` is set (level-0 px otherwise);
    it is converted back to level-0 px and mapped through the slide layer's own level-0
    scale and translate, so the heatmap lands on the slide whatever units the reader chose.
    """
    (sy, sx), (ty, tx) = result.napari_placement()
    unit = result.mpp if result.mpp is not None else 1.0
    if slide_layer is None:
        return (sy, sx), (ty, tx)
    lsy, lsx = (float(v) for v in slide_layer.scale[-2:])
    lty, ltx = (float(v) for v in slide_layer.translate[-2:])
    scale = (sy / unit * lsy, sx / unit * lsx)
    translate = (ty / unit * lsy + lty, tx / unit * lsx + ltx)
    return scale, translate


def heatmap_colormap(name: str = "inferno", fade: bool = False):
    """A perceptual napari colormap whose NaN colour (unscored cells) and lowest value (at or
    below the threshold) are transparent; ``fade`` ramps opacity up with the value, so low
    scores barely tint the slide (``heatmap.display.alpha_ramp``)."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    from napari_mrplip.heatmap.display import alpha_ramp

    base = ensure_colormap(name)
    x = np.linspace(0.0, 1.0, 256)
    colors = np.asarray(base.map(x), np.float32)
    colors[:, 3] = alpha_ramp(256, fade)
    return Colormap(
        colors=colors, controls=x, name=f"{name}{'-fade' if fade else ''}-mrplip",
        nan_color=np.zeros(4, np.float32),
    )  # fmt: skip


def argmax_labels(scores: np.ndarray) -> np.ndarray:
    """``(P, rows, cols)`` scores -> ``(rows, cols)`` int32: 0 unscored, ``i + 1`` = prompt i."""
    scored = ~np.all(np.isnan(scores), axis=0)
    best = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=0).astype(np.int32) + 1
    return np.where(scored, best, 0).astype(np.int32)


def legend(prompts: list[str]) -> dict[int, tuple[str, str]]:
    """Label value -> (prompt, hex colour) for the argmax layer."""
    return {i + 1: (p, PALETTE[i % len(PALETTE)]) for i, p in enumerate(prompts)}


def legend_html(prompts: list[str]) -> str:
    """A one-line HTML legend (coloured squares and prompt names) for a Label widget."""
    items = [f'<span style="color:{c}">&#9632;</span> {p}' for p, c in legend(prompts).values()]
    return "&nbsp;&nbsp;".join(items)


def _world_kwargs(slide_layer) -> dict:
    """``units`` and ``axis_labels`` of the slide layer (napari ignores units if they differ)."""
    if slide_layer is None:
        return {}
    return {
        "units": tuple(slide_layer.units)[-2:],
        "axis_labels": tuple(slide_layer.axis_labels)[-2:],
    }


def _find(viewer, key: str):
    for layer in viewer.layers:
        if layer.metadata.get(HEATMAP_KEY) == key:
            return layer
    return None


def show_per_prompt(
    viewer, canvas: HeatmapCanvas, slide_layer, *, colormap="inferno", opacity=0.45,
    contrast_limits=(0.0, 1.0), fade=False, smooth=True,
):  # fmt: skip
    """Create or update one float32 Image layer per prompt, in place. Returns the layers.

    Layers hold ``heatmap.display.display_raster`` of the canvas: cut at the slide's edge,
    bilinear between cell centres when ``smooth``.
    """
    from napari_mrplip.heatmap.display import display_raster

    raster, origin, pixel = display_raster(
        canvas.scores, canvas.origin_level0, canvas.step_level0, canvas.dims_level0, smooth
    )
    placed = HeatmapResult(raster, canvas.prompts, origin, pixel, pixel, mpp=canvas.mpp)
    scale, translate = placement_on(placed, slide_layer)
    layers = []
    for i, prompt in enumerate(canvas.prompts):
        key = f"{canvas.tag}|{i}|{prompt}"
        data = raster[i]
        layer = _find(viewer, key)
        if layer is not None and layer.data.shape == data.shape:
            layer.data = data
            layer.scale, layer.translate = scale, translate
        else:
            if layer is not None:
                viewer.layers.remove(layer)
            layer = viewer.add_image(
                data,
                name=f"heatmap: {prompt}",
                colormap=heatmap_colormap(colormap, fade),
                contrast_limits=contrast_limits,
                opacity=opacity,
                blending="translucent",
                scale=scale,
                translate=translate,
                metadata={HEATMAP_KEY: key, "prompt": prompt, **over(slide_layer)},
                **_world_kwargs(slide_layer),
            )
        layer.refresh()
        layers.append(layer)
    return layers


def show_argmax(viewer, canvas: HeatmapCanvas, slide_layer, *, opacity=0.45):
    """Create or update the argmax Labels layer (with legend in metadata and features)."""
    from napari.utils.colormaps import DirectLabelColormap

    scale, translate = placement_on(canvas.as_result(), slide_layer)
    key = f"{canvas.tag}|argmax"
    data = argmax_labels(canvas.scores)
    leg = legend(canvas.prompts)
    layer = _find(viewer, key)
    if layer is not None and layer.data.shape == data.shape:
        layer.data = data
        layer.scale, layer.translate = scale, translate
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    colors = {None: "transparent", 0: "transparent", **{k: c for k, (_, c) in leg.items()}}
    features = {"index": [0, *leg], "prompt": ["(not scored)", *(p for p, _ in leg.values())]}
    return viewer.add_labels(
        data,
        name="heatmap: argmax",
        colormap=DirectLabelColormap(color_dict=colors),
        opacity=opacity,
        blending="translucent",
        scale=scale,
        translate=translate,
        features=features,
        metadata={HEATMAP_KEY: key, "legend": {k: p for k, (p, _) in leg.items()},
                  **over(slide_layer)},  # fmt: skip
        **_world_kwargs(slide_layer),
    )
