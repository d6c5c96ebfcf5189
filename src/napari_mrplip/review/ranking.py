"""Disagreement ranking: the annotations most worth a second look come first."""

from __future__ import annotations

from collections.abc import Sequence

from napari_mrplip.annotations.model import Annotation

from .scoring import SCORED, UNLABELLED, AnnotationScore

#: Order of statuses after the scored ones: unlabelled, then unscorable ones.
_STATUS_RANK = {SCORED: 0, UNLABELLED: 1}


def rank_key(score: AnnotationScore) -> tuple:
    """Sort key: scored by disagreement (descending), unlabelled by confidence, then the rest."""
    group = _STATUS_RANK.get(score.status, 2)
    if group == 0:
        return (0, -score.disagreement)
    if group == 1:
        return (1, -(score.confidence or 0.0))
    return (2, 0.0)


def rank(scores: Sequence[AnnotationScore]) -> list[AnnotationScore]:
    """Scores sorted most suspicious first (stable for ties)."""
    return sorted(scores, key=rank_key)


def apply_scores(annotations: Sequence[Annotation], scores: Sequence[AnnotationScore]) -> None:
    """Copy the model's verdict into each annotation's review record (decisions untouched).

    ``agreement`` is the probability of the annotation's label when it was scored; it is
    kept against the original label, so a relabel does not rewrite what the model said.
    """
    by_id = {s.annotation_id: s for s in scores}
    for ann in annotations:
        score = by_id.get(ann.id)
        if score is None or score.status not in (SCORED, UNLABELLED):
            continue
        ann.review.model_label = score.model_label
        ann.review.confidence = score.confidence
        ann.review.agreement = score.agreement
        if ann.review.original_label is None:
            ann.review.original_label = ann.label
