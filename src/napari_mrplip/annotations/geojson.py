"""QuPath GeoJSON annotations: read, validate, repair, write back losslessly.

Accepts what QuPath writes: a ``FeatureCollection`` (QuPath >= 0.3) or a bare JSON list
of features (QuPath 0.2), ``Polygon`` and ``MultiPolygon`` geometries with holes in
level-0 pixels, ``properties.classification.name`` (or a plain ``classification``
string, or ``name`` as a last resort). Features that are not polygons (points, lines,
empty or unreadable geometry) are skipped with a warning and written back unchanged.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.validation import explain_validity, make_valid

from napari_mrplip.outputs import atomic_output

from .model import REVIEW_KEY, Annotation, Review

#: Largest GeoJSON file read (bytes): Python's json needs about 9x this in memory for coordinates.
MAX_GEOJSON_BYTES = 128 * 1024**2
#: Largest number of polygon vertices accepted in one file.
MAX_VERTICES = 20_000_000
#: Largest number of features accepted in one file.
MAX_FEATURES = 1_000_000


class GeoJSONError(ValueError):
    """A GeoJSON file cannot be used as annotations; the message names the file."""


class GeoJSONWarning(UserWarning):
    """Some features were skipped or repaired; the message names the file and ids."""


@dataclass
class AnnotationDocument:
    """Everything read from one file, so that saving loses nothing.

    Attributes
    ----------
    path : Path
    annotations : list of Annotation
        The usable polygonal annotations, in file order.
    passthrough : list of (int, dict)
        Skipped features with their position in the file, written back verbatim.
    top_level : dict
        FeatureCollection members other than ``features`` (``None`` for a bare list).
    warnings : list of str
        What was skipped or repaired, for the CLI and widget to show.
    """

    path: Path
    annotations: list[Annotation]
    passthrough: list[tuple[int, dict]] = field(default_factory=list)
    top_level: dict | None = None
    warnings: list[str] = field(default_factory=list)

    def write(self, path: str | Path | None = None, **policy) -> Path:
        """Write the document (to ``path`` or back to its own file), atomically.

        Writing back to its own file is the user's Save; any other existing file is replaced
        only with ``overwrite=True`` (see ``napari_mrplip.outputs``).
        """
        if path is None or Path(path).resolve() == self.path.resolve():
            policy = {**policy, "overwrite": True, "inputs": ()}
        return write_annotations(self.annotations, path or self.path, document=self, **policy)


def _load_json(path: Path, max_bytes: int) -> object:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise GeoJSONError(f"{path}: cannot read annotations file: {e}") from e
    if size > max_bytes:
        raise GeoJSONError(
            f"{path}: {size / 1024**2:.0f} MiB is larger than the {max_bytes / 1024**2:.0f} MiB "
            "limit for annotation files; export only annotations (not detections) from QuPath, "
            "or raise max_bytes."
        )
    try:
        with path.open("rb") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise GeoJSONError(f"{path}: not UTF-8 text, so not GeoJSON ({e})") from e
    except json.JSONDecodeError as e:
        raise GeoJSONError(
            f"{path}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from e
    except RecursionError as e:
        raise GeoJSONError(f"{path}: JSON nested too deeply to be GeoJSON") from e


def _features(path: Path, doc: object) -> tuple[list, dict | None]:
    if isinstance(doc, list):
        return doc, None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise GeoJSONError(f"{path}: FeatureCollection has no 'features' list")
        return feats, {k: v for k, v in doc.items() if k != "features"}
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc], {"type": "FeatureCollection"}
    kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
    raise GeoJSONError(
        f"{path}: expected a GeoJSON FeatureCollection or a list of features (as QuPath "
        f"exports with File > Export objects as GeoJSON), got {kind!r}"
    )


def _count_vertices(coords: object, depth: int) -> int:
    """Vertices in a nested coordinate array of ``depth`` (2 Polygon, 3 MultiPolygon)."""
    if not isinstance(coords, list):
        raise TypeError("coordinates must be nested lists")
    if depth == 0:
        if len(coords) < 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in coords[:2]
        ):
            raise TypeError("a position must hold two finite numbers")
        return 1
    return sum(_count_vertices(c, depth - 1) for c in coords)


def _polygonal(geom):
    """Keep the polygonal part of a (repaired) geometry: Polygon, MultiPolygon or None."""
    if isinstance(geom, Polygon | MultiPolygon):
        return None if geom.is_empty else geom
    polys = []
    for g in getattr(geom, "geoms", []):
        if isinstance(g, Polygon) and not g.is_empty:
            polys.append(g)
        elif isinstance(g, MultiPolygon):
            polys.extend(p for p in g.geoms if not p.is_empty)
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _label(props: dict) -> tuple[str | None, str]:
    cls = props.get("classification")
    if isinstance(cls, dict) and isinstance(cls.get("name"), str) and cls["name"]:
        return cls["name"], "classification.name"
    if isinstance(cls, str) and cls:
        return cls, "classification"
    if isinstance(props.get("name"), str) and props["name"]:
        return props["name"], "name"
    return None, "none"


class _Reader:
    """Turns features into annotations, collecting what it skipped or repaired."""

    def __init__(self, path: Path, max_vertices: int):
        self.path, self.max_vertices, self.vertices = path, max_vertices, 0
        self.skipped: Counter = Counter()
        self.skipped_ids: list[str] = []
        self.notes: list[str] = []

    def skip(self, index: int, feat: object, why: str) -> None:
        self.skipped[why] += 1
        fid = feat.get("id") if isinstance(feat, dict) else None
        self.skipped_ids.append(f"#{index}" + (f" ({fid})" if fid is not None else ""))

    def geometry(self, index: int, feat: dict):
        geom = feat.get("geometry")
        gtype = geom.get("type") if isinstance(geom, dict) else None
        if gtype not in ("Polygon", "MultiPolygon"):
            self.skip(index, feat, f"unsupported geometry {gtype or 'missing'}")
            return None
        try:
            self.vertices += _count_vertices(
                geom.get("coordinates"), 2 if gtype == "Polygon" else 3
            )
            if self.vertices > self.max_vertices:
                raise GeoJSONError(
                    f"{self.path}: more than {self.max_vertices} polygon vertices; simplify the "
                    "annotations in QuPath or raise max_vertices."
                )
            shp = shape(geom)
        except (TypeError, ValueError, AttributeError) as e:
            if isinstance(e, GeoJSONError):
                raise
            self.skip(index, feat, "malformed coordinates")
            return None
        repaired = False
        if not shp.is_empty and not shp.is_valid:
            why = explain_validity(shp)
            shp, repaired = _polygonal(make_valid(shp)), True
            if shp is not None:
                self.notes.append(f"feature #{index} ({feat.get('id')}): repaired ({why})")
        if shp is None or shp.is_empty or shp.area <= 0:
            self.skip(index, feat, "empty polygon")
            return None
        return shp, repaired

    def warnings(self) -> list[str]:
        out = []
        if self.skipped:
            kinds = ", ".join(f"{n} x {why}" for why, n in self.skipped.items())
            ids = ", ".join(self.skipped_ids[:20]) + (" ..." if len(self.skipped_ids) > 20 else "")
            out.append(
                f"{self.path}: skipped {sum(self.skipped.values())} feature(s) ({kinds}): {ids}; they are written back unchanged"
            )
        out += [f"{self.path}: {n} with shapely make_valid" for n in self.notes]
        return out


def _unique_ids(feats: list[tuple[int, dict]]) -> list[str]:
    counts = Counter(f.get("id") for _, f in feats if isinstance(f.get("id"), str) and f.get("id"))
    return [
        f["id"] if isinstance(f.get("id"), str) and counts.get(f.get("id")) == 1 else f"feature-{i}"
        for i, f in feats
    ]


def read_document(
    path: str | Path,
    *,
    max_bytes: int = MAX_GEOJSON_BYTES,
    max_vertices: int = MAX_VERTICES,
    max_features: int = MAX_FEATURES,
) -> AnnotationDocument:
    """Read a QuPath GeoJSON file, keeping everything needed to write it back.

    Raises
    ------
    GeoJSONError
        When the file is not JSON, not a FeatureCollection/feature list, over a size
        limit, or holds no usable polygon. Per-feature problems only warn
        (:class:`GeoJSONWarning`, also listed in ``document.warnings``).
    """
    path = Path(path)
    feats, top = _features(path, _load_json(path, max_bytes))
    if len(feats) > max_features:
        raise GeoJSONError(f"{path}: {len(feats)} features exceed the limit of {max_features}")
    reader, good, passthrough = _Reader(path, max_vertices), [], []
    for i, feat in enumerate(feats):
        if not isinstance(feat, dict) or feat.get("type", "Feature") != "Feature":
            reader.skip(i, feat, "not a Feature")
            passthrough.append((i, feat))
            continue
        geom = reader.geometry(i, feat)
        if geom is None:
            passthrough.append((i, feat))
        else:
            good.append((i, feat, *geom))
    anns = [
        _annotation(uid, f, g, rep)
        for uid, (_, f, g, rep) in zip(_unique_ids([(i, f) for i, f, *_ in good]), good)
    ]
    if not anns:
        raise GeoJSONError(
            f"{path}: no Polygon or MultiPolygon annotations found ({len(feats)} features). "
            + " ".join(reader.warnings())
        )
    doc = AnnotationDocument(path, anns, passthrough, top, reader.warnings())
    for msg in doc.warnings:
        warnings.warn(msg, GeoJSONWarning, stacklevel=2)
    return doc


def _annotation(uid: str, feat: dict, geom, repaired: bool) -> Annotation:
    props = feat.get("properties")
    props = props if isinstance(props, dict) else {}
    label, source = _label(props)
    review = Review.from_json(props.get(REVIEW_KEY), label)
    extra = {k: v for k, v in feat.items() if k not in ("type", "id", "geometry", "properties")}
    return Annotation(
        id=uid, geometry=geom, label=label, properties=dict(props), file_id=feat.get("id"),
        extra=extra, raw_geometry=feat.get("geometry"), geometry_changed=repaired,
        label_source=source, review=review,
    )  # fmt: skip


def read_annotations(path: str | Path, **limits) -> list[Annotation]:
    """Annotations of a QuPath GeoJSON file (see :func:`read_document`)."""
    return read_document(path, **limits).annotations


def feature_of(ann: Annotation) -> dict:
    """The GeoJSON feature for ``ann``: original members, current label and review."""
    feat: dict = {"type": "Feature"}
    if ann.file_id is not None:
        feat["id"] = ann.file_id
    geom = (
        ann.raw_geometry if not ann.geometry_changed and ann.raw_geometry else mapping(ann.geometry)
    )
    feat["geometry"] = json.loads(json.dumps(geom))  # tuples -> lists
    props = dict(ann.properties)
    if ann.review.status != "unreviewed" or ann.review.model_label is not None:
        props[REVIEW_KEY] = ann.review.to_json()
    else:
        props.pop(REVIEW_KEY, None)
    feat["properties"] = props
    feat.update(ann.extra)
    return feat


def write_annotations(
    annotations: list[Annotation],
    path: str | Path,
    *,
    document: AnnotationDocument | None = None,
    overwrite: bool = True,
    inputs=(),
) -> Path:
    """Write annotations as a QuPath-importable FeatureCollection, atomically.

    With ``document``, skipped features go back to their original positions and the
    collection's other members are kept. The output is always a FeatureCollection. The file
    is written through ``napari_mrplip.outputs`` (temp name + rename, the user's umask);
    ``overwrite``/``inputs`` are its policy.
    """
    path = Path(path)
    feats = [feature_of(a) for a in annotations]
    for index, raw in document.passthrough if document else []:
        feats.insert(min(index, len(feats)), raw)
    top = (
        dict(document.top_level)
        if document and document.top_level
        else {"type": "FeatureCollection"}
    )
    top["features"] = feats
    with atomic_output(path, overwrite=overwrite, inputs=inputs) as tmp:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(top, f, ensure_ascii=False)  # NaN kept: QuPath writes it
    return path
