"""Lazy whole-slide image reading: ``open_slide(path) -> Slide``.

Never imports torch, napari or Qt.
"""

from .errors import MissingMppError, SlideOpenError, TileReadError
from .open import open_slide
from .slide import Slide

__all__ = ["MissingMppError", "Slide", "SlideOpenError", "TileReadError", "open_slide"]
