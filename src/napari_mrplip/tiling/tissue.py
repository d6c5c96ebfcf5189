"""The one tissue detector, for H&E and IHC, pale or dark, on a thumbnail.

Otsu on saturation (CLAM's recipe) splits a pale IHC slide's strong nuclei from its pale
counterstain instead of tissue from glass (20 % of an 80 %-tissue slide). This detector
looks at what glass is instead: the brightest, flattest colour of the slide.

1. **Glass colour.** Per channel, the 99th percentile of the thumbnail (at least
   :data:`MIN_GLASS_LEVEL`): the brightest, slide-specific background, tint included.
2. **Optical density** against that glass colour, ``log(glass / pixel)`` per channel, averaged
   over the channels and smoothed over a 3 x 3 window. Tissue absorbs light in some channel:
   even faded haematoxylin is a few grey levels darker than the glass around it.
3. **Texture.** The local standard deviation of brightness (5 x 5): tissue is textured
   (nuclei, fibres), glass is flat; a pixel with density *or* texture above glass level is
   tissue.
4. **Not tissue, though dark or coloured:** near-black, unsaturated pixels (slide borders,
   black ink), green ink (green above red and blue: no stain is green) and saturated blue
   ink (far bluer than haematoxylin). These are removed before cleaning up.
5. **Clean-up:** a 3 x 3 majority; holes and specks smaller than
   :data:`MIN_OBJECT_FRACTION` of the thumbnail filled and dropped (larger glass gaps inside
   tissue stay glass).

Figures against an independent full-resolution reference (colour deconvolution + texture)
are in ``docs/data.md``; the test is ``tests/test_tissue.py``.
"""

from __future__ import annotations

import numpy as np

#: Floor on the estimated glass brightness (per channel): a thumbnail without glass must not
#: make its palest tissue the "glass" reference.
MIN_GLASS_LEVEL = 200.0
#: Mean optical density (natural log) above glass that counts as tissue (about 3 % darker).
OD_TISSUE = 0.03
#: Local brightness standard deviation (grey levels, 5 x 5) that counts as tissue texture.
TEXTURE_TISSUE = 6.0
#: Darker than this (grey level) and unsaturated: border or black ink, not tissue.
BLACK_LEVEL = 50
#: Specks smaller than this fraction of the thumbnail are dropped.
MIN_OBJECT_FRACTION = 2e-4


def _features(rgb: np.ndarray):
    from scipy.ndimage import uniform_filter

    glass = np.maximum(np.percentile(rgb.reshape(-1, 3), 99, axis=0), MIN_GLASS_LEVEL)
    od = np.log((glass + 1.0) / (rgb + 1.0)).mean(axis=-1)
    od = uniform_filter(od, size=3)
    grey = rgb.mean(axis=-1)
    mean = uniform_filter(grey, size=5)
    std = np.sqrt(np.maximum(uniform_filter(grey * grey, size=5) - mean * mean, 0.0))
    return od, std, grey


def _not_tissue(rgb: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Black borders and ink: near-black grey, green ink, saturated blue ink."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi, lo = rgb.max(axis=-1), rgb.min(axis=-1)
    sat = (hi - lo) / np.maximum(hi, 1.0)
    black = (grey < BLACK_LEVEL) & (sat < 0.35)
    green = (g > r + 12) & (g > b + 4)
    blue = (b > r + 80) & (b >= g) & (sat > 0.6)
    return black | green | blue


def tissue_mask(thumb: np.ndarray) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail (see the module docstring for the method).

    Parameters
    ----------
    thumb : np.ndarray
        ``(Y, X, 3)`` uint8 RGB thumbnail.

    Returns
    -------
    np.ndarray
        ``(Y, X)`` bool, True on tissue; False on glass, black borders and pen marks.
    """
    from scipy.ndimage import uniform_filter

    if thumb.ndim != 3 or thumb.shape[2] < 3 or thumb.size == 0:
        raise ValueError(f"tissue_mask needs a non-empty (Y, X, 3) image, got shape {thumb.shape}")
    rgb = thumb[..., :3].astype(np.float64)
    od, std, grey = _features(rgb)
    bad = _not_tissue(rgb, grey)
    mask = ((od > OD_TISSUE) | (std > TEXTURE_TISSUE)) & ~bad
    mask = uniform_filter(mask.astype(np.float32), size=3) > 0.5
    min_px = max(1, int(MIN_OBJECT_FRACTION * mask.size))
    mask &= ~bad
    return _drop_small(mask, min_px)


def _drop_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without connected components smaller than ``min_px`` pixels."""
    from scipy.ndimage import label

    labels, n = label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def tissue_fraction(mask: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Fraction of ``box`` = (x0, y0, x1, y1), in mask pixels, covered by tissue."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    h, w = mask.shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float(mask[y0:y1, x0:x1].mean())
