"""Pretrain panel in a real napari viewer, launching real ``mrplip pretrain`` subprocesses.

Run under Xvfb: ``QT_API=pyqt6 xvfb-run -a .venv/bin/python -m pytest tests/test_widget_pretrain_gui.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# torch (and triton, through torchvision) must be imported before any OpenGL canvas exists:
# see napari_mrplip._napari.workers.import_torch_safely
from napari_mrplip.models.checkpoint import load_model

pytestmark = pytest.mark.gui


@pytest.fixture
def panels(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    from napari_mrplip._napari.heatmap_widget import HeatmapWidget
    from napari_mrplip._napari.pretrain_widget import PretrainWidget

    viewer = make_napari_viewer()
    heat, pre = HeatmapWidget(viewer), PretrainWidget(viewer)
    viewer.window.add_dock_widget(heat, name="Prompt heatmap")
    viewer.window.add_dock_widget(pre, name="Pretrain")
    yield viewer, heat, pre
    if pre.process is not None and pre.process.running:
        pre.process.kill()


def test_form_builds_the_command_line_and_rejects_bad_input(panels, tmp_path, cmu_svs):
    viewer, _, pre = panels
    pre.use_open.value = False
    assert pre.start() is None
    assert "choose slide files" in pre.status.value
    pre.slides.value = [cmu_svs]
    pre.magnifications.value = "5, ten"
    assert pre.start() is None and "magnifications" in pre.status.value
    pre.magnifications.value = "10 20"
    pre.out.value = tmp_path / "run"
    pre.steps.value = 7
    args = pre.build_args()
    assert args[args.index("--slides") + 1] == str(cmu_svs)
    assert args[args.index("--magnifications") + 1 :][:2] == ["10", "20"]
    assert args[args.index("--max-steps") + 1] == "7"
    assert args[args.index("--config") + 1] == "mrplip-tiny"
    pre.resume.value = True
    with pytest.raises(ValueError, match="no run to resume"):
        pre.build_args()


@pytest.mark.slow
def test_dead_process_shows_its_stderr(panels, tmp_path, qtbot):
    """A run that fails (a slide that is not a slide) ends with its error in the panel."""
    viewer, _, pre = panels
    bogus = tmp_path / "not-a-slide.svs"
    bogus.write_bytes(b"this is not a TIFF file at all")
    pre.use_open.value = False
    pre.slides.value = [bogus]
    pre.out.value = tmp_path / "run"
    pre.device.value = "cpu"
    proc = pre.start()
    assert proc is not None
    qtbot.waitUntil(lambda: not pre._timer.isActive(), timeout=120_000)
    assert proc.returncode != 0
    assert "exited with status" in pre.status.value
    assert "not-a-slide.svs" in pre.log.value


@pytest.mark.slow
def test_real_run_progresses_cancels_to_a_loadable_checkpoint_listed_in_heatmap_panel(
    panels, tmp_path, qtbot, cmu_svs
):
    viewer, heat, pre = panels
    pre.use_open.value = False
    pre.slides.value = [cmu_svs]
    pre.config.value = "mrplip-tiny"
    pre.device.value = "cpu"
    pre.steps.value = 60  # far more than we let it run: cancel must stop it
    pre.batch_size.value = 2
    pre.magnifications.value = "10, 20"
    pre.out.value = tmp_path / "run"
    proc = pre.start(extra_args=["--parents-per-slide", "2", "--checkpoint-every", "0"])
    assert proc is not None
    assert pre.progress.value == 0
    qtbot.waitUntil(lambda: pre.progress.value >= 1, timeout=180_000)
    assert pre.progress.max == 60
    assert pre.plot.curves["loss"]  # the live plot got points
    pre.cancel()
    qtbot.waitUntil(lambda: not pre._timer.isActive(), timeout=120_000)
    assert proc.returncode == 0, pre.log.value
    assert proc.events[-1]["event"] == "stopped"
    assert pre.progress.value < 60
    ckpt = pre.checkpoint
    assert ckpt is not None and Path(ckpt).is_dir(), pre.status.value
    model = load_model(ckpt)
    assert model.config is not None
    assert str(Path(ckpt).resolve()) in heat.model.specs
    # the stopped run can be resumed from the same output directory
    pre.resume.value = True
    args = pre.build_args()
    assert "--resume" in args and args[args.index("--out") + 1] == str(tmp_path / "run")
