"""Real-slide check of honest exports: does an exported "background" channel rank glass above
tissue?

Runs ``mrplip heatmap`` on a slide with the prompts "background", "dense nuclei" and "pink
stroma", reads the written OME-TIFF back, and computes the AUROC of the background channel
against an Otsu glass mask (``tiling.tissue.tissue_mask`` on the slide at the written pixel
size; a written pixel is glass when < 50 % of it is tissue). Cells the file marks NaN (not
scored) are left out, as any statistic should; the AUROC the old export gave (NaN written as
0) is printed beside it. Usage::

    python scripts/check_export_background.py [SLIDE] [--all-tiles] [--model mrplip-demo]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from scipy.stats import rankdata

from napari_mrplip.heatmap.export import read_heatmap_metadata
from napari_mrplip.io import open_slide
from napari_mrplip.tiling.tissue import tissue_mask

SLIDE = Path(__file__).resolve().parents[1] / "../shared/data/CMU-1-Small-Region.svs"


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    n1, n0 = labels.sum(), (~labels).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def glass_fraction(slide_path: Path, shape: tuple[int, int], pixel_level0: float) -> np.ndarray:
    """``(Y, X)`` fraction of glass in each written pixel, from an Otsu mask of level 0."""
    with open_slide(slide_path) as slide:
        img = np.asarray(slide.levels[0])
    tissue = tissue_mask(img).astype(np.float64)
    h, w = shape
    out = np.ones((h, w))
    p = pixel_level0
    for i in range(h):
        for j in range(w):
            blk = tissue[int(i * p) : int((i + 1) * p), int(j * p) : int((j + 1) * p)]
            if blk.size:
                out[i, j] = 1.0 - blk.mean()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slide", nargs="?", default=str(SLIDE))
    ap.add_argument("--model", default="mrplip-demo")
    ap.add_argument("--all-tiles", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "h.ome.tif"
        cmd = [sys.executable, "-m", "napari_mrplip.cli", "heatmap", args.slide, "--out", str(out),
               "--model", args.model, "--device", "cpu", "--prompt", "background",
               "--prompt", "dense nuclei", "--prompt", "pink stroma"]  # fmt: skip
        subprocess.run(cmd + (["--all-tiles"] if args.all_tiles else []), check=True)
        arr = tifffile.imread(out)[0]  # the background channel
        meta = read_heatmap_metadata(out)
    glass = glass_fraction(Path(args.slide), arr.shape, meta["pixel_level0"]) >= 0.5
    scored = ~np.isnan(arr)
    print(f"slide {Path(args.slide).name}: {arr.shape[1]}x{arr.shape[0]} written px, "
          f"{glass.mean():.1%} glass, {scored.mean():.1%} scored, model {meta['model_id']}, "
          f"{meta['mpp_scored']} µm/px, tissue_only={meta.get('tissue_only')}")  # fmt: skip
    print(f"AUROC background vs glass, scored cells (NaN left out): "
          f"{auroc(arr[scored], glass[scored]):.3f} "
          f"({glass[scored].sum()} glass / {(~glass[scored]).sum()} tissue px)")  # fmt: skip
    print(f"AUROC if unscored were written as 0 (the old export): "
          f"{auroc(np.nan_to_num(arr, nan=0.0).ravel(), glass.ravel()):.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
