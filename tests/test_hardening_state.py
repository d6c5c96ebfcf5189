"""Acceptance for issue 10, in-process: review state keyed by content (4), the cache's slide
identity (5) and checksummed chunks (6), disk full (8) and the output policy's modes (11).
Generated files only."""

from __future__ import annotations

import errno
import os
import warnings

import numpy as np
import pytest

from hardening_util import boxes_geojson, tissue_image, write_json, write_slide
from heatmap_tiny_encoder import TinyClipEncoder
from napari_mrplip.annotations.geojson import read_document
from napari_mrplip.embed.cache import CacheWarning, EmbeddingCache, slide_id
from napari_mrplip.heatmap.engine import HeatmapEngine
from napari_mrplip.heatmap.result import HeatmapRequest
from napari_mrplip.io import open_slide
from napari_mrplip.outputs import DiskFullError, OutputError, atomic_output, write_text
from napari_mrplip.review.state import ReviewState


# -- 4: review decisions land on the polygon they were made on -------------------------------
def _decide(anns) -> dict:
    """Accept even, relabel odd annotations; returns decisions by geometry (WKT)."""
    from napari_mrplip.annotations.model import set_label

    made = {}
    for i, a in enumerate(anns):
        if i % 2:
            set_label(a, "Necrosis", anns)
            a.review.status = "relabelled"
        else:
            a.review.status = "accepted"
        made[a.geometry.wkt] = (a.review.status, a.label)
    return made


def test_deleting_a_feature_never_moves_decisions_to_other_polygons(tmp_path):
    src = write_json(tmp_path / "q.geojson", boxes_geojson(8))  # QuPath 0.2: no ids
    anns = read_document(src).annotations
    made = _decide(anns)
    ReviewState.for_file(src).save(anns)
    doc = boxes_geojson(8)
    del doc["features"][0]  # every later feature-<index> id shifts by one
    write_json(src, doc)
    fresh = read_document(src).annotations
    state = ReviewState.for_file(src)
    with pytest.warns(UserWarning, match="1 saved review decision"):
        assert state.restore(fresh) == 7
    assert state.unmatched == ["feature-0"]
    for a in fresh:
        assert (a.review.status, a.label) == made[a.geometry.wkt]


def test_a_label_changed_in_the_file_is_reported_not_overwritten(tmp_path):
    src = write_json(tmp_path / "q.geojson", boxes_geojson(4, ids=True))
    anns = read_document(src).annotations
    _decide(anns)
    ReviewState.for_file(src).save(anns)
    doc = boxes_geojson(4, ids=True)
    doc["features"][2]["properties"]["classification"]["name"] = "Immune"  # edited in QuPath
    write_json(src, doc)
    fresh = read_document(src).annotations
    state = ReviewState.for_file(src)
    with pytest.warns(UserWarning, match="match no annotation"):
        assert state.restore(fresh) == 3
    assert state.unmatched == ["id-2"] and fresh[2].label == "Immune"
    assert fresh[2].review.status == "unreviewed"


def test_saved_relabels_still_match_after_the_geojson_is_written(tmp_path):
    src = write_json(tmp_path / "q.geojson", boxes_geojson(4))
    doc = read_document(src)
    made = _decide(doc.annotations)
    ReviewState.for_file(src).save(doc.annotations)
    doc.write()  # the user's Save writes the relabels into the file
    fresh = read_document(src).annotations
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ReviewState.for_file(src).restore(fresh) == 4
    assert {a.geometry.wkt: (a.review.status, a.label) for a in fresh} == made


# -- 5, 6: the embedding cache ---------------------------------------------------------------
def test_same_name_size_and_dimensions_but_other_content_get_other_ids(tmp_path):
    from napari_mrplip.io.writers import write_pyramid

    paths = []
    for seed in (1, 2):
        (tmp_path / str(seed)).mkdir()
        p = tmp_path / str(seed) / "slide.ome.tif"
        write_pyramid(p, tissue_image(seed, 512), mpp=0.5, tile=256, compression=None)
        paths.append(p)
    assert paths[0].stat().st_size == paths[1].stat().st_size
    with open_slide(paths[0]) as s0, open_slide(paths[1]) as s1:
        assert s0.dimensions == s1.dimensions and slide_id(s0) != slide_id(s1)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A slide, a filled disk cache (2 x 2 blocks) and the clean result."""
    d = tmp_path_factory.mktemp("cache")
    slide_path = write_slide(d / "s.ome.tif", 3)
    enc = TinyClipEncoder(input_size=32, embed_dim=32)
    with open_slide(slide_path) as slide:
        res = HeatmapEngine(enc, cache=EmbeddingCache(disk_dir=d / "cache")).compute(slide, _req())
    store = next((d / "cache").rglob("emb")).parent
    return {"slide": slide_path, "enc": enc, "scores": res.scores, "store": store}


def _req():
    return HeatmapRequest(prompts=("a", "b"), target_mpp=0.5, mode="cosine", tissue_only=False)


def _rerun(cached, cache_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_slide(cached["slide"]) as slide:
            eng = HeatmapEngine(cached["enc"], cache=EmbeddingCache(disk_dir=cache_dir))
            res = eng.compute(slide, _req())
    return res, eng, [w for w in caught if issubclass(w.category, CacheWarning)]


def _chunk(store, name, *idx):
    return store / name / "c" / "/".join(str(i) for i in idx)


@pytest.mark.parametrize("damage", ["flip", "swap", "zarr.json", "truncate"])
def test_damaged_cache_is_recomputed_with_one_warning(cached, tmp_path, damage):
    import shutil

    cache_dir = tmp_path / "cache"
    shutil.copytree(cached["store"].parents[2], cache_dir)
    store = cache_dir / cached["store"].relative_to(cached["store"].parents[2])
    a, b = _chunk(store, "emb", 0, 0, 0), _chunk(store, "emb", 1, 1, 0)
    if damage == "flip":
        raw = bytearray(a.read_bytes())
        raw[len(raw) // 2 : len(raw) // 2 + 8] = bytes(255 - v for v in raw[len(raw) // 2 :][:8])
        a.write_bytes(bytes(raw))
    elif damage == "swap":
        a.write_bytes(b.read_bytes())
    elif damage == "truncate":
        a.write_bytes(a.read_bytes()[:10])
    else:
        (store / "zarr.json").write_text("{not json")
    res, eng, caught = _rerun(cached, cache_dir)
    np.testing.assert_allclose(res.scores, cached["scores"], rtol=0, atol=1e-5)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert eng.tiles_encoded > 0  # the damaged block was encoded again


def test_read_only_cache_is_read_not_written(cached, tmp_path, monkeypatch):
    import shutil

    import zarr

    cache_dir = tmp_path / "cache"
    shutil.copytree(cached["store"].parents[2], cache_dir)
    store = cache_dir / cached["store"].relative_to(cached["store"].parents[2])
    for chunk in (_chunk(store, "emb", 1, 1, 0), _chunk(store, "filled", 1, 1),
                  _chunk(store, "crc", 1, 1)):  # fmt: skip
        chunk.unlink()  # one block is not cached: it is recomputed and would be written back

    def refuse(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(zarr.Array, "__setitem__", refuse)
    res, _, caught = _rerun(cached, cache_dir)
    np.testing.assert_allclose(res.scores, cached["scores"], rtol=0, atol=1e-5)
    assert len(caught) == 1 and "read-only" in str(caught[0].message)


# -- 8, 11: disk full and modes ------------------------------------------------------------
def test_disk_full_is_named_and_leaves_nothing(tmp_path):
    with pytest.raises(DiskFullError, match="disk is full"):
        with atomic_output(tmp_path / "out.ome.zarr", directory=True) as tmp:
            (tmp / "chunk").write_bytes(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_on_a_full_disk_leaves_no_partial_folder(tmp_path, monkeypatch):
    import torch

    from napari_mrplip.train import checkpointing
    from napari_mrplip.train.distributed import DistInfo

    def full(*a, **k):  # what torch raises when the disk fills mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed, unexpected pos 64")  # fmt: skip

    monkeypatch.setattr(checkpointing.torch, "save", full)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = checkpointing.TrainState(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
                                     torch.amp.GradScaler("cpu", enabled=False))  # fmt: skip
    info = DistInfo(rank=0, world_size=1, local_rank=0, device="cpu")
    with pytest.raises(DiskFullError, match="disk is full"):
        checkpointing.save_checkpoint(tmp_path, 3, model, state, {}, info)
    assert list(tmp_path.iterdir()) == []


def test_outputs_keep_the_umask_and_refuse_existing(tmp_path):
    old = os.umask(0o027)
    try:
        p = write_text(tmp_path / "a.json", "{}")
        assert p.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    with pytest.raises(OutputError, match="--overwrite"):
        write_text(p, "[]")
    assert p.read_text() == "{}"
    write_text(p, "[]", overwrite=True)
    assert p.read_text() == "[]"
