"""Reading and embedding tiles: the core shared by heatmaps, review, fine-tuning and pretraining.

Placed above ``io`` / ``tiling`` and below ``heatmap``, ``review`` and ``train``:

- ``reader.py``: tile decoding on a thread pool with bounded prefetch, and the tile resampler;
- ``batching.py``: device choice, batch sizes, pinned buffers, out-of-memory halving;
- ``cache.py``: the embedding cache (bounded LRU, optionally zarr on disk);
- ``embedder.py``: :class:`SlideEmbedder`, lattice and box embedding through the cache;
- ``pool.py``: the process-wide cache and one embedder per model.

torch is imported only by the encoder backends the caller passes in (and by ``batching`` when
a CUDA device is in play); this package itself never imports a deep-learning stack at import.
"""
