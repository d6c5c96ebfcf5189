"""Tissue detection on a thumbnail (Otsu on saturation, as CLAM does)."""

from __future__ import annotations

import numpy as np


def tissue_mask(
    thumb: np.ndarray, *, min_saturation: float = 0.05, blur: int = 2, max_threshold: float = 1.0
) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail.

    Parameters
    ----------
    thumb : np.ndarray
        ``(Y, X, 3)`` uint8 RGB thumbnail.
    min_saturation : float
        Floor on the Otsu threshold (HSV saturation, 0..1): a slide that is all glass
        must not be split into "tissue" by Otsu finding a threshold in noise.
    blur : int
        Radius of the median filter applied to the saturation channel before thresholding.
    max_threshold : float
        Ceiling on the Otsu threshold. On crops that are mostly tissue, or on pale IHC
        counterstain, Otsu splits strongly stained nuclei from pale tissue instead of tissue
        from glass; a ceiling of about 0.06 keeps pale tissue (glass stays below ~0.05).

    Returns
    -------
    np.ndarray
        ``(Y, X)`` bool, True on tissue.
    """
    from scipy.ndimage import binary_fill_holes, median_filter
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    if thumb.ndim != 3 or thumb.shape[2] < 3 or thumb.size == 0:
        raise ValueError(f"tissue_mask needs a non-empty (Y, X, 3) image, got shape {thumb.shape}")
    sat = rgb2hsv(thumb[..., :3])[..., 1]
    if blur > 0:
        sat = median_filter(sat, size=2 * blur + 1)
    # Very dark pixels (pen marks, slide edges) have low saturation but are not glass.
    try:
        thr = threshold_otsu(sat) if np.ptp(sat) > 0 else 1.0
    except ValueError:
        thr = 1.0
    mask = sat > max(min(thr, max_threshold), min_saturation)
    return binary_fill_holes(mask)


def tissue_fraction(mask: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Fraction of ``box`` = (x0, y0, x1, y1), in mask pixels, covered by tissue."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    h, w = mask.shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float(mask[y0:y1, x0:x1].mean())
