"""The napari layer: reader, sample data, widgets. The only package importing napari/Qt."""
