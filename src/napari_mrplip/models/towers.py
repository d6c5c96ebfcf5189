"""Vision and text towers built from an ``MRPLIPConfig`` on open_clip's modules.

Both towers return ``(pooled, tokens)``: the pooled embedding projected into the shared
space ``(B, D)`` and the token features the fusion encoder attends to ``(B, T, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg, _build_text_tower, _build_vision_tower
from torch import nn

from napari_mrplip.models.config import MRPLIPConfig
from napari_mrplip.models.tokenizer import BPE_VOCAB_SIZE, PAD_ID

#: The BPE end-of-text id; text is pooled at its position (``pool_type="eos"``), so the
#: extra [MASK] id (larger than it) cannot hijack CLIP's argmax pooling.
EOT_ID = BPE_VOCAB_SIZE - 1


class ViTTower(nn.Module):
    """open_clip ``VisionTransformer`` returning the projected CLS embedding and patch tokens."""

    def __init__(self, cfg: MRPLIPConfig):
        super().__init__()
        v = cfg.vision
        vcfg = CLIPVisionCfg(
            layers=v.layers,
            width=v.width,
            head_width=v.head_width,
            mlp_ratio=v.mlp_ratio,
            patch_size=v.patch_size,
            image_size=cfg.image_size,
            output_tokens=True,
        )
        self.vit = _build_vision_tower(cfg.embed_dim, vcfg)
        self.width = v.width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images (B, 3, S, S)`` normalised -> ``(B, D)``, ``(B, T, W)``."""
        pooled, tokens = self.vit(images)
        return pooled, tokens


class FeatureTower(nn.Module):
    """Adapter over precomputed features of a frozen external tile encoder (e.g. UNI).

    Accepts ``(B, F)`` pooled features (one token) or ``(B, T, F)`` token features
    (pooled by their mean) and maps them into the vision width and the shared space.
    """

    def __init__(self, cfg: MRPLIPConfig):
        super().__init__()
        v = cfg.vision
        self.feature_dim = v.feature_dim
        self.width = v.width
        self.norm_in = nn.LayerNorm(v.feature_dim)
        self.to_width = nn.Sequential(nn.Linear(v.feature_dim, v.width), nn.GELU())
        self.norm_out = nn.LayerNorm(v.width)
        self.proj = nn.Linear(v.width, cfg.embed_dim, bias=False)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features (B, F)`` or ``(B, T, F)`` -> ``(B, D)``, ``(B, T, W)``."""
        if features.ndim == 2:
            features = features[:, None]
        if features.ndim != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"expected features (B, F) or (B, T, F) with F={self.feature_dim}, "
                f"got {tuple(features.shape)}"
            )
        tokens = self.norm_out(self.to_width(self.norm_in(features.float())))
        return self.proj(tokens.mean(dim=1)), tokens


class FactorisedEmbedding(nn.Module):
    """ALBERT-style token embedding: a ``(V, E)`` table then ``E -> width`` (E << width).

    Keeps small models small: the 49k-row vocabulary dominates a narrow text tower.
    """

    def __init__(self, vocab_size: int, embed_dim: int, width: int):
        super().__init__()
        self.table = nn.Embedding(vocab_size, embed_dim)
        self.up = nn.Linear(embed_dim, width, bias=False)
        nn.init.normal_(self.table.weight, std=0.02)

    @property
    def weight(self) -> torch.Tensor:
        """The ``(V, E)`` table (the MLM decoder ties its output layer to it)."""
        return self.table.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.up(self.table(tokens))


class TextTower(nn.Module):
    """open_clip ``TextTransformer`` accepting any token length up to ``context_length``."""

    def __init__(self, cfg: MRPLIPConfig):
        super().__init__()
        t = cfg.text
        tcfg = CLIPTextCfg(
            context_length=cfg.context_length,
            vocab_size=t.vocab_size,
            width=t.width,
            heads=t.heads,
            layers=t.layers,
            mlp_ratio=t.mlp_ratio,
            pad_id=PAD_ID,
            eos_id=EOT_ID,
            pool_type="eos",
            no_causal_mask=not t.causal,
        )
        self.tt = _build_text_tower(cfg.embed_dim, tcfg)
        if 0 < t.token_embed_dim < t.width:
            self.tt.token_embedding = FactorisedEmbedding(t.vocab_size, t.token_embed_dim, t.width)
        self.context_length = cfg.context_length
        self.width = t.width

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens (B, L)`` with ``L <= context_length`` -> ``(B, D)``, ``(B, L, W)``."""
        tt = self.tt
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens exceed the context length {self.context_length}")
        cast = tt.transformer.get_cast_dtype()
        x = tt.token_embedding(tokens).to(cast) + tt.positional_embedding[:length].to(cast)
        mask = None if tt.attn_mask is None else tt.attn_mask[:length, :length]
        x = tt.ln_final(tt.transformer(x, attn_mask=mask))
        eot = (tokens == EOT_ID).int().argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        proj = tt.text_projection
        pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return pooled, x


def build_vision_tower(cfg: MRPLIPConfig) -> nn.Module:
    """The vision tower named by ``cfg.vision.kind`` (frozen when ``cfg.vision.freeze``)."""
    tower = ViTTower(cfg) if cfg.vision.kind == "vit" else FeatureTower(cfg)
    if cfg.vision.freeze:
        tower.requires_grad_(False)
    return tower


def build_text_tower(cfg: MRPLIPConfig) -> TextTower:
    """The text tower of ``cfg``."""
    return TextTower(cfg)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension."""
    return F.normalize(x, dim=-1)
