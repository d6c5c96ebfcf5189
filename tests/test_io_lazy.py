"""Opening a slide imports no more than it needs: headless reads never import dask (nor zarr,
except for OME-Zarr, whose own library it is), and the levels' dask arrays, built on first access,
hold the same pixels as ``read_region``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_mrplip
from conftest import CMU_SVS, OS1_OME, OS2_OME, _need
from napari_mrplip.io import open_slide
from napari_mrplip.io.synthetic import write_synthetic_slide
from napari_mrplip.io.writers import write_pyramid

#: Run in a fresh interpreter: open, read a region and a built level, read tiles through the one
#: tile reader, record which heavy modules got imported, then build the dask levels and compare.
CHILD = r"""
import json, sys
import numpy as np
from napari_mrplip.io import open_slide
from napari_mrplip.embed.tiles import read_tiles
import napari_mrplip.embed.embedder  # headless embedding (in-memory cache) needs no zarr either

path, backend = sys.argv[1], sys.argv[2] or None
slide = open_slide(path, backend=backend)
w, h = slide.dimensions
x, y = w // 3, h // 3
region = slide.read_region(x, y, 300, 200)
last = slide.n_levels - 1
lh, lw = slide.level_shape(last)
coarse = slide.read_region(0, 0, lw, lh, last)
boxes = np.array(
    [[0, 0, 224, 224], [x, y, x + 448, y + 448], [w - 100, h - 100, w + 348, h + 348],
     [0, 0, 8 * 224, 8 * 224]],
    dtype=np.float64,
)
tiles = read_tiles(slide, boxes, 224)
loaded = sorted(m for m in ("dask", "zarr") if m in sys.modules)
built_early = slide.levels.built

import dask.array as da

level0, top = slide.levels[0], slide.levels[last]
print(json.dumps({
    "backend": slide.metadata["backend"],
    "loaded": loaded,
    "built_early": built_early,
    "levels": [slide.n_levels, slide.native_levels],
    "dask": isinstance(level0, da.Array) and isinstance(top, da.Array),
    "same_level0": bool((np.asarray(level0[y : y + 200, x : x + 300]) == region).all()),
    "same_built": bool((np.asarray(top) == coarse).all()),
    "shapes": [list(lv.shape[:2]) == list(slide.level_shape(i)) for i, lv in enumerate(slide.levels)],
    "tiles": [list(tiles.shape), str(tiles.dtype), int(tiles[1].std() > 0)],
}))
"""


def _run_child(path: Path, backend: str = "") -> dict:
    src = str(Path(napari_mrplip.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), backend],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    """An OME-Zarr from the project's writer and synthetic tiled TIFFs (both layouts)."""
    root = tmp_path_factory.mktemp("lazy")
    with open_slide(_need(OS1_OME)) as slide:
        w, h = slide.dimensions
        pixels = slide.read_region(0, 0, w, h)
    return {
        "ome-zarr": write_pyramid(root / "os1.ome.zarr", [pixels], mpp=0.5, tile=256),
        "synthetic-ome": write_synthetic_slide(root / "syn.ome.tif", size=(3000, 2100), kind="ome"),
        "synthetic-svs": write_synthetic_slide(root / "syn.svs", size=(3000, 2100), kind="svs"),
    }


#: Kinds whose pyramid has built levels (the SVS stores one level, the OME-Zarr is written with one).
HAS_BUILT = {"sample-svs", "sample-svs-openslide", "ome-zarr"}
KINDS = ["sample-svs", "os1-ome", "os2-ome", "ome-zarr", "synthetic-ome", "synthetic-svs"]


@pytest.mark.parametrize("kind", [*KINDS, "sample-svs-openslide"])
def test_open_and_read_import_no_dask(kind, written):
    backend = ""
    if kind == "sample-svs-openslide":
        pytest.importorskip("openslide")
        backend = "openslide"
    paths = {"sample-svs": CMU_SVS, "os1-ome": OS1_OME, "os2-ome": OS2_OME, **written}
    got = _run_child(_need(Path(paths[kind.removesuffix("-openslide")])), backend)
    # OME-Zarr pixels are zarr chunks: zarr is its reader; dask is never needed
    assert got["loaded"] == (["zarr"] if kind == "ome-zarr" else []), got
    assert got["built_early"] is False
    assert got["backend"] == (backend or ("ome_zarr" if kind == "ome-zarr" else "tifffile"))
    if kind in HAS_BUILT:  # the last level is built: its pixels come through io.derived
        assert got["levels"][0] > got["levels"][1], got
    assert got["dask"] and got["same_level0"] and got["same_built"], got
    assert all(got["shapes"]), got
    assert got["tiles"] == [[4, 224, 224, 3], "uint8", 1], got


def test_arrays_given_at_construction_still_work():
    """``Slide(path, levels=[dask arrays])`` (synthetic slides, tests): geometry from the arrays."""
    import dask.array as da

    from napari_mrplip.io.slide import Slide

    img = np.arange(300 * 200 * 3, dtype=np.uint32).astype(np.uint8).reshape(300, 200, 3)
    levels = [da.from_array(img, chunks=(128, 128, 3)), da.from_array(img[::2, ::2], chunks=64)]
    slide = Slide(path=Path("/tmp/arrays.tif"), levels=levels, mpp=0.5)
    assert slide.n_levels == 2 and slide.native_levels == 2
    assert slide.level_shape(1) == (150, 100) and slide.dimensions == (200, 300)
    assert slide.downsamples == [1.0, 2.0]
    np.testing.assert_array_equal(slide.read_region(10, 20, 50, 40), img[20:60, 10:60])


def test_lazy_levels_refuse_arrays_that_disagree_with_the_declared_shapes():
    import dask.array as da

    from napari_mrplip.io.levels import LazyLevels

    levels = LazyLevels([(1000, 800)], lambda: [da.zeros((999, 800, 3), dtype=np.uint8)])
    assert len(levels) == 2 and levels.shape(1) == (500, 400) and not levels.built
    with pytest.raises(ValueError, match="declared"):
        levels[0]
