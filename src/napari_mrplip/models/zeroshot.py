"""Zero-shot classification: prompt ensembles scored by softmax(logit_scale x cosine).

The scoring side of zero-shot (the prompt side, with the one template list, is
:mod:`.prompts`). Each class is one or more synonyms; every synonym is put into every
template, the texts are embedded and L2-normalised, averaged, and renormalised: one vector
per class (CONCH / MI-Zero practice). Tiles are scored by ``logit_scale * cosine`` with a
softmax over classes; a slide's class score is the mean of its top-j tile logits per class.
Heatmaps, annotation review, fine-tuned heads and evaluation all score here. torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .prompts import TEMPLATES, PromptEmbedder, _l2

ClassSpec = Sequence[str | Sequence[str]] | Mapping[str, str | Sequence[str]]


def _synonym_lists(classes: ClassSpec) -> list[list[str]]:
    items = list(classes.values()) if isinstance(classes, Mapping) else list(classes)
    out = [[c] if isinstance(c, str) else [str(s) for s in c] for c in items]
    if not out or any(not syn for syn in out):
        raise ValueError("give at least one class, each with at least one name")
    return out


def prompt_ensemble(encoder, classnames_or_synonyms: ClassSpec, templates=TEMPLATES) -> np.ndarray:
    """One embedding per class from synonyms x templates.

    Parameters
    ----------
    encoder : EncoderBackend
        Anything with ``encode_text(list[str]) -> (P, D)``.
    classnames_or_synonyms : sequence or mapping
        ``["tumour", ["stroma", "fibrous tissue"]]`` or ``{"tumour": [...], ...}``.
    templates : sequence of str
        Templates containing ``{}`` (default: the one list, :data:`.prompts.TEMPLATES`).

    Returns
    -------
    np.ndarray
        ``(C, D)`` float32, rows L2-normalised.
    """
    embedder = PromptEmbedder(encoder, tuple(templates) or ("{}",))
    return embedder.embed_synonyms(_synonym_lists(classnames_or_synonyms))


def logits(tile_emb: np.ndarray, class_emb: np.ndarray, logit_scale: float) -> np.ndarray:
    """``(N, D)`` tiles x ``(C, D)`` classes -> ``(N, C)`` scaled cosine similarities."""
    return float(logit_scale) * (_l2(np.asarray(tile_emb)) @ _l2(np.asarray(class_emb)).T)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` in float32; a NaN anywhere along ``axis`` gives NaN there."""
    z = np.array(x, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        z -= z.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def scaled_softmax(cosines: np.ndarray, logit_scale: float, axis: int = -1) -> np.ndarray:
    """``softmax(logit_scale * cosine)`` along ``axis`` (the classes / prompts axis)."""
    return softmax(np.asarray(cosines, np.float32) * np.float32(logit_scale), axis=axis)


def classify(tile_emb: np.ndarray, class_emb: np.ndarray, logit_scale: float) -> np.ndarray:
    """Class probabilities per tile: ``(N, D), (C, D) -> (N, C)``, rows summing to 1."""
    return softmax(logits(tile_emb, class_emb, logit_scale))


def topj_pool(tile_logits: np.ndarray, j: int) -> np.ndarray:
    """Slide-level score per class: mean of the ``j`` largest tile logits (``(N, C)`` -> ``(C,)``).

    ``j`` larger than the number of tiles uses all tiles.
    """
    x = np.asarray(tile_logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected tile logits (N, C) with N > 0, got {x.shape}")
    if j < 1:
        raise ValueError(f"j must be >= 1, got {j}")
    k = min(int(j), x.shape[0])
    top = -np.sort(-x, axis=0)[:k]
    return top.mean(axis=0).astype(np.float32)


def classify_slide(
    tile_emb: np.ndarray, class_emb: np.ndarray, logit_scale: float, j: int = 10
) -> np.ndarray:
    """Slide-level class probabilities ``(C,)``: softmax of top-j pooled tile logits."""
    return softmax(topj_pool(logits(tile_emb, class_emb, logit_scale), j))
