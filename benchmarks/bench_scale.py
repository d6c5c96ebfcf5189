"""Scale stages measured side by side at 1 and 2 workers: captions/s, features/s, train samples/s.

One run:

1. writes a synthetic cohort: ``--slides`` OME-TIFFs at 0.5 µm/px, each a seeded mosaic of
   real tissue tiles cut from the shared slides (CMU-1 H&E, OS-2 Ki67), written by
   ``io/writers.py``;
2. builds the manifest with the offline StainCaptioner at 1 worker (one process) and
   2 workers (dask LocalCluster), each into a fresh cache: captions/s;
3. the same with the test suite's random tiny LLaVA (``tests/test_captioners._tiny_llava``),
   batched (``--batch-tiles``) at 1 and 2 workers and one tile at a time at 1 worker;
4. writes the feature store with a random ``mrplip-tiny`` image tower as the frozen encoder
   at 1 and 2 workers: features/s;
5. pretrains a features config for ``--steps`` steps reading the store vs running the frozen
   encoder on pixels, with 0 and 2 DataLoader workers: bags/s and image-text pairs/s;
6. counts the FLOPs of one ``mrplip-frozen-features`` training step (forward + backward, one
   bag of 21 tiles) for the projection in docs/performance.md.

A worker's rate includes everything it does per slide (opening, tissue mask, sampling,
reading, captioning/encoding, writing); the stage wall time also includes starting the dask
cluster and loading models. Usage::

    python benchmarks/bench_scale.py --out /tmp/bench_scale --slides 4 --parents 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _tissue(tile: np.ndarray) -> float:
    """Fraction of coloured (not glass-grey) pixels."""
    spread = tile.max(-1).astype(np.int16) - tile.min(-1)
    return float(((spread > 15) & (tile.min(-1) < 220)).mean())


def make_cohort(out: Path, n: int, side: int, tile: int = 256) -> list[str]:
    """``n`` mosaics of real tissue tiles (seeded per slide), written as pyramidal OME-TIFFs."""
    from napari_mrplip.io import open_slide
    from napari_mrplip.io.writers import write_pyramid

    pool = []
    for name in ("CMU-1-Small-Region.svs", "OS-2-ndpi.ome.tif"):
        with open_slide(SHARED / name) as s:
            w, h = s.dimensions
            for y in range(0, h - tile + 1, tile):
                for x in range(0, w - tile + 1, tile):
                    t = s.read_region(x, y, tile, tile, 0)
                    if _tissue(t) > 0.6:
                        pool.append(t)
    paths = []
    for i in range(n):
        path = out / f"synthetic_{i:03d}.ome.tif"
        if not path.is_file():
            rng = np.random.default_rng(i)
            k = side // tile
            pick = rng.integers(len(pool), size=k * k)
            rows = [np.concatenate([pool[j] for j in pick[r * k : (r + 1) * k]], axis=1)
                    for r in range(k)]  # fmt: skip
            write_pyramid(path, np.concatenate(rows, axis=0), mpp=0.5, tile=256)
        paths.append(str(path))
    return paths


def _rate(summary: dict, key: str) -> dict:
    busy = sum(r.get("seconds", 0.0) for r in summary["per_slide"] if r["status"] != "failed")
    n = summary[key]
    return {"tiles": n, "wall_s": round(summary["seconds"], 2),
            "per_s_wall": round(n / summary["seconds"], 2),
            "per_s_worker": round(n / busy, 2) if busy else float("nan")}  # fmt: skip


def bench_captions(slides, out: Path, captioner, label: str, sampling, arms) -> dict:
    from napari_mrplip.scale.pipeline import build_manifest_at_scale

    res = {}
    for workers, batch in arms:
        dest = out / f"{label}_w{workers}_b{batch}" / "m.jsonl"
        s = build_manifest_at_scale(
            slides, dest, captioner, backend="local" if workers == 1 else "dask",
            workers=workers, device="cpu", batch_tiles=batch, **sampling,
        )  # fmt: skip
        res[f"{label} w{workers} batch{batch}"] = _rate(s, "tiles_captioned")
        print(label, workers, batch, res[f"{label} w{workers} batch{batch}"], flush=True)
    return res


def bench_features(manifest: Path, out: Path, encoder: str) -> dict:
    from napari_mrplip.scale.pipeline import build_feature_store

    res = {}
    for workers in (1, 2):
        s = build_feature_store(manifest, out / f"store_w{workers}.zarr", encoder,
                                backend="local" if workers == 1 else "dask", workers=workers,
                                device="cpu")  # fmt: skip
        res[f"features w{workers}"] = _rate(s, "tiles_embedded")
        print("features", workers, res[f"features w{workers}"], flush=True)
    return res


def bench_training(manifest, store, encoder, feature_dim, out, steps, slides, sampling) -> dict:
    from napari_mrplip.progress import read_events
    from napari_mrplip.train.config import PretrainConfig
    from napari_mrplip.train.pretrain import pretrain

    cfg = json.loads((ROOT / "src/napari_mrplip/models/configs/mrplip-tiny.json").read_text())
    cfg.update(name="bench-features")
    cfg["vision"] = {"kind": "features", "feature_dim": feature_dim, "width": 192}
    cfg_path = out / "features.json"
    cfg_path.write_text(json.dumps(cfg))
    tiles = len(json.loads(Path(manifest).read_text().splitlines()[0])["tiles"])
    res, losses = {}, {}
    for workers in (0, 2):
        for arm in ("pixels", "store"):
            run = out / f"train_{arm}_w{workers}"
            pretrain(PretrainConfig(
                model_config=str(cfg_path), slides=slides, out=run, manifest=manifest,
                max_steps=steps, batch_size=4, warmup_steps=1, checkpoint_every=0, device="cpu",
                threads=1, workers=workers, progress_bar=False, register=False,
                feature_encoder=encoder, features=store if arm == "store" else None,
                parents_per_slide=sampling["n_parents_per_slide"],
                children_per_parent=sampling["children_per_parent"], tile_px=sampling["tile_px"],
            ))  # fmt: skip
            ev = [e for e in read_events(run / "progress.jsonl") if e["event"] == "step"]
            bags = statistics.median(e["samples_per_s"] for e in ev[1:])  # first step: warm-up
            losses[(arm, workers)] = [e["losses"]["loss"] for e in ev]
            res[f"train {arm} loader-workers {workers}"] = {
                "bags_per_s": round(bags, 2),
                "pairs_per_s": round(bags * tiles, 1),
            }
            print(arm, workers, res[f"train {arm} loader-workers {workers}"], flush=True)
        diff = np.max(np.abs(np.subtract(losses[("store", workers)], losses[("pixels", workers)])))
        res[f"train loader-workers {workers}"] = {
            "store_vs_pixels_speed": round(res[f"train store loader-workers {workers}"]["bags_per_s"]
                                           / res[f"train pixels loader-workers {workers}"]["bags_per_s"], 2),
            "max_loss_diff": float(diff)}  # fmt: skip
    return res


def step_flops(config: str = "mrplip-frozen-features", children: int | None = None) -> dict:
    """FLOPs of one training step (forward + backward) on one bag, counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_mrplip.models.batch import BagBatch
    from napari_mrplip.models.mrplip import build_model
    from napari_mrplip.tiling.bags import bag_structure

    model = build_model(config)
    cfg = model.config
    mag, parent = bag_structure((5, 10, 20), children)
    n, k = len(mag), 16
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 40000, (1, n, 40), generator=g)
    tokens = torch.cat([torch.full((1, n, 1), 49406), tokens, torch.full((1, n, 1), 49407),
                        torch.zeros((1, n, cfg.context_length - 42), dtype=torch.long)], -1)  # fmt: skip
    kw = torch.zeros((1, k, cfg.keyword_context_length), dtype=torch.long)
    kw[..., 0], kw[..., 1:4], kw[..., 4] = 49406, torch.randint(1, 40000, (1, k, 3)), 49407
    batch = BagBatch(
        images=torch.empty((1, n, 0, 0, 3), dtype=torch.uint8), mag_index=torch.tensor(mag),
        parent_index=torch.tensor(parent), caption_tokens=tokens, keyword_tokens=kw,
        keyword_mask=torch.ones((1, k), dtype=torch.bool),
        features=torch.randn((1, n, cfg.vision.feature_dim)),
    )  # fmt: skip
    with FlopCounterMode(display=False) as fc:
        model.compute_losses(batch)["loss"].backward()
    return {"config": config, "tiles_per_bag": n, "flops_per_bag": int(fc.get_total_flops()),
            "flops_per_pair": int(fc.get_total_flops()) // n}  # fmt: skip


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--slides", type=int, default=4)
    p.add_argument("--side", type=int, default=2048, help="synthetic slide side in px [2048]")
    p.add_argument("--parents", type=int, default=4, help="bags per slide [4]")
    p.add_argument("--batch-tiles", type=int, default=21)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--skip", nargs="*", default=[], choices=["llava", "train", "flops"])
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    slides = make_cohort(args.out / "cohort", args.slides, args.side)
    sampling = dict(n_parents_per_slide=args.parents, children_per_parent=None, tile_px=112)
    arms = [(1, args.batch_tiles), (2, args.batch_tiles)]
    res = {"cohort": {"slides": len(slides), "side_px": args.side, "bags_per_slide": args.parents,
                      "tiles_per_bag": 21}}  # fmt: skip
    res.update(bench_captions(slides, args.out, "stain", "stain", sampling, arms))
    if "llava" not in args.skip:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_captioners import _tiny_llava

        llava = args.out / "tiny-llava"
        if not (llava / "config.json").is_file():
            _tiny_llava(llava)
        res.update(bench_captions(slides[:2], args.out, str(llava), "llava", sampling,
                                  [(1, 1)] + arms))  # fmt: skip
    import torch

    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.mrplip import build_model

    encoder = args.out / "encoder-mrplip-tiny"
    if not (encoder / "mrplip_config.json").is_file():
        torch.manual_seed(0)
        save_model(build_model("mrplip-tiny"), encoder)
    manifest = args.out / f"stain_w1_b{args.batch_tiles}" / "m.jsonl"
    res.update(bench_features(manifest, args.out, str(encoder)))
    if "train" not in args.skip:
        res.update(bench_training(manifest, args.out / "store_w1.zarr", str(encoder), 256,
                                  args.out, args.steps, slides, sampling))  # fmt: skip
    if "flops" not in args.skip:
        res["flops"] = step_flops()
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
