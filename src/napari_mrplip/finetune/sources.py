"""Sources of labelled tiles: polygons (Shapes layers, GeoJSON), label masks, tile folders, stain statistics.

Each returns a :class:`~napari_mrplip.finetune.data.LabelledTiles`; slides stay lazy.
Coordinates are level-0 pixels (x, y).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_mrplip.embed.tiles import read_tile

from .data import (
    IMAGE_SUFFIXES,
    FinetuneDataError,
    ImageTiles,
    LabelledTiles,
    SlideTiles,
    _from_parts,
    check_usable,
    grid_boxes,
    tile_side0,
)

#: Most tiles read from one folder (bounds memory for huge folders).
MAX_FOLDER_TILES = 200_000


def tiles_in_regions(
    slide,
    regions: Sequence[tuple[np.ndarray, str]],
    *,
    tile_px: int = 224,
    mpp: float | None = 0.5,
    stride_frac: float = 0.5,
    min_inside: float = 0.5,
    class_names: Sequence[str] | None = None,
    check: bool = True,
) -> LabelledTiles:
    """Tiles inside labelled polygons.

    Parameters
    ----------
    slide : Slide
        The slide the polygons lie on.
    regions : sequence of (polygon, label)
        ``polygon`` is ``(K, 2)`` float ``x, y`` in level-0 pixels (K >= 3) or a shapely
        (Multi)Polygon in level-0 pixels; ``label`` is a class name.
    tile_px, mpp : int, float or None
        Tile side in pixels at ``mpp`` µm/px (``None``: level-0 pixels).
    stride_frac : float
        Grid stride as a fraction of the tile side (0.5 = half-overlapping tiles).
    min_inside : float
        Keep a tile when at least this fraction of it lies inside the polygon.
    class_names : sequence of str, optional
        Class order (default: labels in order of first appearance).
    check : bool
        Raise :class:`FinetuneDataError` for one class only or classes without tiles.

    Each region is its own split group (``"<slide name>#<region index>"``).
    """
    import shapely

    side0 = tile_side0(slide, mpp, tile_px)
    names = list(class_names) if class_names else list(dict.fromkeys(lab for _, lab in regions))
    rows = []
    for i, (poly_xy, label) in enumerate(regions):
        poly = _polygon(poly_xy, f"{slide.name} region {i} ({label!r})")
        if label not in names:
            raise FinetuneDataError(
                f"region {i}: label {label!r} is not one of the classes {names}"
            )
        boxes = grid_boxes(poly.bounds, side0, side0 * stride_frac)
        if len(boxes):
            cells = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
            inside = shapely.area(shapely.intersection(cells, poly)) / side0**2
            boxes = boxes[inside >= min_inside]
        part = SlideTiles(slide, boxes, mpp, tile_px)
        rows.append((part, [names.index(label)] * len(boxes), [f"{slide.name}#{i}"] * len(boxes)))
    data = _from_parts(rows, names)
    return check_usable(data, f"{slide.name}: {len(regions)} labelled regions") if check else data


def _polygon(xy: np.ndarray, what: str):
    import shapely

    if hasattr(xy, "geom_type"):  # a shapely geometry (GeoJSON annotations keep their holes)
        poly = shapely.make_valid(xy)
        if poly.is_empty or poly.area <= 0:
            raise FinetuneDataError(f"{what}: the polygon is empty (zero area)")
        return poly
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 3 or not np.isfinite(xy).all():
        raise FinetuneDataError(
            f"{what}: a region needs >= 3 finite (x, y) vertices, got shape {xy.shape}"
        )
    poly = shapely.make_valid(shapely.Polygon(xy))
    if poly.is_empty or poly.area <= 0:
        raise FinetuneDataError(f"{what}: the polygon is empty (zero area)")
    return poly


def tiles_from_label_mask(
    slide,
    mask: np.ndarray,
    class_names: Sequence[str],
    *,
    mask_downsample: float = 1.0,
    tile_px: int = 224,
    mpp: float | None = 0.5,
    min_fraction: float = 0.5,
) -> LabelledTiles:
    """Tiles labelled by a label image (a napari Labels layer).

    Parameters
    ----------
    mask : np.ndarray
        ``(Y, X)`` int; 0 = unlabelled, value k = ``class_names[k - 1]``.
    mask_downsample : float
        Level-0 pixels per mask pixel.
    min_fraction : float
        A tile takes the majority label when that label covers at least this fraction of it.

    Connected regions of one value are the split groups.
    """
    from skimage.measure import label as connected

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise FinetuneDataError(f"label mask must be 2-D (Y, X), got shape {mask.shape}")
    if mask.max(initial=0) > len(class_names):
        raise FinetuneDataError(
            f"label mask has value {mask.max()} but only {len(class_names)} class names"
        )
    comp = connected(mask, background=0)
    side0 = tile_side0(slide, mpp, tile_px)
    h, w = mask.shape
    boxes = grid_boxes((0, 0, w * mask_downsample, h * mask_downsample), side0, side0 / 2)
    keep, labels, groups = [], [], []
    for b in boxes:
        x0, y0, x1, y1 = (int(round(v / mask_downsample)) for v in b)
        win = mask[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
        vals, cnt = np.unique(win, return_counts=True)
        k = int(np.argmax(cnt))
        if vals[k] == 0 or cnt[k] < min_fraction * win.size:
            continue
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        keep.append(b)
        labels.append(int(vals[k]) - 1)
        groups.append(f"{slide.name}#label{int(comp[min(cy, h - 1), min(cx, w - 1)])}")
    part = SlideTiles(slide, np.asarray(keep, np.float64).reshape(-1, 4), mpp, tile_px)
    data = _from_parts([(part, labels, groups)], list(class_names))
    return check_usable(data, f"{slide.name}: label mask with {len(class_names)} classes")


def tiles_from_folder(root: str | Path, max_tiles: int = MAX_FOLDER_TILES) -> LabelledTiles:
    """Tiles from ``root/<class name>/*.png|jpg|tif``; each file is its own split group."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise FinetuneDataError(
            f"{root}: not a folder; expected one subfolder of tile images per class"
        )
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FinetuneDataError(
            f"{root}: no class subfolders; put each class's tiles in root/<class name>/"
        )
    images, labels, groups = [], [], []
    for k, sub in enumerate(classes):
        for f in sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            if len(images) >= max_tiles:
                raise FinetuneDataError(f"{root}: more than {max_tiles} tiles; sample fewer")
            try:
                with Image.open(f) as im:
                    images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            except (OSError, UnidentifiedImageError) as e:
                raise FinetuneDataError(
                    f"{f}: cannot read this tile image ({e}); remove or replace it"
                ) from e
            labels.append(k)
            groups.append(str(f.relative_to(root)))
    data = _from_parts([(ImageTiles(images), labels, groups)], [c.name for c in classes])
    return check_usable(
        data, f"{root} ({', '.join(f'{c}: {n}' for c, n in data.counts().items())})"
    )


def tiles_from_geojson(path: str | Path, slide, **kwargs) -> LabelledTiles:
    """Tiles inside the classified polygons of a QuPath GeoJSON (level-0 pixel coordinates)."""
    from napari_mrplip.annotations.geojson import read_annotations

    regions = []
    for ann in read_annotations(path):
        if ann.label and ann.geometry is not None and not ann.geometry.is_empty:
            regions.append((ann.geometry, str(ann.label)))
    if not regions:
        raise FinetuneDataError(
            f"{path}: no classified polygon annotations; set a class on each region in QuPath"
        )
    return tiles_in_regions(slide, regions, **kwargs)


def tiles_from_stain_labels(
    slide,
    *,
    tile_px: int = 224,
    mpp: float | None = 0.5,
    stride_frac: float = 1.0,
    labeller: Callable[[dict], str | None] | None = None,
    block: int = 4,
    min_classes: int = 2,
) -> LabelledTiles:
    """Every tile of a slide, labelled from its stain statistics (``data.captioners.stain_stats``).

    ``labeller(stats) -> class name or None`` (default :func:`stain_class`); tiles it leaves
    unlabelled are skipped. Split groups are ``block x block`` tile blocks, so neighbouring
    tiles stay on one side of the split. Classes no tile reaches are dropped; fewer than
    ``min_classes`` remaining is an error (use 1 for a held-out slide).
    """
    from napari_mrplip.data.captioners import stain_stats

    labeller = labeller or stain_class
    side0 = tile_side0(slide, mpp, tile_px)
    w0, h0 = slide.dimensions
    boxes = grid_boxes((0, 0, w0, h0), side0, side0 * stride_frac)
    keep, names, groups = [], [], []
    for b in boxes:
        name = labeller(stain_stats(read_tile(slide, b, tile_px), mpp or slide.mpp or 0.5))
        if name is None:
            continue
        keep.append(b)
        names.append(name)
        groups.append(
            f"{slide.name}#b{int(b[0] // (side0 * block))}_{int(b[1] // (side0 * block))}"
        )
    classes = [c for c in STAIN_CLASSES if c in names] + sorted(set(names) - set(STAIN_CLASSES))
    part = SlideTiles(slide, np.asarray(keep, np.float64).reshape(-1, 4), mpp, tile_px)
    data = _from_parts([(part, [classes.index(n) for n in names], groups)], classes)
    return check_usable(
        data, f"{slide.name}: stain-statistics labels", drop_empty=True, min_classes=min_classes
    )


#: Classes :func:`stain_class` assigns.
STAIN_CLASSES = ("dense nuclei", "stroma", "background")


def stain_class(stats: dict) -> str | None:
    """Default stain-statistics labeller: ``"background"``, ``"dense nuclei"``, ``"stroma"`` or ``None``.

    Uses the StainCaptioner's own thresholds: background when at least ``BACKGROUND`` of the
    tile is glass; dense nuclei when haematoxylin-stained nuclei cover at least
    ``DENSE_NUCLEI`` of it; stroma when eosin-rich stroma covers at least ``STROMA_RICH``
    with sparse nuclei (< ``SPARSE_NUCLEI``). Mixed tiles (``None``) are not used.
    """
    from napari_mrplip.data.captioners import BACKGROUND, DENSE_NUCLEI, SPARSE_NUCLEI, STROMA_RICH

    bg, nuc, stroma = (
        stats["background_fraction"],
        stats["nuclear_fraction"],
        stats["stroma_fraction"],
    )
    if bg >= BACKGROUND:
        return "background"
    if bg > 0.25:
        return None
    if nuc >= DENSE_NUCLEI:
        return "dense nuclei"
    if stroma >= STROMA_RICH and nuc < SPARSE_NUCLEI:
        return "stroma"
    return None
