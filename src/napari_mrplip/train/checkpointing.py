"""Atomic training-state checkpoints and exact resume.

Schema of ``OUT/checkpoints/step_XXXXXXX/`` (written to ``.tmp-step_XXXXXXX`` then renamed,
so a directory with the final name is always complete):

- ``model.safetensors``: the model's state (safetensors, shared tensors handled).
- ``state.pt``: ``{"version": 1, "step", "optimizer", "scheduler", "scaler", "data"}``, only
  tensors and plain Python values (read back with ``torch.load(weights_only=True)``).
- ``rng_rank{R}.pt``: ``{"python", "numpy", "torch", "cuda"}`` random states of rank R.
- ``meta.json``: step, world size, time (for humans and the GUI).
"""

from __future__ import annotations

import errno
import json
import pickle
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model

from napari_mrplip.outputs import DiskFullError

from .distributed import DistInfo, barrier

STATE_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{7,})$")


class CheckpointError(RuntimeError):
    """A training checkpoint is missing, incomplete or does not match this run."""


@dataclass
class TrainState:
    """Everything that evolves during training (besides the model's weights)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:07d}"


def rng_state() -> dict:
    """This process's random states (python, numpy, torch, cuda) as weights-only-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of ``rng_state``."""
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


def save_checkpoint(
    root: Path, step: int, model: torch.nn.Module, state: TrainState, data: dict, info: DistInfo
) -> Path:
    """Write the checkpoint of ``step`` atomically; every rank must call it. Returns its dir."""
    root = Path(root)
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(info)
    try:
        _write_checkpoint(tmp, final, step, model, state, data, info)
    except (OSError, RuntimeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a partial folder filling the disk
        if _disk_full(e, root):
            raise DiskFullError(
                errno.ENOSPC,
                f"{root}: the disk is full; the checkpoint of step {step} was not written "
                f"(earlier checkpoints are intact). Free space and --resume ({e})",
            ) from e
        raise
    barrier(info)
    return final


def _disk_full(e: BaseException, root: Path) -> bool:
    """ENOSPC, torch's "unexpected pos" stream error on a full disk, or < 1 MB left."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e).lower()
    if "no space left" in text or "unexpected pos" in text:
        return True
    try:
        return shutil.disk_usage(root).free < 1024**2
    except OSError:
        return False


def _write_checkpoint(tmp, final, step, model, state, data, info) -> None:
    torch.save(rng_state(), tmp / f"rng_rank{info.rank}.pt")
    barrier(info)
    if info.is_main:
        st_save_model(model, str(tmp / "model.safetensors"))
        payload = {
            "version": STATE_VERSION,
            "step": step,
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "data": data,
        }
        torch.save(payload, tmp / "state.pt")
        meta = {"step": step, "world_size": info.world_size, "time": time.time()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint dirs under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model: torch.nn.Module, state: TrainState, info: DistInfo) -> dict:
    """Restore model, optimizer, scheduler, scaler and this rank's RNG; returns ``state.pt``.

    Raises
    ------
    CheckpointError
        If a file is missing or does not fit the model/run.
    """
    path = Path(path)
    for name in ("model.safetensors", "state.pt"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: incomplete training checkpoint (no {name})")
    try:
        st_load_model(model, str(path / "model.safetensors"), strict=True, device=_device(model))
        payload = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        state.optimizer.load_state_dict(payload["optimizer"])
        state.scheduler.load_state_dict(payload["scheduler"])
        state.scaler.load_state_dict(payload["scaler"])
    except (RuntimeError, KeyError, ValueError, TypeError, OSError, EOFError,
            pickle.UnpicklingError, SafetensorError) as e:  # fmt: skip
        raise CheckpointError(
            f"{path}: cannot restore training state ({e}); was it written by a run with "
            "another model config or precision? Start a fresh --out directory instead."
        ) from e
    rng_file = path / f"rng_rank{info.rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    return payload


def _device(model: torch.nn.Module) -> str:
    param = next(model.parameters(), None)
    return "cpu" if param is None else str(param.device)
