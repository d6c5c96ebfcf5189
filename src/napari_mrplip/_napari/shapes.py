"""Annotations <-> a napari Shapes layer in the slide's world units.

Shape vertices are level-0 pixels (row, col) and the layer takes the slide layer's
``scale`` (µm/px) and ``translate``, so annotations sit exactly over the tissue. GeoJSON
coordinates are continuous (pixel (0, 0) spans [0, 1)), napari puts pixel *centres* at
integers: the layer is shifted by half a pixel to match. Shapes cannot hold holes, so each
polygon part is drawn by its outer ring; one annotation may span several shapes, linked by
the ``annotation_id`` feature. Layer features: ``annotation_id``, ``label``, ``status``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
import pandas as pd
from shapely.geometry import MultiPolygon, Polygon

from napari_mrplip.annotations.model import Annotation

from .slide_mpp import over

#: Feature names that may carry the class of a user-drawn Shapes layer, in priority order.
LABEL_FEATURES = ("label", "class", "classification", "name")
#: Edge colours cycled over labels.
PALETTE = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#64d2ff", "#ff2d55"]


class ShapesInputError(ValueError):
    """A Shapes layer cannot be turned into annotations; the message says why."""


def _parts(geom) -> list[Polygon]:
    return list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]


def shapes_data(annotations: Sequence[Annotation]) -> tuple[list[np.ndarray], pd.DataFrame]:
    """Vertices ``(K, 2)`` (row, col) in level-0 px per shape, and the per-shape features."""
    data, rows = [], []
    for ann in annotations:
        for poly in _parts(ann.geometry):
            xy = np.asarray(poly.exterior.coords)[:-1]
            data.append(xy[:, ::-1].astype(np.float64))
            rows.append((ann.id, ann.label or "", ann.review.status))
    return data, pd.DataFrame(rows, columns=["annotation_id", "label", "status"])


def placement(slide_layer) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, translate) of a Shapes layer in level-0 px over ``slide_layer``."""
    scale = tuple(float(s) for s in slide_layer.scale[-2:])
    translate = tuple(float(t) - 0.5 * s for t, s in zip(slide_layer.translate[-2:], scale))
    return scale, translate


def add_annotations_layer(viewer, annotations: Sequence[Annotation], slide_layer, name: str):
    """Add (or replace) a Shapes layer showing ``annotations`` over ``slide_layer``."""
    if name in viewer.layers:
        viewer.layers.remove(name)
    data, features = shapes_data(annotations)
    scale, translate = placement(slide_layer)
    labels = sorted(set(features["label"]))
    cycle = [PALETTE[i % len(PALETTE)] for i in range(max(1, len(labels)))]
    extent = max((float(np.ptp(d, axis=0).max()) for d in data), default=100.0)
    width = max(2.0, extent / 150)  # level-0 px: visible at overview, thin when zoomed in
    layer = viewer.add_shapes(
        data, shape_type="polygon", name=name, features=features, scale=scale,
        translate=translate, edge_width=width,
        edge_color="label", edge_color_cycle=cycle, face_color="transparent",
        units=getattr(slide_layer, "units", None),
        metadata={"mrplip_review": True, **over(slide_layer)},
    )  # fmt: skip
    return layer


def update_features(layer, annotations: Sequence[Annotation]) -> None:
    """Refresh ``label``/``status`` of every shape after relabels and decisions."""
    by_id = {a.id: a for a in annotations}
    feats = layer.features.copy()
    feats["label"] = [
        by_id[i].label or "" if i in by_id else lab
        for i, lab in zip(feats["annotation_id"], feats["label"])
    ]
    feats["status"] = [
        by_id[i].review.status if i in by_id else s
        for i, s in zip(feats["annotation_id"], feats["status"])
    ]
    layer.features = feats
    layer.refresh_colors(update_color_mapping=True)


def shape_indices(layer, annotation_id: str) -> set[int]:
    """Indices of the shapes drawing one annotation."""
    ids = layer.features.get("annotation_id")
    return set() if ids is None else {i for i, v in enumerate(ids) if v == annotation_id}


def _label_column(layer) -> str | None:
    cols = {c.lower(): c for c in layer.features.columns}
    return next((cols[c] for c in LABEL_FEATURES if c in cols), None)


def _ellipse(verts: np.ndarray, n: int = 64) -> np.ndarray:
    centre, (a, b) = verts.mean(0), (verts.max(0) - verts.min(0)) / 2
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre[0] + a * np.sin(t), centre[1] + b * np.cos(t)], 1)


def annotations_from_shapes(layer, slide_layer) -> tuple[list[Annotation], list[str]]:
    """Annotations (level-0 px) from a Shapes layer drawn over ``slide_layer``.

    Polygons, rectangles and ellipses become annotations; shapes sharing an
    ``annotation_id`` feature merge into one MultiPolygon. Lines and paths are skipped.

    Returns
    -------
    (list of Annotation, list of str)
        The annotations and warnings about skipped shapes.

    Raises
    ------
    ShapesInputError
        When the layer has no label feature or no closed shapes.
    """
    col = _label_column(layer)
    if col is None:
        raise ShapesInputError(
            f"layer {layer.name!r} has no label feature ({', '.join(LABEL_FEATURES)}); add one "
            "in the layer's features table, or load a GeoJSON"
        )
    s_scale, s_translate = placement(slide_layer)
    scale, translate = np.asarray(layer.scale[-2:]), np.asarray(layer.translate[-2:])
    ids = layer.features.get("annotation_id")
    groups: dict[str, tuple[str, list[Polygon]]] = {}
    skipped = []
    for i, (verts, kind) in enumerate(zip(layer.data, layer.shape_type)):
        if kind not in ("polygon", "rectangle", "ellipse"):
            skipped.append(f"#{i} ({kind})")
            continue
        v = np.asarray(verts)[:, -2:]
        v = _ellipse(v) if kind == "ellipse" else v
        level0 = (v * scale + translate - s_translate) / s_scale  # data -> world -> level-0 px
        poly = Polygon(level0[:, ::-1])
        if not poly.is_valid:
            from shapely.validation import make_valid

            poly = make_valid(poly)
        key = str(ids.iloc[i]) if ids is not None else f"shape-{i}"
        label = layer.features[col].iloc[i]
        groups.setdefault(key, (str(label) if pd.notna(label) and str(label) else None, []))[
            1
        ].extend(
            [p for p in getattr(poly, "geoms", [poly]) if isinstance(p, Polygon) and p.area > 0]
        )
    anns = [_from_parts(key, label, parts) for key, (label, parts) in groups.items() if parts]
    if not anns:
        raise ShapesInputError(f"layer {layer.name!r} has no polygons, rectangles or ellipses")
    warnings = (
        [f"layer {layer.name!r}: skipped {len(skipped)} open shape(s): {', '.join(skipped)}"]
        if skipped
        else []
    )
    return anns, warnings


def _from_parts(key: str, label: str | None, parts: list[Polygon]) -> Annotation:
    geom = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    props: dict = {"objectType": "annotation"}
    if label:
        props["classification"] = {"name": label}
    ann_id = (
        key if not key.startswith("shape-") else str(uuid.uuid5(uuid.NAMESPACE_OID, key + geom.wkt))
    )
    ann = Annotation(id=ann_id, geometry=geom, label=label, properties=props, file_id=ann_id)
    ann.geometry_changed = True
    ann.review.original_label = label
    return ann
