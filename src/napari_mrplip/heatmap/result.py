"""Heatmap request and result: the contract between the engine and its users (panel, CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Scoring mode -> what a value means (shown in legends, written into exported files).
VALUE_MEANING = {
    "softmax": "probability (softmax over prompts + background), 0-1",
    "cosine": "cosine similarity of tile and prompt embeddings, -1-1",
}


@dataclass(frozen=True)
class HeatmapRequest:
    """What to score, where, and how.

    Attributes
    ----------
    prompts : tuple of str
        One entry per output channel. An entry may hold synonyms separated by ``|``
        ("tumour|carcinoma"), which are ensembled with the prompt templates.
    background : tuple of str
        Extra prompts competing in the softmax but not returned as channels.
    target_mpp : float or None
        µm/px to score at; ``None`` = the model's native magnification (or ``level``).
    level : int or None
        Pyramid level to score at when ``target_mpp`` is None (the visible level).
    region_level0 : tuple of int or None
        (x0, y0, x1, y1) in level-0 px to cover; ``None`` = the whole slide.
    overlap : float
        Fraction of the tile that neighbouring tiles share (0 = none, 0.5 = half).
    mode : str
        ``"softmax"`` (probabilities over prompts + background, logit scale) or ``"cosine"``.
    fusion : tuple of float or None
        Weights (parent, self, children) for multi-magnification fusion; ``None`` = the
        model's default (on for MR-PLIP, off otherwise).
    smooth_sigma : float
        Gaussian smoothing of the score grid, in grid cells (0 = off).
    tissue_only : bool
        Skip tiles outside the thumbnail's tissue mask (their scores stay NaN).
    max_tiles : int or None
        Tile budget of the lattice (None: ``tiling.grid.MAX_TILES``); checked before any
        allocation.
    """

    prompts: tuple[str, ...]
    background: tuple[str, ...] = ()
    target_mpp: float | None = None
    level: int | None = None
    region_level0: tuple[int, int, int, int] | None = None
    overlap: float = 0.0
    mode: str = "softmax"
    fusion: tuple[float, float, float] | None = None
    smooth_sigma: float = 0.0
    tissue_only: bool = True
    max_tiles: int | None = None


@dataclass
class HeatmapResult:
    """Scores on a regular grid with its level-0 placement.

    Attributes
    ----------
    scores : np.ndarray
        ``(P, rows, cols)`` float32 in [0, 1] for softmax mode; NaN where not (yet) scored.
    prompts : list of str
        Channel names, in order.
    origin_level0 : tuple of float
        (x, y) level-0 px of the top-left corner of grid cell (0, 0).
    step_level0 : float
        Grid spacing in level-0 px (tile stride).
    tile_level0 : float
        Tile footprint in level-0 px (>= step when tiles overlap).
    done, total : int
        Tiles scored so far and tiles in the request: a progressive result has done < total.
    mpp : float or None
        Slide level-0 µm/px, for placement in world units.
    slide_dims_level0 : tuple of int or None
        (width, height) of the slide in level-0 px: exports and layers are clipped to it
        (the lattice's last row and column may reach past the slide's edge).
    meta : dict
        How the scores were made (``model_id``, ``mode``, ``mpp_scored``, ``background``...).
    """

    scores: np.ndarray
    prompts: list[str]
    origin_level0: tuple[float, float]
    step_level0: float
    tile_level0: float
    done: int = 0
    total: int = 0
    mpp: float | None = None
    meta: dict = field(default_factory=dict)
    slide_dims_level0: tuple[int, int] | None = None

    @property
    def value_meaning(self) -> str:
        """What a value is, in words (for legends and file metadata)."""
        return VALUE_MEANING.get(self.meta.get("mode", "softmax"), "score")

    @property
    def complete(self) -> bool:
        return self.done >= self.total

    def napari_placement(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(scale, translate) in world units (µm when ``mpp`` is known, else level-0 px).

        napari puts pixel centres at integer coordinates, so each grid cell's centre sits
        at origin + (step - 1) / 2 level-0 px.
        """
        unit = self.mpp if self.mpp is not None else 1.0
        s = unit * self.step_level0
        half = (self.step_level0 - 1) / 2
        x0, y0 = self.origin_level0
        return (s, s), (unit * (y0 + half), unit * (x0 + half))
