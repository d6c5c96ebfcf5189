"""Prompt-heatmap engine: tiles, embedding cache, prompt scoring, fusion, placement. No napari."""
