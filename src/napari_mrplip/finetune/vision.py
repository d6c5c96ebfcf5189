"""Partial and full fine-tuning: train the vision tower's last blocks (or all of it) with a cosine head.

``partial`` trains the last ``unfreeze_blocks`` transformer blocks, the final norm and the
projection; ``full`` trains the whole vision tower. The text tower stays frozen; the head
starts from the class names' zero-shot prompt embeddings.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .head import class_weights, cosine_logits, head_from
from .towers import find_vision_transformer, trainable_model


def trainable_parameters(model: nn.Module, mode: str, blocks: int) -> dict[str, nn.Parameter]:
    """Names (as in ``model.state_dict()``) and parameters trained in ``mode``."""
    vit = find_vision_transformer(model)
    prefix = next(n for n, m in model.named_modules() if m is vit)
    prefix = f"{prefix}." if prefix else ""
    own = dict(vit.named_parameters())
    if mode == "full" or not hasattr(vit, "transformer"):
        keep = set(own)
    else:
        n_blocks = len(vit.transformer.resblocks)
        first = max(n_blocks - max(blocks, 0), 0)
        keep = {
            n for n in own
            if any(n.startswith(f"transformer.resblocks.{i}.") for i in range(first, n_blocks))
            or not n.startswith(("transformer.", "conv1", "class_embedding", "positional_embedding", "ln_pre", "patch_"))
        }  # fmt: skip
    return {prefix + n: p for n, p in own.items() if n in keep}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and 90-degree rotations of a ``(B, H, W, 3)`` batch (tissue has no up)."""
    k = int(torch.randint(4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(1, 2))
    return torch.flip(x, dims=(2,)) if torch.rand(1, generator=gen) < 0.5 else x


def _encode(model: nn.Module, tiles: torch.Tensor) -> torch.Tensor:
    if not hasattr(model, "preprocess") or not hasattr(model, "encode_image"):
        raise ValueError(
            f"{type(model).__name__}: partial/full fine-tuning needs a model with preprocess() and "
            "encode_image() (MR-PLIP checkpoints); use --mode linear or prompt for other encoders"
        )
    return model.encode_image(model.preprocess(tiles), normalize=True)


def fit_vision(encoder, data, tr: np.ndarray, init: np.ndarray, cfg, on_step=None, cancel=None):
    """Train vision parameters and a cosine head on tiles ``tr`` of ``data``.

    Returns
    -------
    (CosineHead, dict)
        The head and the trained parameters' tensors keyed by ``state_dict`` names.
    """
    model = trainable_model(encoder)
    device = next(model.parameters()).device
    params = trainable_parameters(model, cfg.mode, cfg.unfreeze_blocks)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    w = nn.Parameter(torch.as_tensor(init, dtype=torch.float32, device=device))
    scale = float(encoder.logit_scale)  # NaN for vision-only encoders: the probe's default
    scale = scale if np.isfinite(scale) and scale > 0 else 10.0
    log_scale = nn.Parameter(torch.tensor(float(np.log(scale)), device=device))
    opt = torch.optim.AdamW(
        [{"params": list(params.values()), "lr": cfg.learning_rate},
         {"params": [w, log_scale], "lr": cfg.learning_rate * 10, "weight_decay": 0.0}],
        weight_decay=cfg.weight_decay,
    )  # fmt: skip
    cw = torch.as_tensor(class_weights(data.labels[tr], len(data.class_names)), device=device)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_epoch = int(np.ceil(len(tr) / cfg.batch_size))
    steps, step = cfg.epochs * per_epoch, 0
    model.train()
    try:
        for _ in range(cfg.epochs):
            order = tr[torch.randperm(len(tr), generator=gen).numpy()]
            for s in range(0, len(order), cfg.batch_size):
                idx = order[s : s + cfg.batch_size]
                tiles = _augment(torch.as_tensor(data.read(idx)), gen).contiguous().to(device)
                emb = _encode(model, tiles)
                logits = cosine_logits(emb, w, log_scale)
                loss = F.cross_entropy(
                    logits, torch.as_tensor(data.labels[idx], device=device), weight=cw
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if on_step is not None:
                    on_step(step, steps, float(loss.detach()))
    finally:
        model.eval()
        for n, p in model.named_parameters():
            p.requires_grad_(before[n])
    return head_from(w, log_scale), {n: p.detach().cpu() for n, p in params.items()}
