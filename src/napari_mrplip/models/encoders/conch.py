"""CONCH (Lu et al. 2024): its open_clip-derived CoCa, loaded for contrastive embedding only.

A CONCH directory holds

* weights: ``pytorch_model.bin`` (as on the Hugging Face hub; read with
  ``torch.load(weights_only=True)``) or ``*.safetensors``;
* the tokenizer: ``conch_byte_level_bpe_uncased.json`` (from CONCH's repository,
  ``conch/open_clip_custom/tokenizers/``) or ``tokenizer.json`` in the same format;
* optionally the architecture JSON shaped like CONCH's ``conch_ViT-B-16.json``
  (``embed_dim``, ``embed_dim_caption``, ``vision_cfg``, ``text_cfg``, ...), as
  ``conch_ViT-B-16.json``, ``conch_config.json`` or ``open_clip_config.json``; without it
  the published ``conch_ViT-B-16`` architecture is assumed (448 px, 128-token context).

What we build (our choice, documented in docs/models.md): the image side is a timm ViT
trunk + single-query attentional pooler + LayerNorm + projection (CONCH's
``proj_contrast`` path); the text side is open_clip's ``TextTransformer`` with an
appended CLS token (CONCH's layout). The captioning decoder and caption pooler are not
built: their weights are skipped. Preprocessing: resize to 448, OpenAI mean/std.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from napari_mrplip.models.config import OPENAI_MEAN, OPENAI_STD
from napari_mrplip.models.encoders.base import TorchEncoder, pick_device
from napari_mrplip.models.encoders.weights import load_into, read_state_dict, weights_fingerprint
from napari_mrplip.models.errors import ModelLoadError

#: The published ``conch_ViT-B-16`` architecture (values from CONCH's model config).
CONCH_VIT_B16 = {
    "embed_dim": 512,
    "embed_dim_caption": 768,
    "vision_cfg": {"image_size": 448, "patch_size": 16, "attn_pooler_heads": 8},
    "text_cfg": {
        "context_length": 128,
        "vocab_size": 32007,
        "width": 768,
        "heads": 12,
        "layers": 12,
    },
}
CONFIG_NAMES = ("conch_ViT-B-16.json", "conch_config.json", "open_clip_config.json", "config.json")
TOKENIZER_NAMES = ("conch_byte_level_bpe_uncased.json", "tokenizer.json")
WEIGHT_NAMES = ("pytorch_model.bin", "model.safetensors", "conch.safetensors")
SKIPPED_PREFIXES = ("text_decoder.", "visual.attn_pool_caption.", "visual.ln_caption.")


def _config_in(root: Path) -> dict | None:
    for name in CONFIG_NAMES:
        path = root / name
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ModelLoadError(f"cannot read {path}: {e}") from e
            if isinstance(raw, dict) and "embed_dim_caption" in raw:
                return raw
    return None


def detect(spec: str) -> bool:
    root = Path(spec).expanduser()
    if not root.is_dir():
        return False
    if (root / TOKENIZER_NAMES[0]).is_file():
        return True
    try:
        return _config_in(root) is not None
    except ModelLoadError:
        return True  # a CONCH-looking config that fails to parse: let load() report it


class ConchVisual(nn.Module):
    """timm ViT trunk -> attentional pooler (1 query) -> LayerNorm -> projection."""

    def __init__(self, embed_dim: int, vision_cfg: dict):
        super().__init__()
        from open_clip.transformer import AttentionalPooler
        from timm.models.vision_transformer import VisionTransformer

        v = {"layers": 12, "width": 768, "num_heads": 12, "mlp_ratio": 4, **vision_cfg}
        self.trunk = VisionTransformer(
            embed_dim=v["width"],
            depth=v["layers"],
            num_heads=v["num_heads"],
            mlp_ratio=v["mlp_ratio"],
            img_size=v["image_size"],
            patch_size=v["patch_size"],
            num_classes=0,
            dynamic_img_size=True,
        )
        heads = v.get("attn_pooler_heads", 8)
        self.attn_pool_contrast = AttentionalPooler(embed_dim, v["width"], heads, n_queries=1)
        self.ln_contrast = nn.LayerNorm(embed_dim)
        self.proj_contrast = nn.Parameter(torch.randn(embed_dim, embed_dim) * embed_dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)
        pooled = self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])
        return pooled @ self.proj_contrast


class ConchModel(nn.Module):
    """The contrastive half of CONCH: ``visual``, ``text`` and ``logit_scale``."""

    def __init__(self, cfg: dict):
        super().__init__()
        from open_clip.transformer import TextTransformer

        t = {"context_length": 128, "vocab_size": 32007, "width": 768, "heads": 12, "layers": 12}
        t.update({k: v for k, v in cfg.get("text_cfg", {}).items() if k in t})
        self.context_length = int(t["context_length"])
        self.visual = ConchVisual(int(cfg["embed_dim"]), cfg["vision_cfg"])
        # CONCH reserves the last of its 128 positions for the CLS token it appends.
        self.text = TextTransformer(
            context_length=self.context_length - 1,
            vocab_size=t["vocab_size"],
            width=t["width"],
            heads=t["heads"],
            layers=t["layers"],
            output_dim=int(cfg["embed_dim"]),
            embed_cls=True,
            pad_id=0,
        )
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens (P, context_length - 1)`` padded to full length (CLS is appended)."""
        return self.text(tokens)


def _tokenizer(root: Path, context_length: int):
    from transformers import PreTrainedTokenizerFast

    for name in TOKENIZER_NAMES:
        if (root / name).is_file():
            tok = PreTrainedTokenizerFast(
                tokenizer_file=str(root / name),
                bos_token="<start_of_text>",
                eos_token="<end_of_text>",
                pad_token="<pad>",
            )
            break
    else:
        raise ModelLoadError(
            f"no CONCH tokenizer in {root}: copy conch_byte_level_bpe_uncased.json from "
            "CONCH's repository (conch/open_clip_custom/tokenizers/) into it"
        )

    def encode(texts: list[str]) -> torch.Tensor:
        enc = tok(
            texts,
            max_length=context_length - 1,
            truncation=True,
            padding="max_length",
            return_tensors="pt",
        )
        return enc["input_ids"]

    return encode


def load(spec: str, device: str | None = None, precision: str = "auto") -> TorchEncoder:
    """Load a CONCH directory as an encoder."""
    root = Path(spec).expanduser()
    cfg = _config_in(root) or CONCH_VIT_B16
    weights = next((root / n for n in WEIGHT_NAMES if (root / n).is_file()), None)
    if weights is None:
        raise ModelLoadError(f"no CONCH weights in {root}: expected one of {WEIGHT_NAMES}")
    encode_tokens = _tokenizer(root, int(cfg.get("text_cfg", {}).get("context_length", 128)))
    model = ConchModel(cfg)
    state = read_state_dict(weights)
    state = {k: v for k, v in state.items() if not k.startswith(SKIPPED_PREFIXES)}
    load_into(model, state, weights)
    device = pick_device(device)
    model = model.float().to(device).eval()
    return TorchEncoder(
        model_id=f"conch:{root.name}:{weights_fingerprint(weights)}",
        image_fn=model.encode_image,
        text_fn=lambda texts: model.encode_text(encode_tokens(texts).to(device)),
        input_size=int(cfg["vision_cfg"]["image_size"]),
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        embed_dim=int(cfg["embed_dim"]),
        logit_scale=float(model.logit_scale.detach().exp().clamp(max=100)),
        context_length=model.context_length,
        device=device,
        precision=precision,
        module=model,
        source=str(root),
    )
