"""``BagDataset``: multi-magnification bags read lazily from slides, and ``collate_bags``.

The dataset holds only the manifest records and settings; slides are opened on first use
in each process (DataLoader workers open their own), so it pickles cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_mrplip.io import open_slide
from napari_mrplip.models.batch import BagBatch

from .bag_tiles import read_bag_tiles
from .manifest import read_manifest

#: A tokenizer: ``tok(texts, context_length) -> LongTensor (N, context_length)``.
Tokenizer = Callable[[list[str], int], torch.Tensor]


def augment_bag(images: np.ndarray, rng: np.random.Generator, jitter: float = 0.05) -> np.ndarray:
    """Histology augmentations: per-tile flips and 90° rotations, one mild colour jitter per bag.

    Parameters
    ----------
    images : np.ndarray
        ``(N, S, S, 3)`` uint8 tiles of one bag.
    rng : np.random.Generator
    jitter : float
        Per-channel gain range (±) and brightness offset (± ``jitter`` x 128 grey levels).
        The same jitter is applied to the whole bag (stain variation is per slide/region).

    Returns
    -------
    np.ndarray
        ``(N, S, S, 3)`` uint8.
    """
    out = np.empty_like(images)
    for i, tile in enumerate(images):
        tile = np.rot90(tile, k=int(rng.integers(4)))
        if rng.random() < 0.5:
            tile = tile[:, ::-1]
        out[i] = tile
    gain = 1.0 + rng.uniform(-jitter, jitter, size=3)
    offset = rng.uniform(-jitter, jitter) * 128
    return np.clip(out.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


class BagDataset(Dataset):
    """Bags of a manifest as training items.

    Parameters
    ----------
    manifest_path : path
        JSONL written by :func:`build_manifest`.
    image_size : int
        Side every tile is resampled to (the model's input size).
    tokenizer : callable, optional
        ``tok(texts, context_length) -> LongTensor``; defaults to
        ``napari_mrplip.models.tokenizer.get_tokenizer()``.
    context_length : int
        Caption token length L.
    keyword_context_length : int
        Keyword token length Lk.
    max_keywords : int
        K: keywords per bag (truncated, or padded with masked rows).
    augment : bool
        Flips, 90° rotations and a mild colour jitter, seeded by (seed, epoch, index).
    seed : int
    """

    def __init__(
        self,
        manifest_path: str | Path,
        image_size: int,
        tokenizer: Tokenizer | None = None,
        context_length: int = 77,
        keyword_context_length: int = 16,
        max_keywords: int = 16,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        self.manifest_path = Path(manifest_path)
        self.records = read_manifest(self.manifest_path)
        if not self.records:
            raise ValueError(f"{self.manifest_path}: the manifest holds no bags")
        if tokenizer is None:
            from napari_mrplip.models.tokenizer import get_tokenizer

            tokenizer = get_tokenizer(context_length)
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.context_length = int(context_length)
        self.keyword_context_length = int(keyword_context_length)
        self.max_keywords = int(max_keywords)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self._slides: dict = {}

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (call once per epoch, before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _slide(self, rec: dict):
        path = rec["slide"]
        if path not in self._slides:
            self._slides[path] = open_slide(path, mpp=rec["slide_mpp"])
        return self._slides[path]

    def _images(self, rec: dict) -> np.ndarray:
        return read_bag_tiles(self._slide(rec), rec["tiles"], self.image_size, rec["slide_mpp"])

    def _vision(self, rec: dict, index: int) -> dict[str, torch.Tensor]:
        """The vision input of one bag: ``{"images": (N, S, S, 3) uint8}`` (augmented)."""
        images = self._images(rec)
        if self.augment:
            images = augment_bag(images, np.random.default_rng((self.seed, self.epoch, index)))
        return {"images": torch.from_numpy(np.ascontiguousarray(images))}

    def _keywords(self, rec: dict) -> tuple[torch.Tensor, torch.Tensor]:
        words = list(rec.get("keywords", []))[: self.max_keywords]
        tokens = torch.zeros(self.max_keywords, self.keyword_context_length, dtype=torch.long)
        mask = torch.zeros(self.max_keywords, dtype=torch.bool)
        if words:
            tokens[: len(words)] = self.tokenizer(words, self.keyword_context_length)
            mask[: len(words)] = True
        return tokens, mask

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One bag: ``images`` (N, S, S, 3) uint8, ``caption_tokens`` (N, L),
        ``keyword_tokens`` (K, Lk), ``keyword_mask`` (K,), ``mag_index`` and
        ``parent_index`` (N,)."""
        rec = self.records[index]
        captions = [t["caption"] for t in rec["tiles"]]
        kw_tokens, kw_mask = self._keywords(rec)
        return {
            **self._vision(rec, index),
            "caption_tokens": self.tokenizer(captions, self.context_length).long(),
            "keyword_tokens": kw_tokens,
            "keyword_mask": kw_mask,
            "mag_index": torch.tensor([t["mag_index"] for t in rec["tiles"]], dtype=torch.long),
            "parent_index": torch.tensor([t["parent"] for t in rec["tiles"]], dtype=torch.long),
        }

    def close(self) -> None:
        """Close the slides this process opened."""
        for slide in self._slides.values():
            slide.close()
        self._slides.clear()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_slides"] = {}  # each process opens its own file handles
        return state


def collate_bags(items: list[dict[str, torch.Tensor]]) -> BagBatch:
    """Stack dataset items into a :class:`BagBatch`.

    Raises
    ------
    ValueError
        When the bags differ in structure (mag_index / parent_index): build the manifest
        with one setting of magnifications and children_per_parent.
    """
    if not items:
        raise ValueError("collate_bags needs at least one item")
    mag, parent = items[0]["mag_index"], items[0]["parent_index"]
    for it in items[1:]:
        if not (torch.equal(it["mag_index"], mag) and torch.equal(it["parent_index"], parent)):
            raise ValueError(
                "bags in one batch differ in structure (magnifications or children per "
                "parent); build the manifest with a single setting"
            )
    return BagBatch(
        images=torch.stack([it["images"] for it in items]),
        mag_index=mag.clone(),
        parent_index=parent.clone(),
        caption_tokens=torch.stack([it["caption_tokens"] for it in items]),
        keyword_tokens=torch.stack([it["keyword_tokens"] for it in items]),
        keyword_mask=torch.stack([it["keyword_mask"] for it in items]),
        features=torch.stack([it["features"] for it in items]) if "features" in items[0] else None,
    )
