"""Manifest and feature store over 2 workers (dask LocalCluster, torchrun with gloo) are
identical to 1 worker's; a SIGKILLed worker plus a rerun captions nothing twice; a corrupt
slide is skipped and reported."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_mrplip.data.feature_store import FeatureStore, group_by_slide
from napari_mrplip.data.manifest import read_manifest
from napari_mrplip.scale.pipeline import build_feature_store, build_manifest_at_scale
from scale_helpers import CountingCaptioner, count_lines, write_tiny_encoder

TESTS = Path(__file__).resolve().parent
SAMPLING = dict(n_parents_per_slide=3, children_per_parent=1, tile_px=64)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    from conftest import CMU_SVS, OS1_OME, OS2_OME

    if not all(p.exists() for p in (CMU_SVS, OS1_OME, OS2_OME)):
        pytest.skip("shared slides missing")
    root = tmp_path_factory.mktemp("cohort")
    corrupt = root / "corrupt.svs"
    corrupt.write_bytes(CMU_SVS.read_bytes()[:4096])  # a truncated scan
    return [str(CMU_SVS), str(OS1_OME), str(corrupt), str(OS2_OME)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, slides):
    """One worker, one process: the manifest, the store and the tiles captioned."""
    root = tmp_path_factory.mktemp("ref")
    cap = CountingCaptioner(root / "log")
    s = build_manifest_at_scale(slides, root / "m.jsonl", cap, backend="local", device="cpu",
                                batch_tiles=3, **SAMPLING)  # fmt: skip
    encoder = write_tiny_encoder(root / "encoder")
    e = build_feature_store(root / "m.jsonl", root / "store.zarr", str(encoder),
                            backend="local", device="cpu", bags_per_shard=2)  # fmt: skip
    return {"root": root, "summary": s, "embed": e, "encoder": encoder,
            "tiles": count_lines(root / "log")}  # fmt: skip


def _same_store(a: Path, b: Path, manifest: Path) -> None:
    records = read_manifest(manifest)
    sa, sb = FeatureStore.open(a), FeatureStore.open(b)
    for idx in group_by_slide(records).values():
        recs = [records[i] for i in idx]
        np.testing.assert_array_equal(sa.slide_features(recs), sb.slide_features(recs))


def _logged_once(log: Path, total: int) -> None:
    lines = log.read_text().splitlines()
    assert len(lines) == total and len(set(lines)) == total  # every tile captioned exactly once


def test_reference_reports_the_corrupt_slide(reference, slides):
    s = reference["summary"]
    assert s["failed"] == 1 and s["failures"][0]["slide"] == slides[2]
    assert s["done"] == 3 and s["tiles_captioned"] == reference["tiles"] > 0
    summary = json.loads((reference["root"] / "m.jsonl.summary.json").read_text())
    assert summary["failures"][0]["slide"].endswith("corrupt.svs")


def test_dask_two_workers_identical_and_a_killed_worker_redoes_nothing(reference, slides, tmp_path):
    out = tmp_path / "m.jsonl"
    cap = CountingCaptioner(tmp_path / "log", kill_after=3, flag=str(tmp_path / "flag"))
    s = build_manifest_at_scale(slides, out, cap, backend="dask", workers=2, device="cpu",
                                batch_tiles=3, progress=tmp_path / "events.jsonl", **SAMPLING)  # fmt: skip
    assert (tmp_path / "flag").exists()  # a worker was SIGKILLed mid-run; dask rescheduled
    assert s["failed"] == 1
    again = build_manifest_at_scale(slides, out, cap, backend="dask", workers=2, device="cpu",
                                    batch_tiles=3, **SAMPLING)  # fmt: skip
    assert again["tiles_captioned"] == 0 and again["cached"] == 3
    _logged_once(tmp_path / "log", reference["tiles"])
    assert filecmp.cmp(out, reference["root"] / "m.jsonl", shallow=False)
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "done"
    assert sum(e["event"] == "slide" for e in events) == len(slides)
    store = tmp_path / "store.zarr"
    e = build_feature_store(out, store, str(reference["encoder"]), backend="dask", workers=2,
                            device="cpu", bags_per_shard=2)  # fmt: skip
    assert e["tiles_embedded"] == reference["embed"]["tiles_embedded"]
    _same_store(store, reference["root"] / "store.zarr", out)


def _torchrun(out: Path, encoder: Path, kill_after: int, slides: list[str]):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "scale_torchrun_job.py"), str(out), str(encoder),
           str(kill_after), *slides]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)


def test_torchrun_two_ranks_identical_and_resume_after_sigkill(reference, slides, tmp_path):
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir()
    killed = _torchrun(tmp_path, reference["encoder"], 3, slides)
    assert killed.returncode != 0 and (tmp_path / "flag").exists()  # rank died: job failed
    assert not (tmp_path / "m.jsonl").exists()
    done = _torchrun(tmp_path, reference["encoder"], -1, slides)
    assert done.returncode == 0, done.stderr[-3000:]
    _logged_once(tmp_path / "log", reference["tiles"])  # nothing captioned twice
    assert filecmp.cmp(tmp_path / "m.jsonl", reference["root"] / "m.jsonl", shallow=False)
    _same_store(tmp_path / "store.zarr", reference["root"] / "store.zarr", tmp_path / "m.jsonl")


def test_two_runs_writing_one_cache_and_store_at_once(reference, slides, tmp_path):
    code = (
        "import sys; sys.path.insert(0, {tests!r}); from scale_helpers import CountingCaptioner;"
        "from napari_mrplip.scale.pipeline import build_feature_store, build_manifest_at_scale;"
        "cap = CountingCaptioner({log!r});"
        "build_manifest_at_scale({slides!r}, {m!r}, cap, backend='local', device='cpu',"
        " batch_tiles=3, n_parents_per_slide=3, children_per_parent=1, tile_px=64);"
        "build_feature_store({m!r}, {store!r}, {enc!r}, backend='local', device='cpu',"
        " bags_per_shard=2)"
    ).format(tests=str(TESTS), log=str(tmp_path / "log"), slides=slides,
             m=str(tmp_path / "m.jsonl"), store=str(tmp_path / "store.zarr"),
             enc=str(reference["encoder"]))  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
            for _ in range(2)]  # fmt: skip
    for p in runs:
        assert p.wait(timeout=400) == 0, p.stderr.read().decode()[-2000:]
    _logged_once(tmp_path / "log", reference["tiles"])  # the second run waited, then reused
    assert filecmp.cmp(tmp_path / "m.jsonl", reference["root"] / "m.jsonl", shallow=False)
    _same_store(tmp_path / "store.zarr", reference["root"] / "store.zarr", tmp_path / "m.jsonl")
