"""Small task heads on top of the fusion encoder: ITM, MLM, and MRTVA's projector/predictor."""

from __future__ import annotations

import torch
from torch import nn


class ITMHead(nn.Module):
    """Image-text matching: fused CLS ``(B, W)`` -> logits ``(B, 2)`` (0 = no match, 1 = match)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, 2)

    def forward(self, fused_cls: torch.Tensor) -> torch.Tensor:
        return self.fc(fused_cls)


class MLMHead(nn.Module):
    """Masked language modelling: fused text tokens ``(M, W)`` -> vocabulary logits ``(M, V)``.

    The output layer is tied to the text tower's ``(V, E)`` token-embedding table (as in
    BERT), passed at call time so the checkpoint holds the table once.
    """

    def __init__(self, width: int, vocab_size: int, embed_dim: int):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.to_embed = nn.Linear(width, embed_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, fused_tokens: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """``fused_tokens (M, W)``, ``embedding (V, E)`` -> logits ``(M, V)``."""
        h = self.to_embed(self.transform(fused_tokens))
        return h @ embedding.to(h.dtype).T + self.bias.to(h.dtype)


class MRTVAHeads(nn.Module):
    """SimSiam projector g and predictor h applied to text-guided embeddings z.

    g: Linear-LN-GELU-Linear-LN (``width -> proj_dim``); h: bottleneck MLP
    (``proj_dim -> pred_dim -> proj_dim``). LayerNorm replaces SimSiam's BatchNorm so the
    result does not depend on how the batch is split over devices (our choice).
    """

    def __init__(self, width: int, proj_dim: int, pred_dim: int):
        super().__init__()
        self.projector = nn.Sequential(
            nn.Linear(width, proj_dim),
            nn.LayerNorm(proj_dim),
            nn.GELU(),
            nn.Linear(proj_dim, proj_dim),
            nn.LayerNorm(proj_dim),
        )
        self.predictor = nn.Sequential(
            nn.Linear(proj_dim, pred_dim),
            nn.LayerNorm(pred_dim),
            nn.GELU(),
            nn.Linear(pred_dim, proj_dim),
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z (..., W)`` -> ``(g(z), h(g(z)))``, both ``(..., proj_dim)``."""
        p = self.projector(z)
        return p, self.predictor(p)
