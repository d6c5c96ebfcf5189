"""From a ``PretrainConfig`` to the bag manifest and this rank's DataLoader."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import PretrainConfig
from .distributed import DistInfo, barrier
from .sampler import StepBatchSampler


def make_captioner(spec: str):
    """``"stain"`` -> the offline StainCaptioner; a directory -> a local VLM captioner."""
    from napari_mrplip.data.captioners import StainCaptioner, VLMCaptioner

    if spec == "stain":
        return StainCaptioner()
    return VLMCaptioner(spec)


def manifest_path(cfg: PretrainConfig) -> Path:
    return cfg.manifest if cfg.manifest is not None else cfg.out / "manifest.jsonl"


def prepare_manifest(cfg: PretrainConfig, model_cfg, info: DistInfo) -> Path:
    """Build (or reuse the cached) bag manifest on rank 0; the other ranks wait for it."""
    from napari_mrplip.data.manifest import build_manifest

    path = manifest_path(cfg)
    if info.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        build_manifest(
            cfg.slides,
            path,
            make_captioner(cfg.captioner),
            n_parents=cfg.parents_per_slide,
            magnifications=cfg.magnifications,
            tile_px=cfg.tile_px or model_cfg.image_size,
            children_per_parent=cfg.children_per_parent,
            seed=cfg.seed,
            slide_mpp=cfg.slide_mpp,
        )
    barrier(info)
    return path


def build_loader(
    cfg: PretrainConfig, model_cfg, manifest: Path, info: DistInfo, micro: int, start_step: int
):
    """This rank's DataLoader over micro-batches from ``start_step`` on, and its sampler."""
    from napari_mrplip.data.dataset import BagDataset, collate_bags
    from napari_mrplip.models.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(model_cfg.context_length)
    dataset = BagDataset(
        manifest,
        image_size=model_cfg.image_size,
        tokenizer=tokenizer,
        context_length=model_cfg.context_length,
        keyword_context_length=model_cfg.keyword_context_length,
        augment=cfg.augment,
        seed=cfg.seed,
        slide_mpp=cfg.slide_mpp,
    )
    sampler = StepBatchSampler(
        len(dataset), cfg.batch_size, grad_accum=cfg.grad_accum, world_size=info.world_size,
        rank=info.rank, start_step=start_step, total_steps=cfg.max_steps, seed=cfg.seed,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_bags,
        num_workers=cfg.workers,
        pin_memory=info.device.startswith("cuda"),
        persistent_workers=False,
        generator=torch.Generator().manual_seed(cfg.seed + start_step),
        prefetch_factor=4 if cfg.workers else None,
    )
    return loader, sampler
