"""Zero-shot classification of labelled tiles, one or more models side by side.

For each model: class vectors from the prompt ensembles (``models.zeroshot.prompt_ensemble``),
tile embeddings in batches, probabilities by ``models.zeroshot.classify`` (the one
softmax(logit_scale x cosine) scorer), the arg-max as prediction, then the metrics of
:mod:`.metrics`. Nothing here re-implements scoring.
"""

from __future__ import annotations

import time

import numpy as np

from napari_mrplip.evaluation.prompts import ClassPrompts
from napari_mrplip.metrics import confusion_matrix, summary
from napari_mrplip.models import zeroshot as zs


def embed_tiles(encoder, data, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (N,), embeddings (N, D))`` of every tile ``data`` holds for ``encoder``."""
    size = int(encoder.input_size)
    labels = np.asarray(data.labels_for(size))
    out = []
    for start in range(0, len(labels), batch_size):
        idx = range(start, min(start + batch_size, len(labels)))
        out.append(np.asarray(encoder.encode_tiles(data.read(idx, size)), np.float32))
    emb = np.concatenate(out) if out else np.zeros((0, int(encoder.embed_dim)), np.float32)
    return labels, emb


def evaluate(encoder, data, prompts: ClassPrompts, batch_size: int = 32) -> dict:
    """Zero-shot figures of one encoder on ``data`` (see :func:`.metrics.summary`).

    Raises
    ------
    NoTextTowerError
        The encoder is vision-only (UNI, Virchow, ...): prompts cannot be scored.
    """
    classes = list(prompts.synonyms)
    kwargs = {} if prompts.templates is None else {"templates": prompts.templates}
    t0 = time.perf_counter()
    class_emb = zs.prompt_ensemble(encoder, [prompts.synonyms[c] for c in classes], **kwargs)
    labels, emb = embed_tiles(encoder, data, batch_size)
    probs = zs.classify(emb, class_emb, encoder.logit_scale)
    pred = probs.argmax(axis=1)
    result = summary(confusion_matrix(labels, pred, len(classes)), classes)
    result.update(
        model_id=encoder.model_id,
        input_size=int(encoder.input_size),
        templates=len(prompts.templates or zs.TEMPLATES),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return result
