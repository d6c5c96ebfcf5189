"""The Fine-tune panel: labelled layer / GeoJSON / tile folder -> trained head -> metrics + checkpoint.

Linear probes run in a thread (seconds, cached embeddings); prompt, partial and full modes
run ``mrplip finetune`` in a subprocess whose JSON-lines progress the panel tails. A run
that fails or dies shows its error; the user's layers are never touched and the regions a
subprocess trained on are kept as ``OUT/regions.geojson``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Image,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

if TYPE_CHECKING:
    import napari

from napari_mrplip._napari import finetune_layers as fl
from napari_mrplip._napari.model_picker import ModelPicker
from napari_mrplip._napari.process import JsonlTail, TrainingProcess
from napari_mrplip._napari.slide_mpp import SlideMppRow, slide_of
from napari_mrplip.finetune.config import MODES
from napari_mrplip.io.stated_mpp import source_of
from napari_mrplip.models import catalog

SOURCES = ("layer", "GeoJSON", "tile folder")


class FinetuneWidget(Container):
    """Fine-tune a model on the user's labels and show held-out metrics.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self.viewer = viewer
        self.model = ModelPicker(label="base model")
        self.source = ComboBox(label="data", choices=SOURCES, value="layer")
        self.labels_layer = ComboBox(label="labels layer", choices=self._labelled_choices)
        self.slide_layer = ComboBox(label="slide layer", choices=self._slide_choices)
        self.slide_mpp = SlideMppRow(self.slide_layer, viewer)
        self.geojson = FileEdit(label="GeoJSON", mode="r", filter="*.geojson *.json")
        self.folder = FileEdit(label="tile folder", mode="d")
        self.mode = ComboBox(label="mode", choices=MODES, value="linear")
        self.epochs = SpinBox(label="epochs", value=20, min=1, max=1000)
        self.lr = FloatSpinBox(
            label="learning rate (0 = default)", value=0.0, min=0.0, max=1.0, step=1e-4
        )
        self.mpp = FloatSpinBox(label="tile µm/px", value=0.5, min=0.05, max=16.0, step=0.05)
        self.out_dir = FileEdit(label="output folder", mode="d", value=self._default_out())
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = Label(value="")
        self.results = Label(value="")
        self.confusion = Image(visible=False)
        super().__init__(widgets=[
            self.model, self.source, self.labels_layer, self.slide_layer, self.slide_mpp,
            self.geojson, self.folder,
            self.mode, self.epochs, self.lr, self.mpp, self.out_dir, self.train_button,
            self.cancel_button, self.progress, self.status, self.results, self.confusion,
        ])  # fmt: skip
        self._worker = None
        self._process: TrainingProcess | None = None
        self._tail: JsonlTail | None = None
        self._timer = None
        self.last_metrics: dict | None = None
        self.source.changed.connect(self._on_source)
        self.train_button.changed.connect(self.train)
        self.cancel_button.changed.connect(self.cancel)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self._refresh_layers)
        self._on_source()

    # -- choices ------------------------------------------------------------------------
    def _labelled_choices(self, _=None):
        return [(ly.name, ly) for ly in fl.labelled_layers(self.viewer)]

    def _slide_choices(self, _=None):
        return [(ly.name, ly) for ly in fl.slide_layers(self.viewer)]

    def _refresh_layers(self, _=None) -> None:
        self.labels_layer.reset_choices()
        self.slide_layer.reset_choices()
        self.slide_mpp.refresh()

    def _on_source(self, _=None) -> None:
        src = self.source.value
        self.labels_layer.visible = src == "layer"
        self.slide_layer.visible = self.slide_mpp.visible = src in {"layer", "GeoJSON"}
        self.geojson.visible = src == "GeoJSON"
        self.folder.visible = src == "tile folder"

    @staticmethod
    def _default_out() -> Path:
        return catalog.home() / "finetuned" / time.strftime("ft-%Y%m%d-%H%M%S")

    # -- running ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None or (self._process is not None and self._process.running)

    def train(self, _=None) -> None:
        """Start a run with the panel's settings (linear: thread; others: subprocess)."""
        if self.running:
            return
        out = Path(self.out_dir.value)
        if out.exists() and (out / "finetune_config.json").exists():
            out = self._default_out()
            self.out_dir.value = out
        self.last_metrics = None
        self.results.value = ""
        self.confusion.visible = False
        try:
            if self.mode.value == "linear":
                self._start_thread(out)
            else:
                self._start_process(out)
        except ValueError as e:  # bad input: FinetuneDataError, SlideOpenError, ModelLoadError
            self._show_error(str(e))
            return
        self._set_running(True)

    def _config(self, out: Path):
        from napari_mrplip.finetune.config import FinetuneConfig

        return FinetuneConfig(
            model=self.model.value, mode=self.mode.value, out_dir=str(out), epochs=self.epochs.value,
            lr=self.lr.value or None, name=out.name,
        )  # fmt: skip

    def _data(self, tile_px: int):
        from napari_mrplip.finetune import sources as src

        if self.source.value == "tile folder":
            return src.tiles_from_folder(self.folder.value)
        slide_layer = self._need_slide_layer()
        if self.source.value == "GeoJSON":
            return src.tiles_from_geojson(
                self.geojson.value,
                slide_of(slide_layer, self.viewer),
                tile_px=tile_px,
                mpp=self.mpp.value,
            )
        if self.labels_layer.value is None:
            raise ValueError(
                "add a Shapes or Labels layer with labelled regions, or choose another data source"
            )
        return fl.tiles_from_layer(
            self.labels_layer.value, slide_layer, tile_px=tile_px, mpp=self.mpp.value
        )

    def _need_slide_layer(self):
        if self.slide_layer.value is None:
            raise ValueError("open a slide first (the labels are read from its pixels)")
        slide_of(self.slide_layer.value, self.viewer)  # µm/px stated once, for every panel
        return self.slide_layer.value

    def _start_thread(self, out: Path) -> None:
        from napari.qt.threading import thread_worker

        from napari_mrplip.finetune.run import finetune
        from napari_mrplip.models.encoders import get_encoder

        cfg = self._config(out)
        encoder = get_encoder(cfg.model)
        data = self._data(int(encoder.input_size))
        self.status.value = f"training on {sum(data.counts().values())} tiles: {data.counts()}"
        self._watch(out)
        worker = thread_worker(finetune)(cfg, data, encoder=encoder)
        worker.returned.connect(lambda result: self._finished(result.to_dict(), out))
        worker.errored.connect(lambda e: self._show_error(f"training failed: {e}"))
        worker.finished.connect(self._thread_done)
        self._worker = worker
        worker.start()

    def _thread_done(self) -> None:
        self._worker = None
        self._poll()
        self._set_running(False)

    def _start_process(self, out: Path) -> None:
        args = self._cli_args(out)
        argv = [sys.executable, "-m", "napari_mrplip.cli", "finetune", *args]
        self._process = TrainingProcess(argv, out).start()
        self.status.value = (
            f"started {self.mode.value} fine-tuning (process {self._process.proc.pid})"
        )
        self._watch(out)

    def _cli_args(self, out: Path) -> list[str]:
        args = ["--model", str(self.model.value), "--mode", self.mode.value, "--out", str(out),
                "--epochs", str(self.epochs.value), "--mpp", str(self.mpp.value)]  # fmt: skip
        if self.lr.value:
            args += ["--lr", str(self.lr.value)]
        if self.source.value == "tile folder":
            return args + ["--data", str(self.folder.value)]
        slide_layer = self._need_slide_layer()
        slide = slide_layer.metadata["slide"]
        slide_path = str(slide_layer.metadata.get("path") or slide.path)
        if slide.mpp is not None and source_of(slide) != "file":  # stated: say it explicitly
            args += ["--slide-mpp", f"{slide.mpp:g}"]
        if self.source.value == "GeoJSON":
            return args + ["--data", str(self.geojson.value), "--slide", slide_path]
        layer = self.labels_layer.value
        if layer is None or type(layer).__name__ != "Shapes":
            raise ValueError(
                f"{self.mode.value} mode from the viewer needs a Shapes layer (or use linear mode)"
            )
        from napari_mrplip.outputs import write_text

        # beside the run folder, not in it: the CLI refuses an --out that holds an input
        regions = out.with_name(out.name + ".regions.geojson")
        write_text(
            regions,
            json.dumps(fl.regions_geojson(fl.regions_from_shapes(layer, slide_layer))),
            overwrite=True,
        )
        return args + ["--data", str(regions), "--slide", slide_path]

    def _watch(self, out: Path) -> None:
        from qtpy.QtCore import QTimer

        self._tail = JsonlTail(out / "progress.jsonl")
        if self._timer is None:
            self._timer = QTimer(self.native)  # a child: closing the panel stops the polling
            self._timer.setInterval(200)
            self._timer.timeout.connect(self._poll)
        self._timer.start()

    def _poll(self) -> None:
        """Apply new progress events; notice a subprocess that died."""
        for ev in self._tail.read() if self._tail is not None else []:
            self._apply(ev)
        proc = self._process
        if proc is not None and not proc.running:
            for ev in proc.poll():
                self._apply(ev)
            code = proc.returncode
            self._process = None
            self._set_running(False)
            if self.last_metrics is None and code != 0:
                self._show_error(f"training process exited with code {code}:\n{proc.stderr_tail()}")

    def _apply(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "step":
            self.progress.max = max(int(ev.get("total_steps", 1)), 1)
            self.progress.value = min(int(ev["step"]), self.progress.max)
            self.status.value = (
                f"step {ev['step']}/{ev.get('total_steps')}: loss {ev['losses'].get('loss', 0):.4f}"
            )
        elif kind == "embed":
            self.status.value = f"embedding tiles {ev['done']}/{ev['total']}"
        elif kind == "done":
            self._finished(ev.get("metrics") or {}, Path(ev["checkpoint"]))
        elif kind == "error":
            self._show_error(ev.get("message", "training failed"))

    def _finished(self, metrics: dict, out: Path) -> None:
        if self.last_metrics is not None:
            return
        self.last_metrics = metrics
        ft, zs = metrics.get("finetuned", {}), metrics.get("zero_shot", {})
        recall = ", ".join(f"{k} {v:.2f}" for k, v in ft.get("recall", {}).items())
        self.results.value = (
            f"balanced accuracy {ft.get('balanced_accuracy', float('nan')):.3f} "
            f"(zero-shot {zs.get('balanced_accuracy', float('nan')):.3f}, n={ft.get('n')})\n"
            f"recall: {recall}\ncheckpoint: {out}"
        )
        png = out / "confusion.png"
        if png.is_file():
            self.confusion.value = str(png)
            self.confusion.visible = True
        self.progress.value = self.progress.max
        self.status.value = "done: the model is now in the heatmap panel's model list"
        self.model.refresh()

    def _show_error(self, message: str) -> None:
        self.status.value = f"error: {message}"

    def _set_running(self, running: bool) -> None:
        self.train_button.enabled = not running
        self.cancel_button.enabled = running
        if not running and self._timer is not None and self._worker is None:
            self._timer.stop()

    def cancel(self, _=None) -> None:
        """Stop a subprocess run (a thread-run linear probe finishes within seconds)."""
        if self._process is not None:
            self._process.stop()
            self.status.value = "cancelling..."
