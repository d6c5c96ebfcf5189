"""The ``Annotation`` record: one labelled region in level-0 pixels, plus its review state.

An annotation keeps the GeoJSON feature it came from (``properties`` and any other
top-level keys) verbatim, so that writing it back loses nothing a QuPath user stored.
Only three things change on save: ``classification`` after a relabel, the geometry after
a repair (self-intersections), and the namespaced ``properties["mrplip_review"]`` record.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

from shapely.geometry.base import BaseGeometry

#: Property under which review decisions and scores are written.
REVIEW_KEY = "mrplip_review"

ReviewStatus = Literal["unreviewed", "accepted", "relabelled", "flagged"]
REVIEW_STATUSES: tuple[str, ...] = ("unreviewed", "accepted", "relabelled", "flagged")

#: Where the label was read from: ``classification.name``, a plain ``classification``
#: string, the ``name`` property, or nowhere (unlabelled).
LabelSource = Literal["classification.name", "classification", "name", "none"]


@dataclass
class Review:
    """What the reviewer decided and what the model said.

    Attributes
    ----------
    status : str
        ``"unreviewed"``, ``"accepted"``, ``"relabelled"`` or ``"flagged"``.
    original_label : str or None
        The label as loaded, before any relabel.
    model_label : str or None
        The model's top label (after scoring).
    agreement : float or None
        Mean probability the model gives the annotation's own (original) label.
    confidence : float or None
        Mean probability of the model's top label.
    """

    status: str = "unreviewed"
    original_label: str | None = None
    model_label: str | None = None
    agreement: float | None = None
    confidence: float | None = None

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "original_label": self.original_label,
            "model_label": self.model_label,
            "agreement": self.agreement,
            "confidence": self.confidence,
        }

    @classmethod
    def from_json(cls, raw: object, fallback_label: str | None) -> Review:
        """Parse a stored record leniently (unknown status -> ``"unreviewed"``)."""
        if not isinstance(raw, dict):
            return cls(original_label=fallback_label)
        status = raw.get("status")
        status = status if status in REVIEW_STATUSES else "unreviewed"
        orig = raw.get("original_label", fallback_label)
        return cls(
            status=status,
            original_label=orig if isinstance(orig, str) or orig is None else str(orig),
            model_label=_opt_str(raw.get("model_label")),
            agreement=_opt_float(raw.get("agreement")),
            confidence=_opt_float(raw.get("confidence")),
        )


def _opt_str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _opt_float(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


@dataclass(eq=False)
class Annotation:
    """One polygonal annotation.

    Attributes
    ----------
    id : str
        Unique key within its file: the feature's ``id`` when it is a unique string,
        otherwise ``"feature-<index>"`` (the file's own id is kept in ``file_id``).
    geometry : shapely Polygon or MultiPolygon
        In level-0 pixel coordinates (x right, y down), holes included.
    label : str or None
        Current class name (``None`` = unclassified).
    properties : dict
        The feature's ``properties`` exactly as read (updated on relabel/review).
    file_id : object
        The feature's ``id`` member as read (``None`` when absent), written back verbatim.
    extra : dict
        Other top-level feature members (e.g. QuPath's ``nucleusGeometry``), verbatim.
    raw_geometry : dict or None
        The geometry object as read; written back unchanged unless ``geometry_changed``.
    geometry_changed : bool
        True after a repair or an edit: the shapely geometry is written instead.
    label_source : str
        Where the label came from (see :data:`LabelSource`); relabel writes it back there.
    review : Review
        Review status and model scores.
    """

    id: str
    geometry: BaseGeometry
    label: str | None
    properties: dict = field(default_factory=dict)
    file_id: object = None
    extra: dict = field(default_factory=dict)
    raw_geometry: dict | None = None
    geometry_changed: bool = False
    label_source: str = "classification.name"
    review: Review = field(default_factory=Review)

    @property
    def original_label(self) -> str | None:
        return self.review.original_label

    def copy(self) -> Annotation:
        """A deep copy (geometry objects are immutable and shared)."""
        out = copy.copy(self)
        out.properties = copy.deepcopy(self.properties)
        out.extra = copy.deepcopy(self.extra)
        out.raw_geometry = copy.deepcopy(self.raw_geometry)
        out.review = copy.copy(self.review)
        return out


def color_for_label(annotations: list[Annotation], label: str) -> object | None:
    """The ``classification.color`` another annotation of class ``label`` uses, if any."""
    for ann in annotations:
        cls = ann.properties.get("classification")
        if ann.label == label and isinstance(cls, dict):
            for key in ("color", "colorRGB"):
                if key in cls:
                    return key, copy.deepcopy(cls[key])
    return None


def set_label(ann: Annotation, label: str, known: list[Annotation] | None = None) -> None:
    """Relabel ``ann`` in place, updating its ``classification`` the way it was written.

    ``classification.name`` is replaced; the colour becomes the one other annotations of
    the new class use (``known``), or is dropped so QuPath assigns the class colour.
    A plain-string ``classification`` stays a string; a label read from ``name`` (or none)
    gets a QuPath ``classification`` object and ``name`` is left as it was.
    """
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"annotation {ann.id}: a label must be a non-empty string, got {label!r}")
    color = color_for_label(known or [], label)
    cls = ann.properties.get("classification")
    if ann.label_source == "classification" and isinstance(cls, str):
        ann.properties["classification"] = label
    else:
        new = dict(cls) if isinstance(cls, dict) else {}
        new["name"] = label
        new.pop("color", None)
        new.pop("colorRGB", None)
        if color is not None:
            new[color[0]] = color[1]
        ann.properties["classification"] = new
        ann.label_source = "classification.name"
    ann.label = label
