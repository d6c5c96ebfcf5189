"""``mrplip embed SLIDE --cache DIR``: encode a slide's tissue tiles into the on-disk cache.

Later heatmaps (CLI ``--cache DIR`` or the panel with the same cache) re-encode nothing.
"""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the ``mrplip embed`` options."""
    parser.add_argument("slides", nargs="+", metavar="SLIDE")
    parser.add_argument("--cache", required=True, metavar="DIR", help="embedding cache directory")
    parser.add_argument("--model", default="mrplip-demo", metavar="DIR|NAME")
    parser.add_argument("--mpp", type=float, default=None, help="µm/px to embed at (default 0.5)")
    parser.add_argument("--slide-mpp", type=float, default=None)
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--all-tiles", action="store_true", help="embed glass too")


def embed_slide(engine, slide, mpp, overlap: float, tissue_only: bool) -> dict:
    """Encode every (tissue) tile of ``slide`` at ``mpp`` into the engine's cache."""
    from napari_mrplip.heatmap.result import HeatmapRequest

    level = None if slide.mpp is not None else 0
    req = HeatmapRequest(
        prompts=("tissue",), mode="cosine", target_mpp=mpp if level is None else None,
        level=level, overlap=overlap, tissue_only=tissue_only,
    )  # fmt: skip
    result = engine.compute(slide, req)
    return {"slide": str(slide.path), "tiles": result.total, "encoded": engine.tiles_encoded,
            "failed_tiles": result.meta["failed_tiles"], "grid": result.meta["grid"]}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run ``mrplip embed``."""
    from napari_mrplip.heatmap.batching import DeviceUnavailableError
    from napari_mrplip.heatmap.cache import EmbeddingCache
    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.jobs import ModelUnavailableError, load_encoder
    from napari_mrplip.io import SlideOpenError, open_slide

    try:
        encoder = load_encoder(args.model, args.device)
    except (ModelUnavailableError, DeviceUnavailableError) as e:
        print(f"mrplip embed: {e}", file=sys.stderr)
        return 2
    cache = EmbeddingCache(disk_dir=args.cache)
    status = 0
    for path in args.slides:
        engine = HeatmapEngine(encoder, cache=cache, batch_size=args.batch_size,
                               workers=args.workers)  # fmt: skip
        try:
            with open_slide(path, mpp=args.slide_mpp) as slide:
                info = embed_slide(engine, slide, args.mpp, args.overlap, not args.all_tiles)
        except SlideOpenError as e:
            print(f"mrplip embed: {e}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps(info))
    return status
