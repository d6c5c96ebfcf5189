"""Score annotations against their own label and every other label, zero-shot.

For each annotation: tiles inside its polygon (:mod:`.tiles`) are embedded at the chosen
µm/px, each tile gets softmax probabilities over the class prompts (logit scale x cosine),
and the annotation's probabilities are the mean over its tiles. A fine-tuned encoder whose
prompts are its class names works the same way (pass ``ensemble=False``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from napari_mrplip.annotations.model import Annotation
from napari_mrplip.embed.embedder import SlideEmbedder
from napari_mrplip.embed.pool import embedder_for
from napari_mrplip.models.prompts import TEMPLATES, PromptEmbedder
from napari_mrplip.models.zeroshot import classify

from .tiles import polygon_tiles

#: Per-annotation outcomes.
SCORED, UNLABELLED, NO_TILES, READ_ERROR = "scored", "unlabelled", "no_tiles", "read_error"
#: Default µm/px to score at (20x, where single-magnification models do best).
DEFAULT_MPP = 0.5


class ScoringError(ValueError):
    """Annotations cannot be scored as asked (too few classes, no µm/px, ...)."""


@dataclass
class AnnotationScore:
    """The model's view of one annotation.

    Attributes
    ----------
    annotation_id : str
    label : str or None
        The label scored against (the annotation's label when scored).
    status : str
        ``"scored"``, ``"unlabelled"`` (scored, but nothing to agree with), ``"no_tiles"``
        (the polygon lies outside the slide) or ``"read_error"``.
    n_tiles : int
    probs : dict of str to float
        Mean tile probability per class.
    agreement : float or None
        Mean probability of the annotation's own label.
    model_label : str or None
        Class with the highest mean probability.
    best_other_label : str or None
        Most probable class other than the annotation's own.
    best_other_prob : float or None
    confidence : float or None
        Mean probability of ``model_label``.
    tile_agreement : float or None
        Fraction of tiles whose top class is the annotation's label.
    message : str
        Human-readable explanation for statuses other than ``"scored"``.
    """

    annotation_id: str
    label: str | None
    status: str
    n_tiles: int = 0
    probs: dict[str, float] = field(default_factory=dict)
    agreement: float | None = None
    model_label: str | None = None
    best_other_label: str | None = None
    best_other_prob: float | None = None
    confidence: float | None = None
    tile_agreement: float | None = None
    message: str = ""

    @property
    def disagreement(self) -> float | None:
        """``best_other_prob - agreement`` in [-1, 1]; higher = more suspicious."""
        if self.agreement is None or self.best_other_prob is None:
            return None
        return self.best_other_prob - self.agreement


def class_names(annotations: Sequence[Annotation], extra: Sequence[str] = ()) -> list[str]:
    """Every label present (first-seen order) followed by ``extra`` labels not present."""
    names = [a.label for a in annotations if a.label] + [e for e in extra if e]
    return list(dict.fromkeys(names))


def default_ensemble(encoder) -> bool:
    """Template ensembles for zero-shot models; plain class names for a trained head."""
    return not encoder.class_names


def class_embeddings(encoder, classes: Sequence[str], prompts: Mapping[str, str], ensemble: bool):
    """``(C, D)`` class vectors: template ensembles (or the plain names for a trained head)."""
    embedder = PromptEmbedder(encoder, TEMPLATES if ensemble else ("{}",))
    return embedder.embed([prompts.get(c, c) for c in classes])


def _summarise(ann: Annotation, probs: np.ndarray, classes: list[str]) -> AnnotationScore:
    mean = probs.mean(axis=0)
    top = int(mean.argmax())
    out = AnnotationScore(ann.id, ann.label, SCORED if ann.label else UNLABELLED, len(probs))
    out.probs = {c: float(p) for c, p in zip(classes, mean)}
    out.model_label, out.confidence = classes[top], float(mean[top])
    if ann.label is None:
        out.message = "no label to check: the model's top class is shown"
        return out
    own = classes.index(ann.label)
    others = [i for i in np.argsort(-mean) if i != own]
    out.agreement = float(mean[own])
    out.best_other_label, out.best_other_prob = classes[others[0]], float(mean[others[0]])
    out.tile_agreement = float((probs.argmax(axis=1) == own).mean())
    return out


def iter_scores(
    annotations: Sequence[Annotation],
    slide,
    encoder,
    *,
    target_mpp: float | None = None,
    extra_labels: Sequence[str] = (),
    prompts: Mapping[str, str] | None = None,
    ensemble: bool | None = None,
    min_coverage: float = 0.5,
    max_tiles: int = 64,
    embedder: SlideEmbedder | None = None,
) -> Iterator[tuple[AnnotationScore, int, int]]:
    """Score annotations one by one against all labels present (plus ``extra_labels``).

    Class prompts are embedded and tiles planned before the first yield, so bad requests
    raise at the call, not on iteration.

    Parameters
    ----------
    annotations : sequence of Annotation
        Polygons in level-0 px.
    slide : Slide
    encoder : EncoderBackend
    target_mpp : float, optional
        µm/px to embed tiles at (default :data:`DEFAULT_MPP`, 20x).
    extra_labels : sequence of str
        Labels to compete with even if no annotation carries them (e.g. "background").
    prompts : mapping, optional
        Label -> prompt text (``|`` separates synonyms), e.g. {"Tumor": "tumour|carcinoma"}.
    ensemble : bool, optional
        Wrap prompts in templates (zero-shot); ``False`` for a fine-tuned head, whose class
        names are its prompts. Default: off when the encoder has ``class_names``.
    min_coverage, max_tiles : float, int
        Tile selection inside each polygon (see :func:`.tiles.polygon_tiles`).
    embedder : SlideEmbedder, optional
        Embed through this one (default: the process-wide one for ``encoder``, sharing the
        heatmap's cache).

    Yields
    ------
    (AnnotationScore, int, int)
        Each annotation's score (in order), tiles done so far, tiles in total.
    """
    if not (isinstance(max_tiles, int) and max_tiles >= 1 and 0.0 <= min_coverage <= 1.0):
        raise ScoringError(
            f"max_tiles must be >= 1 and min_coverage in [0, 1], got {max_tiles} and "
            f"{min_coverage}"
        )
    classes = class_names(annotations, extra_labels)
    if len(classes) < 2:
        raise ScoringError(
            f"only {len(classes)} label(s) present ({classes}); scoring compares an annotation's "
            "label with others, so add comparison labels (e.g. extra_labels=['background'])"
        )
    mpp = _target_mpp(slide, target_mpp)
    if ensemble is None:
        ensemble = default_ensemble(encoder)
    class_emb = class_embeddings(encoder, classes, prompts or {}, ensemble)
    embedder = embedder or embedder_for(encoder)
    tile = encoder.input_size * mpp / slide.mpp
    plan = [
        polygon_tiles(
            a.geometry, tile, slide.dimensions, min_coverage=min_coverage, max_tiles=max_tiles
        )
        for a in annotations
    ]
    return _iterate(annotations, plan, slide, mpp, embedder, encoder, class_emb, classes)


#: Tiles embedded per call across annotations (many small polygons share model batches).
CHUNK_TILES = 1024


def _iterate(annotations, plan, slide, mpp, embedder, encoder, class_emb, classes):
    """Yield each annotation's score in order; tiles are embedded in chunks that span
    annotations, so 50,000 one-tile polygons cost about what their tiles cost to embed."""
    sizes = [len(b) for b in plan]
    total = sum(sizes)
    ends = np.cumsum(sizes)
    flat = np.concatenate([b for b in plan if len(b)]) if total else np.zeros((0, 4))
    emb = np.zeros((total, int(encoder.embed_dim)), np.float32)
    failed: dict[int, str] = {}  # annotation index -> read error
    chunk = max(CHUNK_TILES, int(embedder.batch_size))
    k, done = 0, 0
    for s in range(0, max(total, 1), chunk):
        e = min(total, s + chunk)
        if e > s:
            _embed_chunk(slide, embedder, flat, ends, sizes, s, e, emb, failed)
        while k < len(plan) and (ends[k] <= e or e == total):
            score = _scored(annotations[k], plan[k], emb[ends[k] - sizes[k] : ends[k]],
                            failed.get(k), encoder, class_emb, classes)  # fmt: skip
            done += sizes[k]
            yield score, done, total
            k += 1


def _embed_chunk(slide, embedder, flat, ends, sizes, s, e, emb, failed) -> None:
    """Embed tiles ``[s, e)`` in one call; on a read error, annotation by annotation."""
    from napari_mrplip.io.errors import TileReadError

    try:
        emb[s:e] = embedder.embed_boxes(slide, flat[s:e])
        return
    except TileReadError:
        pass
    first = int(np.searchsorted(ends, s, side="right"))
    for k in range(first, len(sizes)):
        a, b = max(s, ends[k] - sizes[k]), min(e, ends[k])
        if a >= b:
            break
        try:
            emb[a:b] = embedder.embed_boxes(slide, flat[a:b])
        except TileReadError as err:
            failed[k] = str(err)


def score_annotations(
    annotations: Sequence[Annotation],
    slide,
    encoder,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    **options,
) -> list[AnnotationScore]:
    """Score each annotation against all labels present (plus ``extra_labels``).

    Takes the options of :func:`iter_scores`, plus:

    progress : callable, optional
        ``progress(done_tiles, total_tiles)`` after each annotation.
    cancel : threading.Event, optional
        Stops between annotations; scores so far are returned.

    Returns
    -------
    list of AnnotationScore
        In the order of ``annotations`` (shorter if cancelled).
    """
    scores, steps = [], iter_scores(annotations, slide, encoder, **options)
    while cancel is None or not cancel.is_set():
        step = next(steps, None)
        if step is None:
            break
        scores.append(step[0])
        if progress:
            progress(step[1], step[2])
    return scores


def _scored(ann, boxes, emb, error: str | None, encoder, class_emb, classes) -> AnnotationScore:
    if not len(boxes):
        return AnnotationScore(
            ann.id,
            ann.label,
            NO_TILES,
            message="the polygon lies outside the slide: no tiles to score",
        )
    if error is not None:
        return AnnotationScore(ann.id, ann.label, READ_ERROR, message=error)
    return _summarise(ann, classify(emb, class_emb, encoder.logit_scale), classes)


def _target_mpp(slide, target_mpp: float | None) -> float:
    from napari_mrplip.io.errors import MissingMppError
    from napari_mrplip.io.stated_mpp import HOW_TO_STATE

    if slide.mpp is None:
        raise MissingMppError(
            f"{slide.path}: the slide states no µm/px, needed to pick tiles inside annotations; "
            f"{HOW_TO_STATE}"
        )
    if target_mpp is not None and target_mpp <= 0:
        raise ScoringError(f"target µm/px must be positive, got {target_mpp}")
    return float(target_mpp or DEFAULT_MPP)


def score_to_json(score: AnnotationScore) -> dict:
    """A JSON-ready record of a score (for the review-state sidecar)."""
    return asdict(score)


def score_from_json(raw: object) -> AnnotationScore | None:
    """Inverse of :func:`score_to_json`; ``None`` for a record that does not fit."""
    if not isinstance(raw, dict):
        return None
    names = {f.name for f in fields(AnnotationScore)}
    try:
        return AnnotationScore(**{k: v for k, v in raw.items() if k in names})
    except TypeError:
        return None
