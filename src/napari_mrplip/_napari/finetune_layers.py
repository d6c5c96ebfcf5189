"""Turn labelled napari layers (Shapes, Labels) over a slide layer into fine-tuning tiles.

World coordinates (µm when the slide has an mpp) map to the slide's level-0 pixels through
the slide layer's own scale and translate, so annotations drawn at any zoom land right.
"""

from __future__ import annotations

import numpy as np

from napari_mrplip.finetune.data import FinetuneDataError, LabelledTiles

#: Feature columns searched (in order) for a shape's class name.
LABEL_COLUMNS = ("label", "class", "classification", "name")


def slide_layers(viewer) -> list:
    """Image layers made by the reader (they carry ``metadata["slide"]``)."""
    return [ly for ly in viewer.layers if ly.metadata.get("slide") is not None]


def labelled_layers(viewer) -> list:
    """Shapes and Labels layers (candidates for training labels)."""
    return [ly for ly in viewer.layers if type(ly).__name__ in {"Shapes", "Labels"}]


def world_to_level0(slide_layer, yx_world: np.ndarray) -> np.ndarray:
    """``(K, 2)`` world (y, x) -> ``(K, 2)`` level-0 pixel (x, y) of ``slide_layer``'s slide."""
    scale = np.asarray(slide_layer.scale)[-2:]
    translate = np.asarray(slide_layer.translate)[-2:]
    yx = (np.asarray(yx_world, np.float64)[:, -2:] - translate) / scale
    return yx[:, ::-1]


def shape_labels(layer) -> list[str]:
    """Class name per shape, from the first of :data:`LABEL_COLUMNS` in ``layer.features``."""
    feats = layer.features
    for col in LABEL_COLUMNS:
        if col in feats.columns:
            vals = [
                str(v) if v is not None and str(v) not in {"", "nan", "None"} else ""
                for v in feats[col]
            ]
            missing = [i for i, v in enumerate(vals) if not v]
            if missing:
                raise FinetuneDataError(
                    f"layer {layer.name!r}: shape(s) {missing} have no {col!r}; label every shape"
                )
            return vals
    raise FinetuneDataError(
        f"layer {layer.name!r}: no class labels; add a feature column named one of {LABEL_COLUMNS} "
        "(napari: layer.features['label'] = [...])"
    )


def regions_from_shapes(layer, slide_layer) -> list[tuple[np.ndarray, str]]:
    """``(polygon level-0 (K, 2) x, y, label)`` for every polygon/rectangle/ellipse shape."""
    labels = shape_labels(layer)
    regions = []
    for data, kind, label in zip(layer.data, layer.shape_type, labels):
        if kind in {"line", "path"}:
            continue
        world = np.asarray([layer.data_to_world(p) for p in data])
        regions.append((world_to_level0(slide_layer, world), label))
    if not regions:
        raise FinetuneDataError(f"layer {layer.name!r} has no polygons or rectangles to train on")
    return regions


def tiles_from_layer(layer, slide_layer, *, tile_px: int, mpp: float | None) -> LabelledTiles:
    """Training tiles from a Shapes or Labels layer drawn over ``slide_layer``."""
    from napari_mrplip.finetune.sources import tiles_from_label_mask, tiles_in_regions

    slide = slide_layer.metadata["slide"]
    if type(layer).__name__ == "Shapes":
        return tiles_in_regions(
            slide, regions_from_shapes(layer, slide_layer), tile_px=tile_px, mpp=mpp
        )
    mask = np.asarray(layer.data if not getattr(layer, "multiscale", False) else layer.data[0])
    names = layer.metadata.get("class_names") or [
        f"class {k}" for k in range(1, int(mask.max(initial=0)) + 1)
    ]
    ds = float(np.mean(np.asarray(layer.scale)[-2:] / np.asarray(slide_layer.scale)[-2:]))
    return tiles_from_label_mask(
        slide, mask, list(names), mask_downsample=ds, tile_px=tile_px, mpp=mpp
    )


def regions_geojson(regions: list[tuple[np.ndarray, str]]) -> dict:
    """QuPath-style FeatureCollection of the regions (saved next to a subprocess run)."""
    feats = []
    for i, (xy, label) in enumerate(regions):
        ring = [list(map(float, p)) for p in xy] + [list(map(float, xy[0]))]
        feats.append({
            "type": "Feature", "id": f"region-{i}",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "annotation", "classification": {"name": label}},
        })  # fmt: skip
    return {"type": "FeatureCollection", "features": feats}
