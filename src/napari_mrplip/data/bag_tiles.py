"""Reading a bag's tiles: the one place the data pipeline decodes bag pixels.

Captioning (``manifest``), pixel training (``dataset.BagDataset``) and the feature store
(``feature_store`` via ``scale``) all read bag tiles through :func:`read_bag_tiles`, so the
three see the same pixels for the same manifest record.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_mrplip.tiling.bags import read_tile_at_mpp


def read_bag_tiles(slide, tiles: Sequence[dict], size: int, slide_mpp: float) -> np.ndarray:
    """Decode a bag's tiles at their own µm/px, each resampled to ``size`` pixels.

    Parameters
    ----------
    slide : Slide
        The open slide of the bag.
    tiles : sequence of dict
        Manifest tile records (``box`` in level-0 pixels and target ``mpp``).
    size : int
        Output side S in pixels.
    slide_mpp : float
        Level-0 µm/px of the slide as recorded in the manifest.

    Returns
    -------
    np.ndarray
        ``(N, S, S, 3)`` uint8.
    """
    # SHARED TILE READER (issue 9): when the core ``read_tiles(slide, boxes_level0, tile_px)``
    # lands, read through it here; this is the only call site of the bag path.
    out = [read_tile_at_mpp(slide, t["box"], t["mpp"], size, slide_mpp=slide_mpp) for t in tiles]
    return np.stack(out)
