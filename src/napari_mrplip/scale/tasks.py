"""Per-slide tasks run by ``runner`` on any worker, with a per-process pool of loaded models.

Tasks receive picklable specs (a captioner spec or object, an encoder spec, paths) and load
the model once per worker process and device, not once per slide.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

#: (kind, key, device) -> loaded captioner / encoder, per worker process.
_POOL: dict[tuple, object] = {}


def get_captioner(spec, device: str):
    """A captioner from ``"stain"``, a VLM directory, or a Captioner object, pooled."""
    from napari_mrplip.data.captioners import StainCaptioner, VLMCaptioner

    if isinstance(spec, str):
        key = ("captioner", spec, device)
        if key not in _POOL:
            _POOL[key] = StainCaptioner() if spec == "stain" else VLMCaptioner(spec, device=device)
        return _POOL[key]
    key = ("captioner", type(spec).__qualname__, spec.name, spec.version, device)
    if key not in _POOL:
        if hasattr(spec, "device"):
            spec.device = device
        _POOL[key] = spec
    return _POOL[key]


def get_encoder(spec: str, device: str):
    """``models.encoders.get_encoder(spec, device)``, loaded once per process and device."""
    import torch

    from napari_mrplip.models.encoders import get_encoder as load

    key = ("encoder", str(spec), device)
    if key not in _POOL:
        with torch.random.fork_rng(devices=[]):  # building a model must not move the global RNG
            _POOL[key] = load(str(spec), device=device)
    return _POOL[key]


def caption_task(job, device: str, *, captioner, cache_dir: str, batch_tiles: int) -> dict:
    """Caption one slide's bags into the manifest cache; a ``SlideResult`` as a dict."""
    from napari_mrplip.data.manifest import caption_slide

    result = caption_slide(job, get_captioner(captioner, device), Path(cache_dir), batch_tiles)
    return {**asdict(result), "device": device}


def embed_task(records: list, device: str, *, store: str, encoder: str, bags_per_shard: int):
    """Embed one slide's bags into the feature store; an ``EmbedResult`` as a dict."""
    from napari_mrplip.data.feature_embed import embed_slide_bags
    from napari_mrplip.data.feature_store import FeatureStore

    result = embed_slide_bags(
        FeatureStore.open(store), records, get_encoder(encoder, device), bags_per_shard
    )
    return {**asdict(result), "device": device}
