"""Levels that never raise: a failing chunk becomes white, with one warning per slide.

For viewers (napari) whose render loop must not break on one corrupt tile. ``Slide.levels``
and ``read_region`` keep raising :class:`TileReadError`; only these wrapped copies swallow it.
"""

from __future__ import annotations

import itertools
import threading
import warnings
from typing import TYPE_CHECKING

import numpy as np

from .errors import TileReadError
from .region import DECODE_ERRORS

if TYPE_CHECKING:
    import dask.array as da

_IDS = itertools.count()


class BlankTileWarning(RuntimeWarning):
    """A chunk of a slide could not be decoded and is shown blank (white)."""


class _WarnOnce:
    def __init__(self, name: str):
        self.name, self.warned, self.failures = name, False, 0
        self._lock = threading.Lock()

    def __call__(self, level: int, key, error: BaseException) -> None:
        with self._lock:
            self.failures += 1
            first, self.warned = not self.warned, True
        if first:
            warnings.warn(
                f"{self.name}: some tiles cannot be decoded and are shown blank "
                f"(first: level {level}, {key}: {error}). The file may be damaged.",
                BlankTileWarning,
                stacklevel=2,
            )


class _SafeChunks:
    """Array-like over one dask level whose reads return white on decode failure."""

    def __init__(self, level: da.Array, index: int, warn: _WarnOnce):
        self.level, self.index, self.warn = level, index, warn
        self.shape, self.dtype, self.ndim = level.shape, level.dtype, level.ndim

    def __getitem__(self, key) -> np.ndarray:
        try:
            return np.asarray(self.level[key].compute(scheduler="sync"))
        except (TileReadError, *DECODE_ERRORS) as e:
            self.warn(self.index, key, e)
            shape = tuple(len(range(*k.indices(n))) for k, n in zip(key, self.shape))
            return np.full(shape, 255, dtype=self.dtype)


def safe_levels(slide) -> list[da.Array]:
    """Copies of ``slide.levels`` (same shapes and chunks) that show failing chunks as white.

    Returns
    -------
    list of dask.array.Array
        One per level, ``(Y, X, 3)`` uint8. The first failure emits a :class:`BlankTileWarning`
        naming the slide; ``failures`` on the shared counter counts them all.
    """
    import dask.array as da  # the viewer needs dask arrays; headless reads never get here

    warn = _WarnOnce(str(slide.path))
    uid = next(_IDS)
    return [
        da.from_array(
            _SafeChunks(lv, i, warn), chunks=lv.chunks, asarray=False, name=f"mrplip-safe-{uid}-{i}"
        )
        for i, lv in enumerate(slide.levels)
    ]
