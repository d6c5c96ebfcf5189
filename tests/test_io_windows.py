"""Block reads of many windows: the same pixels as one read per window, fewer decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_mrplip.embed.reader import TileReader
from napari_mrplip.embed.tiles import read_tiles_checked
from napari_mrplip.io import open_slide
from napari_mrplip.io.synthetic import write_synthetic_slide
from napari_mrplip.io.windows import BLOCK_WINDOWS, group_windows, level_origins, read_windows
from napari_mrplip.tiling.geometry import level_for_box, resize_rgb
from napari_mrplip.tiling.grid import make_grid

SAMPLE = Path(__file__).resolve().parents[1] / "src/napari_mrplip/_napari/sample"
CMU = SAMPLE / "CMU-1-Small-Region.svs"


def _lattice(grid):
    rows, cols = grid.shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    return grid.origins(rr.ravel(), cc.ravel())


def _boxes(grid, xs, ys):
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    t = grid.tile_level0
    return np.stack([xs, ys, xs + t, ys + t], axis=1)


def read_tile(slide, grid, x, y):
    """The reference: one ``read_region`` per window at the level rule's level, resampled."""
    level = level_for_box(slide, grid.tile_level0, grid.tile_level0, grid.out_px)
    side = max(1, round(grid.tile_level0 / slide.downsamples[level]))
    return resize_rgb(slide.read_region(int(x), int(y), side, side, level), grid.out_px)


@pytest.mark.parametrize("mpp", [0.5, 1.0, 2.0, 4.0])
def test_block_reads_equal_single_reads_on_real_svs(mpp):
    """Stored level (0.5) and built levels (1-4 µm/px) of the real Aperio file, edges included."""
    slide = open_slide(CMU)
    grid = make_grid(slide, 112, target_mpp=mpp)
    xs, ys = _lattice(grid)
    xs, ys = xs[::3], ys[::3]  # holes between windows, as tissue-only lattices have
    got, errors = read_tiles_checked(slide, _boxes(grid, xs, ys), grid.out_px)
    assert errors == []
    want = np.stack([read_tile(slide, grid, x, y) for x, y in zip(xs, ys)])
    assert got.shape == want.shape and np.array_equal(got, want)


def test_windows_across_the_slide_edge_are_padded_white_like_read_region():
    slide = open_slide(CMU)
    w0, h0 = slide.dimensions
    xs = np.array([-100, w0 - 50, 10, w0 - 224, -224 * 3])
    ys = np.array([-30, h0 - 10, h0 + 5, 0, 40])
    tiles, errors = read_windows(slide, 0, xs, ys, 224, 224)
    assert errors == []
    for i, (x, y) in enumerate(zip(xs, ys)):
        assert np.array_equal(tiles[i], slide.read_region(int(x), int(y), 224, 224, 0))
    assert (tiles[4] == 255).all()  # wholly outside: white


def test_groups_cover_every_window_once_and_stay_within_a_block():
    rng = np.random.default_rng(0)
    xl, yl = rng.integers(-500, 20_000, 700), rng.integers(-500, 20_000, 700)
    groups = group_windows(xl, yl, 224, 224)
    seen = np.concatenate(groups)
    assert np.array_equal(np.sort(seen), np.arange(700))
    for idx in groups:
        assert np.ptp(xl[idx]) < BLOCK_WINDOWS * 224 and np.ptp(yl[idx]) < BLOCK_WINDOWS * 224


def test_block_reads_decode_each_stored_tile_once(tmp_path):
    path = write_synthetic_slide(tmp_path / "s.ome.tif", size=(4096, 4096), mpp=0.5)
    slide = open_slide(path)
    grid = make_grid(slide, 224, target_mpp=0.5)
    xs, ys = _lattice(grid)
    block = BLOCK_WINDOWS * 224  # block-major order, as the heatmap's passes give it
    order = np.lexsort((xs // block, ys // block))
    xs, ys = xs[order], ys[order]
    reader = slide.reader
    reader.tiles_decoded = 0
    for x, y in zip(xs, ys):
        read_tile(slide, grid, x, y)
    single = reader.tiles_decoded
    reader.tiles_decoded = 0
    got = np.concatenate([b.tiles for b in TileReader(slide, 2).batches(_boxes(grid, xs, ys), grid.out_px, 128)])
    blocks = reader.tiles_decoded
    assert blocks <= 1.3 * (4096 // 256) ** 2 < single / 2  # about once each vs 3-4 times each
    want = np.stack([read_tile(slide, grid, x, y) for x, y in zip(xs, ys)])
    assert np.array_equal(got, want)


def test_a_corrupt_stored_tile_fails_only_the_windows_over_it(tmp_path):
    path = write_synthetic_slide(tmp_path / "c.ome.tif", size=(2048, 2048), mpp=0.5)
    slide = open_slide(path)
    info = slide.reader.tiled[0]
    bad = 9  # stored tile row 1, col 1 of an 8x8 grid of 256 px tiles
    with open(path, "r+b") as f:
        f.seek(int(info.offsets[bad]) + 20)
        f.write(b"\x00" * 64 + b"\xff\xd9" * 32)
    slide = open_slide(path)
    grid = make_grid(slide, 224, target_mpp=0.5)
    xs, ys = _lattice(grid)
    batches = list(TileReader(slide, 2).batches(_boxes(grid, xs, ys), grid.out_px, 32))
    ok = np.concatenate([b.ok for b in batches])
    single_ok = []
    for x, y in zip(xs, ys):
        try:
            read_tile(slide, grid, x, y)
            single_ok.append(True)
        except Exception:
            single_ok.append(False)
    assert not all(single_ok), "the corruption did not make any tile unreadable"
    assert np.array_equal(ok, np.array(single_ok))
    xl, yl = level_origins(slide, 0, xs, ys)
    assert sum(len(b.errors) for b in batches) == int((~ok).sum())
    assert ((xl[~ok] < 512) & (yl[~ok] < 512)).all()  # only windows over that stored tile
