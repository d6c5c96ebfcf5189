"""Half-precision image towers: the CUDA inference path (bf16 weights, no autocast), on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from napari_mrplip.finetune.towers import trainable_model
from napari_mrplip.models.checkpoint import save_model
from napari_mrplip.models.encoders import get_encoder
from napari_mrplip.models.mrplip import build_model
from napari_mrplip.models.synthetic import micro_config


def _encoder(tmp_path):
    torch.manual_seed(0)
    path = save_model(build_model(micro_config()).eval(), tmp_path / "m")
    return get_encoder(str(path), device="cpu")


def _as_on_cuda(enc):
    """What ``TorchEncoder`` does with precision bf16 on CUDA (float32 tower set aside)."""
    import copy

    enc._fp32_visual = enc.module.visual
    enc.module.visual = copy.deepcopy(enc.module.visual).to(torch.bfloat16)


def _tiles(n=6):
    return np.random.default_rng(0).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)


def test_bf16_image_tower_matches_float32_and_training_gets_float32_back(tmp_path):
    enc = _encoder(tmp_path)
    ref = enc.encode_tiles(_tiles())
    _as_on_cuda(enc)
    assert enc._half_vision() == torch.bfloat16
    half = enc.encode_tiles(_tiles())
    assert half.dtype == np.float32 and (ref * half).sum(1).min() > 0.99
    assert not np.array_equal(ref, half)  # it really ran in bf16
    model = trainable_model(enc)  # fine-tuning takes the module: fp32 master weights
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert enc._half_vision() is None and np.array_equal(enc.encode_tiles(_tiles()), ref)


def test_a_float32_head_outside_the_tower_falls_back_to_full_precision(tmp_path, caplog):
    enc = _encoder(tmp_path)
    head = torch.nn.Linear(enc.embed_dim, enc.embed_dim)
    model = enc.module
    enc._image_fn = lambda x: head(model.encode_image(x))
    ref = enc.encode_tiles(_tiles())
    _as_on_cuda(enc)
    out = enc.encode_tiles(_tiles())  # bf16 tower output meets a float32 Linear: dtype error
    assert "using autocast" in caplog.text
    assert enc._half_vision() is None and np.array_equal(out, ref)
