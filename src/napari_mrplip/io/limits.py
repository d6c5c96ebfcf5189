"""Budgets a slide's declared layout must fit before anything is read or allocated.

A TIFF header is a few hundred bytes but may declare 2^31 x 2^31 pixels; trusting it makes
dask plan trillions of chunks. Every backend checks the declared level shapes here first.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SlideOpenError

#: Longest side of any level (px). The largest scans are ~250,000 px wide.
MAX_SIDE_PX = 1 << 20
#: Pixels of any level (64 Gpx; a 40x 20 x 15 mm scan is ~12 Gpx).
MAX_LEVEL_PIXELS = 1 << 36
#: Pyramid levels stored in a file.
MAX_LEVELS = 32
#: Pages (IFDs) in a TIFF file a slide may have.
MAX_PAGES = 10_000
#: Declared uncompressed level-0 bytes per byte of file. JPEG tiles of blank glass reach
#: ~200:1; a file claiming more than this holds far fewer pixels than it declares.
MAX_COMPRESSION = 5_000


def check_level_shapes(path: Path, shapes: list[tuple[int, int]], file_bytes: int | None) -> None:
    """Refuse declared ``(height, width)`` level shapes past the documented maxima.

    Parameters
    ----------
    path : Path
        The slide, for the message.
    shapes : list of (int, int)
        Declared (height, width) of each stored level, largest first.
    file_bytes : int or None
        Size of the file holding them (None: not checked, e.g. a zarr folder).

    Raises
    ------
    SlideOpenError
    """
    if len(shapes) > MAX_LEVELS:
        raise SlideOpenError(
            f"{path}: declares {len(shapes)} pyramid levels, more than the limit of {MAX_LEVELS}; "
            "the file is corrupt or not a slide"
        )
    for i, (h, w) in enumerate(shapes):
        if max(h, w) > MAX_SIDE_PX or h * w > MAX_LEVEL_PIXELS:
            raise SlideOpenError(
                f"{path}: level {i} declares {w:,} x {h:,} px, past the limit of "
                f"{MAX_SIDE_PX:,} px a side and {MAX_LEVEL_PIXELS:,} px a level "
                "(docs/reliability.md); the file is corrupt or not a slide"
            )
    if file_bytes is not None and shapes:
        h, w = shapes[0]
        if h * w * 3 > MAX_COMPRESSION * max(file_bytes, 1):
            raise SlideOpenError(
                f"{path}: declares {w:,} x {h:,} px but the file has only {file_bytes:,} bytes "
                f"(more than {MAX_COMPRESSION:,}:1 compression); it is truncated or corrupt"
            )
