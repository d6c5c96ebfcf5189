"""Safe reading of foreign weight files: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import torch

from napari_mrplip.models.errors import ModelLoadError

#: Weight file names tried in order (safetensors first).
WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)


def find_weights(root: Path, names: tuple[str, ...] = WEIGHT_NAMES) -> Path:
    """The first existing weight file of ``names`` in ``root``; ModelLoadError if none."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise ModelLoadError(
        f"no weights in {root}: expected one of {', '.join(names)}. "
        "Copy the model's weight file into that directory."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat state dict from ``path`` (never unpickles arbitrary objects).

    ``{"state_dict": ...}`` wrappers and DDP ``module.`` prefixes are removed.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    errors = (OSError, RuntimeError, ValueError, EOFError, KeyError, IndexError)
    errors += (pickle.UnpicklingError, zipfile.BadZipFile, SafetensorError)
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except errors as e:
        raise ModelLoadError(f"cannot read weights {path}: {e}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} does not hold a flat tensor state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_into(model: torch.nn.Module, state: dict, path: Path, strict: bool = True) -> None:
    """``model.load_state_dict(state)`` with a ModelLoadError naming ``path`` on mismatch."""
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise ModelLoadError(
            f"weights {path} do not fit the architecture in its config: {e}"
        ) from e


def weights_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """Short content hash (size + first and last MiB) identifying a weights file."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        f.seek(max(0, size - chunk))
        h.update(f.read(chunk))
    return h.hexdigest()[:12]
