"""Annotations as data: the :class:`~.model.Annotation` model and QuPath GeoJSON I/O.

A core package (below ``review`` and ``train``): review checks annotations, fine-tuning
learns from them, and neither imports the other to read them. No torch, no napari.
"""
