"""open_clip directories (QuiltNet format): ``open_clip_config.json`` + weights.

``open_clip_config.json`` holds ``{"model_cfg": {...}, "preprocess_cfg": {"mean", "std"}}``
as written by open_clip's ``push_to_hf_hub``. Weights: ``open_clip_model.safetensors``,
``open_clip_pytorch_model.safetensors``/``.bin`` (``.bin`` read with weights_only=True).
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_mrplip.models.config import OPENAI_MEAN, OPENAI_STD
from napari_mrplip.models.encoders.base import TorchEncoder, pick_device
from napari_mrplip.models.encoders.weights import (
    find_weights,
    load_into,
    read_state_dict,
    weights_fingerprint,
)
from napari_mrplip.models.errors import ModelLoadError

PREFIX = "local-dir:"
CONFIG_NAME = "open_clip_config.json"


def _path(spec: str) -> Path:
    return Path(spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec).expanduser()


def is_open_clip_dir(spec: str) -> bool:
    """True when ``spec`` (with or without ``local-dir:``) holds ``open_clip_config.json``."""
    return (_path(spec) / CONFIG_NAME).is_file()


def detect(spec: str) -> bool:
    return spec.startswith(PREFIX) or is_open_clip_dir(spec)


def read_config(root: Path) -> dict:
    """The parsed ``open_clip_config.json`` of ``root`` (ModelLoadError if unusable)."""
    path = root / CONFIG_NAME
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: not an open_clip model directory")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("model_cfg"), dict):
        raise ModelLoadError(f"{path} has no 'model_cfg' object")
    text_cfg = raw["model_cfg"].get("text_cfg", {})
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise ModelLoadError(
            f"{path}: Hugging Face text towers/tokenizers are not supported offline"
        )
    return raw


def build_open_clip(model_cfg: dict):
    """Instantiate the open_clip class ``model_cfg`` describes (random weights)."""
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = dict(model_cfg)
    custom = cfg.pop("custom_text", False)
    cls = CoCa if "multimodal_cfg" in cfg else CustomTextCLIP if custom else CLIP
    try:
        return cls(**cfg)
    except (TypeError, ValueError, KeyError, AssertionError) as e:
        raise ModelLoadError(f"invalid open_clip model_cfg {model_cfg}: {e}") from e


def load(spec: str, device: str | None = None, precision: str = "auto") -> TorchEncoder:
    """Load an open_clip directory as an encoder."""
    from open_clip.tokenizer import SimpleTokenizer

    root = _path(spec)
    if not root.is_dir():
        raise ModelLoadError(f"open_clip directory {root} does not exist")
    raw = read_config(root)
    weights = find_weights(root)
    model = build_open_clip(raw["model_cfg"])
    load_into(model, read_state_dict(weights), weights)
    device = pick_device(device)
    model = model.float().to(device).eval()
    pre = raw.get("preprocess_cfg", {})
    size = raw["model_cfg"].get("vision_cfg", {}).get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    ctx = int(raw["model_cfg"].get("text_cfg", {}).get("context_length", 77))
    tok = SimpleTokenizer(context_length=ctx)
    return TorchEncoder(
        model_id=f"open_clip:{root.name}:{weights_fingerprint(weights)}",
        image_fn=lambda x: model.encode_image(x),
        text_fn=lambda texts: model.encode_text(tok(texts).to(device)),
        input_size=int(size),
        mean=tuple(pre.get("mean", OPENAI_MEAN)),
        std=tuple(pre.get("std", OPENAI_STD)),
        embed_dim=int(raw["model_cfg"]["embed_dim"]),
        logit_scale=float(model.logit_scale.detach().exp().clamp(max=100)),
        context_length=ctx,
        device=device,
        precision=precision,
        module=model,
        source=str(root),
    )
