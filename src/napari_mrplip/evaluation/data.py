"""Labelled tiles for evaluation: class subfolders of images, or a GeoJSON over a slide.

Every tile reaches a model through the one resampler (``tiling.geometry.resize_rgb``)
at that model's input size; slide tiles are cut on the heatmap's own grid
(``tiling.grid.make_grid``) and read by the one tile reader (``embed.tiles.read_tiles``), so
evaluation sees what the heatmap sees. Image files are size-checked before decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_mrplip.embed.tiles import read_tiles
from napari_mrplip.tiling.geometry import resize_rgb as resize_tile

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: Largest tile image decoded (pixels): a tile folder holds tiles, not slides.
MAX_TILE_PIXELS = 4096 * 4096
MAX_TILES = 1_000_000


class EvalDataError(ValueError):
    """The evaluation data cannot be used (message names the file and the fix)."""


def read_image(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a tile image, refusing oversized or unreadable files."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_TILE_PIXELS:
                raise EvalDataError(
                    f"{path} is {img.width}x{img.height} px, more than a tile "
                    f"({MAX_TILE_PIXELS} px); cut it into tiles first"
                )
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        if isinstance(e, EvalDataError):
            raise
        raise EvalDataError(f"cannot read tile image {path}: {e}; remove or replace it") from e


@dataclass
class FolderTiles:
    """Tiles from ``root/<class>/<image>``: ``paths[i]`` has class ``labels[i]``."""

    root: Path
    classes: list[str]
    paths: list[Path]
    labels: np.ndarray
    names: list[str] = field(default_factory=list)

    def labels_for(self, size: int) -> np.ndarray:
        """``(N,)`` class indices of the tiles a model of input ``size`` sees."""
        return self.labels

    def read(self, idx, size: int) -> np.ndarray:
        """``(B, size, size, 3)`` uint8 through the shared resampler."""
        return np.stack([resize_tile(read_image(self.paths[i]), size) for i in idx])


def tile_folder(root: str | Path) -> FolderTiles:
    """Index ``root``'s class subfolders (sorted), each holding tile images."""
    root = Path(root)
    if not root.is_dir():
        raise EvalDataError(f"{root} is not a folder of class subfolders")
    classes, paths, labels = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        classes.append(sub.name)
        paths += files
        labels += [len(classes) - 1] * len(files)
        if len(paths) > MAX_TILES:
            raise EvalDataError(f"{root} holds more than {MAX_TILES} tiles; evaluate a sample")
    if not classes:
        raise EvalDataError(
            f"{root} has no class subfolders with tile images ({', '.join(IMAGE_SUFFIXES)}): "
            "put each class's tiles in root/<class name>/"
        )
    names = [f"{p.parent.name}/{p.name}" for p in paths]
    return FolderTiles(root, classes, paths, np.asarray(labels, np.int64), names)


@dataclass
class SlideTiles:
    """Tiles of a slide inside labelled GeoJSON polygons, on each model's heatmap grid."""

    slide: object
    annotations: list
    classes: list[str]
    mpp: float | None
    _cache: dict = field(default_factory=dict)

    def for_size(self, size: int):
        """``(grid, xy (N, 2) level-0 corners, labels (N,))`` for a model input size."""
        if size not in self._cache:
            self._cache[size] = self._plan(size)
        return self._cache[size]

    def _plan(self, size: int):
        from shapely import contains_xy

        from napari_mrplip.tiling.grid import make_grid

        grid = make_grid(self.slide, size, target_mpp=self.mpp)
        step = grid.step_level0
        xy, labels = [], []
        for ann in self.annotations:
            x0, y0, x1, y1 = ann.geometry.bounds
            xs = np.arange(np.floor(x0 / step) * step, x1, step)
            ys = np.arange(np.floor(y0 / step) * step, y1, step)
            gx, gy = np.meshgrid(xs, ys)
            cx, cy = gx.ravel() + grid.tile_level0 / 2, gy.ravel() + grid.tile_level0 / 2
            inside = contains_xy(ann.geometry, cx, cy)
            xy.append(np.stack([gx.ravel()[inside], gy.ravel()[inside]], 1))
            labels += [self.classes.index(ann.label)] * int(inside.sum())
            if len(labels) > MAX_TILES:
                raise EvalDataError(f"more than {MAX_TILES} tiles in the annotations; use --mpp")
        xy = np.concatenate(xy) if xy else np.zeros((0, 2))
        return grid, xy, np.asarray(labels, np.int64)

    def labels_for(self, size: int) -> np.ndarray:
        return self.for_size(size)[2]

    def read(self, idx, size: int) -> np.ndarray:
        """``(B, size, size, 3)`` uint8 read by the heatmap's tile reader."""
        grid, xy, _ = self.for_size(size)
        xy = np.asarray(xy, np.float64)[np.asarray(idx, np.int64)].reshape(-1, 2)
        boxes = np.concatenate([xy, xy + grid.tile_level0], axis=1)
        return read_tiles(self.slide, boxes, grid.out_px)


def geojson_tiles(
    geojson: str | Path, slide_path: str | Path, mpp: float | None, slide_mpp: float | None = None
) -> SlideTiles:
    """Labelled tiles from the classified polygons of a QuPath GeoJSON over ``slide_path``
    (``slide_mpp``: its level-0 µm/px when the file records none, see ``io.stated_mpp``)."""
    from napari_mrplip.annotations.geojson import read_annotations
    from napari_mrplip.io.open import open_slide

    anns = [a for a in read_annotations(geojson) if a.label]
    if not anns:
        raise EvalDataError(
            f"{geojson} has no classified polygons: give each a classification in QuPath"
        )
    classes = sorted({a.label for a in anns})
    slide = open_slide(slide_path, mpp=slide_mpp)
    return SlideTiles(slide, anns, classes, mpp)
