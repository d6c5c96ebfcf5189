"""Screenshots of heatmap overlays in the real viewer (run under Xvfb), for docs and for
choosing display defaults by looking at them.

    QT_API=pyqt6 xvfb-run -a python scripts/heatmap_screenshots.py OUT_DIR [--variants]

Opens CMU-1-Small-Region (H&E) and OS-2 (Ki67 IHC) through the plugin reader, runs the
embedded model over the whole slide at 20x, and saves canvas screenshots with the colour
bar, threshold, fading and outline; ``--variants`` adds the comparison of colormaps used to
pick the defaults; the panel itself with the vocabulary warning for "tumour".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "../shared/data"
SLIDES = {
    "he": (DATA / "CMU-1-Small-Region.svs", "dense nuclei\npink stroma"),
    "ihc": (DATA / "OS-2-ndpi.ome.tif", "brown DAB-positive nuclei\nhematoxylin counterstain"),
}


def _small(img, width=560):
    """Crop the black canvas margin, shrink, and quantise to 256 colours (small PNGs)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(img[..., :3])
    rows, cols = np.nonzero(rgb.max(axis=2) > 12)
    if rows.size:
        rgb = rgb[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    im = Image.fromarray(np.ascontiguousarray(rgb))
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    return im.quantize(256, method=Image.Quantize.MEDIANCUT)


def _wait(app, job):
    import time

    while not job.finished:
        app.processEvents()
        time.sleep(0.05)
    app.processEvents()


def _run(viewer, widget, app, path, prompts, mag="20x (0.5 µm/px)"):
    for ly in list(viewer.layers):
        viewer.layers.remove(ly)
    viewer.open(str(path), plugin="napari-mrplip")
    widget.slide_layer.reset_choices()
    widget.prompts.value = prompts
    widget.magnification.value = mag
    _wait(app, widget.run_whole_slide())
    viewer.reset_view()
    app.processEvents()


def _zoom(viewer, app, factor=3.0):
    """Zoom into the slide's centre (cells become visible); follow the view is turned off
    first so the shot shows the map just computed."""
    viewer.camera.zoom = viewer.camera.zoom * factor
    app.processEvents()


def shoot(viewer, out: Path, name: str):
    out.mkdir(parents=True, exist_ok=True)
    _small(viewer.screenshot(canvas_only=True, flash=False)).save(
        out / f"{name}.png", optimize=True
    )
    print(out / f"{name}.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--only-dense", action="store_true", help="only the IHC dense vs tile shots")
    args = ap.parse_args(argv)
    from napari_mrplip._napari.workers import import_torch_safely

    import_torch_safely()  # torch before any GL context (see _napari/workers.py)
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_mrplip._napari.heatmap_widget import HeatmapWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    widget = HeatmapWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prompt heatmap")
    app = QApplication.instance()
    d = widget.display
    for key, (path, prompts) in SLIDES.items() if not args.only_dense else [("ihc", SLIDES["ihc"])]:
        _run(viewer, widget, app, path, prompts)
        heat = [ly for ly in viewer.layers if "prompt" in ly.metadata]
        heat[1].visible = False  # one prompt at a time, as a pathologist reads it
        defaults = (widget.colormap.value, widget.opacity.value, d.threshold.value)
        if args.variants:
            d.fade.value, d.threshold.value, d.bilinear.value = False, 0.0, False
            widget.colormap.value, widget.opacity.value = "inferno", 0.45
            shoot(viewer, args.out, f"{key}-old-inferno")
            for cmap in ("inferno", "viridis", "turbo"):
                d.fade.value, d.threshold.value, d.bilinear.value = True, defaults[2], True
                widget.colormap.value, widget.opacity.value = cmap, 0.8
                shoot(viewer, args.out, f"{key}-{cmap}-fade")
        widget.colormap.value, widget.opacity.value, d.threshold.value = defaults
        d.fade.value, d.bilinear.value, d.colorbar.value = True, True, True
        shoot(viewer, args.out, f"heatmap-{key}")
        d.outline.value = True
        shoot(viewer, args.out, f"heatmap-{key}-outline")
        d.outline.value = False
        if key == "ihc":  # the same prompt, dense (7 x 7 per tile), at 40x
            from napari_mrplip._napari.heatmap_widget import DETAILS

            widget.follow.value = False  # keep the whole-slide 40x map while zooming in
            widget.detail.value = DETAILS[1]
            _run(viewer, widget, app, path, prompts, mag="40x (0.25 µm/px)")
            [ly for ly in viewer.layers if "prompt" in ly.metadata][1].visible = False
            _zoom(viewer, app)
            shoot(viewer, args.out, "heatmap-ihc-dense")
            widget.detail.value = DETAILS[0]
            _run(viewer, widget, app, path, prompts, mag="40x (0.25 µm/px)")
            [ly for ly in viewer.layers if "prompt" in ly.metadata][1].visible = False
            _zoom(viewer, app)
            shoot(viewer, args.out, "heatmap-ihc-tile-40x")
    widget.prompts.value = "tumour\ndense nuclei"
    app.processEvents()
    img = widget.native.grab().toImage()
    img.save(str(args.out / "panel-vocabulary-warning.png"))
    print(args.out / "panel-vocabulary-warning.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
