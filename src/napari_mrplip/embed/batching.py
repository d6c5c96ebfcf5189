"""Device batching helpers: device choice, batch sizes, pinned buffers, OOM back-off.

The encoder backend runs the model (autocast to bf16/fp16 on CUDA, inference mode); this
module decides how much to give it at once and recovers from CUDA out-of-memory by halving
the batch. torch is imported only when a CUDA device is in play.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

log = logging.getLogger(__name__)

#: Default tiles per batch by device kind.
DEFAULT_BATCH = {"cuda": 256, "mps": 64, "cpu": 32}


class DeviceUnavailableError(RuntimeError):
    """The requested device does not exist on this machine."""


def resolve_device(requested: str | None) -> str:
    """``None``/``"auto"`` -> ``"cuda"`` when a GPU is present else ``"cpu"``.

    Raises
    ------
    DeviceUnavailableError
        For ``"cuda..."`` on a machine without a usable CUDA GPU.
    """
    if requested in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"--device {requested} was asked for but no CUDA GPU is available here "
                "(torch.cuda.is_available() is False); use --device cpu or omit --device."
            )
    return requested


def decode_workers(device: str) -> int:
    """Tile-decoding threads from the cores torch leaves free.

    On CPU, torch's intra-op threads run the model; decode threads beyond the remaining
    cores only compete with it (on 2 cores with 2 torch threads: 1 decode thread). On an
    accelerator the CPU is free for decoding: every core.
    """
    import os

    cores = os.cpu_count() or 1
    if not str(device).startswith("cpu"):
        return max(2, cores)
    torch = sys.modules.get("torch")
    used = int(torch.get_num_threads()) if torch is not None else cores
    return max(1, cores - used)


def default_batch_size(device: str) -> int:
    """Tiles per batch for a device string (``"cuda:0"`` -> the CUDA default)."""
    return DEFAULT_BATCH.get(str(device).split(":")[0], DEFAULT_BATCH["cpu"])


def tile_allocator(device: str):
    """``alloc(shape) -> uint8 array``; page-locked (pinned) memory on CUDA for fast copies."""
    if not str(device).startswith("cuda"):
        return lambda shape: np.empty(shape, np.uint8)
    import torch

    return lambda shape: torch.empty(shape, dtype=torch.uint8, pin_memory=True).numpy()


def is_oom(error: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _free_cuda() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class AdaptiveBatcher:
    """Encodes tiles in chunks of ``batch_size``, halving it on out-of-memory.

    Parameters
    ----------
    encoder : EncoderBackend
    batch_size : int
        Starting chunk size; lowered for good after an OOM.
    """

    def __init__(self, encoder, batch_size: int):
        self.encoder = encoder
        self.batch_size = max(1, int(batch_size))

    def encode(self, tiles: np.ndarray) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 -> ``(B, D)`` float32 embeddings."""
        out, i = [], 0
        while i < len(tiles):
            chunk = tiles[i : i + self.batch_size]
            try:
                out.append(np.asarray(self.encoder.encode_tiles(chunk), np.float32))
            except RuntimeError as e:
                if not is_oom(e) or self.batch_size == 1:
                    raise
                _free_cuda()
                self.batch_size //= 2
                log.warning("out of memory: batch size lowered to %d", self.batch_size)
                continue
            i += len(chunk)
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
