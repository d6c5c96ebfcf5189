"""open_clip directories (QuiltNet format): ``open_clip_config.json`` + weights.

``open_clip_config.json`` holds ``{"model_cfg": {...}, "preprocess_cfg": {"mean", "std"}}``
as written by open_clip's ``push_to_hf_hub``. Weights in open_clip's own order
(``weights.WEIGHT_NAMES``; ``.bin`` read with weights_only=True); loading is strict, as
open_clip's ``load_checkpoint``.

Hugging Face text towers (BiomedCLIP, QuiltNet-B-16-PMB: ``text_cfg.hf_model_name``) are
built offline from the text model's ``config.json`` (``hf_text.py``): never downloaded,
never pretrained weights, the tower's weights come from the open_clip checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_mrplip.models.config import OPENAI_MEAN, OPENAI_STD
from napari_mrplip.models.encoders.base import TorchEncoder, pick_device
from napari_mrplip.models.encoders.weights import (
    build_bounded,
    find_weights,
    load_into,
    read_side_file,
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
        raw = json.loads(read_side_file(path))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("model_cfg"), dict):
        raise ModelLoadError(f"{path} has no 'model_cfg' object")
    return raw


def build_open_clip(model_cfg: dict):
    """Instantiate the open_clip class ``model_cfg`` describes (random weights)."""
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = dict(model_cfg)
    # open_clip's factory: an HF text tower always means CustomTextCLIP
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    cls = CoCa if "multimodal_cfg" in cfg else CustomTextCLIP if custom else CLIP
    try:
        return cls(**cfg)
    except (TypeError, ValueError, KeyError, AssertionError) as e:
        raise ModelLoadError(f"invalid open_clip model_cfg {model_cfg}: {e}") from e


def load(spec: str, device: str | None = None, precision: str = "auto") -> TorchEncoder:
    """Load an open_clip directory as an encoder."""
    root = _path(spec)
    if not root.is_dir():
        raise ModelLoadError(f"open_clip directory {root} does not exist")
    raw = read_config(root)
    weights = find_weights(root)
    return encoder_from(raw, weights, root, f"open_clip:{root.name}", device, precision)


def _tokenizer(model_cfg: dict, root: Path):
    """CLIP's BPE, or the Hugging Face tokenizer found locally for an HF text tower."""
    from open_clip.tokenizer import SimpleTokenizer

    text_cfg = model_cfg.get("text_cfg", {})
    ctx = int(text_cfg.get("context_length", 77))
    if not (text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")):
        return SimpleTokenizer(context_length=ctx)
    from napari_mrplip.models.encoders.hf_text import hf_tokenizer

    return hf_tokenizer(text_cfg, root, ctx)


def encoder_from(
    raw: dict, weights: Path, root: Path, name: str, device: str | None, precision: str
) -> TorchEncoder:
    """Build the open_clip model ``raw`` describes, load ``weights`` strictly, wrap it."""
    from napari_mrplip.models.encoders.hf_text import localise_text_cfg

    model_cfg = localise_text_cfg(raw["model_cfg"], root)
    tok = _tokenizer(model_cfg, root)
    model = build_bounded(lambda: build_open_clip(model_cfg), weights)
    report = load_into(model, read_state_dict(weights), weights)
    device = pick_device(device)
    model = model.float().to(device).eval()
    pre = raw.get("preprocess_cfg", {})
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    ctx = int(model_cfg.get("text_cfg", {}).get("context_length", 77))
    return TorchEncoder(
        model_id=f"{name}:{weights_fingerprint(weights)}",
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
        load_report=report,
    )
