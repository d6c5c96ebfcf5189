"""Process-wide sharing: one model per (spec, device), one embedding cache, one embedder per model.

Every panel and command in one process that embeds tiles with the same model goes through
the same embedder, so tiles one of them embedded cost the others no encoder call.
"""

from __future__ import annotations

import threading

from .cache import EmbeddingCache

#: Tiles held in memory by the shared cache (about 400 MB at D = 512).
SHARED_CACHE_TILES = 200_000

_LOCK = threading.Lock()
_CACHE: EmbeddingCache | None = None
_EMBEDDERS: dict[tuple[str, str], object] = {}
_ENCODERS: dict[tuple[str, str], object] = {}
_LOAD_LOCKS: dict[tuple[str, str], threading.Lock] = {}


def encoder_for(spec: str, device: str | None = None):
    """The process-wide encoder for a model spec on a device, loaded on first use.

    Every panel and command in the process asks here, so one model sits in memory however
    many panels use it. ``device`` ``None``/``"auto"`` resolves to ``"cuda"`` when a GPU
    is present, else ``"cpu"`` (``batching.resolve_device``), so ``"auto"`` and the device it
    resolves to share one model.
    """
    from napari_mrplip.models.encoders import get_encoder

    from .batching import resolve_device

    dev = resolve_device(None if device is None else str(device))
    key = (str(spec), dev)
    with _LOCK:
        enc = _ENCODERS.get(key)
        lock = _LOAD_LOCKS.setdefault(key, threading.Lock())
    if enc is not None:
        return enc
    with lock:  # one load per key, even when two panels ask at once
        with _LOCK:
            enc = _ENCODERS.get(key)
        if enc is None:
            enc = get_encoder(spec, device=dev)
            with _LOCK:
                _ENCODERS[key] = enc
        return enc


def shared_cache() -> EmbeddingCache:
    """The process-wide in-memory :class:`EmbeddingCache`."""
    global _CACHE
    with _LOCK:
        if _CACHE is None:
            _CACHE = EmbeddingCache(max_items=SHARED_CACHE_TILES)
        return _CACHE


def embedder_for(encoder):
    """The process-wide :class:`~.embedder.SlideEmbedder` for ``encoder`` (shared cache).

    Keyed by (``model_id``, ``device``); a different encoder object under the same key
    replaces the previous embedder (the cache, keyed by model id, carries over).
    """
    from .embedder import SlideEmbedder

    cache = shared_cache()
    key = (str(encoder.model_id), str(encoder.device))
    with _LOCK:
        emb = _EMBEDDERS.get(key)
        if emb is None or emb.encoder is not encoder:
            emb = SlideEmbedder(encoder, cache=cache)
            _EMBEDDERS[key] = emb
        return emb
