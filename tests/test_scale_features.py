"""Feature store: written once per bag tile, resumable after SIGKILL, refused when it does
not match, and pretraining on it equals pretraining with the frozen tower on pixels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_mrplip.data.bag_tiles import read_bag_tiles
from napari_mrplip.data.captioners import StainCaptioner
from napari_mrplip.data.feature_embed import embed_slide_bags, encode_bag
from napari_mrplip.data.feature_store import FeatureStore, FeatureStoreError, group_by_slide
from napari_mrplip.data.manifest import build_manifest, read_manifest
from napari_mrplip.io import open_slide
from napari_mrplip.models.encoders import get_encoder
from napari_mrplip.scale.pipeline import build_feature_store
from scale_helpers import CountingEncoder, features_config, write_tiny_encoder

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from conftest import CMU_SVS, OS2_OME

    if not CMU_SVS.exists() or not OS2_OME.exists():
        pytest.skip("shared slides missing")
    root = tmp_path_factory.mktemp("store")
    kw = dict(n_parents_per_slide=4, children_per_parent=1, tile_px=64, progress=False)
    manifest = build_manifest([CMU_SVS, OS2_OME], root / "m.jsonl", StainCaptioner(), **kw)
    encoder = write_tiny_encoder(root / "encoder")
    store = root / "store.zarr"
    summary = build_feature_store(manifest, store, str(encoder), backend="local", device="cpu",
                                  bags_per_shard=2)  # fmt: skip
    return {"root": root, "manifest": manifest, "encoder": encoder, "store": store,
            "summary": summary, "kw": kw, "slides": [CMU_SVS, OS2_OME]}  # fmt: skip


def test_store_holds_every_bag_once(cohort):
    records = read_manifest(cohort["manifest"])
    n_tiles = sum(len(r["tiles"]) for r in records)
    s = cohort["summary"]
    assert s["failed"] == 0 and s["tiles_embedded"] == n_tiles
    enc = get_encoder(str(cohort["encoder"]), device="cpu")
    store = FeatureStore.open(cohort["store"])
    assert store.encoder == enc.model_id and store.input_size == enc.input_size == 32
    for idx in group_by_slide(records).values():
        recs = [records[i] for i in idx]
        feats = store.slide_features(recs)
        assert feats.shape == (len(recs), 3, 32) and np.isfinite(feats).all()
        with open_slide(recs[0]["slide"]) as slide:
            tiles = read_bag_tiles(slide, recs[-1]["tiles"], 32, recs[-1]["slide_mpp"])
        np.testing.assert_array_equal(feats[-1], encode_bag(enc, tiles))
    again = build_feature_store(cohort["manifest"], cohort["store"], str(cohort["encoder"]),
                                backend="local", device="cpu")  # fmt: skip
    assert again["tiles_embedded"] == 0 and again["cached"] == 2  # written once


def test_store_refuses_other_encoder_and_other_mpp(cohort, tmp_path):
    from napari_mrplip.data.feature_dataset import StoreFeatures

    other = write_tiny_encoder(tmp_path / "other", seed=1)
    with pytest.raises(FeatureStoreError, match="made by encoder"):
        build_feature_store(cohort["manifest"], cohort["store"], str(other), backend="local")
    records = read_manifest(cohort["manifest"])
    with pytest.raises(FeatureStoreError, match="made by encoder"):
        StoreFeatures(cohort["store"], records, 32, encoder=get_encoder(str(other)).model_id)
    with pytest.raises(FeatureStoreError, match="32-d features, the model expects 64"):
        StoreFeatures(cohort["store"], records, 64)
    kw = {**cohort["kw"], "magnifications": (2.5, 5.0, 10.0)}
    m2 = build_manifest(cohort["slides"], tmp_path / "m2.jsonl", StainCaptioner(), **kw)
    with pytest.raises(FeatureStoreError, match=r"µm/px"):
        StoreFeatures(cohort["store"], read_manifest(m2), 32)
    with pytest.raises(FeatureStoreError, match=r"not a feature store"):
        FeatureStore.open(tmp_path)


def test_killed_writer_loses_only_its_shard_in_flight(cohort, tmp_path):
    store = tmp_path / "s.zarr"
    enc = get_encoder(str(cohort["encoder"]), device="cpu")
    records = read_manifest(cohort["manifest"])
    FeatureStore.create(store, enc.model_id, 32, enc.input_size, [0.5, 1.0, 2.0])
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import scale_helpers; "
            f"scale_helpers.embed_until_killed({str(cohort['manifest'])!r}, {str(store)!r}, "
            f"{str(cohort['encoder'])!r}, 3)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    counting = CountingEncoder(enc)
    st = FeatureStore.open(store)
    for idx in group_by_slide(records).values():
        embed_slide_bags(st, [records[i] for i in idx], counting, bags_per_shard=1)
    assert counting.calls == len(records) - 3  # the 3 bags written before the kill: not redone
    full = FeatureStore.open(cohort["store"])
    for idx in group_by_slide(records).values():
        recs = [records[i] for i in idx]
        np.testing.assert_array_equal(st.slide_features(recs), full.slide_features(recs))


def _pretrain(cohort, out: Path, **extra):
    from napari_mrplip.progress import read_events
    from napari_mrplip.train.config import PretrainConfig
    from napari_mrplip.train.pretrain import pretrain

    cfg_path = cohort["root"] / "features.json"
    cfg_path.write_text(json.dumps(features_config(32)))
    cfg = PretrainConfig(
        model_config=str(cfg_path), slides=[str(s) for s in cohort["slides"]], out=out,
        manifest=cohort["manifest"], max_steps=4, batch_size=2, warmup_steps=1,
        checkpoint_every=0, device="cpu", threads=1, progress_bar=False, register=False,
        feature_encoder=str(cohort["encoder"]), parents_per_slide=4, children_per_parent=1,
        tile_px=64, **extra,
    )  # fmt: skip
    pretrain(cfg)
    steps = [e for e in read_events(out / "progress.jsonl") if e["event"] == "step"]
    return [s["losses"]["loss"] for s in steps], [s["samples_per_s"] for s in steps]


def test_pretraining_on_the_store_equals_the_frozen_tower_on_pixels(cohort, tmp_path, monkeypatch):
    pixels, _ = _pretrain(cohort, tmp_path / "pixels")

    def no_decoding(*args, **kwargs):
        raise AssertionError("the store path decoded a tile")

    import napari_mrplip.data.feature_dataset as fd

    monkeypatch.setattr(fd, "read_bag_tiles", no_decoding)
    stored, _ = _pretrain(cohort, tmp_path / "store", features=cohort["store"])
    assert len(pixels) == 4 and np.all(np.isfinite(pixels))
    np.testing.assert_allclose(stored, pixels, rtol=0, atol=1e-5)
