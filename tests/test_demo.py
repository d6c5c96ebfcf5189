"""``mrplip demo``: the sample slide, the docked panel, a prompt already run, a screenshot.

Run under Xvfb: ``QT_API=pyqt6 xvfb-run -a .venv/bin/python -m pytest tests/test_demo.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

# torch and triton (via open_clip -> torchvision) must load before any OpenGL canvas exists:
# see napari_mrplip._napari.workers.import_torch_safely
import open_clip  # noqa: F401
import pytest
import torch

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def tiny_mrplip(tmp_path_factory):
    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.config import load_config
    from napari_mrplip.models.mrplip import build_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("models") / "tiny-random"
    save_model(build_model(load_config("mrplip-tiny")), out)
    return out


def _args(model, tmp_path, **kw) -> argparse.Namespace:
    from napari_mrplip._napari import demo

    parser = argparse.ArgumentParser()
    demo.configure(parser)
    argv = ["--no-show", "--model", str(model), "--mpp", "2", "--device", "cpu"]
    argv += ["--screenshot", str(tmp_path / "demo.png")]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def test_demo_docks_the_panel_and_runs_a_prompt(qtbot, tmp_path, monkeypatch, tiny_mrplip):
    from napari_mrplip._napari import demo

    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    viewer, widget, job = demo.build(_args(tiny_mrplip, tmp_path))
    try:
        assert job is not None, widget.status.value
        assert demo.wait_for(job, 240)
        assert job.error is None, widget.status.value
        names = [ly.name for ly in viewer.layers]
        assert names[0] == "CMU-1-Small-Region.svs"
        assert names[1:] == ["heatmap: dense nuclei", "heatmap: pink stroma"]
        heat = viewer.layers[1].data
        assert np.isfinite(heat).any()
        shot = viewer.screenshot(canvas_only=True)
        viewer.layers[1].visible = viewer.layers[2].visible = False
        plain = viewer.screenshot(canvas_only=True)
        # the heatmap sits on the tissue: the pixels it changes are tissue pixels, and it
        # covers most of the tissue (tissue-only scoring, Otsu mask of the plain screenshot)
        from napari_mrplip.tiling.tissue import tissue_mask

        changed = np.abs(shot[..., :3].astype(int) - plain[..., :3].astype(int)).max(-1) > 8
        tissue = tissue_mask(plain[..., :3])
        assert tissue.mean() > 0.05 and changed.mean() > 0.05
        assert changed[tissue].mean() > 0.85  # tissue under the heatmap
        assert tissue[changed].mean() > 1.5 * tissue.mean()  # heatmap mostly on tissue
    finally:
        viewer.close()


def test_demo_without_model_fails_with_a_message(tmp_path, monkeypatch, qtbot, capsys):
    from napari_mrplip._napari import demo

    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    args = _args(tmp_path / "missing-model", tmp_path)
    assert demo.run(args) == 1
    err = capsys.readouterr().err
    assert "missing-model" in err


@pytest.mark.slow
def test_mrplip_demo_command_writes_a_screenshot(tmp_path, tiny_mrplip):
    out = tmp_path / "shot.png"
    env = {**os.environ, "MRPLIP_HOME": str(tmp_path / "home"), "QT_API": "pyqt6"}
    cmd = [sys.executable, "-m", "napari_mrplip.cli", "demo", "--no-show", "--model",
           str(tiny_mrplip), "--mpp", "4", "--device", "cpu", "--screenshot", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from skimage.io import imread

    img = imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
