"""KEEP (Zhou et al., knowledge-enhanced pathology VLM), built natively; its shipped code never runs.

The hub folder (``Astaxanthin/KEEP``) holds ``config.json`` (``model_type: "keep"``,
``text_config`` = BERT arguments, ``projection_dim``), ``model.safetensors``, BERT tokenizer
files (``vocab.txt``, ...) and ``modeling_keep.py``, which ``AutoModel`` would only run with
``trust_remote_code=True``. We never do: the model is rebuilt from timm and transformers
classes with the key names that file defines:

* ``visual``: timm ``vit_large_patch16_224`` with the arguments KEEP's code passes
  (:data:`VISION_ARGS`, copied as data), ``visual_head`` = Linear-GELU-Linear to
  ``projection_dim``;
* ``text``: transformers ``BertModel(BertConfig(**text_config))``; the text embedding is
  its ``pooler_output``;
* ``logit_scale``.

Preprocessing as KEEP's README: 224 px, ImageNet mean/std; texts padded to 256 tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from napari_mrplip.models.encoders.base import TorchEncoder, pick_device
from napari_mrplip.models.encoders.weights import (
    build_bounded,
    find_weights,
    load_into,
    read_json_object,
    read_side_file,
    read_state_dict,
    weights_fingerprint,
)
from napari_mrplip.models.errors import ModelLoadError

#: The vision tower KEEP's ``modeling_keep.py`` builds (timm name and arguments).
VISION_ARCH = "vit_large_patch16_224"
VISION_ARGS = {
    "img_size": 224,
    "patch_size": 16,
    "init_values": 1e-5,
    "num_classes": 0,
    "dynamic_img_size": True,
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CONTEXT_LENGTH = 256


def _config(root: Path) -> dict | None:
    raw = read_json_object(root / "config.json")
    return raw if raw is not None and raw.get("model_type") == "keep" else None


def detect(spec: str) -> bool:
    root = Path(spec).expanduser()
    return root.is_dir() and _config(root) is not None


class KeepModel(nn.Module):
    """KEEP's towers under its published key names."""

    def __init__(self, cfg: dict, vision_args: dict | None = None):
        super().__init__()
        import timm
        from transformers import BertConfig, BertModel

        args = {**VISION_ARGS, **(vision_args or {})}
        dim = int(cfg.get("projection_dim", 768))
        self.visual = timm.create_model(VISION_ARCH, pretrained=False, **args)
        self.visual_head = nn.Sequential(
            nn.Linear(self.visual.num_features, dim), nn.GELU(), nn.Linear(dim, dim)
        )
        self.text = BertModel(BertConfig(**cfg.get("text_config", {})))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.04))  # KEEP's init

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual_head(self.visual(x))

    def encode_text(self, enc: dict) -> torch.Tensor:
        return self.text(**enc).pooler_output


def load(spec: str, device: str | None = None, precision: str = "auto") -> TorchEncoder:
    """Load a KEEP folder (hub layout) without running its code."""
    from transformers import BertTokenizerFast

    root = Path(spec).expanduser()
    cfg = _config(root)
    if not isinstance(cfg.get("text_config"), dict):
        raise ModelLoadError(f"{root}/config.json has no 'text_config' object (KEEP's BERT)")
    weights = find_weights(root, ("model.safetensors", "pytorch_model.bin"))
    if not (root / "vocab.txt").is_file():
        raise ModelLoadError(
            f"{root}: KEEP's tokenizer file vocab.txt is missing; it is in the hub repository "
            "(huggingface-cli download Astaxanthin/KEEP vocab.txt tokenizer_config.json)"
        )
    read_side_file(root / "vocab.txt")
    tok = BertTokenizerFast.from_pretrained(str(root), local_files_only=True)
    model = build_bounded(lambda: KeepModel(cfg), weights)
    report = load_into(model, read_state_dict(weights), weights)
    device = pick_device(device)
    model = model.float().to(device).eval()

    def text_fn(texts: list[str]) -> torch.Tensor:
        enc = tok(
            texts,
            max_length=CONTEXT_LENGTH,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        return model.encode_text({k: v.to(device) for k, v in enc.items()})

    return TorchEncoder(
        model_id=f"keep:{root.name}:{weights_fingerprint(weights)}",
        image_fn=model.encode_image,
        text_fn=text_fn,
        input_size=VISION_ARGS["img_size"],
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=int(cfg.get("projection_dim", 768)),
        logit_scale=float(model.logit_scale.detach().exp().clamp(max=100)),
        context_length=CONTEXT_LENGTH,
        device=device,
        precision=precision,
        module=model,
        source=str(root),
        load_report=report,
    )
