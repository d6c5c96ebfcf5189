"""Annotation review: QuPath GeoJSON I/O, scoring annotations, disagreement ranking."""
