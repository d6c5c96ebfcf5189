"""Zero-shot classification with prompt ensembles (CONCH / MI-Zero practice).

Each class is one or more synonyms; every synonym is put into every template, the texts
are embedded and L2-normalised, averaged, and renormalised: one vector per class. Tiles
are scored by ``logit_scale * cosine`` with a softmax over classes; a slide's class
score is the mean of its top-j tile logits per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Prompt templates; ``CLASSNAME`` is replaced by each synonym (our wording, CONCH-style).
TEMPLATES: tuple[str, ...] = (
    "CLASSNAME.",
    "a photomicrograph showing CLASSNAME.",
    "a photomicrograph of CLASSNAME.",
    "an image of CLASSNAME.",
    "an image showing CLASSNAME.",
    "an example of CLASSNAME.",
    "CLASSNAME is shown.",
    "this is CLASSNAME.",
    "there is CLASSNAME.",
    "a histopathological image showing CLASSNAME.",
    "a histopathological image of CLASSNAME.",
    "a histopathological photograph of CLASSNAME.",
    "a histopathological photograph showing CLASSNAME.",
    "shows CLASSNAME.",
    "presence of CLASSNAME.",
    "CLASSNAME is present.",
    "an H&E stained image of CLASSNAME.",
    "an H&E stained image showing CLASSNAME.",
    "an H&E image of CLASSNAME.",
    "an H&E image showing CLASSNAME.",
    "a tissue section showing CLASSNAME.",
    "a microscopy image of CLASSNAME.",
)

ClassSpec = Sequence[str | Sequence[str]] | Mapping[str, str | Sequence[str]]


def _synonym_lists(classes: ClassSpec) -> list[list[str]]:
    items = list(classes.values()) if isinstance(classes, Mapping) else list(classes)
    out = [[c] if isinstance(c, str) else [str(s) for s in c] for c in items]
    if not out or any(not syn for syn in out):
        raise ValueError("give at least one class, each with at least one name")
    return out


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prompt_ensemble(encoder, classnames_or_synonyms: ClassSpec, templates=TEMPLATES) -> np.ndarray:
    """One embedding per class from synonyms x templates.

    Parameters
    ----------
    encoder : EncoderBackend
        Anything with ``encode_text(list[str]) -> (P, D)``.
    classnames_or_synonyms : sequence or mapping
        ``["tumour", ["stroma", "fibrous tissue"]]`` or ``{"tumour": [...], ...}``.
    templates : sequence of str
        Templates containing ``CLASSNAME``.

    Returns
    -------
    np.ndarray
        ``(C, D)`` float32, rows L2-normalised.
    """
    templates = list(templates) or ["CLASSNAME"]
    rows = []
    for synonyms in _synonym_lists(classnames_or_synonyms):
        texts = [t.replace("CLASSNAME", s) for s in synonyms for t in templates]
        emb = _l2(np.asarray(encoder.encode_text(texts), dtype=np.float32))
        rows.append(emb.mean(axis=0))
    return _l2(np.stack(rows)).astype(np.float32)


def logits(tile_emb: np.ndarray, class_emb: np.ndarray, logit_scale: float) -> np.ndarray:
    """``(N, D)`` tiles x ``(C, D)`` classes -> ``(N, C)`` scaled cosine similarities."""
    return float(logit_scale) * (_l2(np.asarray(tile_emb)) @ _l2(np.asarray(class_emb)).T)


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def classify(tile_emb: np.ndarray, class_emb: np.ndarray, logit_scale: float) -> np.ndarray:
    """Class probabilities per tile: ``(N, C)``, rows summing to 1."""
    return _softmax(logits(tile_emb, class_emb, logit_scale)).astype(np.float32)


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
    return _softmax(topj_pool(logits(tile_emb, class_emb, logit_scale), j)).astype(np.float32)
