"""Device batching: OOM back-off, device resolution, batch defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mrplip.embed.batching import (
    AdaptiveBatcher,
    DeviceUnavailableError,
    default_batch_size,
    is_oom,
    resolve_device,
    tile_allocator,
)
from napari_mrplip.models.protocol import EncoderBase


class _MemoryBoundEncoder(EncoderBase):
    """Embeds tiles by their mean colour; raises torch's real OOM error above ``limit`` tiles
    per call, the way a CUDA model does when its activations do not fit."""

    def __init__(self, limit: int):
        self.limit = limit
        self.calls: list[int] = []

    def encode_tiles(self, tiles):
        self.calls.append(len(tiles))
        if len(tiles) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        e = tiles.reshape(len(tiles), -1, 3).mean(1).astype(np.float32) + 1
        return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_oom_halves_batch_and_keeps_results_in_order():
    tiles = np.random.default_rng(0).integers(0, 255, (100, 4, 4, 3), dtype=np.uint8)
    enc = _MemoryBoundEncoder(limit=20)
    b = AdaptiveBatcher(enc, batch_size=64)
    out = b.encode(tiles)
    assert b.batch_size == 16  # 64 -> 32 -> 16
    np.testing.assert_allclose(out, _MemoryBoundEncoder(1000).encode_tiles(tiles), rtol=1e-6)
    assert enc.calls[:3] == [64, 32, 16]


def test_oom_at_batch_one_raises_and_other_errors_pass_through():
    with pytest.raises(torch.OutOfMemoryError):
        AdaptiveBatcher(_MemoryBoundEncoder(limit=0), 4).encode(np.zeros((2, 4, 4, 3), np.uint8))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))


def test_devices_and_defaults():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="--device cpu"):
            resolve_device("cuda:0")
    assert default_batch_size("cuda:1") == 256 and default_batch_size("cpu") == 32
    assert tile_allocator("cpu")((2, 8, 8, 3)).shape == (2, 8, 8, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_allocator_on_cuda():
    buf = tile_allocator("cuda")((4, 16, 16, 3))
    assert torch.from_numpy(buf).is_pinned()
