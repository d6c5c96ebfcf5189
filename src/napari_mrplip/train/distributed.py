"""Process-group set-up from torchrun's environment variables.

A plain ``python -m napari_mrplip.train`` run is one process (rank 0 of 1, no process
group). Under ``torchrun`` (``WORLD_SIZE > 1``) the group is initialised from the
``env://`` variables: NCCL on CUDA (one GPU per local rank), gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> str:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
        return f"cuda:{local_rank}"
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; returns this process's place."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.startswith("cuda") else "gloo"
        if resolved.startswith("cuda"):
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved)


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average a dict of scalars over processes (identity in a single process)."""
    if not info.distributed:
        return values
    keys = sorted(values)
    buf = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if info.device.startswith("cuda"):
        buf = buf.to(info.device)
    dist.all_reduce(buf)
    buf /= info.world_size
    return dict(zip(keys, buf.tolist()))


def any_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is True on any rank (stop requests, errors)."""
    if not info.distributed:
        return flag
    buf = torch.tensor([1.0 if flag else 0.0])
    if info.device.startswith("cuda"):
        buf = buf.to(info.device)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return bool(buf.item() > 0)


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
