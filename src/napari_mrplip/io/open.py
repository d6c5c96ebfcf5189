"""Backend dispatch for :func:`open_slide`."""

from __future__ import annotations

import importlib
from pathlib import Path

from .errors import SlideOpenError
from .slide import Slide
from .stated_mpp import resolve as resolve_mpp

#: Backends tried in order: module path (relative to this package) and a short name.
#: Each module provides ``can_open(path) -> bool`` (cheap, never raises) and
#: ``open(path) -> Slide`` (raises SlideOpenError).
BACKENDS: list[tuple[str, str]] = [
    ("ome_zarr", ".backends.ome_zarr"),
    ("tifffile", ".backends.tiff"),
    ("openslide", ".backends.openslide"),
]


def _backend(module: str):
    return importlib.import_module(module, __package__)


def open_slide(path: str | Path, *, mpp: float | None = None, backend: str | None = None) -> Slide:
    """Open a whole-slide image lazily.

    Parameters
    ----------
    path : str or Path
        SVS, TIFF/OME-TIFF, NDPI, OME-Zarr directory, or anything OpenSlide reads
        (with the ``openslide`` extra).
    mpp : float, optional
        µm/px of level 0, overriding (or supplying missing) file metadata; remembered for a
        file that records none (``io.stated_mpp``). Without it, a file that records none
        gets the µm/px stated for it earlier, if any; ``slide.metadata["mpp_source"]`` says
        which (``"file"``, ``"argument"``, ``"stated"`` or ``None``).
    backend : str, optional
        Force one backend by name (``"tifffile"``, ``"ome_zarr"``, ``"openslide"``).

    Returns
    -------
    Slide

    Raises
    ------
    SlideOpenError
        If no backend can open the file; the message names the file and why.
    """
    path = Path(path)
    if not path.exists():
        raise SlideOpenError(f"{path}: no such file or directory")
    _check_readable(path)
    names = [b for b in BACKENDS if backend is None or b[0] == backend]
    if not names:
        raise SlideOpenError(
            f"unknown backend {backend!r}; choose one of {[b[0] for b in BACKENDS]}"
        )
    tried = []
    for name, module in names:
        try:
            mod = _backend(module)
        except ImportError:
            tried.append(f"{name} (not installed)")
            continue
        if backend is None and not mod.can_open(path):
            continue
        return resolve_mpp(mod.open(path), mpp)  # file, argument or stated (io.stated_mpp)
    extra = f" (tried: {', '.join(tried)})" if tried else ""
    raise SlideOpenError(
        f"{path}: not a slide format this plugin reads{extra}. Supported: SVS, TIFF/OME-TIFF, "
        "NDPI, OME-Zarr; install the 'openslide' extra for MRXS, VSI, SCN, BIF."
    )


def _check_readable(path: Path) -> None:
    """Name an unreadable file as such (not as 'not a slide format')."""
    import os

    try:
        if path.is_file():
            with path.open("rb") as fh:
                if not fh.read(1):
                    raise SlideOpenError(f"{path}: the file is empty (0 bytes); copy it again")
        elif not os.access(path, os.R_OK | os.X_OK):
            raise PermissionError(13, "permission denied")
    except OSError as e:
        raise SlideOpenError(
            f"{path}: cannot read the file ({e.strerror or e}); check its permissions"
        ) from e


def find_backend(path: str | Path) -> str | None:
    """Name of the first backend whose cheap ``can_open`` accepts ``path`` (never raises)."""
    path = Path(path)
    for name, module in BACKENDS:
        try:
            if _backend(module).can_open(path):
                return name
        except ImportError:
            continue
    return None
