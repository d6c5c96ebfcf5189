"""Bags with frozen-encoder features instead of pixels, for ``vision.kind="features"`` models.

Two sources give the same numbers for the same bag:

- :class:`StoreFeatures` reads a :class:`~napari_mrplip.data.feature_store.FeatureStore`
  (``mrplip embed --store``) and never decodes a tile;
- :class:`EncoderFeatures` decodes the bag's tiles and runs the frozen encoder on them at
  every step (the "frozen tower on pixels" path, what the store saves).

Features describe un-augmented tiles, so these datasets never augment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .bag_tiles import read_bag_tiles
from .dataset import BagDataset
from .feature_embed import encode_bag
from .feature_store import FeatureStore, group_by_slide, tile_mpps


class StoreFeatures:
    """Bag features read from a store, checked against the manifest and the model.

    Parameters
    ----------
    store : path
    records : list of dict
        The manifest records (every slide must be complete in the store).
    feature_dim : int
        The model's ``vision.feature_dim``.
    encoder : str, optional
        The encoder id the store must have been made with (``model_id``).
    """

    def __init__(self, store, records: list[dict], feature_dim: int, encoder: str | None = None):
        self.path = Path(store)
        self._store = FeatureStore.open(self.path)
        self._store.check(encoder=encoder, feature_dim=feature_dim, mpps=tile_mpps(records))
        self._where: dict[int, tuple[int, int]] = {}
        self._slides: list[list[dict]] = []
        for indices in group_by_slide(records).values():
            slide_records = [records[i] for i in indices]
            self._store.require(slide_records)
            for j, i in enumerate(indices):
                self._where[i] = (len(self._slides), j)
            self._slides.append(slide_records)
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, rec: dict, index: int) -> np.ndarray:
        """``(N, F)`` float32 features of manifest record ``index``."""
        s, j = self._where[index]
        if s not in self._cache:  # a slide's bags are one small array: read once per process
            self._cache[s] = self._store.slide_features(self._slides[s])
        return self._cache[s][j]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


class EncoderFeatures:
    """Bag features computed on the fly: decode the tiles, run the frozen encoder.

    Parameters
    ----------
    encoder : str
        An encoder spec (``models.encoders.get_encoder``), loaded lazily per process.
    device : str
    """

    def __init__(self, encoder: str, device: str = "cpu"):
        self.spec, self.device = str(encoder), device
        self._encoder = None
        self._slides: dict = {}

    def encoder(self):
        if self._encoder is None:
            from napari_mrplip.models.encoders import get_encoder

            # Loading builds a model: keep the training RNG (MLM masks, ITM negatives) as is.
            with torch.random.fork_rng(devices=[]):
                self._encoder = get_encoder(self.spec, device=self.device)
        return self._encoder

    def __call__(self, rec: dict, index: int) -> np.ndarray:
        from napari_mrplip.io import open_slide

        enc = self.encoder()
        path = rec["slide"]
        if path not in self._slides:
            self._slides[path] = open_slide(path, mpp=rec["slide_mpp"])
        tiles = read_bag_tiles(self._slides[path], rec["tiles"], enc.input_size, rec["slide_mpp"])
        return encode_bag(enc, tiles)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_encoder"], state["_slides"] = None, {}
        return state


class FeatureBagDataset(BagDataset):
    """:class:`BagDataset` whose items carry ``features`` (N, F) and an empty ``images``.

    Parameters
    ----------
    manifest_path : path
    source : StoreFeatures or EncoderFeatures
        ``source(record, index) -> (N, F)`` features of one manifest record.
    **kwargs
        :class:`BagDataset` arguments (``image_size`` is unused; ``augment`` is forced off).
    """

    def __init__(self, manifest_path, source, **kwargs):
        kwargs.update(augment=False)
        kwargs.setdefault("image_size", 1)
        super().__init__(manifest_path, **kwargs)
        self.source = source

    def _vision(self, rec: dict, index: int) -> dict[str, torch.Tensor]:
        feats = torch.from_numpy(np.ascontiguousarray(self.source(rec, index), np.float32))
        return {"images": torch.empty((len(rec["tiles"]), 0, 0, 3), dtype=torch.uint8),
                "features": feats}  # fmt: skip
