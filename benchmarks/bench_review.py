"""Review of many small annotations: scoring time vs the time to embed their tiles.

    python benchmarks/bench_review.py [--n 50000] [--threads 2]

A generated 8192² px slide at 0.5 µm/px; ``n`` one-tile square polygons (0.9 tile wide) on
the 0.5 µm/px lattice; a tiny CLIP (32 px input) so that reading and batching, not the model,
dominate. Arms, interleaved (``--repeats`` rounds), each with a fresh embedding cache:
``embed`` = ``SlideEmbedder.embed_boxes`` of exactly the tiles review plans; ``review`` =
``score_annotations`` (planning + embedding + scoring); ``per_annotation`` = one embedding
call per annotation (the 0.1 code path), on the first ``--n-slow`` polygons, scaled.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--n-slow", type=int, default=2_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    import torch
    from shapely.geometry import box

    from _review_encoder import TinyClipEncoder
    from napari_mrplip.annotations.model import Annotation
    from napari_mrplip.embed.embedder import SlideEmbedder
    from napari_mrplip.io import open_slide
    from napari_mrplip.io.synthetic import write_synthetic_slide
    from napari_mrplip.review.scoring import score_annotations
    from napari_mrplip.review.tiles import polygon_tiles

    torch.set_num_threads(args.threads)
    path = write_synthetic_slide(Path(tempfile.mkdtemp()) / "s.ome.tif", size=(8192, 8192), mpp=0.5)
    slide = open_slide(path)
    enc = TinyClipEncoder(seed=0)
    tile = enc.input_size * 0.5 / slide.mpp
    cols = int(slide.dimensions[0] // tile)
    anns = [Annotation(id=f"a{i}", geometry=box(c * tile, r * tile, (c + 0.9) * tile, (r + 0.9) * tile),
                       label="a" if i % 2 else "b")
            for i, (r, c) in enumerate(divmod(k, cols) for k in range(args.n))]  # fmt: skip
    boxes = np.concatenate([polygon_tiles(a.geometry, tile, slide.dimensions) for a in anns])
    out = {"n": args.n, "tiles": len(boxes), "threads": args.threads, "embed_s": [], "review_s": [],
           "per_annotation_s_scaled": []}  # fmt: skip
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        SlideEmbedder(enc).embed_boxes(slide, boxes)
        out["embed_s"].append(round(time.perf_counter() - t0, 2))
        t0 = time.perf_counter()
        score_annotations(anns, slide, enc, target_mpp=0.5, embedder=SlideEmbedder(enc))
        out["review_s"].append(round(time.perf_counter() - t0, 2))
        emb, t0 = SlideEmbedder(enc), time.perf_counter()
        for a in anns[: args.n_slow]:
            emb.embed_boxes(slide, polygon_tiles(a.geometry, tile, slide.dimensions))
        el = (time.perf_counter() - t0) * args.n / args.n_slow
        out["per_annotation_s_scaled"].append(round(el, 1))
    out["review_over_embed"] = round(min(out["review_s"]) / min(out["embed_s"]), 2)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
