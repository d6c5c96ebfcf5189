"""PLIP and other transformers ``CLIPModel`` directories (``save_pretrained`` layout).

Expected files: ``config.json`` (``model_type: "clip"``), ``model.safetensors`` or
``pytorch_model.bin``, tokenizer files (``tokenizer.json`` or ``vocab.json`` +
``merges.txt``) and optionally ``preprocessor_config.json`` (mean, std, crop size).
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_mrplip.models.config import OPENAI_MEAN, OPENAI_STD
from napari_mrplip.models.encoders.base import TorchEncoder, pick_device
from napari_mrplip.models.encoders.weights import find_weights, weights_fingerprint
from napari_mrplip.models.errors import ModelLoadError


def _read_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return raw


def detect(spec: str) -> bool:
    path = Path(spec).expanduser() / "config.json"
    if not path.is_file():
        return False
    try:
        return _read_json(path).get("model_type") == "clip"
    except ModelLoadError:
        return False


def _preprocess(root: Path, image_size: int) -> tuple[int, tuple, tuple]:
    path = root / "preprocessor_config.json"
    raw = _read_json(path) if path.is_file() else {}
    crop = raw.get("crop_size", image_size)
    size = crop.get("height", image_size) if isinstance(crop, dict) else crop
    mean = tuple(raw.get("image_mean", OPENAI_MEAN))
    std = tuple(raw.get("image_std", OPENAI_STD))
    return int(size), mean, std


def load(spec: str, device: str | None = None, precision: str = "auto") -> TorchEncoder:
    """Load a transformers CLIPModel directory (e.g. PLIP) as an encoder."""
    from transformers import AutoTokenizer, CLIPModel

    root = Path(spec).expanduser()
    weights = find_weights(root, ("model.safetensors", "pytorch_model.bin"))
    try:
        model = CLIPModel.from_pretrained(root, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(root, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ModelLoadError(f"cannot load the transformers CLIPModel in {root}: {e}") from e
    device = pick_device(device)
    model = model.float().to(device).eval()
    cfg = model.config
    size, mean, std = _preprocess(root, cfg.vision_config.image_size)
    ctx = int(cfg.text_config.max_position_embeddings)

    def text_fn(texts: list[str]):
        enc = tok(texts, padding=True, truncation=True, max_length=ctx, return_tensors="pt")
        return _features(model.get_text_features(**{k: v.to(device) for k, v in enc.items()}))

    return TorchEncoder(
        model_id=f"clip-hf:{root.name}:{weights_fingerprint(weights)}",
        image_fn=lambda x: _features(model.get_image_features(pixel_values=x)),
        text_fn=text_fn,
        input_size=size,
        mean=mean,
        std=std,
        embed_dim=int(cfg.projection_dim),
        logit_scale=float(model.logit_scale.detach().exp().clamp(max=100)),
        context_length=ctx,
        device=device,
        precision=precision,
        module=model,
        source=str(root),
    )


def _features(out):
    """Projected features from ``get_*_features`` (a tensor, or in transformers >= 5 an
    output object whose ``pooler_output`` holds the projection)."""
    return out if hasattr(out, "float") else out.pooler_output
