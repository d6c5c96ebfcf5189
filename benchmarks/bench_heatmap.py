"""Heatmap engine benchmark: throughput vs a naive loop, re-prompt latency, first partial.

Run:  .venv/bin/python benchmarks/bench_heatmap.py [--model SPEC] [--device cpu|cuda]

1. tiles/s of ``HeatmapEngine`` (threaded decode + batched encode) against a naive loop
   (OpenSlide ``read_region`` of one tile, PIL resize, encode at batch 1, repeat) over the
   same tiles of the CMU SVS with the same model.
2. latency of a new prompt over 100,000 cached tiles with 10 prompts (9 already embedded):
   the time from the request to the finished score grid (what the panel turns into layers).
3. time to the first partial heatmap for a 1920x1080 viewport (1 screen px = 1 level-0 px)
   on a freshly opened slide (cold: includes the tissue mask) and on a new viewport (warm).
4. tiles/s with dense (patch-token) maps on vs off, interleaved, in one run.
6. ``--only plain``: ours vs the plain batched loop (OpenSlide ``read_region`` + batched
   model, no loader workers) at 1 and 2 torch threads, interleaved.
5. the first partial update after a pan, from the moment the view settles (debounce
   excluded), median of ``--pans`` pans per mode, tile-only and dense interleaved.

``--threads N`` sets torch's and the BLAS libraries' thread counts (on a shared, busy
machine one thread per process avoids spin-wait contention).

Model: ``--model`` if given, else the embedded ``mrplip-demo``, else a random-weight
``mrplip-tiny`` (same architecture and cost as the embedded model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and "--threads" in sys.argv:  # before numpy loads its BLAS
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _n

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CMU = Path(os.environ.get("MRPLIP_SHARED_DATA", ROOT.parent / "shared" / "data")) / (
    "CMU-1-Small-Region.svs"
)


def load_encoder(spec: str | None, device: str):
    """The benchmark model and a note saying which it is."""
    from napari_mrplip.models.encoders import get_encoder

    if spec:
        return get_encoder(spec, device=device), spec
    try:
        return get_encoder("mrplip-demo", device=device), "mrplip-demo (embedded)"
    except ValueError:
        from napari_mrplip.models.checkpoint import save_model
        from napari_mrplip.models.config import load_config
        from napari_mrplip.models.mrplip import build_model

        out = Path(tempfile.mkdtemp()) / "mrplip-tiny-random"
        save_model(build_model(load_config("mrplip-tiny")), out)
        return get_encoder(str(out), device=device), "mrplip-tiny (random weights)"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, load average {load:.1f}")  # fmt: skip


def bench_throughput(encoder, batch_size: int | None) -> dict:
    """Engine vs naive loop over every tile of the CMU SVS at 0.5 µm/px."""
    import openslide
    from PIL import Image

    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.result import HeatmapRequest
    from napari_mrplip.io import open_slide

    slide = open_slide(CMU)
    req = HeatmapRequest(("tumour", "stroma"), ("background",), target_mpp=0.5,
                         tissue_only=False, fusion=(0.0, 1.0, 0.0))  # fmt: skip
    encoder.encode_tiles(np.zeros((2, encoder.input_size, encoder.input_size, 3), np.uint8))
    engine = HeatmapEngine(encoder, batch_size=batch_size)
    grid = engine.grid_for(slide, req)
    t = time.perf_counter()
    res = engine.compute(slide, req)
    ours = res.total / (time.perf_counter() - t)

    rows, cols = grid.shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    xs, ys = grid.origins(rr.ravel(), cc.ravel())
    osr = openslide.OpenSlide(str(CMU))
    size = encoder.input_size
    t = time.perf_counter()
    for x, y in zip(xs.tolist(), ys.tolist()):
        tile = osr.read_region((x, y), 0, (grid.read_px, grid.read_px)).convert("RGB")
        arr = np.asarray(tile.resize((size, size), Image.BILINEAR))
        encoder.encode_tiles(arr[None])
    naive = len(xs) / (time.perf_counter() - t)
    return {"tiles": int(res.total), "ours_tiles_s": ours, "naive_tiles_s": naive,
            "speedup": ours / naive, "batch_size": engine.batch_size}  # fmt: skip


def bench_plain(encoder, batch_size: int | None, threads=(1, 2), repeats: int = 3) -> dict:
    """Ours vs the plain batched loop, every tile of the CMU SVS at 0.5 µm/px, interleaved.

    Plain: OpenSlide ``read_region`` of each tile in the calling thread, PIL resize when
    needed, the model called on batches of the engine's batch size, no loader workers; then,
    to give the same map, the prompts embedded (a fresh ``PromptEmbedder``, as the engine's)
    and scored (``heatmap.scoring.prompt_scores``). Ours: a fresh ``HeatmapEngine`` per round
    (default decode threads: the cores torch leaves free). Arms alternate within each round;
    medians over ``repeats`` rounds per torch thread count. ``max_score_diff`` is the largest
    difference between the two maps (the same pixels give the same map).
    """
    import openslide
    import torch

    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.result import HeatmapRequest
    from napari_mrplip.heatmap.scoring import prompt_scores
    from napari_mrplip.io import open_slide
    from napari_mrplip.models.prompts import PromptEmbedder

    slide = open_slide(CMU)
    req = HeatmapRequest(("tumour", "stroma"), ("background",), target_mpp=0.5,
                         tissue_only=False, fusion=(0.0, 1.0, 0.0))  # fmt: skip
    entries = [*req.prompts, *req.background]
    size = encoder.input_size
    encoder.encode_tiles(np.zeros((2, size, size, 3), np.uint8))
    out = {}
    for n in threads:
        torch.set_num_threads(n)
        ours, plain, workers, diff = [], [], None, 0.0
        for _ in range(repeats):
            engine = HeatmapEngine(encoder, batch_size=batch_size)
            workers = engine.embedder.workers
            t = time.perf_counter()
            res = engine.compute(slide, req)
            ours.append(res.total / (time.perf_counter() - t))
            grid = engine.grid_for(slide, req)
            rr, cc = np.mgrid[0 : grid.shape[0], 0 : grid.shape[1]]
            boxes = grid.read_boxes(rr.ravel(), cc.ravel())
            osr, bs = openslide.OpenSlide(str(CMU)), engine.batch_size
            t = time.perf_counter()
            emb = []
            for s in range(0, len(boxes), bs):
                tiles = []
                for x0, y0, x1, _ in boxes[s : s + bs].tolist():
                    side = int(round(x1 - x0))
                    img = osr.read_region((int(x0), int(y0)), 0, (side, side)).convert("RGB")
                    tiles.append(np.asarray(img if side == size else img.resize((size, size))))
                emb.append(encoder.encode_tiles(np.stack(tiles)))
            text = PromptEmbedder(encoder).embed(entries)
            scores = prompt_scores(np.concatenate(emb), text, len(req.prompts), req.mode,
                                   float(encoder.logit_scale))  # fmt: skip
            plain.append(len(boxes) / (time.perf_counter() - t))
            osr.close()
            mine = res.scores[:, rr.ravel(), cc.ravel()].T
            diff = max(diff, float(np.nanmax(np.abs(mine - scores))))
        out[f"{n}_threads"] = {
            "ours_tiles_s": round(statistics.median(ours), 1),
            "plain_batched_tiles_s": round(statistics.median(plain), 1),
            "ours_over_plain": round(statistics.median(ours) / statistics.median(plain), 3),
            "decode_workers": workers,
            "rounds": repeats,
            "max_score_diff": diff,
        }
    return out


def bench_reprompt(encoder, n_tiles: int = 100_000, n_prompts: int = 10, repeats: int = 5):
    """A new prompt over ``n_tiles`` cached tiles with ``n_prompts`` prompts."""
    import dask.array as da

    from napari_mrplip.embed.cache import EmbeddingCache
    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.result import HeatmapRequest
    from napari_mrplip.io.slide import Slide

    side = int(np.ceil(np.sqrt(n_tiles)))
    px = side * encoder.input_size
    level = da.zeros((px, px, 3), np.uint8, chunks=(4096, 4096, 3))
    slide = Slide(path=f"/tmp/bench-{px}.svs", levels=[level], mpp=0.5)
    engine = HeatmapEngine(encoder, cache=EmbeddingCache(max_items=side * side + 4096))
    base = HeatmapRequest(("a",), ("b",), target_mpp=0.5, tissue_only=False,
                          fusion=(0.0, 1.0, 0.0))  # fmt: skip
    grid = engine.grid_for(slide, base)
    rows, cols = grid.shape
    rng = np.random.default_rng(0)
    key = engine._key(slide, grid)
    for r in range(rows):  # fill the cache row by row (random unit vectors)
        e = rng.standard_normal((cols, encoder.embed_dim)).astype(np.float32)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        engine.cache.put(key, np.full(cols, r), np.arange(cols), e)
    old = [f"tissue pattern {i}" for i in range(n_prompts - 1)]
    engine.prompts.embed(old)
    times = []
    for i in range(repeats):
        req = HeatmapRequest(tuple(old) + (f"new prompt number {i}",), target_mpp=0.5,
                             tissue_only=False, fusion=(0.0, 1.0, 0.0))  # fmt: skip
        calls = getattr(encoder, "image_encode_calls", None)
        t = time.perf_counter()
        res = engine.compute(slide, req)
        times.append(time.perf_counter() - t)
        assert res.complete and getattr(encoder, "image_encode_calls", None) == calls
    return {"tiles": rows * cols, "prompts": n_prompts, "median_ms": 1e3 * statistics.median(times),
            "min_ms": 1e3 * min(times)}  # fmt: skip


def bench_first_partial(encoder, batch_size: int | None) -> dict:
    """Time to the first yielded partial result for a 1920x1080 viewport on the CMU SVS."""
    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.result import HeatmapRequest
    from napari_mrplip.io import open_slide

    out = {}
    slide = open_slide(CMU)
    engine = HeatmapEngine(encoder, batch_size=batch_size)
    for name, box in (("cold", (0, 0, 1920, 1080)), ("warm", (0, 1500, 1920, 2580))):
        req = HeatmapRequest(("dense nuclei", "pink stroma"), ("background",),
                             target_mpp=0.5, region_level0=box)  # fmt: skip
        t = time.perf_counter()
        run = engine.run(slide, req)
        first = next(run)
        out[f"{name}_ms"] = 1e3 * (time.perf_counter() - t)
        out[f"{name}_first_done"] = f"{first.done}/{first.total}"
        run.close()
    return out


def bench_dense(encoder, batch_size: int | None, repeats: int = 3) -> dict:
    """tiles/s with dense maps on vs off, interleaved, same tiles, cold caches each time."""
    from napari_mrplip.heatmap.dense import compute_dense
    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.result import HeatmapRequest
    from napari_mrplip.io import open_slide

    if not getattr(encoder, "dense_grid", 0):
        return {"skipped": "the model gives no dense maps"}
    slide = open_slide(CMU)
    req = HeatmapRequest(("dense nuclei", "pink stroma"), ("background",), target_mpp=0.5,
                         region_level0=(0, 0, 1344, 1344), tissue_only=False,
                         fusion=(0.0, 1.0, 0.0))  # fmt: skip
    times = {"tile": [], "dense": []}
    for _ in range(repeats):
        for mode in ("tile", "dense"):
            engine = HeatmapEngine(encoder, batch_size=batch_size)
            t = time.perf_counter()
            res = compute_dense(engine, slide, req)[1] if mode == "dense" else engine.compute(
                slide, req)  # fmt: skip
            times[mode].append(time.perf_counter() - t)
    n = int(res.total)
    tile_s, dense_s = (n / statistics.median(times[m]) for m in ("tile", "dense"))
    return {"tiles": n, "tile_tiles_s": tile_s, "dense_tiles_s": dense_s,
            "dense_over_tile": dense_s / tile_s}  # fmt: skip


def _run(mode, engine, slide, request, tokens):
    from napari_mrplip.heatmap.dense import run_dense

    if mode == "dense":
        return run_dense(engine, slide, request, tokens)
    return engine.run(slide, request)


def bench_pan(encoder, batch_size: int | None, pans: int = 20) -> dict:
    """First partial update after a pan, from the moment the view settles (the follower's
    debounce has fired): request -> first result -> canvas merge -> display raster, what the
    panel does before napari draws. Tile-only and dense pans are interleaved; each pan moves
    a 960 x 540 view by half its width from a view already computed (its tiles cached), so
    about half the tiles are new, as in a real pan."""
    from napari_mrplip.heatmap.dense import TokenCache
    from napari_mrplip.heatmap.display import display_raster
    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.refine import ResolutionMap, refine
    from napari_mrplip.heatmap.result import HeatmapRequest
    from napari_mrplip.io import open_slide

    slide = open_slide(CMU)
    w, h = slide.dimensions
    times = {"tile": [], "dense": []}
    for i in range(pans):
        for mode in ("tile", "dense") if getattr(encoder, "dense_grid", 0) else ("tile",):
            engine = HeatmapEngine(encoder, batch_size=batch_size)
            engine.prepare(slide)  # the tissue mask is made when the slide opens
            tokens = TokenCache()
            y = (i * 271) % (h - 540)
            boxes = [(0, y, 960, y + 540), (480, y, 1440, y + 540)]
            reqs = [HeatmapRequest(("dense nuclei", "pink stroma"), ("background",),
                                   target_mpp=0.5, region_level0=b) for b in boxes]  # fmt: skip
            for _ in _run(mode, engine, slide, reqs[0], tokens):  # the view before the pan
                pass
            t = time.perf_counter()
            gen = _run(mode, engine, slide, reqs[1], tokens)
            first = next(gen)
            first = first[0] if mode == "dense" else first
            res = ResolutionMap(np.full_like(first.scores, np.nan),
                                np.full(first.scores.shape[1:], np.nan, np.float32),
                                first.step_level0, first.origin_level0)  # fmt: skip
            res = refine(res, first.scores, first.origin_level0, first.step_level0, 0.5)
            display_raster(res.scores, res.origin_level0, res.step_level0, (w, h))
            times[mode].append(1e3 * (time.perf_counter() - t))
            gen.close()
    return {m: {"median_ms": statistics.median(v), "pans": len(v)} for m, v in times.items() if v}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--tiles", type=int, default=100_000, help="cached tiles for re-prompt")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads")
    parser.add_argument("--pans", type=int, default=20, help="pans per mode (interleaved)")
    parser.add_argument("--only", choices=("core", "dense", "pan", "plain"), default=None,
                        help="run only the dense-maps, the pan or the plain-loop measurement; "
                             "core: throughput, re-prompt and first partial")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    encoder, note = load_encoder(args.model, args.device)
    report = {"machine": machine(), "model": note, "input_px": encoder.input_size,
              "embed_dim": encoder.embed_dim, "device": str(encoder.device)}  # fmt: skip
    if args.only == "core":  # what the benchmark measured before issue 11 (before/after runs)
        report["throughput"] = bench_throughput(encoder, args.batch_size)
        report["reprompt"] = bench_reprompt(encoder, args.tiles)
        report["first_partial"] = bench_first_partial(encoder, args.batch_size)
        print(json.dumps(report, indent=2, default=str))
        return 0
    if args.only:
        fn = {"dense": lambda: bench_dense(encoder, args.batch_size),
              "pan": lambda: bench_pan(encoder, args.batch_size, args.pans),
              "plain": lambda: bench_plain(encoder, args.batch_size)}[args.only]  # fmt: skip
        report[args.only] = fn()
        print(json.dumps(report, indent=2, default=str))
        return 0
    report["throughput"] = bench_throughput(encoder, args.batch_size)
    report["reprompt"] = bench_reprompt(encoder, args.tiles)
    report["first_partial"] = bench_first_partial(encoder, args.batch_size)
    report["dense"] = bench_dense(encoder, args.batch_size)
    report["pan"] = bench_pan(encoder, args.batch_size, args.pans)
    print(json.dumps(report, indent=2, default=str))
    t, r, f = report["throughput"], report["reprompt"], report["first_partial"]
    print(f"\n| measure | result | target |\n| --- | --- | --- |\n"
          f"| tiles/s, engine vs naive ({t['tiles']} tiles) | {t['ours_tiles_s']:.0f} vs "
          f"{t['naive_tiles_s']:.0f} ({t['speedup']:.1f}x) | >= 3x CPU |\n"
          f"| new prompt over {r['tiles']:,} cached tiles, {r['prompts']} prompts | "
          f"{r['median_ms']:.0f} ms median ({r['min_ms']:.0f} min) | <= 150 ms CPU |\n"
          f"| first partial, 1920x1080 viewport, cold / warm | {f['cold_ms']:.0f} / "
          f"{f['warm_ms']:.0f} ms | <= 1 s CPU |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
