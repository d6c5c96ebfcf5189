"""The multimodal fusion encoder: query tokens self-attend, then cross-attend to a context.

One encoder serves both directions (our choice; the paper does not specify the
architecture, its repository ships an mPLUG-style fusion):

* visual tokens (query) cross-attending to keyword or caption tokens (context) give the
  text-guided visual embedding z (MRTVA) and the pair representation for ITM;
* caption tokens (query) cross-attending to visual tokens (context) give the features
  the MLM head reconstructs masked words from.

A learned modality embedding tells the blocks which direction they run in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FusionBlock(nn.Module):
    """Pre-norm block: self-attention, cross-attention to the context, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_query = nn.LayerNorm(width)
        self.ln_context = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        x_pad: torch.Tensor | None,
        context_pad: torch.Tensor,
    ) -> torch.Tensor:
        """``x (B, Q, W)``, ``context (B, C, W)``; ``*_pad`` True where a token is padding."""
        h = self.ln_self(x)
        x = x + self.self_attn(h, h, h, key_padding_mask=x_pad, need_weights=False)[0]
        q, c = self.ln_query(x), self.ln_context(context)
        x = x + self.cross_attn(q, c, c, key_padding_mask=context_pad, need_weights=False)[0]
        return x + self.mlp(self.ln_mlp(x))


class FusionEncoder(nn.Module):
    """Stack of ``FusionBlock``s with input projections for visual and text tokens.

    Parameters
    ----------
    vision_width, text_width : int
        Widths of the vision and text tower tokens.
    width, heads, layers, mlp_ratio
        Fusion encoder shape.
    """

    VISUAL, TEXT = 0, 1

    def __init__(
        self,
        vision_width: int,
        text_width: int,
        width: int,
        heads: int,
        layers: int,
        mlp_ratio: float = 4.0,
        visual_tokens: int = 0,
    ):
        super().__init__()
        self.visual_tokens = visual_tokens
        self.from_vision = nn.Linear(vision_width, width)
        self.from_text = nn.Linear(text_width, width)
        self.modality = nn.Embedding(2, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(FusionBlock(width, heads, mlp_ratio) for _ in range(layers))
        self.ln_out = nn.LayerNorm(width)
        self.width = width

    def visual_query(
        self, vis_tokens: torch.Tensor, ctx_tokens: torch.Tensor, ctx_pad
    ) -> torch.Tensor:
        """Visual tokens attend to text: returns the fused CLS ``(B, W)``.

        Parameters
        ----------
        vis_tokens : torch.Tensor
            ``(B, T, Wv)`` vision tower tokens.
        ctx_tokens : torch.Tensor
            ``(B, C, Wt)`` text tower tokens (keywords or a caption).
        ctx_pad : torch.Tensor
            ``(B, C)`` bool, True where the context token is padding.
        """
        x = self.from_vision(self.pool_visual(vis_tokens)) + self.modality.weight[self.VISUAL]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        ctx = self.from_text(ctx_tokens) + self.modality.weight[self.TEXT]
        out = self._run(x, ctx, None, ctx_pad)
        return out[:, 0]

    def text_query(
        self, txt_tokens: torch.Tensor, txt_pad, vis_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Text tokens attend to the image: returns per-token features ``(B, L, W)``."""
        x = self.from_text(txt_tokens) + self.modality.weight[self.TEXT]
        ctx = self.from_vision(self.pool_visual(vis_tokens)) + self.modality.weight[self.VISUAL]
        ctx_pad = torch.zeros(ctx.shape[:2], dtype=torch.bool, device=ctx.device)
        return self._run(x, ctx, txt_pad, ctx_pad)

    def pool_visual(self, tokens: torch.Tensor) -> torch.Tensor:
        """Average-pool ``(B, T, W)`` vision tokens to about ``visual_tokens`` (our choice).

        A square token grid is pooled in 2-D (``s x s`` with ``s = floor(sqrt(n))``),
        anything else along the sequence. Cross-attention cost scales with T.
        """
        n, t = self.visual_tokens, tokens.shape[1]
        if n <= 0 or t <= n:
            return tokens
        side = math.isqrt(t)
        if side * side == t:
            s = max(1, math.isqrt(n))
            grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
            return F.adaptive_avg_pool2d(grid, s).flatten(2).transpose(1, 2)
        return F.adaptive_avg_pool1d(tokens.transpose(1, 2), n).transpose(1, 2)

    def _run(self, x, ctx, x_pad, ctx_pad) -> torch.Tensor:
        ctx_pad = _never_empty(ctx_pad)
        x_pad = None if x_pad is None else _never_empty(x_pad)
        for block in self.blocks:
            x = block(x, ctx, x_pad, ctx_pad)
        return self.ln_out(x)


def _never_empty(pad: torch.Tensor) -> torch.Tensor:
    """Unmask the first position of fully padded rows (softmax over nothing is NaN)."""
    first = pad[:, :1] & ~pad.all(dim=1, keepdim=True)
    return torch.cat([first, pad[:, 1:]], dim=1)
