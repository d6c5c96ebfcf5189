"""A real napari viewer (Xvfb + Mesa) opens the CMU SVS through the plugin's reader."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_viewer_opens_svs_and_shows_tissue(make_napari_viewer, cmu_svs):
    viewer = make_napari_viewer(show=True)  # hidden viewers do not render their canvas
    layers = viewer.open(str(cmu_svs), plugin="napari-mrplip")
    assert len(layers) == 1 and len(viewer.layers) == 1
    layer = layers[0]
    assert layer.multiscale and layer.rgb
    assert len(layer.data) >= 3
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    assert layer.metadata["slide"].mpp == pytest.approx(0.499)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(np.int32)
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    background = shot.max(axis=-1) < 30  # napari's canvas background outside the slide
    glass = shot.min(axis=-1) > 215
    stained = ~background & ~glass & (r > g + 15) & (b > g + 5)  # pink/purple H&E
    assert stained.mean() > 0.10, f"stained fraction {stained.mean():.3f}"
    assert (~background).mean() > 0.3
