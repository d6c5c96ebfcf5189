"""Linear probe: a cosine classifier on frozen, L2-normalised tile embeddings.

The head is multinomial logistic regression whose class vectors are kept at unit norm and
share one learned temperature: ``logits = exp(t) * x @ normalize(W).T``. That is exactly
how prompts are scored (cosine x logit scale, softmax), so the trained class vectors *are*
prompt embeddings: the heatmap engine uses them as the class names' text embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class CosineHead:
    """A trained head.

    Attributes
    ----------
    class_embeddings : np.ndarray
        ``(C, D)`` float32, unit rows.
    logit_scale : float
        Multiplier of the cosine similarities.
    """

    class_embeddings: np.ndarray
    logit_scale: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(N, C)`` logits of ``(N, D)`` L2-normalised embeddings."""
        return self.logit_scale * np.asarray(x, np.float32) @ self.class_embeddings.T

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(N,)`` predicted class indices."""
        return self.logits(x).argmax(axis=1)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C,)`` inverse-frequency weights (mean 1 over present classes) for a balanced loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return w.astype(np.float32)


def check_finite(x: np.ndarray, what: str) -> None:
    """Raise ValueError naming how many rows of ``x`` are not finite."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{what}: {int(bad.sum())} of {len(x)} embeddings contain NaN/inf (first at row "
            f"{int(np.flatnonzero(bad)[0])}); the model produced invalid output for these tiles. "
            "Check the model weights, or try precision 'fp32' / another device."
        )


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
        logits = log_scale.clamp(max=np.log(100.0)).exp() * xt @ F.normalize(w, dim=1).T
        loss = F.cross_entropy(logits, yt, weight=cw)
        ref = F.normalize(anchor, dim=1) if anchor is not None else 0.0
        loss_total = loss + weight_decay * ((F.normalize(w, dim=1) - ref) ** 2).sum()
        opt.zero_grad()
        loss_total.backward()
        opt.step()
        if on_step is not None:
            on_step(step, steps, float(loss.detach()))
    emb = F.normalize(w.detach(), dim=1).numpy().astype(np.float32)
    return CosineHead(emb, float(log_scale.detach().clamp(max=np.log(100.0)).exp()))
