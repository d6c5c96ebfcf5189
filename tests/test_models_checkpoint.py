"""Checkpoint directories: round trip, atomic files, clear errors for every broken input."""

from __future__ import annotations

import json

import pytest
import torch

from napari_mrplip.models.checkpoint import (
    CONFIG_FILE,
    DEMO_DIR,
    WEIGHTS_FILE,
    load_model,
    save_model,
)
from napari_mrplip.models.errors import ModelLoadError
from napari_mrplip.models.mrplip import build_model
from napari_mrplip.models.synthetic import micro_config, random_batch


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(micro_config()).eval()
    out = save_model(model, tmp_path_factory.mktemp("ckpt") / "final")
    return model, out


def _embed(model, batch):
    with torch.no_grad():
        return model.encode_image(model.preprocess(batch.images[:, 0]))


def test_round_trip_is_exact(saved):
    model, out = saved
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json"]
    )
    loaded = load_model(out)
    assert loaded.config == model.config and not loaded.training
    batch = random_batch(model.config, 2, 1)
    assert torch.equal(_embed(model, batch), _embed(loaded, batch))
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_half_precision_storage_loads_as_float32(saved, tmp_path):
    model, _ = saved
    out = save_model(model, tmp_path / "half", dtype="float16")
    full = (saved[1] / WEIGHTS_FILE).stat().st_size
    assert (out / WEIGHTS_FILE).stat().st_size < 0.6 * full
    loaded = load_model(out)
    assert next(loaded.parameters()).dtype == torch.float32
    batch = random_batch(model.config, 2, 1)
    assert torch.allclose(_embed(model, batch), _embed(loaded, batch), atol=2e-3)


def test_no_temporary_files_left_behind(saved):
    assert not [p for p in saved[1].iterdir() if p.name.startswith(".")]


def test_missing_directory_and_demo_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no MR-PLIP checkpoint"):
        load_model(tmp_path / "nope")
    if not DEMO_DIR.is_dir():
        with pytest.raises(ModelLoadError, match="mrplip pretrain"):
            load_model("mrplip-demo")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / CONFIG_FILE).unlink(), "missing"),
        (lambda d: (d / CONFIG_FILE).write_text("{not json"), "invalid MR-PLIP config"),
        (lambda d: (d / WEIGHTS_FILE).unlink(), "no weights"),
        (lambda d: (d / WEIGHTS_FILE).write_bytes(b"\xff" * 64), "not a readable safetensors"),
        (lambda d: _truncate(d / WEIGHTS_FILE), "not a readable safetensors"),
        (lambda d: _huge_header(d / WEIGHTS_FILE), "not a readable safetensors"),
        (lambda d: _other_width(d), "does not match"),
        (lambda d: (d / "tokenizer.json").write_text('{"kind": "bert"}'), "unsupported tokenizer"),
    ],
)
def test_broken_checkpoints_raise_model_load_error(saved, tmp_path, damage, message):
    out = save_model(saved[0], tmp_path / "ckpt")
    damage(out)
    with pytest.raises(ModelLoadError, match=message) as err:
        load_model(out)
    assert str(out) in str(err.value)
    assert isinstance(err.value, ValueError)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _huge_header(path):
    data = bytearray(path.read_bytes())
    data[:8] = (2**62).to_bytes(8, "little")  # header length far beyond the file size
    path.write_bytes(bytes(data))


def _other_width(d):
    raw = json.loads((d / CONFIG_FILE).read_text())
    raw["fusion"]["width"] = 32
    (d / CONFIG_FILE).write_text(json.dumps(raw))
