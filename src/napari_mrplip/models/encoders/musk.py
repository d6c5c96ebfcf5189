"""MUSK (Xiang et al., Nature 2025) through its authors' package, when installed.

MUSK is a BEiT-3 multiway transformer (``musk_large_patch16_384``, 384 px, mean/std 0.5,
XLM-R sentencepiece tokenizer ``tokenizer.spm``, 100-token context) whose model code exists
only in the authors' package (``pip install git+https://github.com/lilab-stanford/MUSK``;
it registers the architecture with timm and ships ``tokenizer.spm``). The hub copy
(``xiangjx/musk``) is a ``model.safetensors`` with ``beit3.*`` keys. Rebuilding BEiT-3
natively is not done here; with the package installed this backend builds the model
through timm, loads the safetensors file with the keys reported, and embeds as the
authors' README does (``with_head=True, out_norm=True``; ``ms_aug=True`` for images).
Without the package the error says what to install. Spec: ``musk:PATH`` or a folder /
``hf-hub:`` entry whose ``model.safetensors`` holds ``beit3.*`` keys.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import struct
from pathlib import Path

from napari_mrplip.models.encoders.base import TorchEncoder, pick_device
from napari_mrplip.models.encoders.weights import (
    load_into,
    read_state_dict,
    weights_fingerprint,
)
from napari_mrplip.models.errors import ModelLoadError

PREFIX = "musk:"
ARCH = "musk_large_patch16_384"
INSTALL = "pip install git+https://github.com/lilab-stanford/MUSK"
SIZE, MEAN, STD, CONTEXT = 384, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 100


def _header_keys(path: Path, limit: int = 64 << 20) -> list[str]:
    """Tensor names in a safetensors header (bounded read; [] when not safetensors)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > limit:
                return []
            return list(json.loads(f.read(n)))
    except (OSError, ValueError, struct.error):
        return []


def detect(spec: str) -> bool:
    if spec.startswith(PREFIX):
        return True
    path = Path(spec).expanduser() / "model.safetensors"
    return path.is_file() and any(k.startswith("beit3.") for k in _header_keys(path))


def _package():
    if importlib.util.find_spec("musk") is None:
        raise ModelLoadError(
            f"MUSK's model code is in its authors' package, which is not installed: {INSTALL} "
            "(then the same --model works; weights stay the hub's model.safetensors)"
        )
    return importlib.import_module("musk.modeling"), importlib.import_module("musk.utils")


def load(spec: str, device: str | None = None, precision: str = "auto") -> TorchEncoder:
    """Load MUSK with the authors' package (ModelLoadError saying how when it is missing)."""
    import timm
    from transformers import XLMRobertaTokenizer

    root = Path(spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec).expanduser()
    weights = root / "model.safetensors" if root.is_dir() else root
    if not weights.is_file():
        raise ModelLoadError(
            f"no MUSK weights at {weights}: download model.safetensors from the hub "
            "(huggingface-cli download xiangjx/musk model.safetensors)"
        )
    modeling, utils = _package()
    spm = Path(modeling.__file__).parent / "models" / "tokenizer.spm"
    if not spm.is_file():
        raise ModelLoadError(f"the installed MUSK package lacks {spm}; reinstall it ({INSTALL})")
    model = timm.create_model(ARCH)
    state = {k.removeprefix("model."): v for k, v in read_state_dict(weights).items()}
    report = load_into(model, state, weights, strict=False)
    device = pick_device(device)
    model = model.float().to(device).eval()
    tok = XLMRobertaTokenizer(str(spm))

    def image_fn(x):
        return model(image=x, with_head=True, out_norm=True, ms_aug=True, return_global=True)[0]

    def text_fn(texts: list[str]):
        import torch

        pairs = [utils.xlm_tokenizer(t, tok, max_len=CONTEXT) for t in texts]
        ids = torch.tensor([p[0] for p in pairs], device=device)
        pad = torch.tensor([p[1] for p in pairs], device=device)
        return model(
            text_description=ids,
            padding_mask=pad,
            with_head=True,
            out_norm=True,
            ms_aug=False,
            return_global=True,
        )[1]

    return TorchEncoder(
        model_id=f"musk:{root.name}:{weights_fingerprint(weights)}",
        image_fn=image_fn,
        text_fn=text_fn,
        input_size=SIZE,
        mean=MEAN,
        std=STD,
        embed_dim=1024,
        logit_scale=float(model.logit_scale.detach().exp().clamp(max=100)),
        context_length=CONTEXT,
        device=device,
        precision=precision,
        module=model,
        source=str(root),
        load_report=report,
    )
