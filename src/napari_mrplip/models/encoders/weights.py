"""Safe reading of foreign weight files: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from napari_mrplip.models.errors import ModelLoadError

#: Weight file names tried in order: open_clip's own preference (``factory._find_checkpoint_in_dir``):
#: its named files first, then the generic Hugging Face names.
WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
#: Largest JSON/YAML/tokenizer side file read (bytes): a malformed one cannot exhaust memory.
MAX_SIDE_FILE = 64 << 20


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


@dataclass(frozen=True)
class LoadReport:
    """What ``load_state_dict`` did with a foreign file.

    Attributes
    ----------
    path : str
        The weights file.
    missing : tuple of str
        Model parameters the file does not hold (left at their random initial values).
    unexpected : tuple of str
        File tensors the model has no place for (not used).
    skipped : int
        File tensors deliberately not loaded (e.g. CONCH's captioning decoder).
    """

    path: str
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    skipped: int = 0

    @property
    def clean(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        """One line: counts and the first few key names of each kind."""

        def few(keys):
            return ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")

        parts = [f"{self.path}:"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s) left random ({few(self.missing)})")
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} unexpected key(s) unused ({few(self.unexpected)})"
            )
        if self.skipped:
            parts.append(f"{self.skipped} key(s) skipped by design")
        return " ".join(parts) if len(parts) > 1 else f"{self.path}: all keys loaded"


def load_into(
    model: torch.nn.Module, state: dict, path: Path, strict: bool = True, skipped: int = 0
) -> LoadReport:
    """Load ``state`` into ``model``; return (and warn about) missing/unexpected keys.

    ``strict=True`` (open_clip's and transformers' behaviour) raises ModelLoadError naming
    ``path`` on any mismatch; ``strict=False`` (CONCH's own loader) loads what fits and
    reports the rest with a ``UserWarning``: nothing is dropped silently. Shape mismatches
    are always an error.
    """
    try:
        result = model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise ModelLoadError(
            f"weights {path} do not fit the architecture in its config: {e}"
        ) from e
    report = LoadReport(
        str(path), tuple(result.missing_keys), tuple(result.unexpected_keys), skipped
    )
    if not report.clean:
        warnings.warn(report.summary(), UserWarning, stacklevel=2)
    return report


def check_size_fits(model: torch.nn.Module, path: Path, slack: float = 1.05) -> None:
    """Refuse a config whose parameters cannot be in ``path`` (bounds what a bad config allocates).

    Call with ``model`` built on the ``meta`` device (no memory): even at 2 bytes per
    parameter the weights must fit in the file.
    """
    n = sum(p.numel() for p in model.parameters())
    need = 2 * n
    have = path.stat().st_size
    if need > have * slack + (1 << 20):
        raise ModelLoadError(
            f"the config next to {path} describes {n / 1e6:.1f} M parameters "
            f"(>= {need / 1e9:.2f} GB) but the file holds {have / 1e9:.2f} GB: config and "
            "weights do not belong together; use the config published with these weights"
        )


def read_side_file(path: Path, limit: int = MAX_SIDE_FILE) -> str:
    """Text of a small side file (config, tokenizer) after a size check."""
    size = path.stat().st_size
    if size > limit:
        raise ModelLoadError(
            f"{path} is {size / 2**20:.0f} MiB, larger than any published config or "
            f"tokenizer ({limit >> 20} MiB): replace it with the published file"
        )
    return path.read_text(encoding="utf-8")


def read_json_object(path: Path) -> dict | None:
    """A side file's JSON object, or None when absent, unreadable or not an object (detection)."""
    if not path.is_file():
        return None
    try:
        raw = json.loads(read_side_file(path))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def build_bounded(make, weights: Path):
    """``make()`` once on the meta device to check its size against ``weights``, then for real."""
    with torch.device("meta"):
        probe = make()
    check_size_fits(probe, weights)
    del probe
    return make()


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
