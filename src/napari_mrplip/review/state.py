"""Review progress saved as the reviewer goes: a sidecar JSON next to the annotations.

Every decision rewrites ``<annotations>.mrplip-review.json`` atomically (temp file +
rename), so a crash or a closed viewer loses nothing; opening the same annotations again
restores labels, decisions and model scores. When the annotations' folder is read-only
the sidecar goes to ``$MRPLIP_HOME/review/``.

Records are keyed by content as well as by id: each stores a fingerprint of its polygon
and the labels it may carry in the file. Ids alone are not enough (files without ids get
``feature-<index>``, which shift when a feature is deleted). On restore a record applies
to the annotation whose fingerprint matches (same id first, else the one annotation with
that fingerprint); a record that matches none is reported (``unmatched``), never
reassigned.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from napari_mrplip.annotations.model import Annotation, Review, set_label
from napari_mrplip.models.catalog import home
from napari_mrplip.outputs import atomic_output

FORMAT = "mrplip-review-state"
VERSION = 2
#: Coordinates are rounded to this many decimals (level-0 px) before fingerprinting.
FINGERPRINT_DECIMALS = 2
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


def geometry_fingerprint(ann: Annotation) -> str:
    """A short hash of the polygon (normalised, coordinates rounded), independent of id."""
    import shapely

    geom = shapely.normalize(ann.geometry)
    coords = np.round(shapely.get_coordinates(geom), FINGERPRINT_DECIMALS) + 0.0  # no -0.0
    h = hashlib.sha1(geom.geom_type.encode())
    h.update(np.ascontiguousarray(coords, np.float64).tobytes())
    h.update(str(shapely.get_num_geometries(geom)).encode())
    return h.hexdigest()[:20]


def _labels_ok(rec: dict, ann: Annotation) -> bool:
    """The file's label is one the record knew: as loaded then, or as relabelled and saved."""
    known = {rec.get("label"), rec.get("file_label")}
    review = rec.get("review")
    if isinstance(review, dict):
        known.add(review.get("original_label"))
    return ann.label in known or ann.review.original_label in known


def _matches(rec: object, ann: Annotation, fp: str) -> bool:
    return isinstance(rec, dict) and rec.get("fingerprint") == fp and _labels_ok(rec, ann)


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
        #: After :meth:`restore`: stored id -> current id of every record applied.
        self.id_map: dict[str, str] = {}
        #: After :meth:`restore`: stored ids whose annotation is gone or changed.
        self.unmatched: list[str] = []
        self.version = VERSION
        self._file_labels: dict[str, str | None] = {}
        self._orphans: dict[str, dict] = {}

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
                a.id: {
                    "label": a.label,
                    "file_label": self._file_labels.get(a.id, a.review.original_label),
                    "fingerprint": geometry_fingerprint(a),
                    "review": a.review.to_json(),
                }
                for a in annotations
            },
            "unmatched": self._orphans,
        }
        with atomic_output(self.path, overwrite=True) as tmp:
            with tmp.open("w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
        return self.path

    def load(self) -> dict[str, dict]:
        """Stored records by annotation id (empty when there is no sidecar)."""
        self.version = VERSION
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
        self.version = raw.get("version") if isinstance(raw.get("version"), int) else 1
        anns = raw.get("annotations")
        return anns if isinstance(anns, dict) else {}

    def _pairs(self, records: dict, annotations: list[Annotation]) -> dict[str, Annotation]:
        """Stored id -> annotation, by fingerprint (same id first, else a unique match)."""
        fps = {a.id: geometry_fingerprint(a) for a in annotations}
        by_id = {a.id: a for a in annotations}
        by_fp: dict[str, list[Annotation]] = {}
        for a in annotations:
            by_fp.setdefault(fps[a.id], []).append(a)
        pairs, taken = {}, set()
        for sid, rec in records.items():
            ann = by_id.get(sid)
            if ann is not None and _matches(rec, ann, fps[ann.id]):
                pairs[sid] = ann
                taken.add(ann.id)
        for sid, rec in records.items():
            if sid in pairs or not isinstance(rec, dict):
                continue
            cands = [a for a in by_fp.get(rec.get("fingerprint"), []) if a.id not in taken]
            cands = [a for a in cands if _matches(rec, a, fps[a.id])]
            if len(cands) == 1:
                pairs[sid] = cands[0]
                taken.add(cands[0].id)
        return pairs

    def restore(self, annotations: list[Annotation]) -> int:
        """Apply saved labels and reviews to the annotations they were made on.

        Returns how many records were applied; ``id_map`` and ``unmatched`` say which.
        Records of version 1 (no fingerprint) apply only to a file's own unique ids.
        """
        records = self.load()
        self._file_labels = {a.id: a.label for a in annotations}
        if self.version < 2:
            pairs = {a.id: a for a in annotations if a.id in records and a.file_id == a.id}
        else:
            pairs = self._pairs(records, annotations)
        for sid, ann in pairs.items():
            rec = records[sid]
            label = rec.get("label")
            if isinstance(label, str) and label and label != ann.label:
                set_label(ann, label, annotations)
            ann.review = Review.from_json(rec.get("review"), ann.review.original_label)
        self.id_map = {sid: a.id for sid, a in pairs.items()}
        self.unmatched = [sid for sid in records if sid not in pairs]
        self._orphans = {sid: records[sid] for sid in self.unmatched}
        if self.unmatched:
            shown = ", ".join(self.unmatched[:10]) + (" ..." if len(self.unmatched) > 10 else "")
            warnings.warn(
                f"{self.path}: {len(self.unmatched)} saved review decision(s) match no "
                f"annotation of the file any more (changed or deleted polygons or labels): "
                f"{shown}; they were not applied and are kept in the state file under 'unmatched'",
                UserWarning,
                stacklevel=2,
            )
        return len(pairs)
