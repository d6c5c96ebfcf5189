"""Review progress saved as the reviewer goes: a sidecar JSON next to the annotations.

Every decision rewrites ``<annotations>.mrplip-review.json`` atomically (temp file +
rename), so a crash or a closed viewer loses nothing; opening the same annotations again
restores labels, decisions and model scores. When the annotations' folder is read-only
the sidecar goes to ``$MRPLIP_HOME/review/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from napari_mrplip.models.catalog import home

from .annotations import Annotation, Review, set_label

FORMAT = "mrplip-review-state"
VERSION = 1
#: Sidecars larger than this are not trusted (they hold one small record per annotation).
MAX_STATE_BYTES = 64 * 1024**2


class ReviewStateError(ValueError):
    """A sidecar file exists but cannot be used; the message names it."""


def sidecar_path(source: str | Path) -> Path:
    """Where the review state of annotations read from ``source`` lives."""
    source = Path(source).resolve()
    beside = source.with_name(source.name + ".mrplip-review.json")
    if os.access(source.parent, os.W_OK):
        return beside
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:16]
    return home() / "review" / f"{source.stem}-{digest}.json"


class ReviewState:
    """Reads and writes the sidecar of one annotation source.

    Parameters
    ----------
    path : Path
        The sidecar file (see :func:`sidecar_path`).
    source : str
        What the annotations came from (a GeoJSON path or a layer name), recorded.
    """

    def __init__(self, path: str | Path, source: str = ""):
        self.path = Path(path)
        self.source = source
        self.meta: dict = {}

    @classmethod
    def for_file(cls, geojson: str | Path) -> ReviewState:
        return cls(sidecar_path(geojson), str(geojson))

    def save(self, annotations: list[Annotation]) -> Path:
        """Write every annotation's current label and review record, atomically."""
        record = {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "meta": self.meta,
            "annotations": {
                a.id: {"label": a.label, "review": a.review.to_json()} for a in annotations
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path

    def load(self) -> dict[str, dict]:
        """Stored records by annotation id (empty when there is no sidecar)."""
        if not self.path.exists():
            return {}
        if self.path.stat().st_size > MAX_STATE_BYTES:
            raise ReviewStateError(
                f"{self.path}: review state file is implausibly large; delete it"
            )
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ReviewStateError(
                f"{self.path}: cannot read the saved review state ({e}); delete or rename it "
                "to start the review afresh"
            ) from e
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ReviewStateError(f"{self.path}: not a napari-mrplip review state file")
        self.meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
        anns = raw.get("annotations")
        return anns if isinstance(anns, dict) else {}

    def restore(self, annotations: list[Annotation]) -> int:
        """Apply saved labels and reviews to matching ids; returns how many matched."""
        records, n = self.load(), 0
        for ann in annotations:
            rec = records.get(ann.id)
            if not isinstance(rec, dict):
                continue
            label = rec.get("label")
            if isinstance(label, str) and label and label != ann.label:
                set_label(ann, label, annotations)
            ann.review = Review.from_json(rec.get("review"), ann.review.original_label)
            n += 1
        return n
