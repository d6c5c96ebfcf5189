"""Captioners: turn a tile into a short pathology description.

``StainCaptioner`` is offline and deterministic: it words :func:`stain_stats` in pathology
vocabulary suited to the magnification (architecture and tissue vs background at low power,
nuclei, chromatin and DAB-positive nuclei at high power), choosing among several phrasings
with a generator seeded by the tile's bytes. ``VLMCaptioner`` (in ``vlm.py``) runs a local
vision-language model.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

import numpy as np

from napari_mrplip.tiling.geometry import magnification_to_mpp

from .stain import stain_stats
from .vlm import VLMCaptioner

__all__ = ["Captioner", "StainCaptioner", "VLMCaptioner", "caption_tiles", "stain_stats"]


@runtime_checkable
class Captioner(Protocol):
    """Anything that describes a tile in words.

    ``name`` and ``version`` key the manifest cache: change ``version`` when the wording
    changes so cached captions are redone.
    """

    name: str
    version: str

    def caption(self, tile: np.ndarray, magnification: float) -> str:
        """Describe a ``(H, W, 3)`` uint8 RGB tile seen at ``magnification`` (e.g. 20.0)."""
        ...


def caption_tiles(captioner: Captioner, tiles: np.ndarray, magnifications) -> list[str]:
    """Captions of ``(B, H, W, 3)`` uint8 tiles: one ``caption_batch`` call when the captioner
    has one (batched generation), else ``caption`` per tile."""
    mags = [float(m) for m in magnifications]
    if len(mags) != len(tiles):
        raise ValueError(f"{len(tiles)} tiles but {len(mags)} magnifications")
    batch = getattr(captioner, "caption_batch", None)
    if batch is not None:
        out = list(batch(tiles, mags))
        if len(out) != len(mags):
            raise ValueError(f"{captioner.name}: caption_batch returned {len(out)} captions "
                             f"for {len(mags)} tiles")  # fmt: skip
        return out
    return [captioner.caption(t, m) for t, m in zip(tiles, mags)]


#: Nuclear area fraction above which nuclei are "dense", and below which "sparse".
DENSE_NUCLEI = 0.3
SPARSE_NUCLEI = 0.12
#: Stroma (eosin-rich) fraction above which stroma dominates.
STROMA_RICH = 0.4
#: Background fraction above which a tile is "background".
BACKGROUND = 0.8

_STAIN = {
    "he": ["H&E stained section", "haematoxylin and eosin stained tissue", "H&E section"],
    "ihc": [
        "immunohistochemistry with haematoxylin counterstain",
        "IHC stained section with blue counterstain",
        "DAB immunostain with haematoxylin counterstain",
    ],
    "h": ["haematoxylin stained tissue", "section with blue haematoxylin staining"],
}
_BACKGROUND = [
    "background with no tissue",
    "blank background of the glass slide",
    "empty background, no tissue present",
]
_DENSE = [
    "dense nuclei",
    "densely packed crowded nuclei",
    "sheets of cells with dense nuclei",
]
_DENSE_HIGH = [
    "dense hyperchromatic nuclei with coarse chromatin",
    "crowded nuclei with dark granular chromatin",
    "dense nuclei with prominent chromatin",
]
_SPARSE = ["sparse scattered nuclei", "few scattered nuclei", "low cellularity"]
_MODERATE = ["moderately cellular tissue", "scattered nuclei of moderate density"]
_STROMA = [
    "pink stroma",
    "eosinophilic fibrous stroma",
    "pink collagenous stroma",
]
_DAB_NUCLEI = [
    "brown DAB-positive nuclei",
    "scattered brown DAB-positive nuclei",
    "nuclei with brown DAB-positive staining",
]
_DAB_DIFFUSE = [
    "brown DAB staining of membranes and cytoplasm",
    "diffuse brown DAB-positive staining",
    "membranous and cytoplasmic brown DAB staining",
]
_FAT = ["adipose tissue with fat vacuoles", "fat cells with clear round vacuoles"]
_LUMEN = ["open lumens", "glandular lumens", "clear lumen spaces"]
_EDGE = ["edge of the tissue section", "tissue border with empty space"]


def _seed(tile: np.ndarray, magnification: float) -> int:
    h = hashlib.blake2b(np.ascontiguousarray(tile).tobytes(), digest_size=8)
    h.update(str(float(magnification)).encode())
    return int.from_bytes(h.digest(), "little")


def _stain_kind(s: dict) -> str:
    if s["dab_fraction"] > 0.02 and s["stroma_fraction"] < 0.05:
        return "ihc"
    return "he" if s["stroma_fraction"] > 0.05 or s["eosin"] > 0.01 else "h"


def _phrases(s: dict, magnification: float, rng) -> list[str]:
    """Ordered findings (most prominent first) as short phrases."""
    high = magnification >= 10
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    found = []
    if s["nuclear_fraction"] >= DENSE_NUCLEI:
        found.append(pick(_DENSE_HIGH if high else _DENSE))
    if s["dab_positive_nuclei"] >= 1 and s["dab_fraction"] > 0.01:
        found.append(pick(_DAB_NUCLEI))
    elif s["dab_fraction"] > 0.15:
        found.append(pick(_DAB_DIFFUSE))
    if s["stroma_fraction"] >= STROMA_RICH:
        found.insert(
            0 if s["stroma_fraction"] > s["nuclear_fraction"] else len(found), pick(_STROMA)
        )
    elif s["stroma_fraction"] >= 0.15:
        found.append(pick(_STROMA))
    if SPARSE_NUCLEI <= s["nuclear_fraction"] < DENSE_NUCLEI:
        found.append(pick(_MODERATE))
    elif s["nuclear_fraction"] < SPARSE_NUCLEI:
        found.append(pick(_SPARSE))
    if s["fat_fraction"] > 0.15:
        found.append(pick(_FAT))
    if s["lumen_fraction"] > 0.08:
        found.append(pick(_LUMEN))
    if s["background_fraction"] > 0.4:
        found.append(pick(_EDGE))
    return found


def _coverage(s: dict) -> str:
    t = s["tissue_fraction"]
    if t > 0.9:
        return "tissue fills the field"
    if t > 0.5:
        return "tissue covers most of the field"
    return "tissue covers a small part of the field"


class StainCaptioner:
    """Deterministic captions from stain statistics (offline, no model).

    Parameters
    ----------
    um_per_px_at_1x : float
        Convention turning the magnification into µm/px for blob sizes (10: 20x = 0.5).
    """

    name = "stain"
    version = "2"

    def __init__(self, um_per_px_at_1x: float = 10.0) -> None:
        self.um_per_px_at_1x = float(um_per_px_at_1x)

    def stats(self, tile: np.ndarray, magnification: float) -> dict[str, float]:
        """:func:`stain_stats` at the tile's µm/px."""
        return stain_stats(tile, magnification_to_mpp(magnification, self.um_per_px_at_1x))

    def caption(self, tile: np.ndarray, magnification: float) -> str:
        """One or two sentences describing ``tile`` (``(H, W, 3)`` uint8) at ``magnification``."""
        s = self.stats(tile, magnification)
        rng = np.random.default_rng(_seed(tile, magnification))
        pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
        if s["background_fraction"] >= BACKGROUND or s["tissue_fraction"] < 0.05:
            return _upper_first(pick(_BACKGROUND)) + "."
        found = _phrases(s, magnification, rng)
        stain = pick(_STAIN[_stain_kind(s)])
        mag = f"{magnification:g}x"
        if magnification < 10:
            head = pick([f"Low power view ({mag}) of {stain}", f"{_upper_first(stain)} at {mag}"])
            tail = _coverage(s)
            return f"{head}; {tail}, showing {_join(found)}."
        head = pick([f"High power view ({mag}) of {stain}", f"{_upper_first(stain)} at {mag}"])
        return f"{head} showing {_join(found)}."

    def caption_batch(self, tiles: np.ndarray, magnifications) -> list[str]:
        """:meth:`caption` of each ``(B, H, W, 3)`` tile (CPU work, no batching gain)."""
        return [self.caption(t, m) for t, m in zip(tiles, magnifications)]


def _join(phrases: list[str]) -> str:
    if not phrases:
        return "unremarkable tissue"
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]
