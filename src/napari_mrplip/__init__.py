"""napari-mrplip: free-text prompted heatmaps on whole-slide images with MR-PLIP.

The package root is deliberately cheap: it exposes only ``__version__`` so that
napari's plugin discovery never imports torch or Qt.
"""

__version__ = "0.1.0"
