"""Our checkpoint directory: ``mrplip_config.json`` + ``model.safetensors`` + ``tokenizer.json``.

* ``mrplip_config.json``: exactly ``MRPLIPConfig.to_dict()`` (so ``load_config`` reads it);
* ``model.safetensors``: the model's state dict (float32 or, if saved so, float16/bfloat16;
  loaded back as float32), metadata ``{"format": "mrplip", "format_version": "1"}``;
* ``tokenizer.json``: which tokenizer the text tower expects (informational; validated).

Every file is written to a temporary name in the same directory and renamed into place.
Nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from napari_mrplip.models.catalog import DEMO_MODEL
from napari_mrplip.models.config import MRPLIPConfig
from napari_mrplip.models.errors import ConfigError, ModelLoadError
from napari_mrplip.models.mrplip import MRPLIP
from napari_mrplip.models.tokenizer import MASK_TOKEN_ID, PAD_ID
from napari_mrplip.models.weights_check import check_fits, expected_shapes
from napari_mrplip.outputs import write_bytes

CONFIG_FILE = "mrplip_config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = "1"
DEMO_DIR = Path(__file__).with_name("weights") / DEMO_MODEL

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp name + rename with the user's umask (``napari_mrplip.outputs``)."""
    write_bytes(path, data, overwrite=True)


def tokenizer_info(cfg: MRPLIPConfig) -> dict:
    """The ``tokenizer.json`` content for a model of ``cfg``."""
    return {
        "kind": "open_clip_simple_bpe",
        "vocab_size": cfg.text.vocab_size,
        "pad_id": PAD_ID,
        "mask_token_id": MASK_TOKEN_ID,
        "context_length": cfg.context_length,
    }


def save_model(model: MRPLIP, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Write ``model`` as a checkpoint directory (created if needed) and return its path.

    Parameters
    ----------
    model : MRPLIP
        The model (a DDP wrapper's ``.module``, not the wrapper).
    out_dir : str or Path
        Target directory.
    dtype : {"float32", "float16", "bfloat16"}
        Storage precision of floating-point tensors (half halves the size).
    """
    from safetensors.torch import save

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().to(_DTYPES[dtype]) if v.is_floating_point() else v.detach())
        .cpu()
        .contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {"format": "mrplip", "format_version": FORMAT_VERSION, "dtype": dtype}
    _atomic_write_bytes(out / WEIGHTS_FILE, save(state, metadata=meta))
    text = json.dumps(tokenizer_info(model.config), indent=2)
    _atomic_write_bytes(out / TOKENIZER_FILE, text.encode())
    _atomic_write_bytes(out / CONFIG_FILE, json.dumps(model.config.to_dict(), indent=2).encode())
    return out


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """``"mrplip-demo"`` -> the embedded model's directory; anything else -> a Path."""
    return DEMO_DIR if str(path_or_name) == DEMO_MODEL else Path(path_or_name).expanduser()


def is_checkpoint_dir(path: str | Path) -> bool:
    """True when ``path`` looks like one of our checkpoint directories."""
    return (Path(path) / CONFIG_FILE).is_file()


def load_model(path_or_name: str | Path, device: str = "cpu") -> MRPLIP:
    """Load a checkpoint directory (or ``"mrplip-demo"``) into an ``MRPLIP`` in eval mode.

    Raises
    ------
    ModelLoadError
        The directory or a file is missing, the config is invalid, or the weights do not
        fit the config; the message names the path and says what to do.
    """
    root = resolve_checkpoint(path_or_name)
    if not root.is_dir():
        hint = (
            "the embedded demo model has not been built yet; train it with `mrplip pretrain` "
            "(see docs/models.md) or pass a checkpoint directory"
            if str(path_or_name) == DEMO_MODEL
            else "pass a directory written by save_model / `mrplip pretrain` (OUT/final)"
        )
        raise ModelLoadError(f"no MR-PLIP checkpoint at {root}: {hint}")
    cfg = _read_config(root / CONFIG_FILE)
    _check_tokenizer(root / TOKENIZER_FILE, cfg)
    if (root / WEIGHTS_FILE).is_file():  # shapes from the header, before building anything
        check_fits(root / WEIGHTS_FILE, expected_shapes(lambda: MRPLIP(cfg)), str(root / CONFIG_FILE))
    state = _read_weights(root / WEIGHTS_FILE)
    model = MRPLIP(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(
            f"{root / WEIGHTS_FILE} does not match {root / CONFIG_FILE}: {e}. "
            "The config and the weights come from different models; re-export the checkpoint."
        ) from e
    return model.float().to(device).eval()


def _read_config(path: Path) -> MRPLIPConfig:
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: not an MR-PLIP checkpoint directory")
    try:
        return MRPLIPConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, ConfigError) as e:
        raise ModelLoadError(f"invalid MR-PLIP config {path}: {e}") from e


def _check_tokenizer(path: Path, cfg: MRPLIPConfig) -> None:
    if not path.is_file():
        return  # optional: older checkpoints and hand-made ones may lack it
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    expected = tokenizer_info(cfg)
    if not isinstance(info, dict) or info.get("kind") != expected["kind"]:
        raise ModelLoadError(f"{path}: unsupported tokenizer {info!r}; expected {expected}")
    if info.get("mask_token_id") != MASK_TOKEN_ID or info.get("pad_id") != PAD_ID:
        raise ModelLoadError(f"{path}: special token ids differ from this version's {expected}")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: the checkpoint has no weights")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{path} is not a readable safetensors file: {e}") from e
