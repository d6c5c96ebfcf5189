"""Screenshot of the "Compare models" panel: mrplip-demo vs another model on the sample slide.

    QT_API=pyqt6 xvfb-run -a .venv/bin/python scripts/screenshot_compare.py \\
        --model-b open_clip:ViT-B-16@/tmp/random_ViT-B-16.pt --out docs/img/compare-models.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", default="../shared/data/CMU-1-Small-Region.svs")
    ap.add_argument("--model-a", default="mrplip-demo")
    ap.add_argument("--model-b", required=True)
    ap.add_argument("--magnification", default="5x (2 µm/px)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from napari_mrplip._napari.workers import import_torch_safely

    import_torch_safely()  # torch before any OpenGL canvas exists
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_mrplip._napari.compare_widget import CompareWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    [slide_layer] = viewer.open(args.slide, plugin="napari-mrplip")
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare models")
    for picker, spec in ((widget.model_a, args.model_a), (widget.model_b, args.model_b)):
        if spec not in picker.specs:
            picker.add_path(spec)
        picker.value = spec
    widget.magnification.value = args.magnification
    viewer.reset_view()
    job = widget.run_view()
    assert job is not None, widget.status.value
    t0 = time.time()
    while not job.finished and time.time() - t0 < 900:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    print(widget.status.value)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False)
    print("wrote", args.out)
    viewer.close()


if __name__ == "__main__":
    main()
