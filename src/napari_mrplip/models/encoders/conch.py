"""CONCH (Lu et al. 2024): its open_clip-derived CoCa, loaded for contrastive embedding only.

A CONCH directory is accepted as the authors publish it: the Hugging Face hub copy
(``MahmoodLab/CONCH``) holds only ``pytorch_model.bin`` + ``meta.yaml``; the tokenizer
(``conch_byte_level_bpe_uncased.json``) and the architecture (``conch_ViT-B-16.json``) live
in the authors' Python package (``conch/open_clip_custom/tokenizers/`` and
``model_configs/``). Each side file is looked up in the folder first, then in the installed
``conch`` package (located with ``importlib.util.find_spec``; none of its code is run).
Without a config file the published ``conch_ViT-B-16`` values below are used.

Loading follows the authors' ``load_checkpoint``: ``strict=False``, with the missing and
unexpected keys reported as a warning and on ``encoder.load_report``. The attentional
pooler always has 8 heads, as CONCH's ``VisualModel`` (its ``attn_pooler_heads`` default is
never overridden from the config).

What we build (our choice, documented in docs/models.md): the image side is a timm ViT
trunk + single-query attentional pooler + LayerNorm + projection (CONCH's
``proj_contrast`` path); the text side is open_clip's ``TextTransformer`` with an
appended CLS token (CONCH's layout). The captioning decoder and caption pooler are not
built: their weights are skipped. Preprocessing: resize to 448, OpenAI mean/std.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from napari_mrplip.models.config import OPENAI_MEAN, OPENAI_STD
from napari_mrplip.models.encoders.base import TorchEncoder, pick_device
from napari_mrplip.models.encoders.weights import (
    build_bounded,
    load_into,
    read_side_file,
    read_state_dict,
    weights_fingerprint,
)
from napari_mrplip.models.errors import ModelLoadError

#: The published ``conch_ViT-B-16`` architecture (values from CONCH's ``conch_ViT-B-16.json``).
CONCH_VIT_B16 = {
    "embed_dim": 512,
    "embed_dim_caption": 768,
    "vision_cfg": {"image_size": 448, "patch_size": 16},
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
#: CONCH's ``VisualModel`` always builds its attentional poolers with 8 heads.
POOLER_HEADS = 8
#: Where the authors' package keeps the side files (relative to the ``conch`` package).
PACKAGE_TOKENIZER = ("open_clip_custom", "tokenizers", "conch_byte_level_bpe_uncased.json")
PACKAGE_CONFIG = ("open_clip_custom", "model_configs", "conch_ViT-B-16.json")
INSTALL_HINT = "pip install git+https://github.com/mahmoodlab/CONCH.git"


def package_file(parts: tuple[str, ...]) -> Path | None:
    """A data file of the installed ``conch`` package, or None (its code is never run)."""
    try:
        spec = importlib.util.find_spec("conch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base).joinpath(*parts)
        if path.is_file():
            return path
    return None


def _read_config(path: Path) -> dict | None:
    try:
        raw = json.loads(read_side_file(path))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    return raw if isinstance(raw, dict) and "embed_dim_caption" in raw else None


def _config_in(root: Path) -> dict | None:
    for name in CONFIG_NAMES:
        if (root / name).is_file() and (cfg := _read_config(root / name)) is not None:
            return cfg
    return None


def _is_hub_copy(root: Path) -> bool:
    """The hub layout: ``pytorch_model.bin`` next to a ``meta.yaml``."""
    return (root / "pytorch_model.bin").is_file() and (root / "meta.yaml").is_file()


def detect(spec: str) -> bool:
    root = Path(spec).expanduser()
    if not root.is_dir():
        return False
    if (root / TOKENIZER_NAMES[0]).is_file() or _is_hub_copy(root):
        return True
    try:
        return _config_in(root) is not None
    except ModelLoadError:
        return True  # a CONCH-looking config that fails to parse: let load() report it


def find_config(root: Path) -> dict:
    """The folder's CONCH config, else the installed package's, else the published values."""
    cfg = _config_in(root)
    if cfg is None and (path := package_file(PACKAGE_CONFIG)) is not None:
        cfg = _read_config(path)
    cfg = cfg or CONCH_VIT_B16
    heads = cfg.get("vision_cfg", {}).get("attn_pooler_heads", POOLER_HEADS)
    if heads != POOLER_HEADS:
        warnings.warn(
            f"{root}: the config asks for {heads} attention-pooler heads; CONCH's own code "
            f"always builds {POOLER_HEADS} (as here)",
            UserWarning,
            stacklevel=2,
        )
    return cfg


def find_tokenizer(root: Path) -> Path:
    """CONCH's tokenizer JSON: in the folder, else in the installed ``conch`` package."""
    for name in TOKENIZER_NAMES:
        if (root / name).is_file():
            return root / name
    path = package_file(PACKAGE_TOKENIZER)
    if path is not None:
        return path
    raise ModelLoadError(
        f"no CONCH tokenizer for {root}: conch_byte_level_bpe_uncased.json ships in the "
        f"authors' package, not on the hub. Install it ({INSTALL_HINT}; found automatically) "
        "or copy conch/open_clip_custom/tokenizers/conch_byte_level_bpe_uncased.json from "
        "github.com/mahmoodlab/CONCH into the folder"
    )


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
        self.attn_pool_contrast = AttentionalPooler(
            embed_dim, v["width"], POOLER_HEADS, n_queries=1
        )
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


def _tokenizer(path: Path, context_length: int):
    from transformers import PreTrainedTokenizerFast

    read_side_file(path)  # size check before the tokenizers library parses it
    try:
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(path),
            bos_token="<start_of_text>",
            eos_token="<end_of_text>",
            pad_token="<pad>",
        )
    except Exception as e:  # the tokenizers library raises its own exception type
        raise ModelLoadError(f"cannot read the CONCH tokenizer {path}: {e}") from e

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
    """Load a CONCH directory (hub copy or with its side files) as an encoder."""
    root = Path(spec).expanduser()
    weights = next((root / n for n in WEIGHT_NAMES if (root / n).is_file()), None)
    if weights is None:
        raise ModelLoadError(
            f"no CONCH weights in {root}: expected pytorch_model.bin (from the gated hub "
            "repository MahmoodLab/CONCH: huggingface-cli download MahmoodLab/CONCH)"
        )
    cfg = find_config(root)
    encode_tokens = _tokenizer(
        find_tokenizer(root), int(cfg.get("text_cfg", {}).get("context_length", 128))
    )
    model = build_bounded(lambda: ConchModel(cfg), weights)
    state = read_state_dict(weights)
    kept = {k: v for k, v in state.items() if not k.startswith(SKIPPED_PREFIXES)}
    report = load_into(model, kept, weights, strict=False, skipped=len(state) - len(kept))
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
        load_report=report,
    )
