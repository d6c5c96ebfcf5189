"""BagDataset and collate_bags on a real manifest, with DataLoader workers."""

from __future__ import annotations

import pickle
import zlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from napari_mrplip.data.captioners import StainCaptioner
from napari_mrplip.data.dataset import BagDataset, augment_bag, collate_bags
from napari_mrplip.data.manifest import build_manifest
from napari_mrplip.models.batch import BagBatch


class WordTokenizer:
    """Deterministic word-hash tokenizer with the agreed call signature (picklable)."""

    def __call__(self, texts, context_length):
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [1 + zlib.crc32(w.encode()) % 999 for w in text.lower().split()]
            ids = ids[:context_length]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from conftest import CMU_SVS, OS2_OME

    if not CMU_SVS.exists() or not OS2_OME.exists():
        pytest.skip("shared slides missing")
    out = tmp_path_factory.mktemp("m") / "bags.jsonl"
    return build_manifest(
        [CMU_SVS, OS2_OME],
        out,
        StainCaptioner(),
        n_parents_per_slide=3,
        children_per_parent=1,
        progress=False,
    )


def test_item_shapes_and_content(manifest):
    ds = BagDataset(
        manifest,
        image_size=64,
        tokenizer=WordTokenizer(),
        context_length=32,
        keyword_context_length=8,
        max_keywords=6,
        augment=False,
    )
    item = ds[0]
    assert item["images"].shape == (3, 64, 64, 3) and item["images"].dtype == torch.uint8
    assert item["caption_tokens"].shape == (3, 32)
    assert item["keyword_tokens"].shape == (6, 8)
    assert item["keyword_mask"].dtype == torch.bool and item["keyword_mask"].any()
    assert item["mag_index"].tolist() == [0, 1, 2] and item["parent_index"].tolist() == [-1, 0, 1]
    # Tiles are real tissue, not white padding.
    assert item["images"].float().mean() < 235
    # Masked keyword rows are all padding.
    assert (item["keyword_tokens"][~item["keyword_mask"]] == 0).all()


def test_augmentation_seeded_and_histology_safe(manifest):
    kw = dict(image_size=64, tokenizer=WordTokenizer(), context_length=16)
    a = BagDataset(manifest, augment=True, seed=1, **kw)
    b = BagDataset(manifest, augment=True, seed=1, **kw)
    plain = BagDataset(manifest, augment=False, **kw)
    assert torch.equal(a[1]["images"], b[1]["images"])
    a.set_epoch(1)
    assert not torch.equal(a[1]["images"], b[1]["images"])
    # Mild jitter: mean colour stays close to the original.
    diff = (a[1]["images"].float().mean((1, 2)) - plain[1]["images"].float().mean((1, 2))).abs()
    assert diff.max() < 20
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, size=(2, 8, 8, 3), dtype=np.uint8)
    out = augment_bag(tiles, rng, jitter=0.0)
    # With no jitter every tile is a rotation/flip of the original (same pixel multiset).
    for t, o in zip(tiles, out):
        assert sorted(t.reshape(-1, 3).tolist()) == sorted(o.reshape(-1, 3).tolist())


def test_dataloader_with_workers_yields_bagbatch(manifest):
    ds = BagDataset(
        manifest,
        image_size=48,
        tokenizer=WordTokenizer(),
        context_length=24,
        keyword_context_length=8,
        max_keywords=5,
    )
    ds[0]  # opens a slide in this process; pickling must drop it
    # A multi-tile read starts the IO decoding thread pool here; forked workers must not
    # inherit it half-dead (they used to deadlock).
    ds._slide(ds.records[0]).read_region(0, 0, 1000, 1000, 0)
    state = pickle.loads(pickle.dumps(ds))
    assert state._slides == {}
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_bags)
    batches = list(loader)
    assert sum(b.batch_size for b in batches) == len(ds)
    batch = batches[0]
    assert isinstance(batch, BagBatch)
    assert batch.images.shape == (2, 3, 48, 48, 3)
    assert batch.caption_tokens.shape == (2, 3, 24)
    assert batch.keyword_tokens.shape == (2, 5, 8) and batch.keyword_mask.shape == (2, 5)
    assert batch.mag_index.tolist() == [0, 1, 2]


def test_collate_rejects_mixed_structures(manifest):
    ds = BagDataset(
        manifest, image_size=32, tokenizer=WordTokenizer(), context_length=8, augment=False
    )
    a, b = ds[0], dict(ds[1])
    b["parent_index"] = torch.tensor([-1, 0, 0])
    with pytest.raises(ValueError, match="structure"):
        collate_bags([a, b])
