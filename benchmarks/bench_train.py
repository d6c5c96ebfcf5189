"""Pretraining throughput: our step vs a plain open_clip CLIP step, and the data loader's supply.

Measures, on one device, with the same towers and the same batch of real bags:

1. ``itc``: samples/s of MR-PLIP's training step with only the ITC loss enabled, against
   ``clip``: a plain open_clip ``CLIP`` (same vision/text tower configs) + ``ClipLoss`` step
   on the same image-text pairs. Ratio target >= 1.0 (our wrapper adds no overhead).
2. ``full``: samples/s of the full MR-PLIP step (ITC + CVTA + MRTVA + ITM + MLM), and its cost
   relative to the ITC-only step.
3. ``loader``: samples/s the DataLoader (real slides, StainCaptioner manifest, W workers)
   delivers, against the full step's demand. Target >= 2x.

A sample is one image-text pair (one tile and its caption); a bag of N tiles is N samples.
Every step includes AdamW's update. Usage::

    python benchmarks/bench_train.py --slides ../shared/data/CMU-1-Small-Region.svs \
        --batch-size 4 --steps 6 --workers 2 [--device cuda --precision bf16 --config mrplip-b16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def _build_models(config: str, device: str):
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP

    from napari_mrplip.models.config import load_config
    from napari_mrplip.models.mrplip import build_model

    cfg = load_config(config)
    itc_cfg = replace(cfg, loss_weights={"itc": 1.0, "cvta": 0, "mrtva": 0, "itm": 0, "mlm": 0})
    torch.manual_seed(0)
    full, itc = build_model(cfg).to(device), build_model(itc_cfg).to(device)
    clip = CLIP(cfg.embed_dim, *_clip_tower_cfgs(cfg), output_dict=True).to(device)
    return cfg, full, itc, clip, ClipLoss()


def _clip_tower_cfgs(cfg):
    """open_clip tower configs with the same shapes as MR-PLIP's towers (``models/towers.py``)."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from napari_mrplip.models.tokenizer import BPE_VOCAB_SIZE, PAD_ID

    v, t = cfg.vision, cfg.text
    vision = CLIPVisionCfg(layers=v.layers, width=v.width, head_width=v.head_width,
                           mlp_ratio=v.mlp_ratio, patch_size=v.patch_size,
                           image_size=cfg.image_size)  # fmt: skip
    text = CLIPTextCfg(context_length=cfg.context_length, vocab_size=t.vocab_size,
                       width=t.width, heads=t.heads, layers=t.layers, mlp_ratio=t.mlp_ratio,
                       pad_id=PAD_ID, eos_id=BPE_VOCAB_SIZE - 1, pool_type="eos",
                       no_causal_mask=not t.causal)  # fmt: skip
    return vision, text


def _time_arms(arms: dict, steps: int, warmup: int, device: str) -> dict[str, float]:
    """Median seconds per step of each arm; arms interleaved step by step so that a change
    in machine load hits every arm alike (this machine is shared)."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    for i in range(warmup + steps):
        for name, step_fn in arms.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step_fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def _mrplip_step(model, batch, precision: str, device: str):
    from napari_mrplip.train.optim import make_optimizer
    from napari_mrplip.train.precision import autocast

    opt = make_optimizer(model, 1e-4, 0.05)

    def step():
        with autocast(precision, device):
            loss = model.compute_losses(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _clip_step(clip, loss_fn, model, batch, precision: str, device: str):
    from napari_mrplip.train.optim import make_optimizer
    from napari_mrplip.train.precision import autocast

    opt = make_optimizer(clip, 1e-4, 0.05)
    b, n = batch.images.shape[:2]
    tiles = batch.images.reshape(b * n, *batch.images.shape[2:])
    tokens = batch.caption_tokens.reshape(b * n, -1)

    def step():
        with autocast(precision, device):
            images = model.preprocess(tiles)
            out = clip(images, tokens)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _loader(args, cfg, manifest: Path, workers: int):
    from napari_mrplip.train.config import PretrainConfig
    from napari_mrplip.train.data_setup import build_loader
    from napari_mrplip.train.distributed import DistInfo

    pcfg = PretrainConfig(
        slides=args.slides, out=manifest.parent, batch_size=args.batch_size, workers=workers,
        max_steps=10_000, manifest=manifest, tile_px=args.tile_px,
        children_per_parent=args.children_per_parent, slide_mpp=args.slide_mpp,
        magnifications=tuple(args.magnifications),
    )  # fmt: skip
    loader, _ = build_loader(pcfg, cfg, manifest, DistInfo(), 0)
    return loader


def _loader_rate(loader, batches: int) -> tuple[float, object]:
    """Samples/s delivered after the first batch (workers warm)."""
    it = iter(loader)
    first = next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it)
        n += b.images.shape[0] * b.images.shape[1]
    return n / (time.perf_counter() - t0), first


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="mrplip-tiny")
    p.add_argument("--slides", nargs="+", required=True)
    p.add_argument("--batch-size", type=int, default=4, help="bags per step")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--loader-batches", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--tile-px", type=int, default=None)
    p.add_argument("--children-per-parent", type=int, default=None)
    p.add_argument("--slide-mpp", type=float, default=None)
    p.add_argument("--manifest", type=Path, default=None, help="reuse a manifest")
    p.add_argument("--magnifications", type=float, nargs="+", default=[10.0, 20.0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument(
        "--flops",
        action="store_true",
        help="count one full step's FLOPs (torch.utils.flop_counter) and report MFU",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run(args)


def run(args) -> dict:
    from napari_mrplip.train.config import PretrainConfig
    from napari_mrplip.train.data_setup import prepare_manifest
    from napari_mrplip.train.distributed import DistInfo

    cfg, full, itc, clip, clip_loss = _build_models(args.config, args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    manifest = args.manifest or work / "manifest.jsonl"
    pcfg = PretrainConfig(slides=args.slides, out=work, manifest=manifest, tile_px=args.tile_px,
                          children_per_parent=args.children_per_parent, slide_mpp=args.slide_mpp,
                          parents_per_slide=max(8, args.batch_size),
                          magnifications=tuple(args.magnifications))  # fmt: skip
    if not Path(manifest).is_file():  # an existing --manifest is used as it is
        prepare_manifest(pcfg, cfg, DistInfo())
    loader_rate, batch = _loader_rate(_loader(args, cfg, manifest, args.workers),
                                      args.loader_batches)  # fmt: skip
    batch = batch.to(args.device)
    samples = batch.images.shape[0] * batch.images.shape[1]
    arms = {
        "clip": _clip_step(clip, clip_loss, itc, batch, args.precision, args.device),
        "itc": _mrplip_step(itc, batch, args.precision, args.device),
        "full": _mrplip_step(full, batch, args.precision, args.device),
    }
    t = _time_arms(arms, args.steps, args.warmup, args.device)
    t_clip, t_itc, t_full = t["clip"], t["itc"], t["full"]
    result = {
        "device": _device_name(args.device), "config": args.config, "precision": args.precision,
        "bags_per_step": batch.images.shape[0], "tiles_per_bag": batch.images.shape[1],
        "image_size": cfg.image_size, "samples_per_step": samples,
        "clip_samples_per_s": samples / t_clip, "itc_samples_per_s": samples / t_itc,
        "itc_vs_clip_ratio": t_clip / t_itc,
        "full_samples_per_s": samples / t_full, "full_cost_vs_itc": t_full / t_itc,
        "loader_workers": args.workers, "loader_samples_per_s": loader_rate,
        "loader_vs_full_demand": loader_rate / (samples / t_full),
    }  # fmt: skip
    if getattr(args, "flops", False):
        result.update(_mfu(arms["full"], samples / t_full, samples, args.device))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


#: Dense bf16 peak of an H100/H200 SXM (vendor datasheet), the MFU denominator.
PEAK_BF16_TFLOPS = 989.0


def _mfu(step_fn, samples_per_s: float, samples: int, device: str) -> dict:
    """FLOPs of one full step (forward + backward, counted by ``FlopCounterMode``) and MFU."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step_fn()
    flops = int(fc.get_total_flops())
    achieved = flops * samples_per_s / samples
    return {
        "step_flops": flops,
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / (PEAK_BF16_TFLOPS * 1e12) if device.startswith("cuda") else None,
    }


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"


if __name__ == "__main__":
    main()
