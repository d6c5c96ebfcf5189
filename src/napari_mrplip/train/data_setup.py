"""From a ``PretrainConfig`` to the bag manifest and this rank's DataLoader."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import PretrainConfig, PretrainConfigError
from .distributed import DistInfo, barrier
from .sampler import EpochIndexed, StepBatchSampler
from .slides import resolve_slides

#: Keywords per bag fed to CVTA (the manifest keeps them all).
MAX_KEYWORDS = 16


def make_captioner(spec: str):
    """``"stain"`` -> the offline StainCaptioner; a directory -> a local VLM captioner."""
    from napari_mrplip.data.captioners import StainCaptioner, VLMCaptioner

    if spec == "stain":
        return StainCaptioner()
    return VLMCaptioner(spec)


def manifest_path(cfg: PretrainConfig) -> Path:
    return cfg.manifest if cfg.manifest is not None else cfg.out / "manifest.jsonl"


def write_vocabulary(manifest: Path, checkpoint_dir: Path) -> Path:
    """Record the words of ``manifest``'s captions and keywords in the checkpoint.

    The heatmap panel and CLI warn about prompts made of words the model never saw
    (``models.vocabulary``).
    """
    from napari_mrplip.data.manifest import read_manifest
    from napari_mrplip.models.vocabulary import TrainingVocabulary

    vocab = TrainingVocabulary.from_manifest_records(read_manifest(manifest), source=manifest.name)
    return vocab.save(checkpoint_dir)


def prepare_manifest(cfg: PretrainConfig, model_cfg, info: DistInfo) -> Path:
    """Build (or reuse the cached) bag manifest on rank 0; the other ranks wait for it.

    A resumed run reuses its manifest file as it is (never rebuilt), so that its data order
    continues exactly.

    Raises
    ------
    napari_mrplip.io.MissingMppError
        A slide records no µm/px and ``--slide-mpp`` was not given.
    """
    from napari_mrplip.scale.pipeline import build_manifest_at_scale

    path = manifest_path(cfg)
    if cfg.resume and path.is_file():
        return path  # a run keeps its bags and captions, even if the captioner changed since
    if info.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        resolve_slides(cfg.slides, path.parent / "slides")  # built-in slides written once
    barrier(info)
    slides = resolve_slides(cfg.slides, path.parent / "slides")
    # Every rank captions its share of the slides (torchrun), rank 0 merges in slide order.
    build_manifest_at_scale(
        slides, path, cfg.captioner, backend="torchrun" if info.distributed else "local",
        device=info.device, batch_tiles=cfg.caption_batch,
        n_parents_per_slide=cfg.parents_per_slide, magnifications=cfg.magnifications,
        tile_px=cfg.tile_px or model_cfg.image_size, seed=cfg.seed,
        slide_mpp=cfg.slide_mpp,  # used only for slides whose files state no µm/px
        children_per_parent=cfg.children_per_parent, strict=True,
        progress=cfg.out / "manifest_progress.jsonl",  # captioning events, per slide
    )  # fmt: skip
    barrier(info)
    return path


def _dataset(cfg: PretrainConfig, model_cfg, manifest: Path, info: DistInfo, **kwargs):
    """Pixels for a ViT config; store or frozen-encoder features for a features config."""
    from napari_mrplip.data.dataset import BagDataset
    from napari_mrplip.data.feature_dataset import EncoderFeatures, FeatureBagDataset, StoreFeatures
    from napari_mrplip.data.manifest import read_manifest

    if model_cfg.vision.kind != "features":
        if cfg.features is not None:
            raise PretrainConfigError(
                f"--features: config {model_cfg.name!r} reads pixels (vision.kind="
                f"{model_cfg.vision.kind!r}); use a features config or drop --features"
            )
        return BagDataset(manifest, image_size=model_cfg.image_size, augment=cfg.augment, **kwargs)
    if cfg.features is not None:
        encoder_id = None
        if cfg.feature_encoder is not None:
            from napari_mrplip.scale.tasks import get_encoder

            encoder_id = get_encoder(cfg.feature_encoder, "cpu").model_id
        source = StoreFeatures(
            cfg.features, read_manifest(manifest), model_cfg.vision.feature_dim, encoder_id
        )
    elif cfg.feature_encoder is not None:
        source = EncoderFeatures(cfg.feature_encoder, info.device if not cfg.workers else "cpu")
    else:
        raise PretrainConfigError(
            f"config {model_cfg.name!r} trains on tile features: pass --features STORE.zarr "
            "(made by 'mrplip embed --store') or --feature-encoder SPEC (encode pixels each step)"
        )
    return FeatureBagDataset(manifest, source, **kwargs)


def build_loader(
    cfg: PretrainConfig, model_cfg, manifest: Path, info: DistInfo, start_step: int
) -> tuple[torch.utils.data.DataLoader, StepBatchSampler]:
    """This rank's DataLoader over micro-batches from ``start_step`` on, and its sampler."""
    from napari_mrplip.data.dataset import collate_bags
    from napari_mrplip.models.tokenizer import get_tokenizer

    dataset = _dataset(
        cfg, model_cfg, manifest, info,
        tokenizer=get_tokenizer(model_cfg.context_length),
        context_length=model_cfg.context_length,
        keyword_context_length=model_cfg.keyword_context_length,
        max_keywords=MAX_KEYWORDS, seed=cfg.seed,
    )  # fmt: skip
    sampler = StepBatchSampler(
        len(dataset), cfg.batch_size, grad_accum=cfg.grad_accum, world_size=info.world_size,
        rank=info.rank, start_step=start_step, total_steps=cfg.max_steps, seed=cfg.seed,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        EpochIndexed(dataset),
        batch_sampler=sampler,
        collate_fn=collate_bags,
        num_workers=cfg.workers,
        pin_memory=info.device.startswith("cuda"),
        prefetch_factor=4 if cfg.workers else None,
        # its own generator: creating the iterator must not draw from the global torch RNG,
        # or a resumed run's masking/negative sampling would drift from the original run's
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return loader, sampler
