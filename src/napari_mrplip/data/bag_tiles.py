"""Reading a bag's tiles: the one place the data pipeline decodes bag pixels.

Captioning (``manifest``), pixel training (``dataset.BagDataset``) and the feature store
(``feature_store`` via ``scale``) all read bag tiles through :func:`read_bag_tiles`, so the
three see the same pixels for the same manifest record.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_mrplip.embed.tiles import read_tiles, xywh_to_boxes


def read_bag_tiles(slide, tiles: Sequence[dict], size: int, slide_mpp: float) -> np.ndarray:
    """Decode a bag's tiles through the one tile reader (``embed.tiles.read_tiles``).

    Each tile's scale follows from its box and ``size`` (the level rule of ``embed.tiles``);
    augmentation, if any, comes after this.

    Parameters
    ----------
    slide : Slide
        The open slide of the bag.
    tiles : sequence of dict
        Manifest tile records (``box`` in level-0 pixels and target ``mpp``).
    size : int
        Output side S in pixels.
    slide_mpp : float
        Level-0 µm/px recorded in the manifest (not needed to read: boxes are level-0 px).

    Returns
    -------
    np.ndarray
        ``(N, S, S, 3)`` uint8.
    """
    boxes = xywh_to_boxes([t["box"] for t in tiles])  # manifest boxes are (x0, y0, w, h)
    return read_tiles(slide, boxes, size)
