"""The training batch contract between ``data`` (producer) and ``models`` (consumer)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class BagBatch:
    """A batch of multi-magnification bags with their text.

    A bag holds N tiles over M magnifications: one parent at the coarsest magnification
    and its descendants (e.g. 1 + 4 + 16 for three magnifications); every tile is the
    same pixel size at its own magnification. Tile order inside a bag is fixed for the
    batch and described by ``mag_index`` and ``parent_index``.

    Attributes
    ----------
    images : torch.Tensor
        ``(B, N, H, W, 3)`` uint8 RGB; the model normalises them itself.
    mag_index : torch.Tensor
        ``(N,)`` long, 0 = coarsest magnification.
    parent_index : torch.Tensor
        ``(N,)`` long, index within the bag of each tile's parent, -1 for the root.
    caption_tokens : torch.Tensor
        ``(B, N, L)`` long, one tokenised caption per tile (0 = padding).
    keyword_tokens : torch.Tensor
        ``(B, K, Lk)`` long, the bag's keywords, tokenised (0 = padding).
    keyword_mask : torch.Tensor
        ``(B, K)`` bool, True where a keyword is real.
    features : torch.Tensor or None
        Optional ``(B, N, F)`` (or ``(B, N, T, F)``) float features of a frozen external
        tile encoder (e.g. UNI, F = 1024). Models whose ``vision.kind`` is
        ``"features"`` read these instead of ``images``; others ignore them.
    """

    images: torch.Tensor
    mag_index: torch.Tensor
    parent_index: torch.Tensor
    caption_tokens: torch.Tensor
    keyword_tokens: torch.Tensor
    keyword_mask: torch.Tensor
    features: torch.Tensor | None = None

    def to(self, device, non_blocking: bool = False) -> BagBatch:
        """Move every tensor to ``device``."""
        return BagBatch(
            **{
                f.name: _maybe(getattr(self, f.name), "to", device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def pin_memory(self) -> BagBatch:
        """Pinned copy (the DataLoader calls this when ``pin_memory=True``)."""
        return BagBatch(
            **{f.name: _maybe(getattr(self, f.name), "pin_memory") for f in fields(self)}
        )

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])


def _maybe(value, method: str, *args, **kwargs):
    """``value.method(*args, **kwargs)``, or None for an absent optional tensor."""
    return None if value is None else getattr(value, method)(*args, **kwargs)
