"""Refine as you zoom: fuse a finer-magnification result into the coarser map already shown.

A whole-slide score canvas keeps, per cell, the score and the µm/px it was computed at. When
the user zooms in, the visible region is scored at a finer magnification; :func:`refine`
upsamples the canvas to the finer step (each coarse cell becomes ``f x f`` cells) and fuses
the new scores with their parent, the coarse cell under them, with MR-PLIP's parent/child
weights (``scoring.fuse``): the map sharpens where it was refined and keeps the coarse map
everywhere else. Zooming out pastes coarser results only where nothing finer exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scoring import DEFAULT_FUSION, fuse

#: Finest-to-coarsest ratio the canvas follows (a 2x pyramid from 40x to 1.25x is 32).
MAX_RATIO = 64


@dataclass
class ResolutionMap:
    """Scores on the finest step seen so far and the µm/px (or level-0 px) each came from.

    Attributes
    ----------
    scores : np.ndarray
        ``(P, rows, cols)`` float32, NaN where nothing was scored.
    computed_at : np.ndarray
        ``(rows, cols)`` float32 scale each cell was computed at (µm/px of the tiles, or the
        step in level-0 px without µm/px); NaN where unscored.
    step_level0 : float
    origin_level0 : (float, float)
    parent : np.ndarray or None
        ``(P, rows, cols)`` the coarser score each refined cell was fused with (kept, so that
        progressive updates of the same refinement fuse with the same parent).
    """

    scores: np.ndarray
    computed_at: np.ndarray
    step_level0: float
    origin_level0: tuple[float, float]
    parent: np.ndarray | None = None

    def __post_init__(self):
        if self.parent is None:
            self.parent = np.full_like(self.scores, np.nan)

    def summary(self) -> dict[float, int]:
        """Cells per computed-at scale, finest first."""
        vals, counts = np.unique(self.computed_at[~np.isnan(self.computed_at)], return_counts=True)
        return {float(v): int(c) for v, c in zip(vals, counts)}


def ratio(coarse_step: float, fine_step: float) -> int | None:
    """Integer ``coarse / fine`` step ratio (>= 1), or None when the lattices do not nest."""
    f = coarse_step / fine_step
    k = int(round(f))
    return k if 1 <= k <= MAX_RATIO and abs(f - k) < 1e-3 * k else None


def upsample(res: ResolutionMap, k: int) -> ResolutionMap:
    """The same map on a ``k``-times finer step (nearest: each cell becomes ``k x k``)."""
    if k == 1:
        return res
    return ResolutionMap(
        res.scores.repeat(k, 1).repeat(k, 2),
        res.computed_at.repeat(k, 0).repeat(k, 1),
        res.step_level0 / k,
        res.origin_level0,
        res.parent.repeat(k, 1).repeat(k, 2),
    )


def refine(res: ResolutionMap, scores: np.ndarray, origin_level0, step_level0: float,
           computed_at: float, weights=DEFAULT_FUSION) -> ResolutionMap:  # fmt: skip
    """Merge a result ``scores (P, r, c)`` on a nested lattice into ``res``; returns the map.

    Finer than ``res``: ``res`` is upsampled and every new cell fused with the coarse cell under
    it (parent weight ``weights[0]``, self ``weights[1]``; no children). Same step: pasted.
    Coarser: upsampled to ``res``'s step and pasted only where ``res`` has nothing.

    Raises
    ------
    ValueError
        When the lattices do not nest (step ratio not an integer, or origins off the grid).
    """
    k_fine = ratio(res.step_level0, step_level0)
    k_coarse = ratio(step_level0, res.step_level0)
    if k_fine is None and k_coarse is None:
        raise ValueError(f"steps {res.step_level0} and {step_level0} do not nest")
    if k_fine is not None and k_fine > 1:
        res = upsample(res, k_fine)
    new = np.asarray(scores, np.float32)
    if k_coarse is not None and k_coarse > 1:
        new = new.repeat(k_coarse, 1).repeat(k_coarse, 2)
    r0, c0 = _offset(res, origin_level0)
    rows, cols = res.computed_at.shape
    ra, ca, rb, cb = (
        max(r0, 0),
        max(c0, 0),
        min(r0 + new.shape[1], rows),
        min(c0 + new.shape[2], cols),
    )
    if rb <= ra or cb <= ca:
        return res
    part = new[:, ra - r0 : rb - r0, ca - c0 : cb - c0]
    old = res.scores[:, ra:rb, ca:cb]
    kept = res.parent[:, ra:rb, ca:cb]
    at = res.computed_at[ra:rb, ca:cb]
    scored = ~np.isnan(part[0])
    if k_coarse is not None and k_coarse > 1:  # zooming out: fill holes only
        put = scored & np.isnan(at)
        merged = part
    else:
        put = scored & ~(at < computed_at)  # never overwrite finer detail with coarser
        parent = np.where(at > computed_at, old, kept)  # the coarser cell under a finer one
        merged = fuse(part, parent, None, (weights[0], weights[1], 0.0))
        kept[:, put] = parent[:, put]
    old[:, put] = merged[:, put]
    at[put] = computed_at
    return res


def _offset(res: ResolutionMap, origin_level0) -> tuple[int, int]:
    fx = (origin_level0[0] - res.origin_level0[0]) / res.step_level0
    fy = (origin_level0[1] - res.origin_level0[1]) / res.step_level0
    if abs(fx - round(fx)) > 1e-3 or abs(fy - round(fy)) > 1e-3:
        raise ValueError("the result's origin is not on the map's lattice")
    return int(round(fy)), int(round(fx))
