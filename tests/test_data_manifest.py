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


def test_manifest_stated_mpp_fallback_and_override(tmp_path, cmu_svs):
    assert open_slide(cmu_svs).mpp is not None
    out = tmp_path / "m.jsonl"
    kw = dict(n_parents_per_slide=1, children_per_parent=1, progress=False)
    # A float only fills in for files without a pixel size: the SVS keeps its 0.499.
    build_manifest([cmu_svs], out, StainCaptioner(), slide_mpp=0.25, **kw)
    assert read_manifest(out)[0]["slide_mpp"] == pytest.approx(0.499)
    # A per-slide dict entry overrides the file.
    build_manifest([cmu_svs], out, StainCaptioner(), slide_mpp={str(cmu_svs): 0.25}, **kw)
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


def test_skimage_ihc_as_a_slide_with_stated_mpp(tmp_path, cmu_svs):
    from napari_mrplip.data.samples import IHC_MPP, immunohistochemistry_slide
    from napari_mrplip.io import MissingMppError
    from napari_mrplip.tiling.bags import sample_bags

    path = immunohistochemistry_slide(tmp_path)
    assert immunohistochemistry_slide(tmp_path) == path  # written once
    slide = open_slide(path)
    assert slide.mpp is None and slide.dimensions == (512, 512)  # no invented metadata
    with pytest.raises(MissingMppError, match="slide_mpp"):
        sample_bags(slide, 1)
    out = tmp_path / "m.jsonl"
    with pytest.raises(MissingMppError):
        build_manifest([path], out, StainCaptioner(), n_parents_per_slide=2, progress=False)
    build_manifest(
        [cmu_svs, path],
        out,
        StainCaptioner(),
        n_parents_per_slide=2,
        slide_mpp={str(path): IHC_MPP},
        children_per_parent=1,
        progress=False,
    )
    recs = read_manifest(out)
    ihc = [r for r in recs if r["slide"] == str(path.resolve())]
    assert len(ihc) == 1 and ihc[0]["slide_mpp"] == IHC_MPP  # one 448 px parent fits 512 px
    assert any("DAB" in t["caption"] for t in ihc[0]["tiles"])
    cmu = [r for r in recs if r["slide"] != str(path.resolve())]
    assert cmu[0]["slide_mpp"] == pytest.approx(0.499)  # the file's own value is kept
