"""The ``Slide`` contract every other package reads whole-slide images through.

Coordinates are (x, y) in level-0 pixels unless a name says otherwise
(``_level`` for pixels at a pyramid level, ``_um`` for micrometres).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .derived import derived_source, read_derived
from .errors import MissingMppError, TileReadError
from .levels import LazyLevels

if TYPE_CHECKING:
    import dask.array as da

#: Largest region (in pixels) ``read_region`` will allocate: 64k x 64k RGB is ~12 GiB.
MAX_REGION_PX = 1 << 32


class RegionReader(Protocol):
    """Fast path a backend may provide: read an in-bounds window of one level.

    ``read(level, x_level, y_level, w, h)`` returns a ``(h, w, 3)`` uint8 array and raises
    :class:`TileReadError` when the underlying bytes cannot be decoded.
    """

    def read(self, level: int, x_level: int, y_level: int, w: int, h: int) -> np.ndarray: ...


@dataclass(eq=False)
class Slide:
    """A lazily-read multiscale slide.

    Attributes
    ----------
    path : Path
        The file (or directory, for OME-Zarr) the slide was opened from.
    levels : list of dask.array.Array, or LazyLevels
        Pyramid levels, largest first, each ``(Y, X, 3)`` uint8 RGB. Backends pass a
        :class:`~napari_mrplip.io.levels.LazyLevels`, whose dask arrays are built (importing
        dask) on first access; geometry (:meth:`level_shape`, :attr:`n_levels`) and
        ``read_region`` through a ``reader`` never build them.
    mpp : float or None
        µm per pixel at level 0, from the file's own metadata (or stated by the user);
        ``None`` when unknown, never invented.
    magnification : float or None
        Objective power stated in the file (e.g. 20.0), or ``None``.
    reader : RegionReader or None
        The backend's fast path for in-bounds windows of stored levels; ``None``: read the
        dask levels.
    metadata : dict
        Backend-specific metadata (format name, compression, original properties).
    associated : dict of str to callable
        Associated images (``label``, ``macro``, ``thumbnail``), each a zero-argument
        callable returning a ``(Y, X, 3)`` uint8 array. Never part of ``levels``.
    native_levels : int
        How many of ``levels`` (the first ones) are stored in the file; the rest are built
        (``io.pyramid.extend_pyramid``) and read through ``io.derived``. Default: all.
    """

    path: Path
    levels: Sequence[da.Array] | LazyLevels
    mpp: float | None = None
    magnification: float | None = None
    metadata: dict = field(default_factory=dict)
    associated: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)
    reader: RegionReader | None = None
    closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    native_levels: int | None = None

    def __post_init__(self) -> None:
        n = self.native_levels
        if n is None and isinstance(self.levels, LazyLevels):
            n = self.levels.native_count
        valid = isinstance(n, int) and 1 <= n <= len(self.levels)
        self.native_levels = int(n) if valid else len(self.levels)

    # -- geometry -------------------------------------------------------------------
    @property
    def name(self) -> str:
        """File name without directories."""
        return Path(self.path).name

    @property
    def n_levels(self) -> int:
        """Number of pyramid levels, stored and built."""
        return len(self.levels)

    def level_shape(self, level: int) -> tuple[int, int]:
        """``(h, w)`` of ``level`` in pixels, known at open (builds no dask array)."""
        if isinstance(self.levels, LazyLevels):
            return self.levels.shape(level)
        h, w = self.levels[level].shape[:2]
        return int(h), int(w)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 size as (width, height) in pixels."""
        y, x = self.level_shape(0)
        return x, y

    @property
    def downsamples(self) -> list[float]:
        """Per-level downsample factor relative to level 0, measured from the shapes."""
        h0, w0 = self.level_shape(0)
        shapes = [self.level_shape(i) for i in range(self.n_levels)]
        return [float((w0 / w + h0 / h) / 2) for h, w in shapes]

    def level_mpp(self, level: int) -> float | None:
        """µm/px at ``level`` (``None`` when the slide has no mpp)."""
        return None if self.mpp is None else self.mpp * self.downsamples[level]

    def require_mpp(self) -> float:
        """``mpp``, or :class:`MissingMppError` saying how to supply it when the file has none."""
        if self.mpp is None:
            raise MissingMppError(
                f"{self.path}: the file states no pixel size (µm/px). Pass mpp= to open_slide "
                "(CLI: --slide-mpp, remembered for the file), e.g. 0.25 for 40x or 0.5 for 20x scans."
            )
        return self.mpp

    def best_level_for_downsample(self, downsample: float) -> int:
        """Largest-index level whose downsample does not exceed ``downsample`` (+1 %)."""
        best = 0
        for i, ds in enumerate(self.downsamples):
            if ds <= downsample * 1.01:
                best = i
        return best

    # -- pixels -----------------------------------------------------------------------
    def read_region(self, x0: int, y0: int, w: int, h: int, level: int = 0) -> np.ndarray:
        """Read a region as ``(h, w, 3)`` uint8 RGB.

        Parameters
        ----------
        x0, y0 : int
            Top-left corner in level-0 pixels.
        w, h : int
            Size in pixels *at* ``level``.
        level : int
            Pyramid level index (0 = full resolution).

        Out-of-bounds parts are padded with white (255).

        Raises
        ------
        TileReadError
            If a tile covering the region cannot be decoded.
        ValueError
            On a negative size, a missing level or a region too large to allocate.
        """
        if not 0 <= level < self.n_levels:
            raise ValueError(f"{self.name}: level {level} does not exist (0..{self.n_levels - 1})")
        if w < 0 or h < 0:
            raise ValueError(f"{self.name}: region size must be non-negative, got {w}x{h}")
        if w * h > MAX_REGION_PX:
            raise ValueError(f"{self.name}: region {w}x{h} is too large to read at once; tile it")
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        ds = self.downsamples[level]
        xl, yl = int(round(x0 / ds)), int(round(y0 / ds))
        lh, lw = self.level_shape(level)
        xa, ya = max(xl, 0), max(yl, 0)
        xb, yb = min(xl + w, lw), min(yl + h, lh)
        if xb <= xa or yb <= ya:
            return out
        out[ya - yl : yb - yl, xa - xl : xb - xl] = self._read_in_bounds(
            level, xa, ya, xb - xa, yb - ya
        )
        return out

    def _read_in_bounds(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        shapes = [self.level_shape(i) for i in range(self.n_levels)]
        derived = derived_source(shapes, self.native_levels, level)
        if derived is not None:  # a built level: reduce the stored level's window (same pixels)
            reduced = getattr(self.reader, "read_reduced", None)
            out = reduced(*derived, x, y, w, h) if reduced is not None else None
            return out if out is not None else read_derived(self._read_stored, *derived, x, y, w, h)
        return self._read_stored(level, x, y, w, h)

    def _read_stored(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if self.reader is not None:
            return self.reader.read(level, x, y, w, h)
        try:
            return np.asarray(self.levels[level][y : y + h, x : x + w].compute())
        except TileReadError:
            raise
        except Exception as e:  # decoder errors from dask/zarr/imagecodecs vary by codec
            raise TileReadError(
                f"{self.path}: failed to read level {level} at x={x}, y={y} ({w}x{h} px): {e}"
            ) from e

    def thumbnail(self, max_px: int = 1024) -> np.ndarray:
        """A downsampled whole-slide RGB image whose longer side is at most ``max_px``."""
        from skimage.transform import resize

        w0, h0 = self.dimensions
        target = max(w0, h0) / max_px
        level = self.best_level_for_downsample(max(target, 1.0))
        lh, lw = self.level_shape(level)
        img = self.read_region(0, 0, lw, lh, level)
        scale = max_px / max(lh, lw)
        if scale >= 1:
            return img
        shape = (max(1, round(lh * scale)), max(1, round(lw * scale)))
        return (resize(img, shape, anti_aliasing=True, preserve_range=True) + 0.5).astype(np.uint8)

    # -- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        """Release file handles held by the backend (idempotent)."""
        while self.closers:
            self.closers.pop()()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
