"""CoOp prompt learning: learnable context tokens before each class name, through the frozen text tower.

Prompts are ``[SOT] ctx_1 .. ctx_M CLASSNAME . [EOT]``: the M context vectors live in the
text tower's token-embedding space and are shared by all classes (CoOp's unified
context, Zhou et al. 2022). Image embeddings are frozen and cached, so a step costs one
text-tower pass over C prompts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .head import CosineHead, check_finite, class_weights
from .towers import find_text_transformer, trainable_model

#: Phrase the context is initialised from when it tokenises to exactly ``n_ctx`` tokens.
INIT_PHRASES = ("a histopathology image of", "an image of", "a photo of a")


class PromptLearner(nn.Module):
    """Shared learnable context for C class names.

    Parameters
    ----------
    tt : nn.Module
        open_clip text transformer (frozen).
    tokens : torch.Tensor
        ``(C, L)`` tokenised ``"X X .. X classname."`` with the M placeholders at 1..M.
    ctx_init : torch.Tensor
        ``(M, W)`` initial context vectors.
    eot_id : int
        End-of-text token id (pooling position).
    """

    def __init__(self, tt: nn.Module, tokens: torch.Tensor, ctx_init: torch.Tensor, eot_id: int):
        super().__init__()
        self.tt = tt
        self.ctx = nn.Parameter(ctx_init.clone())
        self.register_buffer("tokens", tokens)
        self.eot_id = eot_id

    def forward(self) -> torch.Tensor:
        """``(C, D)`` L2-normalised class embeddings."""
        tt, tok, m = self.tt, self.tokens, self.ctx.shape[0]
        cast = tt.transformer.get_cast_dtype()
        emb = tt.token_embedding(tok).to(cast)
        ctx = self.ctx.to(cast)[None].expand(tok.shape[0], -1, -1)
        x = torch.cat([emb[:, :1], ctx, emb[:, 1 + m :]], dim=1)
        x = x + tt.positional_embedding[: tok.shape[1]].to(cast)
        mask = None if tt.attn_mask is None else tt.attn_mask[: tok.shape[1], : tok.shape[1]]
        x = tt.ln_final(tt.transformer(x, attn_mask=mask))
        hit = tok == self.eot_id
        pos = torch.where(hit.any(dim=1), hit.int().argmax(dim=1), tok.argmax(dim=1))
        pooled = x[torch.arange(x.shape[0], device=x.device), pos]
        proj = tt.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return F.normalize(pooled.float(), dim=-1)


def build_prompt_learner(
    encoder, class_names: list[str], n_ctx: int, seed: int = 0
) -> PromptLearner:
    """A :class:`PromptLearner` on ``encoder``'s text tower, context initialised from a phrase."""
    from napari_mrplip.models.tokenizer import get_tokenizer

    tt = find_text_transformer(trainable_model(encoder))
    tok = get_tokenizer(encoder.context_length)
    device = next(tt.parameters()).device
    tokens = tok([" ".join(["X"] * n_ctx) + f" {name}." for name in class_names]).to(device)
    eot = tok.eot_token_id
    if tokens.shape[1] < n_ctx + 3 or (tokens == eot).sum(dim=1).min() < 1:
        raise ValueError(
            f"class names are too long for {n_ctx} context tokens and the text context length"
        )
    ctx = None
    for phrase in INIT_PHRASES:
        ids = tok([phrase])[0]
        words = ids[1 : int((ids == eot).int().argmax())]
        if len(words) == n_ctx:
            with torch.no_grad():
                ctx = tt.token_embedding(words.to(device)).float()
            break
    if ctx is None:
        width = tt.token_embedding.weight.shape[1]
        ctx = (
            torch.randn(n_ctx, width, generator=torch.Generator().manual_seed(seed)).to(device)
            * 0.02
        )
    return PromptLearner(tt, tokens, ctx, eot)


def fit_prompt_learning(
    encoder, class_names: list[str], x: np.ndarray, y: np.ndarray, cfg, on_step=None
):
    """Learn the context on cached image embeddings.

    Parameters
    ----------
    x : np.ndarray
        ``(N, D)`` L2-normalised training embeddings.
    y : np.ndarray
        ``(N,)`` labels.
    cfg : FinetuneConfig
        ``n_ctx``, ``epochs`` (x10 steps), ``learning_rate``, ``batch_size``, ``seed``.

    Returns
    -------
    (CosineHead, torch.Tensor)
        The head (class embeddings from the learned prompts, the encoder's logit scale) and
        the ``(n_ctx, W)`` context.
    """
    check_finite(x, "training embeddings")
    torch.manual_seed(cfg.seed)
    learner = build_prompt_learner(encoder, class_names, cfg.n_ctx, cfg.seed)
    frozen = [p for p in learner.tt.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        head = _optimise(learner, encoder.logit_scale, x, y, len(class_names), cfg, on_step)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return head, learner.ctx.detach().cpu()


def _optimise(learner, scale: float, x, y, n_classes: int, cfg, on_step) -> CosineHead:
    device = learner.ctx.device
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, dtype=torch.long, device=device)
    cw = torch.as_tensor(class_weights(np.asarray(y), n_classes), device=device)
    opt = torch.optim.AdamW([learner.ctx], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * 10
    gen = torch.Generator().manual_seed(cfg.seed)
    for step in range(1, steps + 1):
        pick = torch.randperm(len(xt), generator=gen)[: max(cfg.batch_size, 1) * 4].to(device)
        logits = scale * xt[pick] @ learner().T
        loss = F.cross_entropy(logits, yt[pick], weight=cw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step, steps, float(loss.detach()))
    with torch.no_grad():
        emb = learner().cpu().numpy().astype(np.float32)
    return CosineHead(emb, float(scale))
