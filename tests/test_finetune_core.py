"""Fine-tuning core: metrics, split, data sources, linear probe, prompt learning, partial tuning, checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finetune_tiny import make_encoder, synthetic_tiles
from napari_mrplip.finetune.config import FinetuneConfig
from napari_mrplip.finetune.data import (
    FinetuneDataError,
    ImageTiles,
    LabelledTiles,
    split_by_group,
)
from napari_mrplip.finetune.linear_probe import fit_linear_probe
from napari_mrplip.finetune.report import evaluate, plot_confusion


def test_metrics_balanced_accuracy_and_recall(tmp_path):
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    rep = evaluate(y, p, ["a", "b", "c"])
    assert rep.recall == {"a": 0.75, "b": 0.5, "c": 1.0}
    assert rep.balanced_accuracy == pytest.approx(0.75)
    assert rep.accuracy == pytest.approx(6 / 8)
    assert rep.confusion == [[3, 1, 0], [1, 1, 0], [0, 0, 2]]
    png = plot_confusion(rep, tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _folder_set(n=12):
    images, labels, groups = [], [], []
    for k, kind in enumerate(["background", "stroma", "nuclei"]):
        tiles = synthetic_tiles(n, kind, seed=k)
        images += tiles
        labels += [k] * n
        groups += [f"{kind}-{i // 3}" for i in range(n)]  # 4 groups of 3 tiles per class
    return LabelledTiles(
        ["background", "stroma", "nuclei"],
        [ImageTiles(images)],
        np.array(labels),
        np.array(groups, object),
    )


def test_split_keeps_groups_together_and_stratifies():
    data = _folder_set()
    tr, va, mode = split_by_group(data, 0.3, seed=1)
    assert mode == "group"
    assert set(data.groups[tr]).isdisjoint(data.groups[va])
    for k in range(3):
        assert (data.labels[tr] == k).any() and (data.labels[va] == k).any()


def test_linear_probe_separates_separable_embeddings():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    y = np.repeat(np.arange(3), 30)
    x = centres[y] + 0.3 * rng.normal(size=(90, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    head = fit_linear_probe(x, y, 3, steps=100)
    assert (head.predict(x) == y).mean() > 0.95
    assert np.allclose(np.linalg.norm(head.class_embeddings, axis=1), 1, atol=1e-5)


def test_nan_embeddings_are_a_clear_error():
    x = np.ones((4, 8), np.float32)
    x[2, 3] = np.nan
    with pytest.raises(ValueError, match="1 of 4 embeddings contain NaN"):
        fit_linear_probe(x, np.array([0, 1, 0, 1]), 2, steps=2)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown fine-tuning mode"):
        FinetuneConfig(mode="lora")
    with pytest.raises(ValueError, match="epochs"):
        FinetuneConfig(epochs=0)


@pytest.mark.parametrize("mode", ["linear", "prompt", "partial"])
def test_finetune_modes_train_save_and_load(tmp_path, monkeypatch, mode):
    from napari_mrplip.finetune.run import finetune
    from napari_mrplip.models import catalog
    from napari_mrplip.models.encoders.finetuned import load_finetuned

    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    enc = make_encoder(tmp_path)
    out = tmp_path / f"ft-{mode}"
    cfg = FinetuneConfig(
        model=str(tmp_path / "tiny"), mode=mode, out_dir=str(out), epochs=3, batch_size=8
    )
    events = []
    result = finetune(cfg, _folder_set(), encoder=enc, callback=events.append)
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "done"
    assert any(e["event"] == "step" for e in events)
    assert 0.0 <= result.report.balanced_accuracy <= 1.0
    assert (out / "confusion.png").is_file() and (out / "head.safetensors").is_file()
    meta = json.loads((out / "finetune_config.json").read_text())
    assert meta["class_names"] == ["background", "stroma", "nuclei"] and meta["mode"] == mode
    assert any(
        e.spec == str(out.resolve()) and e.kind == "finetuned" for e in catalog.list_models()
    )
    loaded = load_finetuned(out, base=make_encoder(tmp_path))
    tiles = np.stack(synthetic_tiles(4, "stroma", seed=9))
    probs = loaded.classify(tiles)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # class names (bare or wrapped in a template) are its prompts: their vectors are the head's
    txt = loaded.encode_text(["stroma", "an H&E stained image of nuclei.", "something else"])
    assert np.allclose(txt[0], loaded.class_embeddings[1]) and np.allclose(
        txt[1], loaded.class_embeddings[2]
    )
    assert not np.allclose(txt[2], loaded.class_embeddings, atol=1e-3)


def test_one_class_only_is_a_clear_error():
    from napari_mrplip.finetune.data import check_usable

    data = LabelledTiles(
        ["a", "b"],
        [ImageTiles(synthetic_tiles(3, "stroma"))],
        np.zeros(3, np.int64),
        np.array(["x"] * 3, object),
    )
    with pytest.raises(FinetuneDataError, match="at least 2 classes.*no tiles inside: b"):
        check_usable(data, "test data")
