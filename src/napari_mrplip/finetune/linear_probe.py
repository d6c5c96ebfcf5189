"""Linear probe: a cosine classifier on frozen, L2-normalised tile embeddings.

The head (:class:`~napari_mrplip.finetune.head.CosineHead`) is multinomial logistic regression
whose class vectors are kept at unit norm and share one learned temperature:
``logits = exp(t) * x @ normalize(W).T``, the way prompts are scored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .head import CosineHead, check_finite, class_weights, cosine_logits, head_from


def fit_linear_probe(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    init: np.ndarray | None = None,
    init_scale: float = 10.0,
    steps: int = 200,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    seed: int = 0,
    on_step: Callable[[int, int, float], None] | None = None,
) -> CosineHead:
    """Fit a cosine head by full-batch Adam on a class-balanced cross-entropy.

    Parameters
    ----------
    x : np.ndarray
        ``(N, D)`` L2-normalised embeddings.
    y : np.ndarray
        ``(N,)`` int labels in ``0..C-1``.
    init : np.ndarray, optional
        ``(C, D)`` starting class vectors (e.g. zero-shot prompt embeddings); random if None.
    init_scale : float
        Starting logit scale.
    weight_decay : float
        Penalty pulling the class vectors towards ``init`` (towards zero without one).
    on_step : callable, optional
        ``on_step(step, steps, loss)`` after every step.
    """
    check_finite(x, "training embeddings")
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    d = xt.shape[1]
    anchor = torch.as_tensor(init, dtype=torch.float32) if init is not None else None
    w0 = anchor.clone() if anchor is not None else torch.randn(n_classes, d, generator=gen) / d**0.5
    w = torch.nn.Parameter(F.normalize(w0, dim=1))
    log_scale = torch.nn.Parameter(torch.tensor(float(np.log(init_scale))))
    cw = torch.as_tensor(class_weights(np.asarray(y), n_classes))
    opt = torch.optim.Adam([w, log_scale], lr=lr)
    for step in range(1, steps + 1):
        logits = cosine_logits(xt, w, log_scale)
        loss = F.cross_entropy(logits, yt, weight=cw)
        ref = F.normalize(anchor, dim=1) if anchor is not None else 0.0
        loss_total = loss + weight_decay * ((F.normalize(w, dim=1) - ref) ** 2).sum()
        opt.zero_grad()
        loss_total.backward()
        opt.step()
        if on_step is not None:
            on_step(step, steps, float(loss.detach()))
    return head_from(w, log_scale)
