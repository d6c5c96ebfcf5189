"""Acceptance for issue 10: every numbered defect, from generated files only.

Each command runs as a subprocess under a wall-clock timeout and an address-space limit
(``hardening_util.run_cli``); the test asserts the exit status, a clean one-line message and
no traceback, the inputs unchanged byte for byte, and the child's peak memory. Numbers in
the test names are the defects' numbers in the issue.
"""

from __future__ import annotations

import os
import shutil

import pytest

from hardening_util import (
    MAX_RSS_BYTES,
    boxes_geojson,
    declared_tiff,
    digests,
    run_cli,
    write_json,
    write_slide,
)

PROMPTS = ["--prompt", "tumour", "--background", "background"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two small generated slides and an id-less QuPath GeoJSON in one folder."""
    d = tmp_path_factory.mktemp("hardening")
    write_slide(d / "a.ome.tif", 1)
    write_slide(d / "b.ome.tif", 2)
    write_json(d / "a.geojson", boxes_geojson())
    return d


@pytest.fixture
def fresh(work, tmp_path):
    """A private copy of ``work`` (tests that write may not disturb each other)."""
    for p in work.iterdir():
        if p.is_file():
            shutil.copy2(p, tmp_path / p.name)
    return tmp_path


def _refused(run, *needles: str, rc: int = 2) -> None:
    assert run.rc == rc, (run.rc, run.stderr[-2000:])
    assert run.clean_error, run.stderr[-2000:]
    for n in needles:
        assert n in run.stderr, run.stderr[-2000:]
    assert run.max_rss_bytes < MAX_RSS_BYTES


# -- 1-3, 11: the output policy ---------------------------------------------------------------
@pytest.mark.parametrize(
    "args, needle",
    [
        (["heatmap", "a.ome.tif", "b.ome.tif", *PROMPTS, "--out", ".", "--geojson", "0.5"],
         "refusing to write over the input"),  # 1: --out . in the slides' folder
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "a.ome.tif"], "refusing to write over"),
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "keep.zarr"], "pass --overwrite"),  # 2
        (["review", "a.geojson", "--slide", "a.ome.tif", "--out", "a.ome.tif"],
         "refusing to write over the input"),  # 3
        (["review", "a.geojson", "--slide", "a.ome.tif", "--out", "other.geojson"],
         "pass --overwrite"),  # 3: any existing file
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "result.png"], "unknown output format"),
    ],
    ids=["1-out-dot", "1-out-slide", "2-zarr-folder", "3-review-slide", "3-review-existing",
         "11-png"],
)  # fmt: skip
def test_outputs_never_replace_inputs_or_existing_files(fresh, args, needle):
    (fresh / "keep.zarr").mkdir()
    (fresh / "keep.zarr" / "precious.txt").write_text("user data")
    (fresh / "other.geojson").write_text("{}")
    before = digests(fresh)
    run = run_cli(args, fresh, timeout=120)
    _refused(run, needle)
    assert digests(fresh) == before
    assert not [p for p in fresh.iterdir() if ".tmp-" in p.name]


def test_batch_goes_on_past_a_bad_slide_and_outputs_keep_umask(fresh):
    """9 and 11: one bad slide is reported in the summary, the others are written 0644."""
    declared_tiff(fresh / "bad.tif", 2**31 - 1, 2**31 - 1)
    before = digests(fresh)
    old = os.umask(0o022)
    try:
        run = run_cli(["heatmap", "a.ome.tif", "bad.tif", "b.ome.tif", *PROMPTS, "--out", "out",
                       "--geojson", "0.5"], fresh, timeout=300)  # fmt: skip
    finally:
        os.umask(old)
    assert run.rc == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "2 of 3 slides written; failed: bad.tif" in run.stderr
    after = digests(fresh)
    assert {k: after[k] for k in before} == before
    for name in ("a.ome.tif", "b.ome.tif", "a.geojson", "b.geojson"):
        assert (fresh / "out" / name).stat().st_mode & 0o777 == 0o644, name
    again = run_cli(["heatmap", "a.ome.tif", *PROMPTS, "--out", "out/a.ome.tif"], fresh)
    _refused(again, "pass --overwrite")
    assert run.max_rss_bytes < MAX_RSS_BYTES


# -- 7, 8, 11: budgets and validation before any work ----------------------------------------
@pytest.mark.parametrize(
    "args, needle",
    [
        (["info", "huge.tif"], "past the limit"),  # 7: 2^31 x 2^31 px in a few hundred bytes
        (["info", "thin.tif"], "compression"),  # declares 10^10 px in 150 bytes
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--overlap", "0.999"], "overlap"),
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--overlap", "1"], "overlap"),
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--overlap", "-0.5"], "overlap"),
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--mpp", "0"], "µm/px"),
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--mpp", "-1"], "µm/px"),
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--mpp", "1e9"], "µm/px"),
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--device", "tpu"], "device"),
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--batch-size", "0"], ">= 1"),
        (["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--batch-size", "-5"], ">= 1"),
        (["review", "a.geojson", "--slide", "a.ome.tif", "--max-tiles", "0"], ">= 1"),
        (["review", "a.geojson", "--slide", "a.ome.tif", "--min-coverage", "1.5"], "between"),
        (["review", "a.geojson", "--slide", "a.ome.tif", "--mpp", "nan"], "finite"),
    ],
    ids=["7-huge-info", "7-thin-info", "7-overlap-0.999", "8-overlap-1", "8-overlap-neg",
         "8-mpp-0", "8-mpp-neg", "8-mpp-1e9", "8-device-tpu", "11-batch-0", "11-batch-neg",
         "11-max-tiles-0", "11-coverage", "8-mpp-nan"],
)  # fmt: skip
def test_bad_numbers_and_hostile_headers_are_refused_fast(fresh, args, needle):
    declared_tiff(fresh / "huge.tif", 2**31 - 1, 2**31 - 1)
    declared_tiff(fresh / "thin.tif", 100_000, 100_000)
    before = digests(fresh)
    run = run_cli(args, fresh, timeout=60)
    _refused(run, needle)
    assert run.seconds < 60 and digests(fresh) == before


def test_huge_declared_slide_fails_fast_in_heatmap(fresh):
    """7: the 2^31 x 2^31 TIFF is one failed slide, not a 10 GB hang."""
    declared_tiff(fresh / "huge.tif", 2**31 - 1, 2**31 - 1, tiled=True)
    run = run_cli(["heatmap", "huge.tif", *PROMPTS, "--out", "h.ome.tif"], fresh, timeout=120)
    _refused(run, "past the limit", rc=2)
    assert not (fresh / "h.ome.tif").exists()


def test_tile_budget_asks_for_max_tiles(fresh):
    """7: a lattice over the budget is refused before it is allocated, naming --max-tiles."""
    run = run_cli(["heatmap", "a.ome.tif", *PROMPTS, "--out", "x.ome.tif", "--max-tiles", "3"],
                  fresh, timeout=120)  # fmt: skip
    _refused(run, "--max-tiles", rc=2)
    assert not (fresh / "x.ome.tif").exists()


def test_review_on_gpu_that_is_not_there(fresh):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    _refused(run_cli(["review", "a.geojson", "--slide", "a.ome.tif", "--device", "cuda"], fresh),
             "no CUDA GPU")  # fmt: skip


def test_multi_page_tiff_is_a_message_not_a_traceback(fresh):
    """8: a plain image stack (pages read as TiffFrames) opens or is refused cleanly."""
    import numpy as np
    import tifffile

    stack = np.random.default_rng(0).integers(0, 255, (3, 300, 400, 3), dtype=np.uint8)
    tifffile.imwrite(fresh / "stack.tif", stack, photometric="rgb")
    run = run_cli(["info", "stack.tif"], fresh, timeout=60)
    assert "Traceback" not in run.stderr and run.rc in (0, 2), run.stderr[-2000:]


def test_empty_and_missing_slides_fail_before_the_model_loads(fresh):
    """11: a slide that cannot be opened is named at once (exit 2, no model loaded)."""
    (fresh / "empty.svs").write_bytes(b"")
    run = run_cli(["heatmap", "empty.svs", *PROMPTS, "--out", "x.ome.tif"], fresh, timeout=60)
    _refused(run, "the file is empty")
    run = run_cli(["heatmap", "nope.svs", *PROMPTS, "--out", "x.ome.tif"], fresh, timeout=60)
    _refused(run, "no such file")
