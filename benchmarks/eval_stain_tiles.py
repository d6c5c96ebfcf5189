"""Cut stain-labelled tiles from the shared slides into class folders for ``mrplip eval``.

The labels are the stain-statistics classes fine-tuning already uses
(``finetune.sources.tiles_from_stain_labels``: *dense nuclei*, *stroma*,
*background* from the StainCaptioner's thresholds). Optionally also writes a random-weight
open_clip checkpoint of a published architecture (``--random-arch ViT-B-16``), loadable as
``open_clip:ViT-B-16@FILE``: a floor for "no pathology knowledge at all".

    python benchmarks/eval_stain_tiles.py --out /tmp/stain-tiles \\
        --slide ../shared/data/CMU-1-Small-Region.svs:1.0:64 \\
        --slide ../shared/data/OS-2-ndpi.ome.tif:0.5:96 --random-arch ViT-B-16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def export(slide_spec: str, out: Path) -> dict[str, int]:
    """Write one slide's labelled tiles to ``out/<class>/<slide>_<i>.png``."""
    from napari_mrplip.finetune.sources import tiles_from_stain_labels
    from napari_mrplip.io.open import open_slide

    path, mpp, px = slide_spec.rsplit(":", 2)
    slide = open_slide(path)
    data = tiles_from_stain_labels(slide, tile_px=int(px), mpp=float(mpp), min_classes=1)
    counts: dict[str, int] = {}
    for i in range(len(data)):
        cls = data.class_names[int(data.labels[i])].replace(" ", "_")
        (out / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.read([i])[0]).save(out / cls / f"{slide.name}_{i:04d}.png")
        counts[cls] = counts.get(cls, 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--slide", action="append", required=True, help="PATH:MPP:TILE_PX")
    ap.add_argument("--random-arch", help="also write OUT/../random_<ARCH>.pt (open_clip)")
    args = ap.parse_args()
    for spec in args.slide:
        print(spec, export(spec, args.out))
    if args.random_arch:
        import open_clip
        import torch

        torch.manual_seed(0)
        model = open_clip.create_model(args.random_arch)
        dest = args.out.parent / f"random_{args.random_arch}.pt"
        torch.save(model.state_dict(), dest)
        print("wrote", dest)


if __name__ == "__main__":
    main()
