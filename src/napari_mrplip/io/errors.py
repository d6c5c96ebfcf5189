"""Exceptions raised by the slide readers.

Every parser or decoder failure underneath (tifffile, imagecodecs, zarr, OpenSlide)
is re-raised as one of these, with a message naming the file and what to do.
"""

from __future__ import annotations


class SlideOpenError(ValueError):
    """A file could not be opened as a slide (unsupported, truncated, malformed)."""


class TileReadError(OSError):
    """A region could not be read: a tile failed to decode or its bytes are missing.

    The message names the file, the level and the position of the failing tile.
    """


class MissingMppError(SlideOpenError):
    """The slide's metadata has no physical pixel size and the task needs one.

    Pass ``mpp=`` (CLI: ``--slide-mpp``) with the µm/px of level 0.
    """
