"""Labelled training tiles for fine-tuning, from annotations, label masks, tile folders or stain statistics.

Every source produces a :class:`LabelledTiles`: per tile a class label and a *group* (the
annotation, connected label region, file or slide it came from), so that the held-out split
never puts tiles of one annotation on both sides. Tiles from slides stay lazy (boxes in
level-0 pixels) until they are embedded or read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Image suffixes read from tile folders.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class FinetuneDataError(ValueError):
    """Training data that cannot be used; the message says what to change."""


@dataclass
class SlideTiles:
    """Square tiles on one slide.

    Attributes
    ----------
    slide : Slide
        The open slide (``napari_mrplip.io.Slide``).
    boxes : np.ndarray
        ``(N, 4)`` float ``x0, y0, x1, y1`` in level-0 pixels (square footprints).
    mpp : float or None
        Target µm/px of the tiles (``None``: read at level 0).
    tile_px : int
        Tile side in pixels at ``mpp``.
    """

    slide: object
    boxes: np.ndarray
    mpp: float | None
    tile_px: int

    def __len__(self) -> int:
        return len(self.boxes)

    def read(self, idx: Sequence[int]) -> np.ndarray:
        """Read tiles ``idx`` as ``(n, tile_px, tile_px, 3)`` uint8."""
        from napari_mrplip.embed.tiles import read_tiles

        return read_tiles(self.slide, self.boxes[np.asarray(idx, dtype=np.int64)], self.tile_px)


@dataclass
class ImageTiles:
    """In-memory tiles (from a folder): ``images`` is a list of ``(H, W, 3)`` uint8 arrays."""

    images: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)

    def read(self, idx: Sequence[int]) -> np.ndarray:
        tiles = [self.images[i] for i in idx]
        side = max(max(t.shape[:2]) for t in tiles)
        return np.stack([_resize(t, side) for t in tiles])


@dataclass
class LabelledTiles:
    """Tiles with class labels and split groups.

    Attributes
    ----------
    class_names : list of str
        C class names; ``labels`` index into it.
    parts : list of SlideTiles or ImageTiles
        Tile sources; tile i of the set is the i-th tile of the concatenated parts.
    labels : np.ndarray
        ``(N,)`` int64.
    groups : np.ndarray
        ``(N,)`` str: annotation / region / file / slide identifiers.
    """

    class_names: list[str]
    parts: list = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, object))

    def __len__(self) -> int:
        return int(len(self.labels))

    def counts(self) -> dict[str, int]:
        """Tiles per class name."""
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}

    def iter_batches(self, idx: np.ndarray, batch_size: int) -> Iterator[tuple[object, np.ndarray]]:
        """Yield ``(part, local_indices)`` chunks of at most ``batch_size`` covering ``idx`` in order."""
        offsets = np.cumsum([0] + [len(p) for p in self.parts])
        idx = np.asarray(idx, dtype=np.int64)
        for k, part in enumerate(self.parts):
            local = idx[(idx >= offsets[k]) & (idx < offsets[k + 1])] - offsets[k]
            for s in range(0, len(local), batch_size):
                yield part, local[s : s + batch_size]

    def read(self, idx: Sequence[int]) -> np.ndarray:
        """Pixels of tiles ``idx`` (in the given order): ``(n, S, S, 3)`` uint8."""
        idx = np.asarray(idx, dtype=np.int64)
        offsets = np.cumsum([0] + [len(p) for p in self.parts])
        out = []
        for i in idx:
            k = int(np.searchsorted(offsets, i, side="right") - 1)
            out.append(self.parts[k].read([int(i - offsets[k])])[0])
        side = max(t.shape[0] for t in out)
        return np.stack([_resize(t, side) for t in out])

    def extend(self, other: LabelledTiles) -> LabelledTiles:
        """Concatenate two sets, merging class names by name."""
        names = list(self.class_names) + [c for c in other.class_names if c not in self.class_names]
        remap = np.array([names.index(c) for c in other.class_names], dtype=np.int64)
        return LabelledTiles(
            names,
            self.parts + other.parts,
            np.concatenate([self.labels, remap[other.labels] if len(other) else other.labels]),
            np.concatenate([self.groups, other.groups]),
        )


# -- pixels -----------------------------------------------------------------------------
def _resize(tile: np.ndarray, side: int) -> np.ndarray:
    from napari_mrplip.tiling.geometry import resize_rgb  # the one resampler

    return resize_rgb(tile, side)


def tile_side0(slide, mpp: float | None, tile_px: int) -> float:
    """Level-0 pixel side of a ``tile_px`` tile at ``mpp`` µm/px."""
    if mpp is None:
        return float(tile_px)
    if slide.mpp is None:
        from napari_mrplip.io.stated_mpp import HOW_TO_STATE

        raise FinetuneDataError(
            f"{slide.path}: the slide has no µm/px in its metadata; {HOW_TO_STATE} "
            "(here: --slide-mpp), or leave the tile µm/px unset to use level-0 pixels"
        )
    return float(tile_px) * mpp / slide.mpp


def grid_boxes(
    bounds: tuple[float, float, float, float], side0: float, stride0: float
) -> np.ndarray:
    """``(N, 4)`` square boxes of side ``side0`` on a grid covering ``bounds`` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = bounds
    eps = 1e-6  # a region exactly one tile wide must give its tile despite float rounding
    nx = max(int(np.floor((x1 - x0 - side0) / stride0 + eps)) + 1, 0)
    ny = max(int(np.floor((y1 - y0 - side0) / stride0 + eps)) + 1, 0)
    if nx * ny > 5_000_000:
        raise FinetuneDataError(f"{nx * ny} tiles requested; use a coarser µm/px or a larger tile")
    xs = x0 + stride0 * np.arange(nx)
    ys = y0 + stride0 * np.arange(ny)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    return np.stack([gx, gy, gx + side0, gy + side0], axis=1).astype(np.float64)


# -- assembling -------------------------------------------------------------------------
def _from_parts(
    rows: list[tuple[object, list[int], list[str]]], class_names: list[str]
) -> LabelledTiles:
    parts, labels, groups = [], [], []
    for part, lab, grp in rows:
        if len(part):
            parts.append(part)
            labels += lab
            groups += grp
    return LabelledTiles(
        list(class_names),
        parts,
        np.asarray(labels, dtype=np.int64),
        np.asarray(groups, dtype=object),
    )


def check_usable(
    data: LabelledTiles, source: str, drop_empty: bool = False, min_classes: int = 2
) -> LabelledTiles:
    """Raise :class:`FinetuneDataError` unless the set can train a classifier.

    Needs ``min_classes`` classes with tiles (2 for training; 1 for a held-out set). A class with no tiles is an error naming it,
    unless ``drop_empty`` (then it is removed from ``class_names`` and labels re-indexed).
    """
    if len(data) == 0:
        raise FinetuneDataError(f"{source}: no training tiles found. {_hint()}")
    counts = data.counts()
    empty = [c for c, n in counts.items() if n == 0]
    kept = [c for c, n in counts.items() if n > 0]
    if len(kept) < min_classes:
        detail = f"; classes with no tiles inside: {', '.join(empty)}" if empty else ""
        raise FinetuneDataError(
            f"{source}: fine-tuning needs at least {min_classes} classes with tiles, found "
            f"{', '.join(kept) or 'none'}{detail}. {_hint()}"
        )
    if empty and not drop_empty:
        raise FinetuneDataError(
            f"{source}: no tiles fall inside the regions of class(es) {', '.join(map(repr, empty))}. "
            f"{_hint()}"
        )
    if empty:
        remap = np.full(len(data.class_names), -1, dtype=np.int64)
        remap[[data.class_names.index(c) for c in kept]] = np.arange(len(kept))
        data = LabelledTiles(kept, data.parts, remap[data.labels], data.groups)
    return data


def _hint() -> str:
    return (
        "Label regions larger than one tile (or use a smaller tile / coarser µm/px), "
        "and give every class at least one region."
    )


def split_by_group(
    data: LabelledTiles, val_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """Stratified held-out split that keeps each group on one side.

    For every class, its groups are shuffled and about ``val_fraction`` of its tiles'
    groups go to validation (at least one group when the class has two or more). A class
    with a single group falls back to splitting its tiles (reported in the returned mode).

    Returns
    -------
    train_idx, val_idx : np.ndarray
        Tile indices.
    split_by : str
        ``"group"`` or ``"group+tile"`` (some class had only one group).
    """
    rng = np.random.default_rng(seed)
    val = np.zeros(len(data), dtype=bool)
    mode = "group"
    for k in range(len(data.class_names)):
        idx = np.flatnonzero(data.labels == k)
        groups = np.unique(data.groups[idx])
        if len(groups) >= 2:
            rng.shuffle(groups)
            sizes = np.array([(data.groups[idx] == g).sum() for g in groups])
            n_val = max(1, int(np.searchsorted(np.cumsum(sizes), val_fraction * len(idx)) + 0))
            n_val = min(n_val, len(groups) - 1)
            val[idx[np.isin(data.groups[idx], groups[:n_val])]] = True
        elif len(idx) >= 2:
            mode = "group+tile"
            pick = rng.permutation(idx)[: max(1, int(round(val_fraction * len(idx))))]
            val[pick] = True
    tr, va = np.flatnonzero(~val), np.flatnonzero(val)
    missing = [c for k, c in enumerate(data.class_names) if not (data.labels[tr] == k).any()]
    if missing:
        raise FinetuneDataError(
            f"class(es) {', '.join(map(repr, missing))} have too few tiles to hold some out for validation; "
            "label more regions or tiles"
        )
    return tr, va, mode
