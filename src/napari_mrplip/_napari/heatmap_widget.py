"""The "Prompt heatmap" panel: a thin widget over ``heatmap.engine.HeatmapEngine``.

Type prompts (one per line), pick a model, and heatmap layers fill in batch by batch over
the visible region (or the whole slide). With "follow the view" on, panning/zooming starts
a new computation after the view settles and cancels the superseded one; tiles already
embedded come from the engine's cache. Every callback is a method tests can call.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    TextEdit,
)

from napari_mrplip.heatmap.dense import TokenCache
from napari_mrplip.heatmap.result import HeatmapRequest, HeatmapResult

from .heatmap_display import DisplayControls
from .layers import COLORMAPS, HeatmapCanvas, legend_html, show_argmax, show_per_prompt
from .model_picker import ModelPicker
from .slide_mpp import NEEDS_MPP, NoSlideError, SlideMppRow, slide_of
from .view import ViewFollower, ViewState, view_state
from .vocabulary_hint import VocabularyHint
from .workers import HeatmapJob, import_torch_safely

#: Scoring resolution choices: label -> µm/px (None = the level on screen).
MAGNIFICATIONS = {
    "visible level": None,
    "40x (0.25 µm/px)": 0.25,
    "20x (0.5 µm/px)": 0.5,
    "10x (1 µm/px)": 1.0,
    "5x (2 µm/px)": 2.0,
    "2.5x (4 µm/px)": 4.0,
    "1.25x (8 µm/px)": 8.0,
}
OUTPUTS = ("one layer per prompt", "argmax labels")
#: Map detail: one score per tile, or a grid per tile from its patch tokens (heatmap.dense).
DETAILS = ("tile", "dense (sub-tile, MR-PLIP)")


class PanelInputError(ValueError):
    """Bad panel input; the message is shown in the panel's status line."""


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def form_request(
    prompts: str, background: str, magnification: str, slide, level=None, **fields
) -> HeatmapRequest:
    """The :class:`HeatmapRequest` a panel's form describes (prompts and background one per
    line, a ``MAGNIFICATIONS`` label); ``level`` applies to 'visible level' only. Raises
    ``PanelInputError`` for no prompt, or a magnification on a slide without µm/px."""
    lines = _lines(prompts)
    if not lines:
        raise PanelInputError("type at least one prompt (one per line)")
    target_mpp = MAGNIFICATIONS[magnification]
    if target_mpp is not None and slide.mpp is None:
        raise PanelInputError(NEEDS_MPP.format(name=slide.name) + ", or choose 'visible level'")
    return HeatmapRequest(
        prompts=lines,
        background=_lines(background),
        target_mpp=target_mpp,
        level=level if target_mpp is None else None,
        **fields,
    )


class HeatmapWidget(Container):
    """Prompt heatmap panel. ``viewer`` is injected by napari (npe2).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    engine_factory : callable, optional
        ``engine_factory(spec, device, batch_size) -> HeatmapEngine``; the default loads the
        encoder with ``models.encoders.get_encoder`` (see :meth:`make_engine`).
    """

    def __init__(self, viewer: napari.viewer.Viewer, engine_factory=None, **kwargs):
        super().__init__(labels=True, **kwargs)
        self.viewer = viewer
        self.engine_factory = engine_factory or self.make_engine
        self.slide_layer = ComboBox(label="slide", choices=self._slide_choices)
        self.slide_mpp = SlideMppRow(self.slide_layer, viewer)
        self.model = ModelPicker(label="model")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.batch_size = SpinBox(label="batch (0=auto)", value=0, min=0, max=4096)
        self.prompts = TextEdit(label="prompts", value="dense nuclei\npink stroma")
        self.vocab = VocabularyHint(self.prompts)
        self.background = TextEdit(label="background", value="background")
        self.magnification = ComboBox(label="magnification", choices=list(MAGNIFICATIONS))
        self.output = ComboBox(label="output", choices=list(OUTPUTS))
        self.detail = ComboBox(label="detail", choices=list(DETAILS), value=DETAILS[0])
        self.colormap = ComboBox(label="colormap", choices=list(COLORMAPS), value="viridis")
        self.opacity = FloatSlider(label="opacity", min=0.0, max=1.0, step=0.05, value=0.8)
        self.tissue_only = CheckBox(text="tissue only (skip glass)", value=True)
        self.follow = CheckBox(text="follow the view", value=True)
        self.display = DisplayControls(label="display")
        self.run_view_btn = PushButton(text="Run on view")
        self.run_slide_btn = PushButton(text="Run whole slide")
        self.cancel_btn = PushButton(text="Cancel")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.info = Label(label="engine", value="model not loaded")
        self.resolution = Label(label="computed at", value="")
        self.legend = Label(label="legend", value="")
        self.status = Label(label="status", value="ready")
        self.extend([
            self.slide_layer, self.slide_mpp, self.model, self.device, self.batch_size, self.prompts,
            self.vocab.warning, self.vocab.known, self.background, self.magnification, self.output, self.colormap, self.opacity,
            self.tissue_only, self.follow, self.run_view_btn, self.run_slide_btn, self.cancel_btn, self.progress,
            self.info, self.resolution, self.legend, self.status, self.display,
        ])  # fmt: skip
        for box in (self.prompts, self.background):
            box.native.setMaximumHeight(80 if box is self.prompts else 50)
        self.legend.visible = False
        self.job: HeatmapJob | None = None
        self.jobs: list[HeatmapJob] = []
        self.canvas: HeatmapCanvas | None = None
        self.follower: ViewFollower | None = None
        self._engines: dict[tuple, object] = {}
        self._tokens = TokenCache()  # patch-token features of dense runs (bounded)
        self._engine_lock = threading.Lock()
        self.run_view_btn.changed.connect(self.run_view)
        self.run_slide_btn.changed.connect(self.run_whole_slide)
        self.cancel_btn.changed.connect(self.cancel)
        self.follow.changed.connect(self.set_follow)
        self.prompts.native.textChanged.connect(self.check_vocabulary)  # every keystroke
        self.model.combo.changed.connect(self.check_vocabulary)
        self.check_vocabulary()
        self.opacity.changed.connect(self._restyle)
        self.colormap.changed.connect(self._restyle)
        for w in (
            self.display.focus,
            self.display.threshold,
            self.display.fade,
            self.display.outline,
            self.display.bilinear,
            self.display.colorbar,
        ):
            w.changed.connect(self._restyle)  # fmt: skip
        self.display.regions.changed.connect(self._go_to_region)
        self.display.save_btn.changed.connect(self.save_regions)
        viewer.layers.events.inserted.connect(self._layers_changed)
        viewer.layers.events.removed.connect(self._layers_changed)
        self.native.destroyed.connect(self._stop_all)

    # -- slide selection ------------------------------------------------------------
    def _slide_choices(self, widget=None) -> list[tuple[str, object]]:
        return [(ly.name, ly) for ly in self.viewer.layers if "slide" in ly.metadata]

    def _layers_changed(self, event=None) -> None:
        self.slide_layer.reset_choices()
        self.slide_mpp.refresh()
        self.model.refresh()

    def current_slide(self):
        """(layer, Slide) behind the selected (or only) slide layer."""
        layer = self.slide_layer.value
        if layer is None or layer not in self.viewer.layers:
            self.slide_layer.reset_choices()
            layer = self.slide_layer.value
        try:
            return layer, slide_of(layer, self.viewer)  # µm/px stated once, for every panel
        except NoSlideError as e:
            raise PanelInputError(str(e)) from None

    def check_vocabulary(self, value=None) -> list[str]:
        """Warn about prompts made of words the selected model never saw; returns the messages."""
        return self.vocab.check(self.model.value, _lines(self.prompts.value))

    # -- requests -----------------------------------------------------------------------
    def build_request(self, slide, region_level0=None, level=None) -> HeatmapRequest:
        """The :class:`HeatmapRequest` the form describes; raises ``PanelInputError``."""
        return form_request(
            self.prompts.value, self.background.value, self.magnification.value, slide, level,
            region_level0=region_level0, tissue_only=bool(self.tissue_only.value),
        )  # fmt: skip

    def run_view(self, value=None) -> HeatmapJob | None:
        """Score the visible region at the chosen magnification."""
        try:
            layer, slide = self.current_slide()
        except PanelInputError as e:
            return self._fail(e)
        return self.run_region(view_state(self.viewer, layer, slide))

    def run_region(self, state: ViewState) -> HeatmapJob | None:
        """Score ``state.region_level0`` (follow-the-view calls this)."""
        try:
            layer, slide = self.current_slide()
            request = self.build_request(slide, state.region_level0, state.level)
        except PanelInputError as e:
            return self._fail(e)
        return self.start(request, layer, slide)

    def run_whole_slide(self, value=None) -> HeatmapJob | None:
        """Score the whole slide (level: the visible one when "visible level" is chosen)."""
        try:
            layer, slide = self.current_slide()
            level = view_state(self.viewer, layer, slide).level
            request = self.build_request(slide, None, level)
        except PanelInputError as e:
            return self._fail(e)
        return self.start(request, layer, slide)

    # -- running -----------------------------------------------------------------------
    def _engine_key(self) -> tuple:
        return (self.model.value, self.device.value, int(self.batch_size.value))

    @staticmethod
    def make_engine(spec: str, device: str, batch_size: int):
        """A :class:`HeatmapEngine` over the process-wide model and embedding cache
        (``embed.pool``): the review panel and this one share both."""
        from napari_mrplip.embed.pool import encoder_for, shared_cache
        from napari_mrplip.heatmap.engine import HeatmapEngine

        encoder = encoder_for(spec, device)
        return HeatmapEngine(encoder, cache=shared_cache(), batch_size=batch_size or None)

    def engine(self, key: tuple | None = None):
        """The engine for the selected model/device/batch, built (and cached) on first use.

        Loading a model takes seconds, so this runs in the worker thread.
        """
        key = key or self._engine_key()
        with self._engine_lock:
            if key not in self._engines:
                self._engines[key] = self.engine_factory(*key)
            return self._engines[key]

    def start(self, request: HeatmapRequest, layer, slide) -> HeatmapJob:
        """Cancel the running job and start ``request`` in a worker thread."""
        self.cancel()
        import_torch_safely()  # never first inside a worker thread, never crashing on triton
        key = self._engine_key()

        dense = self.detail.value == DETAILS[1]

        def produce(cancel: threading.Event):
            engine = self.engine(key)
            if not dense:
                yield from engine.run(slide, request, cancel)
                return
            from napari_mrplip.heatmap.dense import run_dense

            for result, _tile in run_dense(engine, slide, request, self._tokens, cancel):
                yield result

        tag = f"{key[0]}|{'/'.join(request.background)}|{'dense' if dense else 'tile'}"
        job = HeatmapJob(produce, self.on_result, self.on_done, self.on_error, label=tag)
        job.request, job.slide_layer, job.slide, job.key = request, layer, slide, key
        self.job = job
        self.jobs = [j for j in self.jobs if not j.finished] + [job]  # running ones, for close
        if self.follow.value and self.follower is None:  # on by default: follow from now on
            self.follower = ViewFollower(self.viewer, layer, slide, self.run_region)
            self.follower.last = view_state(self.viewer, layer, slide)  # this view is covered
        self.progress.value = 0
        self.status.value = f"loading {key[0]}..." if key not in self._engines else "computing..."
        return job.start()

    def cancel(self, value=None) -> None:
        """Cancel the running computation (its partial heatmap stays)."""
        if self.job is not None and not self.job.finished:
            self.job.cancel()
            self.status.value = "cancelled"

    def _stop_all(self, *args) -> None:
        """On close: stop every computation at its next batch (touches no Qt widget)."""
        for job in self.jobs:
            job.cancel_event.set()
        if self.follower is not None:
            self.follower._timer.stop()

    # -- worker callbacks (main thread) ------------------------------------------------------
    def on_result(self, job: HeatmapJob, result: HeatmapResult) -> None:
        """Paste a (partial) result into the canvas and update the layers in place."""
        if job is not self.job:
            return
        slide = job.slide
        if self.canvas is None or not self.canvas.accepts(result, job.label):
            self.canvas = HeatmapCanvas.for_result(result, slide.dimensions, job.label)
        self.canvas.merge(result)  # finer results refine the coarse map (refine as you zoom)
        self.show_canvas(job.slide_layer)
        self.resolution.value = ", ".join(
            f"{v:g} µm/px: {n} cells" if result.mpp is not None else f"{v:g} px tiles: {n} cells"
            for v, n in self.canvas.computed_at().items()
        )  # fmt: skip
        self.progress.max = max(int(result.total), 1)
        self.progress.value = min(int(result.done), self.progress.max)
        self._show_engine(job.key)
        self.status.value = f"{result.done}/{result.total} tiles"

    def show_canvas(self, slide_layer) -> list:
        """Draw the current canvas as per-prompt Image layers or an argmax Labels layer."""
        if self.canvas is None:
            return []
        if self.output.value == OUTPUTS[1]:
            self.legend.value = legend_html(self.canvas.prompts)
            self.legend.visible = True
            return [show_argmax(self.viewer, self.canvas, slide_layer, opacity=self.opacity.value)]
        self.legend.value, self.legend.visible = "", False
        layers = show_per_prompt(
            self.viewer, self.canvas, slide_layer, colormap=self.colormap.value,
            opacity=self.opacity.value, smooth=bool(self.display.bilinear.value),
        )  # fmt: skip
        req = getattr(self.job, "request", None)
        entries = len(req.prompts) + len(req.background) if req is not None else 0
        self.display.apply(
            self.viewer, self.canvas, slide_layer, self._mode(), self.colormap.value, entries
        )
        return layers

    def _mode(self) -> str:
        return getattr(getattr(self.job, "request", None), "mode", "softmax")

    def _go_to_region(self, value=None) -> None:
        if value:
            self.display.go_to(int(value[0]))

    def save_regions(self, value=None):
        """Regions above the threshold -> a Shapes layer (+ QuPath GeoJSON if a file is set)."""
        try:
            layer, slide = self.current_slide()
            n, path = self.display.save_regions(self.display.save_path.value, [slide.path])
        except (PanelInputError, ValueError, OSError) as e:
            return self._fail(e)
        self.status.value = f"{n} region(s) added" + (f", written to {path}" if path else "")
        return n, path

    def on_done(self, job: HeatmapJob) -> None:
        if job is self.job and job.error is None and not job.cancelled:
            self.status.value = f"done: {job.results} update(s)"
            self.progress.value = self.progress.max

    def on_error(self, job: HeatmapJob, exc: BaseException) -> None:
        """Show the error in the panel; the viewer stays usable."""
        if job is self.job:
            self.status.value = f"error: {exc}"

    def _fail(self, exc: Exception) -> None:
        self.status.value = f"error: {exc}"
        return None

    def _show_engine(self, key: tuple) -> None:
        engine = self._engines.get(key)
        if engine is None:
            return
        encoder = getattr(engine, "encoder", None)
        device = encoder.device
        batch = getattr(engine, "batch_size", None) or "auto"
        self.info.value = f"{getattr(encoder, 'model_id', key[0])} · {device} · batch {batch}"

    def _restyle(self, value=None) -> None:
        from .layers import HEATMAP_KEY

        for layer in self.viewer.layers:
            if HEATMAP_KEY in layer.metadata:
                layer.opacity = self.opacity.value
        if self.canvas is not None and self.job is not None:
            self.show_canvas(self.job.slide_layer)

    # -- follow the view ---------------------------------------------------------------------
    def set_follow(self, on: bool) -> None:
        """Start or stop recomputing when the view settles."""
        if self.follower is not None:
            self.follower.close()
            self.follower = None
        if not on:
            return
        try:
            layer, slide = self.current_slide()
        except PanelInputError as e:
            self._fail(e)
            return
        self.follower = ViewFollower(self.viewer, layer, slide, self.run_region)
        self.follower.fire()
