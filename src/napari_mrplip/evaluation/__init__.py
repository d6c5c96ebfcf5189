"""Measuring models as the papers do: zero-shot classification and image-text retrieval.

``mrplip eval zeroshot`` scores labelled tiles (class subfolders, or a GeoJSON + slide) with
one or more models and reports balanced accuracy, weighted F1, per-class recall and a
confusion matrix per model; ``mrplip eval retrieval`` reports image<->text recall@k on
captioned tiles. Scoring goes through :mod:`napari_mrplip.models.zeroshot` (the one
zero-shot scorer) and tiles through the shared resampler of :mod:`napari_mrplip.embed`.
"""
