"""Bag manifests on real slides: content, caching keyed on slide/captioner/params."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from napari_mrplip.data.captioners import StainCaptioner
from napari_mrplip.data.manifest import build_manifest, read_manifest
from napari_mrplip.io import open_slide


class CountingCaptioner(StainCaptioner):
    """The real stain captioner, counting its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def caption(self, tile, magnification):
        self.calls += 1
        return super().caption(tile, magnification)


def test_manifest_records_and_cache(tmp_path, cmu_svs, os1_ome):
    os1 = tmp_path / "os1.ome.tif"
    shutil.copy(os1_ome, os1)
    out = tmp_path / "bags.jsonl"
    cap = CountingCaptioner()
    kw = dict(n_parents_per_slide=3, magnifications=(5, 10, 20), tile_px=112, seed=0)
    build_manifest([cmu_svs, os1], out, cap, children_per_parent=1, progress=False, **kw)
    recs = read_manifest(out)
    n_tiles = sum(len(r["tiles"]) for r in recs)
    assert cap.calls == n_tiles and len(recs) == 4  # 3 on CMU, 1 fits OS-1
    rec = recs[0]
    assert rec["slide"] == str(cmu_svs.resolve()) and rec["slide_mpp"] == pytest.approx(0.499)
    assert rec["magnifications"] == [5.0, 10.0, 20.0]
    assert [t["parent"] for t in rec["tiles"]] == [-1, 0, 1]
    assert all(t["caption"] for t in rec["tiles"]) and rec["keywords"]
    assert all(len(t["box"]) == 4 for t in rec["tiles"])
    assert rec["captioner"] == "stain:" + StainCaptioner.version

    # Same inputs: nothing captioned again, identical manifest.
    before = out.read_text()
    cap.calls = 0
    build_manifest([cmu_svs, os1], out, cap, children_per_parent=1, progress=False, **kw)
    assert cap.calls == 0 and out.read_text() == before

    # A touched slide is captioned again; the untouched one comes from the cache.
    st = os1.stat()
    os.utime(os1, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    build_manifest([cmu_svs, os1], out, cap, children_per_parent=1, progress=False, **kw)
    assert cap.calls == len(recs[-1]["tiles"])

    # Other sampling parameters: captioned again.
    cap.calls = 0
    build_manifest([cmu_svs], out, cap, children_per_parent=2, progress=False, **kw)
    assert cap.calls == 3 * (1 + 2 + 4)


def test_manifest_needs_mpp_or_uses_stated(tmp_path, cmu_svs):
    slide = open_slide(cmu_svs)
    assert slide.mpp is not None  # the SVS states it; a stated value overrides it
    out = tmp_path / "m.jsonl"
    build_manifest(
        [cmu_svs],
        out,
        StainCaptioner(),
        n_parents_per_slide=1,
        slide_mpp=0.25,
        children_per_parent=1,
        progress=False,
    )
    (rec,) = read_manifest(out)
    assert rec["slide_mpp"] == 0.25
    assert rec["tiles"][0]["box"][2] == pytest.approx(112 * 2.0 / 0.25, abs=4)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_manifest"):
        read_manifest(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"slide": "x", "tiles": []}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        read_manifest(bad)
