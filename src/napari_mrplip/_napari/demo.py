"""``mrplip demo``: napari on the sample slide with the Prompt heatmap panel docked and run.

``mrplip demo`` opens the viewer and leaves it to the user; ``--no-show`` runs the whole
thing hidden and exits when the heatmap is done (for tests and CI); ``--screenshot PATH``
saves the canvas once the heatmap is complete. A screenshot needs a rendered window (a
hidden canvas renders black), so with ``--screenshot`` the window is shown even with
``--no-show``; on a machine without a display run it under ``xvfb-run``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_PROMPTS = ("dense nuclei", "pink stroma")


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--prompt", action="append", help=f"prompt (repeatable) [{', '.join(DEFAULT_PROMPTS)}]")
    add("--background", action="append", help="background prompt (repeatable) [background]")
    add("--model", default="mrplip-demo", help="model name or directory [mrplip-demo]")
    add("--mpp", type=float, default=1.0, help="µm/px to score at, 0 = visible level [1.0]")
    add("--device", default="auto", choices=["auto", "cpu", "cuda"], help="[auto]")
    add(
        "--output",
        default="one layer per prompt",
        choices=["one layer per prompt", "argmax labels"],
    )
    add("--no-show", action="store_true", help="do not show the window; exit when done")
    add("--screenshot", type=Path, help="save a PNG of the canvas when the heatmap is done")
    add("--full-window", action="store_true", help="screenshot the whole window, panel included")
    add("--timeout", type=float, default=300.0, help="seconds to wait for the heatmap [300]")


def _magnification_label(mpp: float) -> str:
    from .heatmap_widget import MAGNIFICATIONS

    for label, value in MAGNIFICATIONS.items():
        if value is not None and abs(value - mpp) < 1e-6:
            return label
    return "visible level"


def build(args: argparse.Namespace):
    """The viewer with the sample slide, the docked panel and a started job."""
    import napari
    import open_clip  # noqa: F401  - before the OpenGL canvas: see workers.import_torch_safely
    import torch  # noqa: F401

    from .heatmap_widget import HeatmapWidget

    show = not args.no_show or args.screenshot is not None
    viewer = napari.Viewer(show=show, title="napari-mrplip demo")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-mrplip", "sample_slide")
    widget = HeatmapWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prompt heatmap", area="right")
    widget.model.value = args.model
    widget.device.value = args.device
    widget.prompts.value = "\n".join(args.prompt or DEFAULT_PROMPTS)
    widget.background.value = "\n".join(args.background or ["background"])
    widget.magnification.value = _magnification_label(args.mpp)
    widget.output.value = args.output
    viewer.reset_view()
    job = widget.run_whole_slide()
    return viewer, widget, job


def wait_for(job, timeout: float) -> bool:
    """Process Qt events until ``job`` finished; False on timeout."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    return job.finished


def _finish(viewer, widget, job, args) -> int:
    """Wait for the heatmap, save the screenshot; 0 on success, 1 with a message otherwise."""
    if job is None:
        print(f"mrplip demo: {widget.status.value}", file=sys.stderr)
        return 1
    if not wait_for(job, args.timeout):
        print(f"mrplip demo: no heatmap after {args.timeout:g} s", file=sys.stderr)
        return 1
    if job.error is not None:
        print(f"mrplip demo: {widget.status.value}", file=sys.stderr)
        return 1
    if args.screenshot:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(args.screenshot), canvas_only=not args.full_window)
        print(args.screenshot)
    return 0


def run(args: argparse.Namespace) -> int:
    import napari

    viewer, widget, job = build(args)
    if args.no_show or args.screenshot:
        code = _finish(viewer, widget, job, args)
        if args.no_show:
            viewer.close()
            return code
    napari.run()
    return 0
