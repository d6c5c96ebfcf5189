"""GPU figures in one run: encoder sweep, heatmap engine, whole slide, training MFU.

Run by ``benchmarks/gpu_check.sh`` (which also runs the CUDA-marked tests and installs what
the GPU machine lacks); standalone::

    python benchmarks/bench_gpu.py --json OUT.json [--dry-run] [--sections encoder,engine,...]

Sections (each writes its figures into the JSON as soon as it finishes, so a timeout keeps
what was measured; a failing section records its error and the run goes on):

- ``env``: device, torch, a bf16 8192^3 matmul rate (the practical ceiling for MFU);
- ``encoder``: ViT-B/16 (``mrplip-b16``, random weights) image tower alone, batch 64-1024, in
  bf16 autocast, with bf16 weights, channels-last input, ``torch.compile``; then the real
  ``encode_tiles`` path from uint8 host tiles, pageable vs pinned buffers;
- ``engine``: ``bench_heatmap``'s throughput, cached re-prompt (100k tiles) and first partial
  on CUDA with the same model;
- ``wholeslide``: a generated 100,000^2 px JPEG OME-TIFF at 0.5 µm/px (20x) scored whole,
  decode on all cores, plus the decode-only bound of the same tiles;
- ``train``: ``bench_train`` with ``mrplip-b16`` in bf16, samples/s, and MFU from the FLOPs
  counted by ``torch.utils.flop_counter`` on one real step.

``--dry-run`` runs every section on the CPU at toy sizes (``mrplip-tiny``, small slide), to
check the script before spending GPU time.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MRPLIP_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return None


def timed(fn, device: str, min_s: float, min_iters: int = 3, warmup: int = 2) -> float:
    """Seconds per call of ``fn`` (median-free mean over a window of at least ``min_s``)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= min_iters:
            _sync(device)
            el = time.perf_counter() - t0
            if el >= min_s:
                return el / n


def env_section(device: str, dry: bool) -> dict:
    out = {"torch": torch.__version__, "device": device, "cpus": os.cpu_count()}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
        n = 8192
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        s = timed(lambda: a @ b, device, 1.0)
        out["matmul_bf16_tflops"] = round(2 * n**3 / s / 1e12, 1)
        del a, b
    return out


def build_model(config: str, device: str):
    from napari_mrplip.models.config import load_config
    from napari_mrplip.models.mrplip import build_model as build

    torch.manual_seed(0)
    return build(load_config(config)).eval().to(device)


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def encoder_section(
    device: str, config: str, batches: list[int], compile_batches: list[int], min_s: float
) -> dict:
    """The image tower alone on device-resident normalised input, then ``encode_tiles``."""
    model = build_model(config, device)
    size = model.config.image_size
    with torch.inference_mode():
        zeros = torch.zeros(2, 3, size, size, device=device)
        flops_tile = count_flops(lambda: model.encode_image(zeros)) / 2
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    amp = device.startswith("cuda")
    rows = []

    def arm(name, fn, b):
        _reset_peak(device)
        try:
            s = timed(fn, device, min_s)
        except torch.OutOfMemoryError:
            rows.append({"arm": name, "batch": b, "error": "OOM"})
            torch.cuda.empty_cache()
            return
        rows.append({"arm": name, "batch": b, "tiles_s": round(b / s, 1),
                     "tflops": round(b / s * flops_tile / 1e12, 1), "peak_gb": _peak_gb(device)})  # fmt: skip
        print(rows[-1], flush=True)

    with torch.inference_mode():
        for b in batches:
            x = torch.randn(b, 3, size, size, device=device)
            xb = x.to(torch.bfloat16)
            xcl = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                arm("autocast_bf16", lambda x=x: model.encode_image(x), b)
            arm("bf16_weights", lambda x=xb: m16.encode_image(x), b)
            arm("bf16_channels_last", lambda x=xcl: m16.encode_image(x), b)
            del x, xb, xcl
        compiled = torch.compile(m16.encode_image) if compile_batches else None
        for b in compile_batches:
            xb = torch.randn(b, 3, size, size, device=device, dtype=torch.bfloat16)
            t0 = time.perf_counter()
            compiled(xb)
            _sync(device)
            rows.append({"arm": "compile_time_s", "batch": b,
                         "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
            arm("bf16_weights_compiled", lambda x=xb: compiled(x), b)
    out = {"config": config, "image_size": size, "gflop_per_tile": round(flops_tile / 1e9, 2),
           "rows": rows, "encode_tiles": _encode_tiles_rows(model, batches, device, min_s)}  # fmt: skip
    model = m16 = None  # free the GPU before the next section
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def _encode_tiles_rows(model, batches, device, min_s) -> list[dict]:
    """The real backend path: uint8 host tiles -> (B, D) float32 host embeddings."""
    from napari_mrplip.embed.batching import tile_allocator

    enc = _encoder_from(model, device)
    size = enc.input_size
    rows = []
    for b in batches:
        page = np.random.default_rng(0).integers(0, 255, (b, size, size, 3), np.uint8)
        pinned = tile_allocator(device)((b, size, size, 3))
        pinned[:] = page
        for name, arr in (("pageable", page), ("pinned", pinned)):
            _reset_peak(device)
            s = timed(lambda a=arr: enc.encode_tiles(a), device, min_s)
            rows.append({"arm": f"encode_tiles_{name}", "batch": b, "tiles_s": round(b / s, 1),
                         "peak_gb": _peak_gb(device)})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def _encoder_from(model, device):
    """An ``EncoderBackend`` over ``model`` saved as a checkpoint (what users load)."""
    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.encoders import get_encoder

    path = Path(tempfile.mkdtemp(prefix="bench_gpu_")) / model.config.name
    if not path.exists():
        save_model(model.float().cpu(), path)
        model.to(device)
    prec = "bf16" if device.startswith("cuda") else "fp32"
    return get_encoder(str(path), device=device, precision=prec)


_ENCODERS: dict = {}


def encoder_for(config: str, device: str):
    if (config, device) not in _ENCODERS:
        _ENCODERS[(config, device)] = _encoder_from(build_model(config, device), device)
    return _ENCODERS[(config, device)]


def engine_section(device: str, config: str, reprompt_tiles: int, batch: int | None) -> dict:
    bh = _bench_module("bench_heatmap")
    enc = encoder_for(config, device)
    out = {}
    for name, fn in (("throughput_cmu", lambda: bh.bench_throughput(enc, batch)),
                     ("reprompt", lambda: bh.bench_reprompt(enc, reprompt_tiles)),
                     ("first_partial", lambda: bh.bench_first_partial(enc, batch))):  # fmt: skip
        _reset_peak(device)
        out[name] = fn()
        out[name]["peak_gb"] = _peak_gb(device)
        print(name, out[name], flush=True)
    return out


def wholeslide_section(
    device: str,
    config: str,
    side: int,
    batch: int | None,
    decode_tiles: int,
    workers: list[int],
    budget_s: float = 90.0,
) -> dict:
    """Score a generated ``side``^2 px slide at 0.5 µm/px, every tile, as ``mrplip heatmap``
    does (``compute``: no partial maps), at each decode-thread count; and the decode bound."""
    from napari_mrplip.io import open_slide
    from napari_mrplip.io.synthetic import write_synthetic_slide

    enc = encoder_for(config, device)
    t0 = time.perf_counter()
    path = write_synthetic_slide(Path(tempfile.mkdtemp()) / "whole.ome.tif", size=(side, side),
                                 mpp=0.5)  # fmt: skip
    out = {"side_px": side, "write_s": round(time.perf_counter() - t0, 1)}
    slide = open_slide(path)
    out["jpeg_decodes_s_by_threads"] = _decode_scaling(slide, max(workers))
    out["runs"] = [_whole_run(enc, slide, batch, w, decode_tiles, budget_s, device)
                   for w in workers]  # fmt: skip
    return out


def _whole_run(enc, slide, batch, workers, decode_tiles, budget_s, device) -> dict:
    import threading

    from napari_mrplip.embed.reader import TileReader
    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.result import HeatmapRequest

    req = HeatmapRequest(("dense nuclei", "pink stroma"), ("background",), target_mpp=0.5,
                         tissue_only=False, fusion=(0.0, 1.0, 0.0))  # fmt: skip
    engine = HeatmapEngine(enc, batch_size=batch, workers=workers)
    grid = engine.grid_for(slide, req)
    rows, cols = grid.shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    boxes = grid.read_boxes(rr.ravel(), cc.ravel())
    order = np.lexsort((cc.ravel() // 8, rr.ravel() // 8))  # block-major, as the engine reads
    n = min(decode_tiles, len(boxes))
    reader = TileReader(slide, workers=workers, prefetch=max(2, workers // 4))
    t0 = time.perf_counter()
    got = sum(len(b.index) for b in reader.batches(boxes[order][:n], grid.out_px, 256))
    out = {"workers": workers, "decode_only_tiles_s": round(got / (time.perf_counter() - t0), 1)}
    _reset_peak(device)
    cancel = threading.Event()
    timer = threading.Timer(budget_s, cancel.set)  # a cap; the rate and a projection are reported
    timer.start()
    t0 = time.perf_counter()
    for _ in engine.run(slide, req, cancel=cancel, progress=False):
        pass
    el = time.perf_counter() - t0
    timer.cancel()
    done = engine.tiles_encoded
    out.update({"tiles": rows * cols, "done": done, "seconds": round(el, 2),
                "tiles_s": round(done / el, 1), "batch": engine.batch_size,
                "projected_whole_s": round(rows * cols / max(done / el, 1e-9), 1),
                "peak_gb": _peak_gb(device)})  # fmt: skip
    print(out, flush=True)
    return out


def _decode_scaling(slide, workers: int) -> dict:
    """Stored 256 px JPEG tiles decoded per second by 1..``workers`` threads (the decode bound)."""
    from concurrent.futures import ThreadPoolExecutor

    reader, out = slide.reader, {}
    info = reader.tiled[0]
    jobs = [(0, r, c) for r in range(8) for c in range(8)]
    for threads in sorted({1, 4, 8, workers}):
        n = 250 * threads
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(lambda i: reader.decode_tile(info, *jobs[i % 64]), range(n)))
        out[str(threads)] = round(n / (time.perf_counter() - t0), 1)
    return out


def train_section(device: str, config: str, bags: int, steps: int, workers: int) -> dict:
    bt = _bench_module("bench_train")
    slides = [str(p) for p in sorted(DATA.glob("*")) if p.suffix in (".svs", ".tif")]
    prec = "bf16" if device.startswith("cuda") else "fp32"
    argv = ["--config", config, "--slides", *slides, "--batch-size", str(bags),
            "--steps", str(steps), "--warmup", "2", "--workers", str(workers),
            "--device", device, "--precision", prec, "--loader-batches", "4", "--flops"]  # fmt: skip
    _reset_peak(device)
    res = bt.main(argv)
    res["peak_gb"] = _peak_gb(device)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes")
    p.add_argument("--sections", default="env,encoder,engine,wholeslide,train")
    p.add_argument("--config", default=None)
    p.add_argument("--batch", type=int, default=None, help="engine batch size")
    p.add_argument("--side", type=int, default=None, help="whole-slide side in px")
    p.add_argument("--decode-workers", default=None, help="e.g. 8,16 (default: 8 and all cores)")
    args = p.parse_args(argv)
    dry = args.dry_run
    device = "cpu" if dry or not torch.cuda.is_available() else "cuda"
    config = args.config or ("mrplip-tiny" if dry else "mrplip-b16")
    workers = os.cpu_count() or 1
    decode_workers = [int(w) for w in args.decode_workers.split(",")] if args.decode_workers else [
        min(8, workers), workers]  # fmt: skip
    decode_workers = sorted(set(decode_workers))
    if dry:
        torch.set_num_threads(max(1, workers))
    plan = {
        "env": lambda: env_section(device, dry),
        "encoder": lambda: encoder_section(
            device, config, [8, 16] if dry else [64, 128, 256, 512, 1024],
            [] if dry else [512], 0.2 if dry else 0.6),
        "engine": lambda: engine_section(device, config, 2_000 if dry else 100_000, args.batch),
        "wholeslide": lambda: wholeslide_section(
            device, config, args.side or (4_000 if dry else 100_000), args.batch,
            300 if dry else 40_000, decode_workers),
        "train": lambda: train_section(device, config, 2 if dry else 64, 2 if dry else 6,
                                       min(8, workers)),
    }  # fmt: skip
    report: dict = {"dry_run": dry, "config": config}
    for name in args.sections.split(","):
        t0 = time.perf_counter()
        try:
            report[name] = plan[name]()
        except Exception as e:  # record and go on: one broken section must not hide the rest
            report[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
            print(report[name]["trace"], file=sys.stderr, flush=True)
        report.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report.get("section_seconds"), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
