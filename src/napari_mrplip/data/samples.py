"""Offline real-tissue samples usable as slides for training data.

``skimage.data.immunohistochemistry()`` is a 512 x 512 RGB image of colon tissue stained for
a membrane marker (brown DAB) with a haematoxylin counterstain. It carries no pixel size; its
nuclei (about 15-20 px long, 8-10 px wide) match about 0.5 µm/px (20x). That value is a user
statement, not metadata: the OME-TIFF written here stores no physical size, and callers pass
``slide_mpp=IHC_MPP`` (``--slide-mpp 0.5``).
"""

from __future__ import annotations

from pathlib import Path

#: Stated µm/px of ``skimage.data.immunohistochemistry()`` (about 20x; see module docstring).
IHC_MPP = 0.5


def sample_slide_path() -> Path:
    """The H&E slide shipped in the package (OpenSlide's ``CMU-1-Small-Region.svs``, 0.499 µm/px).

    ``python -c "from napari_mrplip.data.samples import sample_slide_path as p; print(p())"``
    gives a slide every command can be tried on; attribution in ``_napari/sample``.
    """
    return Path(__file__).resolve().parents[1] / "_napari" / "sample" / "CMU-1-Small-Region.svs"


def immunohistochemistry_slide(out_dir: str | Path) -> Path:
    """Write skimage's IHC image as a tiled OME-TIFF (no physical size) and return its path.

    The file is written once; a later call returns the existing path. Open it with
    ``open_slide(path, mpp=IHC_MPP)`` or pass ``slide_mpp={str(path): IHC_MPP}`` to
    :func:`~napari_mrplip.data.manifest.build_manifest`.
    """
    from skimage.data import immunohistochemistry

    from napari_mrplip.io.writers import write_pyramid

    out = Path(out_dir) / "skimage-immunohistochemistry.ome.tif"
    if not out.is_file():
        write_pyramid(
            out, immunohistochemistry(), mpp=None, tile=256, compression="zlib", overwrite=True
        )
    return out
