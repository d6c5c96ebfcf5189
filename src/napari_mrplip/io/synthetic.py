"""Large synthetic slides in seconds, for tests and benchmarks.

A handful of real-looking tiles (crops of scikit-image's IHC tissue, or given tiles) are encoded
once and their bytes repeated across the whole grid through tifffile's support for iterators of
pre-encoded tiles, so a 100,000 x 100,000 px JPEG pyramid costs a few hundred MB of disk and
seconds of time, never its pixels in memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: TIFF compression tags written per codec; 33005 is Aperio's JPEG 2000 (RGB) tag, read by OpenSlide.
SVS_COMPRESSION = {"jpeg": 7, "jpeg2000": 33005}


def source_tiles(tile: int = 256, count: int = 8) -> list[np.ndarray]:
    """``count`` distinct ``(tile, tile, 3)`` uint8 crops of real IHC tissue (scikit-image)."""
    from skimage import data

    img = np.tile(data.immunohistochemistry(), (2, 2, 1))
    rng = np.random.default_rng(0)
    ys = rng.integers(0, img.shape[0] - tile, count)
    xs = rng.integers(0, img.shape[1] - tile, count)
    return [np.ascontiguousarray(img[y : y + tile, x : x + tile]) for y, x in zip(ys, xs)]


def encode_tiles(tiles: list[np.ndarray], codec: str, quality: int = 80) -> list[bytes]:
    """Encode tiles once: ``"jpeg"`` (YCbCr 4:2:0 JFIF) or ``"jpeg2000"`` (J2K codestream)."""
    import imagecodecs

    if codec == "jpeg":
        return [bytes(imagecodecs.jpeg8_encode(t, level=quality)) for t in tiles]
    if codec == "jpeg2000":
        return [
            bytes(imagecodecs.jpeg2k_encode(t, level=quality, codecformat="J2K")) for t in tiles
        ]
    raise ValueError(f"codec must be 'jpeg' or 'jpeg2000', got {codec!r}")


def _grid_bytes(shape: tuple[int, int], tile: int, encoded: list[bytes]) -> Iterator[bytes]:
    n = (-(-shape[0] // tile)) * (-(-shape[1] // tile))
    return itertools.islice(itertools.cycle(encoded), n)


def _level_shapes(size: tuple[int, int], factor: int, min_px: int) -> list[tuple[int, int]]:
    shapes = [size]
    while max(shapes[-1]) > min_px:
        h, w = shapes[-1]
        shapes.append((max(1, h // factor), max(1, w // factor)))
    return shapes


def write_synthetic_slide(
    path: str | Path,
    size: tuple[int, int] = (100_000, 100_000),
    kind: str = "ome",
    codec: str = "jpeg",
    tile: int = 256,
    mpp: float = 0.25,
    tiles: list[np.ndarray] | None = None,
    quality: int = 80,
) -> Path:
    """Write a tiled pyramid whose tiles repeat a few pre-encoded images.

    Parameters
    ----------
    path : str or Path
        Output file.
    size : (height, width)
        Level-0 size in pixels.
    kind : {"ome", "svs"}
        ``"ome"``: OME-TIFF, 2x levels in SubIFDs, YCbCr JPEG. ``"svs"``: Aperio-like TIFF
        (``Aperio Image Library`` description with ``MPP``/``AppMag``), 4x levels as pages,
        a stripped thumbnail page, JPEG (tag 7) or JPEG 2000 (tag 33005) tiles.
    codec : {"jpeg", "jpeg2000"}
        Tile codec (``"jpeg2000"`` only with ``kind="svs"``).
    tile : int
        Tile side in pixels.
    mpp : float
        µm/px of level 0 written into the metadata.
    tiles : list of (tile, tile, 3) uint8, optional
        Tiles to repeat; default :func:`source_tiles`. Flat tiles make tiny files.
    quality : int
        Encoder quality (JPEG 0-100; JPEG 2000 PSNR-like level).

    Returns
    -------
    Path
    """
    import tifffile

    path = Path(path)
    encoded = encode_tiles(tiles if tiles is not None else source_tiles(tile), codec, quality)
    common = dict(dtype=np.uint8, tile=(tile, tile), metadata=None)
    if kind == "ome":
        if codec != "jpeg":
            raise ValueError("synthetic OME-TIFFs are JPEG; use kind='svs' for JPEG 2000")
        shapes = _level_shapes(size, 2, 2 * tile)
        meta = {
            "axes": "YXS",
            "PhysicalSizeX": mpp,
            "PhysicalSizeY": mpp,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeYUnit": "µm",
        }
        with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
            for i, (h, w) in enumerate(shapes):
                extra = (
                    {"subifds": len(shapes) - 1, "metadata": meta} if i == 0 else {"subfiletype": 1}
                )
                opts = {**common, **extra}
                tw.write(
                    _grid_bytes((h, w), tile, encoded),
                    shape=(h, w, 3),
                    compression="jpeg",
                    photometric="ycbcr",
                    subsampling=(2, 2),
                    **opts,
                )
        return path
    if kind != "svs":
        raise ValueError(f"kind must be 'ome' or 'svs', got {kind!r}")
    return _write_svs_like(path, size, codec, tile, mpp, encoded, common)


def _write_svs_like(path, size, codec, tile, mpp, encoded, common) -> Path:
    import tifffile

    h0, w0 = size
    name = {"jpeg": "JPEG/RGB Q=80", "jpeg2000": "J2K/YUV16 Q=80"}[codec]
    desc = (
        f"Aperio Image Library v12.0.16 \n{w0}x{h0} [0,0 {w0}x{h0}] ({tile}x{tile}) {name}"
        f"|AppMag = 40|MPP = {mpp:.4f}|Filename = synthetic"
    )
    shapes = _level_shapes(size, 4, 4 * tile)
    comp = SVS_COMPRESSION[codec]
    photometric = "ycbcr" if codec == "jpeg" else "rgb"
    extra = {"subsampling": (2, 2)} if codec == "jpeg" else {}
    thumb = np.full(
        (max(1, 768 * h0 // max(size)), max(1, 768 * w0 // max(size)), 3), 230, np.uint8
    )
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, (h, w) in enumerate(shapes):
            level_desc = desc if i == 0 else f"Aperio Image Library v12.0.16 \n{w0}x{h0} -> {w}x{h}"
            tw.write(
                _grid_bytes((h, w), tile, encoded),
                shape=(h, w, 3),
                compression=comp,
                photometric=photometric,
                description=level_desc,
                **common,
                **extra,
            )
            if i == 0:
                tw.write(
                    thumb,
                    photometric="rgb",
                    description=f"Aperio Image Library v12.0.16 \n{w0}x{h0} -> thumbnail",
                    metadata=None,
                )
    return path
