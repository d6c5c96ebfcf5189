"""``--slides`` entries -> slide files, including built-in images wrapped as slides.

``skimage:immunohistochemistry`` is scikit-image's 512 x 512 IHC image of colon tissue
(haematoxylin counterstain, DAB). It has no recorded pixel size; we state 0.5 µm/px
(a 20x scan), estimated from its nuclei (stromal nuclei about 10-15 px wide). It is written
once, losslessly, as a small pyramidal OME-TIFF in the run's cache so every process and
DataLoader worker opens it like any other slide.
"""

from __future__ import annotations

from pathlib import Path

from .config import SKIMAGE_IHC, PretrainConfigError

#: µm/px assumed for ``skimage.data.immunohistochemistry()``.
SKIMAGE_IHC_MPP = 0.5


def _write_skimage_ihc(path: Path) -> Path:
    from skimage import data

    from napari_mrplip.io.writers import write_pyramid

    # written atomically; a concurrent writer of the same file wins harmlessly
    write_pyramid(path, data.immunohistochemistry(), mpp=SKIMAGE_IHC_MPP, tile=256,
                  compression="zlib", overwrite=True)  # fmt: skip
    return path


def resolve_slide(entry: str, cache_dir: Path) -> str:
    """A slide path for ``entry`` (built-in names are materialised under ``cache_dir``)."""
    if entry == SKIMAGE_IHC:
        path = Path(cache_dir) / "skimage-immunohistochemistry.ome.tif"
        return str(path if path.is_file() else _write_skimage_ihc(path))
    if entry.startswith("skimage:"):
        raise PretrainConfigError(
            f"unknown built-in slide {entry!r}; the only one is {SKIMAGE_IHC!r}"
        )
    if not Path(entry).exists():
        raise PretrainConfigError(f"{entry}: no such slide file (check the --slides paths)")
    return entry


def resolve_slides(entries: list[str], cache_dir: Path) -> list[str]:
    """``resolve_slide`` for every entry, in order."""
    if not entries:
        raise PretrainConfigError("--slides is required (one or more slide paths)")
    return [resolve_slide(e, cache_dir) for e in entries]
