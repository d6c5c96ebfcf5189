"""The "Annotation review" panel: a thin widget over ``napari_mrplip.review``.

Load a QuPath GeoJSON (or use a Shapes layer with a label feature), score every annotation
against its own label and the others, review them most-suspicious first: selecting a row
centres the view on the annotation; Accept (A), Relabel (R, to the label in "relabel to",
which the model's label pre-fills) and Flag (F) record a decision and move to the next row.
Every decision is saved at once to a sidecar file, and loading the same annotations again
restores it. "Save GeoJSON" writes a file QuPath imports back.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton

if TYPE_CHECKING:
    import napari

from napari_mrplip.annotations.geojson import AnnotationDocument, read_document, write_annotations
from napari_mrplip.annotations.model import Annotation, set_label
from napari_mrplip.review.ranking import apply_scores, rank
from napari_mrplip.review.scoring import AnnotationScore, score_from_json, score_to_json
from napari_mrplip.review.state import ReviewState

from .model_picker import ModelPicker
from .review_table import ReviewTable
from .shapes import (
    ShapesInputError,
    add_annotations_layer,
    annotations_from_shapes,
    shape_indices,
    update_features,
)
from .slide_mpp import NEEDS_MPP, SlideMppRow, slide_of
from .view import camera, canvas_hw
from .workers import HeatmapJob, import_torch_safely

MAGNIFICATIONS = {
    "20x (0.5 µm/px)": 0.5,
    "40x (0.25 µm/px)": 0.25,
    "10x (1 µm/px)": 1.0,
    "5x (2 µm/px)": 2.0,
}
LAYER_NAME = "annotations (review)"


class ReviewWidget(Container):
    """Annotation review panel. ``viewer`` is injected by napari (npe2)."""

    def __init__(self, viewer: napari.viewer.Viewer, **kwargs):
        super().__init__(labels=True, **kwargs)
        self.viewer = viewer
        self.slide_layer = ComboBox(label="slide", choices=self._slide_choices)
        self.slide_mpp = SlideMppRow(self.slide_layer, viewer)
        self.geojson = FileEdit(label="GeoJSON", mode="r", filter="*.geojson *.json")
        self.load_btn = PushButton(text="Load GeoJSON")
        self.shapes_layer = ComboBox(label="Shapes layer", choices=self._shapes_choices)
        self.use_layer_btn = PushButton(text="Use Shapes layer")
        self.model = ModelPicker(label="model")
        self.magnification = ComboBox(label="magnification", choices=list(MAGNIFICATIONS))
        self.extra_labels = LineEdit(label="also compare", value="")
        self.score_btn = PushButton(text="Score")
        self.cancel_btn = PushButton(text="Cancel")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.relabel_to = ComboBox(label="relabel to", choices=self._label_choices)
        self.accept_btn = PushButton(text="Accept (A)")
        self.relabel_btn = PushButton(text="Relabel (R)")
        self.flag_btn = PushButton(text="Flag (F)")
        self.save_path = FileEdit(label="save as", mode="w", filter="*.geojson")
        self.save_btn = PushButton(text="Save GeoJSON")
        self.status = Label(label="status", value="load annotations to start")
        self.extend([
            self.slide_layer, self.slide_mpp, self.geojson, self.load_btn, self.shapes_layer, self.use_layer_btn,
            self.model, self.magnification, self.extra_labels, self.score_btn, self.cancel_btn,
            self.progress, self.relabel_to, self.accept_btn, self.relabel_btn, self.flag_btn,
            self.save_path, self.save_btn, self.status,
        ])  # fmt: skip
        self.table = ReviewTable(self.native, on_select=self._on_select)
        self.table.bind_keys({"A": self.accept, "R": self.relabel, "F": self.flag})
        self.document: AnnotationDocument | None = None
        self.annotations: list[Annotation] = []
        self.scores: dict[str, AnnotationScore] = {}
        self.state: ReviewState | None = None
        self.layer = None
        self.job: HeatmapJob | None = None
        self._embedders: dict[str, object] = {}
        self._lock = threading.Lock()
        self._connect()

    def _connect(self) -> None:
        self.load_btn.changed.connect(lambda *_: self.load_geojson())
        self.use_layer_btn.changed.connect(lambda *_: self.use_shapes_layer())
        self.score_btn.changed.connect(lambda *_: self.score())
        self.cancel_btn.changed.connect(lambda *_: self.cancel())
        self.accept_btn.changed.connect(lambda *_: self.accept())
        self.relabel_btn.changed.connect(lambda *_: self.relabel())
        self.flag_btn.changed.connect(lambda *_: self.flag())
        self.save_btn.changed.connect(lambda *_: self.save())
        self.extra_labels.changed.connect(lambda *_: self.relabel_to.reset_choices())
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)

    # -- choices --------------------------------------------------------------------
    def _slide_choices(self, widget=None):
        return [(ly.name, ly) for ly in self.viewer.layers if "slide" in ly.metadata]

    def _shapes_choices(self, widget=None):
        return [(ly.name, ly) for ly in self.viewer.layers if ly._type_string == "shapes"]

    def _label_choices(self, widget=None) -> list[str]:
        labels = [a.label for a in getattr(self, "annotations", []) if a.label]
        extra = (
            [s.strip() for s in self.extra_labels.value.split(",")]
            if hasattr(self, "extra_labels")
            else []
        )
        return list(dict.fromkeys(labels + [e for e in extra if e])) or [""]

    def _layers_changed(self, event=None) -> None:
        self.slide_layer.reset_choices()
        self.slide_mpp.refresh()
        self.shapes_layer.reset_choices()

    def _slide(self):
        layer = self.slide_layer.value
        if layer is None:
            self.slide_layer.reset_choices()
            layer = self.slide_layer.value
        return layer, slide_of(layer, self.viewer)  # µm/px stated once, for every panel

    # -- loading --------------------------------------------------------------------
    def load_geojson(self, path: str | Path | None = None) -> bool:
        """Read a GeoJSON, restore any saved review, show it over the slide."""
        path = Path(path or self.geojson.value)
        try:
            slide_layer, _ = self._slide()
            import warnings

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                doc = read_document(path)
            self._start(doc.annotations, ReviewState.for_file(path), slide_layer, doc)
        except (ValueError, OSError) as e:
            return self._fail(e)
        notes = "; ".join(str(w.message) for w in caught)
        lost = len(self.state.unmatched) if self.state is not None else 0
        if lost:  # decisions whose polygon or label changed in the file: reported, not applied
            notes = (notes + "; " if notes else "") + (
                f"{lost} saved decision(s) match no annotation any more and were not applied"
            )
        self.status.value = f"{len(doc.annotations)} annotations from {path.name}" + (
            f" ({notes})" if notes else ""
        )
        if not str(self.save_path.value) or str(self.save_path.value) == ".":
            self.save_path.value = path.with_name(path.stem + ".reviewed.geojson")
        return True

    def use_shapes_layer(self, layer=None) -> bool:
        """Review the shapes of a Shapes layer that has a label feature."""
        layer = layer or self.shapes_layer.value
        try:
            slide_layer, _ = self._slide()
            if layer is None:
                raise ShapesInputError("no Shapes layer: draw one, or load a GeoJSON")
            anns, notes = annotations_from_shapes(layer, slide_layer)
            from napari_mrplip.models.catalog import home

            state = ReviewState(
                home() / "review" / f"layer-{layer.name}.json", f"layer:{layer.name}"
            )
            self._start(anns, state, slide_layer, None)
        except (ValueError, OSError) as e:
            return self._fail(e)
        self.status.value = f"{len(anns)} annotations from layer {layer.name!r}" + (
            f" ({'; '.join(notes)})" if notes else ""
        )
        return True

    def _start(self, anns, state: ReviewState, slide_layer, doc) -> None:
        self.cancel()
        self.document, self.annotations, self.state = doc, anns, state
        state.restore(anns)  # warns (shown in the status) about decisions that match nothing
        stored = state.meta.get("scores", {}) if isinstance(state.meta.get("scores"), dict) else {}
        self.scores = {
            state.id_map[k]: replace(s, annotation_id=state.id_map[k])
            for k, v in stored.items()
            if k in state.id_map and (s := score_from_json(v)) is not None
        }
        self.layer = add_annotations_layer(self.viewer, anns, slide_layer, LAYER_NAME)
        self.relabel_to.reset_choices()
        self._refresh_table()

    # -- scoring --------------------------------------------------------------------
    def _embedder(self, spec: str):
        from napari_mrplip.embed.pool import embedder_for, encoder_for

        with self._lock:
            if spec not in self._embedders:  # the heatmap panel's model and cache (embed.pool)
                self._embedders[spec] = embedder_for(encoder_for(spec))
            return self._embedders[spec]

    def score(self) -> HeatmapJob | None:
        """Score all annotations in a worker thread; the table fills when done."""
        from napari_mrplip.review.scoring import iter_scores

        if not self.annotations:
            return self._fail(ValueError("load annotations first"))
        try:
            _, slide = self._slide()
            if slide.mpp is None:  # ask, in the row above, instead of stopping
                raise ValueError(NEEDS_MPP.format(name=slide.name))
        except ValueError as e:
            return self._fail(e)
        spec, mpp = self.model.value, MAGNIFICATIONS[self.magnification.value]
        extra = [s.strip() for s in self.extra_labels.value.split(",") if s.strip()]
        anns = list(self.annotations)

        def produce(cancel: threading.Event):
            embedder = self._embedder(spec)
            for step in iter_scores(
                anns, slide, embedder.encoder, target_mpp=mpp, extra_labels=extra, embedder=embedder
            ):
                yield step
                if cancel.is_set():
                    return

        self.cancel()
        import_torch_safely()  # on the main thread, before the worker loads the model
        self.job = HeatmapJob(produce, self._on_step, self._on_done, self._on_error, label=spec)
        self.job.spec, self.job.mpp, self.job.partial = spec, mpp, {}
        self.progress.value, self.status.value = 0, f"loading {spec} and scoring..."
        return self.job.start()

    def _on_step(self, job, step) -> None:
        score, done, total = step
        job.partial[score.annotation_id] = score
        self.progress.max, self.progress.value = max(1, total), done

    def _on_done(self, job) -> None:
        if job is not self.job or job.error is not None:
            return
        if job.cancelled:
            self.status.value = f"cancelled after {len(job.partial)} annotations"
        else:
            self.status.value = f"scored {len(job.partial)} annotations with {job.spec}"
        self.scores.update(job.partial)
        apply_scores(self.annotations, list(job.partial.values()))
        self.state.meta.update(model=job.spec, target_mpp=job.mpp)
        self._autosave()
        self._refresh_table()
        self.table.select(0)

    def _on_error(self, job, exc) -> None:
        self._fail(exc)

    def cancel(self) -> None:
        if self.job is not None and not self.job.finished:
            self.job.cancel()

    # -- table and navigation ---------------------------------------------------------
    def ranked(self) -> list[Annotation]:
        """Annotations most suspicious first (scored ones by disagreement; unscored last)."""
        by_id = {a.id: a for a in self.annotations}
        scored = [
            by_id[s.annotation_id]
            for s in rank(list(self.scores.values()))
            if s.annotation_id in by_id
        ]
        seen = {a.id for a in scored}
        return scored + [a for a in self.annotations if a.id not in seen]

    def _refresh_table(self) -> None:
        self.table.fill(self.ranked(), self.scores)

    def current(self) -> Annotation | None:
        return self.table.current_annotation()

    def _on_select(self, ann: Annotation) -> None:
        score = self.scores.get(ann.id)
        suggestion = score.model_label if score and score.model_label else ann.label
        if suggestion in self.relabel_to.choices:
            self.relabel_to.value = suggestion
        self.focus(ann)

    def focus(self, ann: Annotation, fill: float = 0.6) -> None:
        """Centre the camera on ``ann`` and zoom so it fills ``fill`` of the canvas."""
        if self.layer is None:
            return
        x0, y0, x1, y1 = ann.geometry.bounds
        lo = self.layer.data_to_world([y0 - 0.5, x0 - 0.5])
        hi = self.layer.data_to_world([y1 - 0.5, x1 - 0.5])
        cam = camera(self.viewer)
        cam.center = tuple((a + b) / 2 for a, b in zip(lo, hi))
        h, w = canvas_hw(self.viewer)
        extent = [max(abs(b - a), 1e-9) for a, b in zip(lo, hi)]
        cam.zoom = fill * min(h / extent[0], w / extent[1])
        self.layer.selected_data = shape_indices(self.layer, ann.id)

    # -- decisions --------------------------------------------------------------------
    def _decide(self, status: str, label: str | None = None) -> Annotation | None:
        ann = self.current()
        if ann is None:
            self.status.value = "select a row first"
            return None
        if label is not None and label != ann.label:
            set_label(ann, label, self.annotations)
        ann.review.status = status
        update_features(self.layer, self.annotations)
        self._autosave()
        row = self.table.current_row()
        self._refresh_table()
        self.table.select(min(row + 1, len(self.annotations) - 1))
        self.status.value = f"{status}: {ann.label} ({ann.id[:8]})"
        return ann

    def accept(self) -> Annotation | None:
        """Keep the label of the selected annotation."""
        return self._decide("accepted")

    def relabel(self, label: str | None = None) -> Annotation | None:
        """Give the selected annotation ``label`` (default: the "relabel to" choice)."""
        label = label or self.relabel_to.value
        if not label:
            self.status.value = "choose a label in 'relabel to'"
            return None
        return self._decide("relabelled", label)

    def flag(self) -> Annotation | None:
        """Mark the selected annotation for a second opinion."""
        return self._decide("flagged")

    # -- saving ---------------------------------------------------------------------
    def _autosave(self) -> None:
        if self.state is None:
            return
        self.state.meta["scores"] = {k: score_to_json(s) for k, s in self.scores.items()}
        try:
            self.state.save(self.annotations)
        except OSError as e:
            self._fail(OSError(f"could not save the review state to {self.state.path}: {e}"))

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the annotations (with decisions) as GeoJSON QuPath imports back."""
        path = Path(path or self.save_path.value)
        if not self.annotations or str(path) in ("", "."):
            self.status.value = "nothing to save, or no file chosen"
            return None
        # the save dialog asks before replacing a file; the slide itself is never replaced
        policy = {"overwrite": True, "inputs": self._slide_paths()}
        try:
            out = (
                self.document.write(path, **policy)
                if self.document
                else write_annotations(self.annotations, path, **policy)
            )
        except (OSError, ValueError) as e:  # ValueError: the output policy refused it
            return self._fail(OSError(f"could not write {path}: {e}"))
        self.status.value = f"saved {len(self.annotations)} annotations to {out}"
        return out

    def _slide_paths(self) -> list[Path]:
        try:
            _, slide = self._slide()
        except ValueError:
            return []
        return [Path(slide.path)] if getattr(slide, "path", None) else []

    def _fail(self, exc: BaseException):
        self.status.value = f"error: {exc}"
        return None
