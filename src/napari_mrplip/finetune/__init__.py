"""Fine-tuning an encoder on labelled tiles: linear probe, prompt learning, partial/full.

Public entry points (import the module you need; this package imports nothing heavy):

- :func:`napari_mrplip.finetune.run.finetune` runs one fine-tuning (split, embed, train,
  evaluate, save, register); :class:`~napari_mrplip.finetune.config.FinetuneConfig` configures it.
- :mod:`napari_mrplip.finetune.sources` builds the labelled tiles
  (:class:`~napari_mrplip.finetune.data.LabelledTiles`) from GeoJSON + slide, label masks, tile
  folders or stain statistics.
- :mod:`napari_mrplip.finetune.cli` is ``mrplip finetune``.

A peer of ``train`` (pretraining), ``heatmap``, ``review`` and ``evaluation``: it never imports
them (import-linter layers contract).
"""
