"""Stain statistics of an RGB tile: colour deconvolution, nuclei, stroma, lumen, fat, DAB.

Pixel classes come from skimage's ``rgb2hed`` (Ruifrok & Johnston haematoxylin / eosin /
DAB optical densities) combined with the hue order of each stain, so that the purple of
H&E is not read as DAB and the blue counterstain of IHC is not read as eosin:

- near-white (glass, lumen, fat vacuoles): bright and unsaturated;
- DAB (brown): DAB density and blue the darkest channel (R > G > B);
- haematoxylin-rich (nuclei): haematoxylin density with blue at least as bright as red;
- eosin-rich (stroma, cytoplasm): eosin density with green the darkest channel (pink).

Blob statistics (nuclei, vacuoles) use physical sizes, so the tile's µm/px matters.
All thresholds are module constants, calibrated on the shared CMU (H&E) and OS-2 (Ki67) tiles.
"""

from __future__ import annotations

import numpy as np

#: Near-white: every channel at least this bright ...
WHITE_MIN = 205
#: ... and channels within this range of each other (unsaturated).
WHITE_SPREAD = 30
#: Optical-density thresholds (rgb2hed units) for each stain's pixel class.
HEMA_OD = 0.04
EOSIN_OD = 0.012
DAB_OD = 0.03
#: Nucleus area range in µm² (a 4-16 µm wide nucleus), and roundness (solidity) floor.
NUCLEUS_AREA_UM2 = (12.0, 300.0)
NUCLEUS_SOLIDITY = 0.7
#: Fat vacuole (adipocyte) area range in µm² (about 30-150 µm diameter), and solidity floor.
FAT_AREA_UM2 = (700.0, 18000.0)
FAT_SOLIDITY = 0.85
#: A blob counts as DAB-positive when this fraction of its pixels is DAB.
DAB_POSITIVE_PIXELS = 0.5
#: Typical nucleus area (µm²), to estimate nuclear density from the nuclear area when
#: nuclei touch and cannot be counted one by one.
TYPICAL_NUCLEUS_UM2 = 40.0


def pixel_classes(tile: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean ``(H, W)`` masks ``white``, ``dab``, ``hema``, ``eosin`` and the ``hed`` densities.

    Parameters
    ----------
    tile : np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    """
    from skimage.color import rgb2hed

    if tile.ndim != 3 or tile.shape[2] < 3 or tile.dtype != np.uint8:
        raise ValueError(f"expected a (H, W, 3) uint8 RGB tile, got {tile.shape} {tile.dtype}")
    rgb = tile[..., :3].astype(np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hed = rgb2hed(tile[..., :3])
    white = (rgb.min(axis=2) >= WHITE_MIN) & (np.ptp(rgb, axis=2) <= WHITE_SPREAD)
    dab = (hed[..., 2] > DAB_OD) & (b < g) & (r > b + 15) & ~white
    hema = (hed[..., 0] > HEMA_OD) & (b >= r - 10) & ~white & ~dab
    eosin = (hed[..., 1] > EOSIN_OD) & (g < r) & (g < b + 10) & ~white & ~dab & ~hema
    return {"white": white, "dab": dab, "hema": hema, "eosin": eosin, "hed": hed}


def _blobs(mask: np.ndarray, area_px: tuple[float, float], solidity: float):
    """Region properties of connected components within an area range and roundness."""
    from skimage.measure import label, regionprops

    out = []
    for reg in regionprops(label(mask)):
        if area_px[0] <= reg.area <= area_px[1] and reg.solidity >= solidity:
            out.append(reg)
    return out


def _white_components(white: np.ndarray, mpp: float):
    """Split near-white pixels into background (touching the border), fat and lumen areas."""
    from skimage.measure import label, regionprops

    lab = label(white)
    h, w = white.shape
    area_um2 = mpp * mpp
    fat = lumen = background = 0
    for reg in regionprops(lab):
        y0, x0, y1, x1 = reg.bbox
        touches = y0 == 0 or x0 == 0 or y1 == h or x1 == w
        a_um2 = reg.area * area_um2
        if touches and reg.area > 0.02 * h * w:
            background += reg.area
        elif FAT_AREA_UM2[0] <= a_um2 <= FAT_AREA_UM2[1] and reg.solidity >= FAT_SOLIDITY:
            fat += reg.area
        elif a_um2 >= 50:  # smaller specks between cells are neither lumen nor background
            lumen += reg.area
    n = float(h * w)
    return float(background / n), float(fat / n), float(lumen / n)


def stain_stats(tile: np.ndarray, mpp: float = 0.5) -> dict[str, float]:
    """Stain and morphology statistics of one tile.

    Parameters
    ----------
    tile : np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    mpp : float
        µm/px of the tile (2.0 at 5x, 0.5 at 20x).

    Returns
    -------
    dict
        ``haematoxylin``, ``eosin``, ``dab``: mean optical density over tissue pixels;
        ``tissue_fraction``, ``background_fraction``, ``lumen_fraction``, ``fat_fraction``,
        ``nuclear_fraction``, ``stroma_fraction``, ``dab_fraction``: area fractions of the
        tile (nuclear = haematoxylin pixels plus DAB-positive nuclei); ``nuclei``: count of
        separable nucleus-sized haematoxylin or DAB blobs; ``nuclear_density``: estimated
        nuclei per 10,000 µm² of tissue (nuclear area / 40 µm², robust to touching nuclei);
        ``dab_positive_nuclei`` and ``dab_positive_fraction`` (of the counted nuclei).
    """
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    from scipy.ndimage import binary_opening

    cls = pixel_classes(tile)
    n = float(tile.shape[0] * tile.shape[1])
    tissue = ~cls["white"]
    tissue_px = max(float(tissue.sum()), 1.0)
    hed = cls["hed"]
    dab = cls["dab"]
    candidates = cls["hema"] | dab
    if mpp < 1.5:  # remove one-pixel noise where a nucleus spans several pixels
        candidates = binary_opening(candidates, iterations=1)
    area_px = (max(NUCLEUS_AREA_UM2[0] / mpp**2, 2.0), NUCLEUS_AREA_UM2[1] / mpp**2)
    nuclei = _blobs(candidates, area_px, NUCLEUS_SOLIDITY)
    positive = [reg for reg in nuclei if dab[tuple(reg.coords.T)].mean() >= DAB_POSITIVE_PIXELS]
    # Nuclear area: haematoxylin pixels plus DAB-positive nuclei (not membranous DAB).
    nuclear_px = float(cls["hema"].sum()) + sum(float(reg.area) for reg in positive)
    background, fat, lumen = _white_components(cls["white"], mpp)
    tissue_um2 = tissue_px * mpp * mpp
    return {
        "haematoxylin": float(hed[..., 0][tissue].mean()) if tissue.any() else 0.0,
        "eosin": float(hed[..., 1][tissue].mean()) if tissue.any() else 0.0,
        "dab": float(hed[..., 2][tissue].mean()) if tissue.any() else 0.0,
        "tissue_fraction": float(tissue.sum() / n),
        "background_fraction": background,
        "lumen_fraction": lumen,
        "fat_fraction": fat,
        "nuclear_fraction": nuclear_px / n,
        "stroma_fraction": float(cls["eosin"].sum() / n),
        "dab_fraction": float(dab.sum() / n),
        "nuclei": float(len(nuclei)),
        "nuclear_density": nuclear_px * mpp * mpp / TYPICAL_NUCLEUS_UM2 / tissue_um2 * 1e4,
        "dab_positive_nuclei": float(len(positive)),
        "dab_positive_fraction": float(len(positive) / len(nuclei)) if nuclei else 0.0,
    }
