"""The "Pretrain" panel: launch ``mrplip pretrain`` in a separate process and watch it.

The panel builds the command line, starts it (``torchrun`` for several GPUs), and a
``QTimer`` tails ``OUT/progress.jsonl``: progress bar, live loss plot, status. Cancel sends
SIGINT (the trainer writes a clean checkpoint and exits 0); the stopped checkpoint is made
loadable and registered, like a finished one, so it appears in every model picker.
"""

from __future__ import annotations

import importlib.resources
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    TextEdit,
)

from napari_mrplip.io.stated_mpp import source_of
from napari_mrplip.models import catalog

from .model_picker import refresh_all
from .process import TrainingProcess, loadable_checkpoint, pretrain_command
from .slide_mpp import SlideMppRow, slide_of
from .workers import import_torch_safely

TERMINAL = ("done", "stopped", "error")


def builtin_configs() -> list[str]:
    """Names of the model configs shipped in ``models/configs`` (torch-free)."""
    root = importlib.resources.files("napari_mrplip.models") / "configs"
    names = sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))
    return names or ["mrplip-tiny"]


class LossPlot:
    """A small matplotlib canvas (Qt) plotting each loss term against the step."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.0), dpi=90, tight_layout=True)
        self.axes = self.figure.add_subplot(1, 1, 1)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(160)
        self.curves: dict[str, dict[int, float]] = {}

    def add(self, step: int, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.curves.setdefault(name, {})[int(step)] = float(value)

    def redraw(self) -> None:
        ax = self.axes
        ax.clear()
        for name, curve in sorted(self.curves.items()):
            steps = sorted(curve)
            ax.plot(steps, [curve[s] for s in steps], label=name, lw=1.2)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if self.curves:
            ax.legend(fontsize=6, loc="upper right")
        self.canvas.draw_idle()


class PretrainWidget(Container):
    """Pretrain panel. ``viewer`` is injected by napari (npe2)."""

    def __init__(self, viewer: napari.viewer.Viewer, **kwargs):
        super().__init__(labels=True, **kwargs)
        self.viewer = viewer
        self.use_open = CheckBox(text="use the open slide(s)", value=True)
        self.slides = FileEdit(label="slides", mode="rm", filter="*.svs *.tif *.tiff *.ndpi")
        self.magnifications = LineEdit(label="magnifications", value="5, 10, 20")
        self.captioner = LineEdit(label="captioner", value="stain", tooltip="'stain' or a VLM dir")
        configs = builtin_configs()
        default = "mrplip-tiny" if "mrplip-tiny" in configs else configs[0]
        self.config = ComboBox(label="config", choices=configs, value=default)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.gpus = SpinBox(label="GPUs", value=1, min=1, max=64)
        self.steps = SpinBox(label="steps", value=300, min=1, max=10_000_000)
        self.batch_size = SpinBox(label="batch size", value=8, min=1, max=65536)
        self.slide_layer = ComboBox(label="open slide", choices=self._slide_choices)
        self.slide_mpp = SlideMppRow(self.slide_layer, viewer)
        self.out = FileEdit(label="output dir", mode="d", value=self._default_out())
        self.resume = CheckBox(text="resume the run in the output dir", value=False)
        self.start_btn = PushButton(text="Start")
        self.cancel_btn = PushButton(text="Cancel (checkpoint)")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(label="status", value="idle")
        self.log = TextEdit(label="log", value="")
        self.log.read_only = True
        self.extend([
            self.use_open, self.slide_layer, self.slide_mpp, self.slides, self.magnifications, self.captioner, self.config,
            self.device, self.gpus, self.steps, self.batch_size, self.out,
            self.resume, self.start_btn, self.cancel_btn, self.progress, self.status,
        ])  # fmt: skip
        self.plot = LossPlot()
        self.native.layout().addWidget(self.plot.canvas)
        self.append(self.log)
        self.process: TrainingProcess | None = None
        self.checkpoint: Path | None = None
        self.config_used: str = str(self.config.value)
        self.start_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.cancel)
        self._timer = self._make_timer()
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(lambda *_: self.slide_layer.reset_choices())

    def _slide_choices(self, widget=None):
        return [(ly.name, ly) for ly in self.viewer.layers if "slide" in ly.metadata]

    @staticmethod
    def _default_out() -> Path:
        return catalog.home() / "runs" / time.strftime("pretrain-%Y%m%d-%H%M%S")

    def _make_timer(self):
        from qtpy.QtCore import QTimer

        timer = QTimer(self.native)  # a child: closing the panel stops the polling with it
        timer.setInterval(500)
        timer.timeout.connect(self.poll)
        return timer

    # -- command line ---------------------------------------------------------------------
    def slide_paths(self) -> list[str]:
        """The chosen slide files plus, when ticked, the files behind the open slide layers."""
        paths = [str(p) for p in (self.slides.value or []) if str(p) not in {"", "."}]
        if self.use_open.value:
            paths += [str(ly.metadata["path"]) for ly in self._open_slides()]
        return list(dict.fromkeys(paths))

    def _open_slides(self) -> list:
        return [ly for ly in self.viewer.layers if "path" in ly.metadata and "slide" in ly.metadata]

    def stated_slide_mpp(self) -> float | None:
        """``--slide-mpp`` for the run: the µm/px stated for the open slides whose files
        record none (``io.stated_mpp``), when they share one and no other file is picked;
        otherwise ``None`` (the run reads each slide's own from the registry). Raises ValueError
        naming an open slide that has no µm/px at all."""
        if not self.use_open.value:
            return None
        stated = set()
        for layer in self._open_slides():
            slide = slide_of(layer, self.viewer)  # also adopts a scale the user set
            if slide.mpp is None:
                raise ValueError(
                    f"{slide.name} records no µm/px: state it in the 'slide µm/px' row"
                )
            if source_of(slide) != "file":
                stated.add(slide.mpp)
        picked = [p for p in (self.slides.value or []) if str(p) not in {"", "."}]
        return stated.pop() if len(stated) == 1 and not picked else None

    def build_args(self) -> list[str]:
        """``mrplip pretrain`` arguments from the form; raises ValueError on bad input."""
        out = Path(self.out.value)
        args = ["--out", str(out), "--no-progress-bar"]
        if self.resume.value:
            if not (out / "pretrain_config.json").is_file():
                raise ValueError(f"{out} holds no run to resume (no pretrain_config.json)")
            return [*args, "--resume", "--max-steps", str(self.steps.value)]
        slides = self.slide_paths()
        if not slides:
            raise ValueError("choose slide files, or open a slide and tick 'use the open slide(s)'")
        try:
            mags = [float(m) for m in self.magnifications.value.replace(",", " ").split()]
        except ValueError:
            raise ValueError("magnifications: numbers like '5, 10, 20'") from None
        if not mags:
            raise ValueError("magnifications: give at least one, e.g. '5, 10, 20'")
        args += ["--slides", *slides, "--config", str(self.config.value)]
        args += ["--magnifications", *(f"{m:g}" for m in mags)]
        args += ["--max-steps", str(self.steps.value), "--batch-size", str(self.batch_size.value)]
        args += ["--device", self.device.value, "--captioner", self.captioner.value.strip()]
        mpp = self.stated_slide_mpp()
        if mpp is not None:
            args += ["--slide-mpp", f"{mpp:g}"]
        return args

    # -- actions --------------------------------------------------------------------------------
    def start(self, value=None, extra_args: list[str] | None = None) -> TrainingProcess | None:
        """Launch the run in a subprocess and start tailing its progress."""
        if self.process is not None and self.process.running:
            self.status.value = "a run is already going: cancel it first"
            return None
        try:
            args = self.build_args() + list(extra_args or [])
        except ValueError as e:
            self.status.value = f"error: {e}"
            return None
        argv = pretrain_command(args, gpus=int(self.gpus.value))
        self.process = TrainingProcess(argv, Path(self.out.value)).start()
        self.checkpoint = None
        self.config_used = str(self.config.value)
        self.plot.curves.clear()
        self.progress.value = 0
        self.status.value = "starting..."
        self.log.value = " ".join(argv)
        self._timer.start()
        return self.process

    def cancel(self, value=None) -> None:
        """Ask the trainer to write a checkpoint and stop."""
        if self.process is not None and self.process.running:
            self.process.stop()
            self.status.value = "stopping (writing a checkpoint)..."

    # -- progress ------------------------------------------------------------------------------
    def poll(self) -> list[dict]:
        """Read new progress events and update the panel (the timer calls this)."""
        if self.process is None:
            return []
        alive = self.process.running  # read before the events: an exited process wrote all
        events = self.process.poll()
        for event in events:
            self.handle(event)
        if any(e.get("event") == "step" for e in events):
            self.plot.redraw()
        if not alive:
            self._timer.stop()
            self._finished()
        return events

    def handle(self, event: dict) -> None:
        """Apply one progress event to the panel."""
        kind = event.get("event")
        if kind == "start":
            self.progress.max = max(int(event.get("total_steps", 1)), 1)
            self.progress.value = min(int(event.get("start_step", 0)), self.progress.max)
            self.config_used = (event.get("config") or {}).get("model_config", self.config.value)
            self.status.value = f"running on {event.get('device', '?')}"
        elif kind == "step":
            self.progress.max = max(int(event.get("total_steps", self.progress.max)), 1)
            self.progress.value = min(int(event["step"]), self.progress.max)
            self.plot.add(event["step"], event.get("losses", {}))
            loss = event.get("losses", {}).get("loss")
            self.status.value = f"step {event['step']}/{self.progress.max}" + (
                f" · loss {loss:.4f}" if loss is not None else ""
            )
        elif kind == "checkpoint":
            self.status.value = f"checkpoint at step {event.get('step')}"
        elif kind in ("done", "stopped"):
            try:
                self.register(Path(event["checkpoint"]), stopped=kind == "stopped")
            except (OSError, ValueError, RuntimeError, KeyError) as e:
                self.status.value = f"error: the checkpoint could not be registered: {e}"
        elif kind == "error":
            self.status.value = f"error: {event.get('message')}"

    def register(self, path: Path, stopped: bool) -> Path:
        """Make ``path`` loadable, add it to the catalogue and refresh every model picker."""
        import_torch_safely()
        model_dir = loadable_checkpoint(path, self.config_used)
        if str(model_dir.resolve()) not in {e.spec for e in catalog.list_models()}:
            suffix = f"stopped at {path.name}" if stopped else "pretrained"
            catalog.register_model(model_dir, name=f"{Path(self.out.value).name} ({suffix})")
        self.checkpoint = model_dir
        refresh_all()
        word = "stopped; checkpoint" if stopped else "done; model"
        self.status.value = f"{word}: {model_dir}"
        return model_dir

    def _finished(self) -> None:
        code = self.process.wait(timeout=10)  # already exited: reaps it, closes its stderr file
        last = next((e for e in reversed(self.process.events) if e.get("event") in TERMINAL), None)
        if code != 0 or last is None:
            tail = self.process.stderr_tail()
            self.status.value = f"the training process exited with status {code}"
            self.log.value = tail or "(no output on stderr)"
