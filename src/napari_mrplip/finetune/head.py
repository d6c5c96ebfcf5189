"""The cosine head every fine-tuning mode trains, and the pieces its training loops share.

``logits = scale * x @ normalize(W).T``: class vectors kept at unit norm, one temperature.
That is exactly how prompts are scored (cosine x logit scale, softmax), so trained class
vectors *are* prompt embeddings: the heatmap engine uses them as the class names' text
embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Largest logit scale a trained head may reach (CLIP's clamp of ``1 / temperature``).
MAX_LOGIT_SCALE = 100.0


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


def scale_of(log_scale: torch.Tensor) -> torch.Tensor:
    """``exp(log_scale)`` clamped to :data:`MAX_LOGIT_SCALE` (a 0-d tensor, differentiable)."""
    return log_scale.clamp(max=float(np.log(MAX_LOGIT_SCALE))).exp()


def cosine_logits(x: torch.Tensor, w: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` logits of ``(N, D)`` unit embeddings against ``(C, D)`` class vectors ``w``."""
    return scale_of(log_scale) * x @ F.normalize(w, dim=1).T


def head_from(w: torch.Tensor, log_scale: torch.Tensor) -> CosineHead:
    """The :class:`CosineHead` of trained ``(C, D)`` class vectors and log scale."""
    emb = F.normalize(w.detach(), dim=1).cpu().numpy().astype(np.float32)
    return CosineHead(emb, float(scale_of(log_scale.detach())))


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C,)`` inverse-frequency weights (mean 1 over present classes) for a balanced loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return w.astype(np.float32)


def check_finite(x: np.ndarray, what: str) -> None:
    """Raise ValueError naming how many rows of ``(N, D)`` ``x`` are not finite."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{what}: {int(bad.sum())} of {len(x)} embeddings contain NaN/inf (first at row "
            f"{int(np.flatnonzero(bad)[0])}); the model produced invalid output for these tiles. "
            "Check the model weights, or try precision 'fp32' / another device."
        )
