"""Write a checkpoint's training vocabulary (``vocabulary.json``) from a bag manifest.

``mrplip pretrain`` does this itself for every run; this script is for checkpoints trained
before it did, such as the embedded ``mrplip-demo``. Without ``--manifest`` it rebuilds the
demo recipe's manifest (same slides, sampling and StainCaptioner as
``scripts/train_demo_model.sh``; captioning only, no training). Usage::

    python scripts/write_vocabulary.py CHECKPOINT_DIR [--manifest runs/x/manifest.jsonl]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from napari_mrplip.data.captioners import StainCaptioner
from napari_mrplip.data.manifest import build_manifest
from napari_mrplip.train.data_setup import write_vocabulary
from napari_mrplip.train.slides import resolve_slides

DATA = Path(__file__).resolve().parents[1] / "../shared/data"
DEMO_SLIDES = [str(DATA / "CMU-1-Small-Region.svs"), str(DATA / "OS-2-ndpi.ome.tif"),
               "skimage:immunohistochemistry"]  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--manifest", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.manifest is not None:
        print(write_vocabulary(args.manifest, args.checkpoint))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.jsonl"
        build_manifest(resolve_slides(DEMO_SLIDES, Path(tmp) / "slides"), manifest,
                       StainCaptioner(), n_parents_per_slide=100, magnifications=(10, 20),
                       tile_px=112, seed=0, children_per_parent=2)  # fmt: skip
        print(write_vocabulary(manifest, args.checkpoint))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
