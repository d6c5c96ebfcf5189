"""Pyramid levels whose shapes are known at open and whose dask arrays are built on first use.

Opening a slide reads its level shapes from the file's own tables (TIFF pages, OpenSlide
dimensions, zarr metadata); headless reads go through the backend's region reader and never need
a dask graph. Building the graphs imports dask (and, for TIFF, zarr), about 0.5 s in a fresh
process, so :class:`LazyLevels` defers it to the first time a level's array is asked for: by the
napari reader, a writer, or code that computes a level whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .pyramid import extend_pyramid, pyramid_shapes

if TYPE_CHECKING:
    import dask.array as da


class LazyLevels(Sequence):
    """The levels of a slide, largest first: stored ones then the built ``halve`` chain.

    Parameters
    ----------
    native_shapes : list of (h, w)
        Shapes of the levels stored in the file, largest first.
    build_native : callable
        ``() -> list of dask.array.Array``: the stored levels as ``(h, w, 3)`` uint8 dask arrays
        of exactly ``native_shapes``. Called once, on first access of an array.

    Notes
    -----
    ``len`` and :meth:`shape` never build anything. Indexing (or iterating) builds every level
    at once: the stored ones by ``build_native`` and the rest by
    :func:`~napari_mrplip.io.pyramid.extend_pyramid`, whose shapes are those of
    :func:`~napari_mrplip.io.pyramid.pyramid_shapes` announced here.
    """

    def __init__(self, native_shapes, build_native: Callable[[], list]):
        self.native_count = len(native_shapes)
        self.shapes: list[tuple[int, int]] = pyramid_shapes(native_shapes)
        self._build_native = build_native
        self._arrays: list | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the dask arrays exist yet."""
        return self._arrays is not None

    def shape(self, level: int) -> tuple[int, int]:
        """``(h, w)`` of ``level`` without building anything."""
        return self.shapes[level]

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index):
        return self._levels()[index]

    def _levels(self) -> list[da.Array]:
        with self._lock:
            if self._arrays is None:
                arrays = extend_pyramid(list(self._build_native()))
                got = [tuple(int(s) for s in a.shape[:2]) for a in arrays]
                if got != self.shapes:
                    raise ValueError(
                        f"levels built with shapes {got}, but the file declared {self.shapes}; "
                        "the file's tables disagree with its image data (it may be corrupt)"
                    )
                self._arrays = arrays
            return self._arrays

    def __repr__(self) -> str:
        state = "built" if self.built else "not built"
        return f"LazyLevels({self.shapes}, {state})"
