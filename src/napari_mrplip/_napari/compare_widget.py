"""The "Compare models" panel: the same prompts, two models, the same view.

Both models score the visible region with the heatmap engine (one after the other, in a
worker thread); the panel then shows, per prompt, model A's layer, model B's layer and the
difference map A - B on a shared grid (diverging colours: red where A scores higher, blue
where B does; white where they agree). Models with different input sizes tile the slide
differently at one magnification, so B's scores are looked up on A's grid (nearest cell:
:func:`on_grid`). Thin: scoring lives in ``heatmap.engine``, loading in ``models.encoders``.
"""

from __future__ import annotations

import threading

from magicgui.widgets import ComboBox, Container, Label, PushButton, TextEdit

from napari_mrplip.heatmap.result import HeatmapRequest

from .compare import difference
from .heatmap_widget import MAGNIFICATIONS, HeatmapWidget, PanelInputError, form_request
from .layers import HEATMAP_KEY, HeatmapCanvas, placement_on, show_per_prompt
from .model_picker import ModelPicker
from .slide_mpp import NoSlideError, SlideMppRow, over, slide_of
from .view import view_state
from .workers import HeatmapJob, import_torch_safely

DIFF_KEY = "mrplip_difference"


class CompareWidget(Container):
    """Two models, one prompt list, the visible region: A, B and A - B layers."""

    def __init__(self, viewer, engine_factory=None, **kwargs):
        super().__init__(labels=True, **kwargs)
        self.viewer = viewer
        self.engine_factory = engine_factory or HeatmapWidget.make_engine
        self.slide_layer = ComboBox(label="slide", choices=self._slide_choices)
        self.slide_mpp = SlideMppRow(self.slide_layer, viewer)
        self.model_a = ModelPicker(label="model A")
        self.model_b = ModelPicker(label="model B")
        self.prompts = TextEdit(label="prompts", value="dense nuclei\npink stroma")
        self.background = TextEdit(label="background", value="background")
        self.magnification = ComboBox(label="magnification", choices=list(MAGNIFICATIONS))
        self.run_btn = PushButton(text="Compare on view")
        self.status = Label(label="status", value="pick two models")
        self.extend([self.slide_layer, self.slide_mpp, self.model_a, self.model_b, self.prompts,
                     self.background, self.magnification, self.run_btn, self.status])  # fmt: skip
        self.prompts.native.setMaximumHeight(70)
        self.background.native.setMaximumHeight(45)
        self._engines: dict[str, object] = {}
        self._lock = threading.Lock()
        self.canvases: dict[str, HeatmapCanvas] = {}
        self.job: HeatmapJob | None = None
        self.run_btn.changed.connect(self.run_view)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._layers_changed)

    def _layers_changed(self, event=None) -> None:
        self.slide_layer.reset_choices()
        self.slide_mpp.refresh()

    def _slide_choices(self, widget=None):
        return [(ly.name, ly) for ly in self.viewer.layers if "slide" in ly.metadata]

    def engine(self, spec: str):
        with self._lock:
            if spec not in self._engines:
                self._engines[spec] = self.engine_factory(spec, "auto", 0)
            return self._engines[spec]

    def _request(self, slide, state) -> HeatmapRequest:
        return form_request(
            self.prompts.value, self.background.value, self.magnification.value, slide,
            state.level, region_level0=state.region_level0,
        )  # fmt: skip

    def run_view(self, value=None) -> HeatmapJob | None:
        """Score the visible region with model A, then model B, then draw A, B and A - B."""
        try:
            layer = self.slide_layer.value
            try:
                slide = slide_of(layer, self.viewer)  # µm/px stated once, for every panel
            except NoSlideError as e:
                raise PanelInputError(str(e)) from None
            specs = {"A": self.model_a.value, "B": self.model_b.value}
            if not all(specs.values()):
                raise PanelInputError("pick a model A and a model B")
            request = self._request(slide, view_state(self.viewer, layer, slide))
        except PanelInputError as e:
            self.status.value = f"error: {e}"
            return None
        import_torch_safely()
        self.canvases = {}

        def produce(cancel: threading.Event):
            for tag, spec in specs.items():
                for result in self.engine(spec).run(slide, request, cancel):
                    yield tag, result

        job = HeatmapJob(produce, self._on_result, self._on_done, self._on_error, label="compare")
        job.slide_layer, job.slide, job.specs = layer, slide, specs
        self.job = job
        self.status.value = "computing model A..."
        return job.start()

    def _on_result(self, job, item) -> None:
        tag, result = item
        canvas = self.canvases.get(tag)
        if canvas is None or not canvas.accepts(result, tag):
            canvas = self.canvases[tag] = HeatmapCanvas.for_result(
                result, job.slide.dimensions, tag
            )
        canvas.paste(result)
        self.status.value = f"model {tag}: {result.done}/{result.total} tiles"

    def _on_error(self, job, exc) -> None:
        self.status.value = f"error: {exc}"

    def _on_done(self, job) -> None:
        if job.error is not None or job.cancelled or set(self.canvases) != {"A", "B"}:
            return
        self.show(job.slide_layer, job.specs)
        self.status.value = "done: A, B and A - B layers (red: A higher, blue: B higher)"

    def show(self, slide_layer, specs: dict[str, str]) -> list:
        """Add/update the A and B layers and one difference layer per prompt."""
        from .layers import _find, _world_kwargs

        layers = []
        for tag in ("A", "B"):
            for layer in show_per_prompt(self.viewer, self.canvases[tag], slide_layer):
                layer.name = f"{tag} ({_short(specs[tag])}): {layer.metadata['prompt']}"
                layer.visible = False
                layers.append(layer)
        a = self.canvases["A"]
        diff = difference(a, self.canvases["B"])
        scale, translate = placement_on(a.as_result(), slide_layer)
        for i, prompt in enumerate(a.prompts):
            key = f"diff|{i}|{prompt}"
            layer = _find(self.viewer, key)
            if layer is not None:
                self.viewer.layers.remove(layer)
            layers.append(self.viewer.add_image(
                diff[i], name=f"A - B: {prompt}", colormap="bwr", contrast_limits=(-1.0, 1.0),
                opacity=0.6, scale=scale, translate=translate, visible=i == 0,
                metadata={HEATMAP_KEY: key, DIFF_KEY: True, "prompt": prompt, **specs,
                          **over(slide_layer)},
                **_world_kwargs(slide_layer),
            ))  # fmt: skip
        return layers


def _short(spec: str) -> str:
    return spec.rstrip("/").split("/")[-1][-24:]
