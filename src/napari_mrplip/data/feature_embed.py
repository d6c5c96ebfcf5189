"""Writing one slide's bag features into a :class:`FeatureStore` (resumable, lock-guarded)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_mrplip.io import open_slide

from .bag_tiles import read_bag_tiles
from .feature_store import BAGS_PER_SHARD, FeatureStore, slide_key


@dataclass
class EmbedResult:
    """What one slide's embedding did (``tiles_embedded`` counts this call's work only)."""

    slide: str
    status: str  # "embedded" | "cached" | "failed"
    bags: int = 0
    tiles_embedded: int = 0
    seconds: float = 0.0
    error: str = ""


def encode_bag(encoder, tiles: np.ndarray) -> np.ndarray:
    """One bag's ``(N, S, S, 3)`` uint8 tiles -> ``(N, F)`` float32 features.

    The one encoding call shared by the store writer and pixel training with a frozen
    encoder (``feature_dataset``), so both produce the same numbers for the same bag.
    """
    return np.asarray(encoder.encode_tiles(tiles), dtype=np.float32)


def embed_slide_bags(
    store: FeatureStore,
    records: Sequence[dict],
    encoder,
    bags_per_shard: int = BAGS_PER_SHARD,
    on_tiles=None,
) -> EmbedResult:
    """Encode every tile of one slide's bags into the store, once.

    Shards (``bags_per_shard`` bags each) already on disk are skipped, so a rerun after a
    killed worker encodes only the shards that were not written. A concurrent writer of the
    same slide waits on the slide's lock and then finds the work done.

    Parameters
    ----------
    store : FeatureStore
    records : sequence of dict
        This slide's manifest records, in manifest order (all from one slide).
    encoder : EncoderBackend
        ``encode_tiles((B, S, S, 3) uint8) -> (B, F)``; tiles are read at ``input_size``.
    bags_per_shard : int
    on_tiles : callable, optional
        ``on_tiles(n)`` after each written shard.
    """
    t0 = time.perf_counter()
    slide_path = records[0]["slide"]
    if store.is_complete(records):
        return EmbedResult(slide_path, "cached", len(records))
    key, n_new = slide_key(records), 0
    with store.slide_lock(key):
        if store.is_complete(records):
            return EmbedResult(slide_path, "cached", len(records))
        arr = store.slide_array(records, bags_per_shard)
        shard = int(arr.shards[0])
        starts = range(0, len(records), shard)
        done = store.shards_done(key, len(starts))
        with open_slide(slide_path, mpp=records[0]["slide_mpp"]) as slide:
            for start, is_done in zip(starts, done):
                if is_done:
                    continue
                group = records[start : start + shard]
                feats = [
                    encode_bag(encoder, read_bag_tiles(
                        slide, rec["tiles"], store.input_size, rec["slide_mpp"]))
                    for rec in group
                ]  # fmt: skip
                arr[start : start + len(group)] = np.stack(feats)  # one shard file, atomically
                n = sum(len(rec["tiles"]) for rec in group)
                n_new += n
                if on_tiles is not None:
                    on_tiles(n)
        store.mark_complete(key)
    return EmbedResult(slide_path, "embedded", len(records), n_new, time.perf_counter() - t0)
