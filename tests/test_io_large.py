"""100,000 x 100,000 px pyramids: opening is cheap in memory and reads touch only their tiles."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_mrplip.io import open_slide
from napari_mrplip.io.synthetic import write_synthetic_slide

SIZE = (100_000, 100_000)
FLAT = [np.full((256, 256, 3), (200, 150, 190), np.uint8)]  # tiny JPEG tiles: ~150 MB files

PROBE = """
import json, sys, time
from napari_mrplip.io import open_slide

def peak_rss_mb():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak across exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

t = time.perf_counter()
slide = open_slide(sys.argv[1])
open_s = time.perf_counter() - t
region = slide.read_region(5000, 7000, 2048, 2048)
print(json.dumps({"open_s": open_s, "levels": len(slide.levels), "tiles": slide.reader.tiles_decoded,
                  "rss_mb": peak_rss_mb(),
                  "mpp": slide.mpp, "shape": list(region.shape)}))
"""


@pytest.fixture(scope="module", params=["ome", "svs"])
def big_slide(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / f"big_{request.param}.tif"
    write_synthetic_slide(path, size=SIZE, kind=request.param, tiles=FLAT, quality=50)
    yield path
    path.unlink()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_open_huge_slide_in_bounded_memory(big_slide):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(big_slide)],
        capture_output=True,
        text=True,
        check=True,
        timeout=100,
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["rss_mb"] < 300, probe  # whole process, imports included
    assert probe["mpp"] == pytest.approx(0.25)
    assert probe["levels"] >= 5
    # a 2048² read at (5000, 7000) spans 256-px tiles 19..27 x 27..35: 81 tiles, no more
    assert probe["tiles"] == 81, probe
    assert probe["shape"] == [2048, 2048, 3]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_huge_slide_levels_and_pixels(big_slide):
    with open_slide(big_slide) as slide:
        assert slide.dimensions == (100_000, 100_000)
        assert max(slide.levels[-1].shape[:2]) <= 1024
        tile = slide.read_region(256 * 100, 256 * 200, 256, 256)
        assert slide.reader.tiles_decoded == 1
        # the flat tile survives JPEG within a few levels
        assert np.abs(tile.astype(int) - FLAT[0]).max() <= 4
        # a level-1 read from level-0 coordinates touches only level-1 tiles
        before = slide.reader.tiles_decoded
        slide.read_region(40_000, 40_000, 512, 512, level=1)
        assert slide.reader.tiles_decoded - before <= 9
