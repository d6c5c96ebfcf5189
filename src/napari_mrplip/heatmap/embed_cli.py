"""``mrplip embed SLIDE --cache DIR``: encode a slide's tissue tiles into the on-disk cache.

Later heatmaps (CLI ``--cache DIR`` or the panel with the same cache) re-encode nothing.
"""

from __future__ import annotations

import argparse
import json
import sys

from napari_mrplip import cli_types as ct
from napari_mrplip.tiling.grid import MAX_OVERLAP


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the ``mrplip embed`` options."""
    parser.add_argument("slides", nargs="+", metavar="SLIDE")
    parser.add_argument("--cache", required=True, metavar="DIR", help="embedding cache directory")
    parser.add_argument("--model", default="mrplip-demo", metavar="DIR|NAME")
    parser.add_argument("--mpp", type=ct.mpp, default=None, help="µm/px to embed at (default 0.5)")
    ct.add_slide_mpp(parser)
    parser.add_argument("--overlap", type=ct.fraction(0.0, MAX_OVERLAP, "overlap"), default=0.0)
    parser.add_argument("--device", type=ct.device, default="auto")
    parser.add_argument("--batch-size", type=ct.positive_int, default=None)
    parser.add_argument("--workers", type=ct.positive_int, default=2)
    parser.add_argument("--max-tiles", type=ct.positive_int, default=None, help="tile budget")
    parser.add_argument("--all-tiles", action="store_true", help="embed glass too")


def embed_slide(engine, slide, mpp, overlap: float, tissue_only: bool, max_tiles=None) -> dict:
    """Encode every (tissue) tile of ``slide`` at ``mpp`` into the engine's cache."""
    from napari_mrplip.heatmap.result import HeatmapRequest

    level = None if slide.mpp is not None else 0
    req = HeatmapRequest(
        prompts=("tissue",), mode="cosine", target_mpp=mpp if level is None else None,
        level=level, overlap=overlap, tissue_only=tissue_only, max_tiles=max_tiles,
    )  # fmt: skip
    result = engine.compute(slide, req)
    return {"slide": str(slide.path), "tiles": result.total, "encoded": engine.tiles_encoded,
            "failed_tiles": result.meta["failed_tiles"], "grid": result.meta["grid"]}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run ``mrplip embed``."""
    from napari_mrplip.embed.batching import DeviceUnavailableError
    from napari_mrplip.embed.cache import EmbeddingCache
    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.jobs import ModelUnavailableError, load_encoder
    from napari_mrplip.io import SlideOpenError, TileReadError, open_slide

    try:
        encoder = load_encoder(args.model, args.device)
    except (ModelUnavailableError, DeviceUnavailableError) as e:
        print(f"mrplip embed: {e}", file=sys.stderr)
        return 2
    cache = EmbeddingCache(disk_dir=args.cache)
    status = done = 0
    for path in args.slides:
        engine = HeatmapEngine(encoder, cache=cache, batch_size=args.batch_size,
                               workers=args.workers)  # fmt: skip
        try:
            with open_slide(path, mpp=args.slide_mpp) as slide:
                info = embed_slide(engine, slide, args.mpp, args.overlap, not args.all_tiles,
                                   args.max_tiles)  # fmt: skip
        except (SlideOpenError, TileReadError, ValueError, OSError) as e:  # one bad slide
            print(f"mrplip embed: {e}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps(info))
        done += 1
    print(f"mrplip embed: {done} of {len(args.slides)} slides embedded into {args.cache}",
          file=sys.stderr)  # fmt: skip
    return 2 if status and not done else status
