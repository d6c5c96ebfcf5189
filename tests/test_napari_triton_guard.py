"""The napari layer must survive importing torch after the viewer's GL context exists."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import napari
viewer = napari.Viewer(show=True)
import napari_mrplip._napari  # what napari does when it loads our reader or a panel
import open_clip, torch  # the panels import these lazily, after the GL context exists
model = open_clip.create_model("ViT-B-32")
print("survived", float((torch.ones(4) @ torch.ones(4)).item()))
viewer.close()
"""


@pytest.mark.gui
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)")
def test_torch_import_after_viewer_does_not_crash():
    env = {**os.environ, "QT_API": os.environ.get("QT_API", "pyqt6")}
    env.pop("MRPLIP_ALLOW_TRITON", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, f"process died with {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert "survived 4.0" in proc.stdout
