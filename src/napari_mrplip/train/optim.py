"""AdamW with the usual CLIP parameter groups (no weight decay on gains, biases, embeddings)."""

from __future__ import annotations

import torch
from torch import nn

_NO_DECAY_WORDS = ("bias", "norm", "ln_", "logit_scale", "embedding", "cls_token", "token")


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2 or any(w in name for w in _NO_DECAY_WORDS)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over trainable parameters, two groups: decayed matrices, undecayed the rest."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if _no_decay(name, param) else decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
