"""npe2 reader: whole-slide images as one lazy multiscale RGB Image layer."""

from __future__ import annotations

from pathlib import Path


def _single_path(path) -> Path | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, Path)):
        return None
    return Path(path)


def napari_get_reader(path):
    """Return :func:`read_slide` when a backend accepts ``path`` (cheap checks), else ``None``.

    Never raises: napari asks every reader plugin about every dropped file.
    """
    try:
        from napari_mrplip.io.open import find_backend

        p = _single_path(path)
        if p is None or find_backend(p) is None:
            return None
    except Exception:  # noqa: BLE001 - a reader hook must never raise
        return None
    return read_slide


def slide_layer_data(slide, path) -> list[tuple]:
    """The layer-data tuple for an open :class:`~napari_mrplip.io.Slide`.

    Levels are wrapped (``io.safe.safe_levels``) so a corrupt tile shows blank with one
    warning instead of breaking rendering.
    """
    from napari_mrplip.io.safe import safe_levels

    if slide.mpp is not None:
        scale, units = (slide.mpp, slide.mpp), ("micrometer", "micrometer")
    else:
        scale, units = (1.0, 1.0), ("pixel", "pixel")
    meta = {
        "rgb": True,
        "multiscale": True,
        "contrast_limits": (0, 255),
        "scale": scale,
        "units": units,
        "axis_labels": ("y", "x"),
        "name": slide.name,
        "metadata": {"slide": slide, "path": str(path)},
    }
    return [(safe_levels(slide), meta, "image")]


def read_slide(path) -> list[tuple]:
    """Open ``path`` lazily and return one multiscale RGB image layer tuple."""
    from napari_mrplip.io import open_slide

    p = _single_path(path)
    if p is None:
        raise ValueError(f"napari-mrplip opens one slide at a time, got {path!r}")
    return slide_layer_data(open_slide(p), p)
