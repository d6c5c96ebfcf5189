"""A slide's µm/px stated once (``io.stated_mpp``): remembered per file, across processes,
used by ``open_slide`` and every command; never over the file's own value."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_mrplip.io import open_slide
from napari_mrplip.io import stated_mpp as sm
from napari_mrplip.io.errors import SlideOpenError


def _mrplip(*args: str) -> subprocess.CompletedProcess:
    """``mrplip ARGS`` in a fresh process (same ``MRPLIP_HOME`` as this test)."""
    code = "import sys; from napari_mrplip.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=dict(os.environ)
    )


@pytest.fixture
def slide_copy(no_mpp_slide, tmp_path) -> Path:
    return Path(shutil.copy2(no_mpp_slide, tmp_path / "case.ome.tif"))


def test_home_is_the_tests_tmp_dir():
    # the autouse fixture: nothing a test states reaches the user's real home
    assert sm.registry_path().parent == Path(os.environ["MRPLIP_HOME"])
    assert "mrplip-home" in str(sm.registry_path())


def test_no_mpp_slide_has_none(no_mpp_slide):
    with open_slide(no_mpp_slide) as s:
        assert s.mpp is None
        assert s.metadata["mpp_source"] is None
        assert sm.source_of(s) is None
        assert "unknown" in sm.describe(s)


def test_plain_tiff_without_resolution_tags(tmp_path, cmu_svs):
    """A plain tiled TIFF (not OME) with no resolution tags, written with tifffile."""
    with open_slide(cmu_svs) as src:
        img = src.read_region(0, 0, 512, 512)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb")
    with open_slide(path) as s:
        assert s.mpp is None
    sm.state_mpp(path, 0.5)
    with open_slide(path) as s:
        assert (s.mpp, s.metadata["mpp_source"]) == (0.5, "stated")
        np.testing.assert_array_equal(s.read_region(0, 0, 64, 64), img[:64, :64])


def test_stated_in_a_command_is_seen_by_another_process_and_here(slide_copy):
    first = _mrplip("info", str(slide_copy), "--slide-mpp", "0.25", "--json")
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)[0]
    assert (info["mpp"], info["mpp_source"]) == (0.25, "argument")
    # a later command, in another process, without --slide-mpp
    second = _mrplip("info", str(slide_copy), "--json")
    assert second.returncode == 0, second.stderr
    info = json.loads(second.stdout)[0]
    assert (info["mpp"], info["mpp_source"]) == (0.25, "stated")
    assert info["levels"][1]["mpp"] == pytest.approx(0.25 * info["levels"][1]["downsample"])
    assert f"{slide_copy.name}: using 0.25 µm/px stated earlier" in second.stderr
    assert str(sm.registry_path()) in second.stderr
    # and in this process (the viewer's)
    with open_slide(slide_copy) as s:
        assert (s.mpp, s.metadata["mpp_source"]) == (0.25, "stated")


def test_stated_here_is_seen_by_a_command(slide_copy):
    with open_slide(slide_copy) as s:
        sm.adopt(s, 0.5)  # what a panel does
        assert (s.mpp, sm.source_of(s)) == (0.5, "stated")
    out = _mrplip("info", str(slide_copy))
    assert out.returncode == 0, out.stderr
    assert "0.5000 µm/px (stated earlier)" in out.stdout
    assert "using 0.5 µm/px stated earlier" in out.stderr


def test_replaced_file_does_not_inherit(slide_copy, cmu_svs):
    sm.state_mpp(slide_copy, 0.25)
    assert sm.stated_mpp(slide_copy) == 0.25
    with open_slide(cmu_svs) as src:  # another image written to the same name
        from napari_mrplip.io.writers import write_pyramid

        write_pyramid(slide_copy, src.read_region(500, 500, 1024, 1024), overwrite=True)
    assert sm.stated_mpp(slide_copy) is None
    with open_slide(slide_copy) as s:
        assert s.mpp is None and s.metadata["mpp_source"] is None


def test_explicit_wins_and_is_remembered(slide_copy):
    sm.state_mpp(slide_copy, 0.25)
    with open_slide(slide_copy, mpp=0.5) as s:
        assert (s.mpp, s.metadata["mpp_source"]) == (0.5, "argument")
    with open_slide(slide_copy) as s:
        assert (s.mpp, s.metadata["mpp_source"]) == (0.5, "stated")


def test_file_value_never_overridden_by_a_remembered_one(cmu_svs, tmp_path):
    svs = Path(shutil.copy2(cmu_svs, tmp_path / "own.svs"))
    with open_slide(svs) as s:
        own = s.mpp
        assert own == pytest.approx(0.499) and s.metadata["mpp_source"] == "file"
        with pytest.raises(ValueError, match="records 0.499 µm/px itself"):
            sm.adopt(s, 0.25)
    sm.state_mpp(svs, 0.25)  # even an entry written by hand is not used over the file's own
    with open_slide(svs) as s:
        assert (s.mpp, s.metadata["mpp_source"]) == (own, "file")
    with open_slide(svs, mpp=0.3) as s:  # an explicit value overrides the file (not remembered)
        assert (s.mpp, s.metadata["mpp_source"]) == (0.3, "argument")
    assert sm.stated_mpp(svs) == 0.25


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2]", '{"version": 1}', "\xff\xfe", '{"slides": []}']
)
def test_corrupt_registry_warns_and_is_rewritten(slide_copy, text):
    sm.registry_path().parent.mkdir(parents=True, exist_ok=True)
    sm.registry_path().write_bytes(text.encode("latin-1"))
    with pytest.warns(UserWarning, match="could not be read"):
        assert sm.stated_mpp(slide_copy) is None
    with pytest.warns(UserWarning), open_slide(slide_copy) as s:  # opening never crashes
        assert s.mpp is None
    with pytest.warns(UserWarning):
        sm.state_mpp(slide_copy, 0.5)
    assert json.loads(sm.registry_path().read_text())["version"] == 1
    assert sm.stated_mpp(slide_copy) == 0.5


def test_bad_values_are_skipped_one_by_one(slide_copy, tmp_path):
    sm.state_mpp(slide_copy, 0.5)
    raw = json.loads(sm.registry_path().read_text())
    rec = raw["slides"][str(slide_copy.resolve())]
    for i, bad in enumerate(["nan", 1e9, -1, "x", None, 0.001]):
        raw["slides"][f"/x/{i}.svs"] = {**rec, "mpp": bad}
    raw["slides"]["/x/broken.svs"] = "not a record"
    sm.registry_path().write_text(json.dumps(raw))
    entries = sm._load()
    assert list(entries) == [str(slide_copy.resolve())]
    assert sm.stated_mpp(slide_copy) == 0.5


def test_size_is_bounded(tmp_path, monkeypatch, slide_copy):
    monkeypatch.setattr(sm, "MAX_ENTRIES", 3)
    files = []
    for i in range(5):
        f = tmp_path / f"s{i}.tif"
        f.write_bytes(b"x" * (i + 1))
        sm.state_mpp(f, 0.25 + i / 100)
        files.append(f)
    assert [sm.stated_mpp(f) for f in files] == [None, None, 0.27, 0.28, 0.29]
    monkeypatch.setattr(sm, "MAX_BYTES", 100)
    with pytest.warns(UserWarning, match="larger than"):
        assert sm.stated_mpp(files[-1]) is None


@pytest.mark.parametrize("value", [0, -0.5, float("nan"), float("inf"), 0.001, 101, "abc"])
def test_values_out_of_range_are_refused(slide_copy, value):
    with pytest.raises(ValueError, match="µm/px"):
        sm.state_mpp(slide_copy, value)
    if not isinstance(value, str):
        with pytest.raises(SlideOpenError, match=slide_copy.name):
            open_slide(slide_copy, mpp=value)
    assert not sm.registry_path().exists()


def test_unwritable_home_warns_but_opens(slide_copy, tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("MRPLIP_HOME", str(blocker / "home"))
    with pytest.warns(UserWarning, match="not remembered"), open_slide(slide_copy, mpp=0.5) as s:
        assert s.mpp == 0.5


def test_forget(slide_copy):
    sm.state_mpp(slide_copy, 0.5)
    assert sm.forget_mpp(slide_copy) is True
    assert sm.stated_mpp(slide_copy) is None
    assert sm.forget_mpp(slide_copy) is False


#: Every command that opens a slide, and whether --slide-mpp is only a fallback there.
SLIDE_COMMANDS = {"info": False, "heatmap": False, "embed": False, "review": False,
                  "pretrain": True, "manifest": True, "finetune": False}  # fmt: skip


def _slide_mpp_action(name: str):
    import argparse
    import importlib

    from napari_mrplip.cli import COMMANDS

    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[name][0]).configure(parser)
    actions = [a for a in parser._actions if "--slide-mpp" in a.option_strings]
    if not actions:  # eval: on its zeroshot subcommand
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        actions = [
            a for a in sub.choices["zeroshot"]._actions if "--slide-mpp" in a.option_strings
        ]
    assert len(actions) == 1, f"mrplip {name} has no --slide-mpp"
    return actions[0]


def test_every_command_has_the_same_slide_mpp_option():
    helps = {}
    for name in [*SLIDE_COMMANDS, "eval"]:
        action = _slide_mpp_action(name)
        assert action.type is sm.parse_slide_mpp and action.default is None
        helps[name] = action.help
        fallback = SLIDE_COMMANDS.get(name, False)
        assert ("whose file records none" in action.help) == fallback, name
    words = {h.split(";", 1)[1] for h in helps.values()}  # identical after the scope phrase
    assert len(words) == 1, helps


@pytest.mark.parametrize("bad", ["0", "nan", "-1", "200", "x"])
def test_bad_slide_mpp_is_refused_while_parsing(no_mpp_slide, bad):
    out = _mrplip("info", str(no_mpp_slide), "--slide-mpp", bad)
    assert out.returncode == 2
    assert "--slide-mpp" in out.stderr and "Traceback" not in out.stderr
    assert not sm.registry_path().exists()


def test_pretraining_bags_use_the_stated_value_and_an_explicit_fallback_wins(
    slide_copy, cmu_svs
):
    from napari_mrplip.data.manifest import _open_bags, plan_jobs

    sm.state_mpp(slide_copy, 0.5)
    [job] = plan_jobs([slide_copy], n_parents_per_slide=2, magnifications=(10, 20))
    assert job.stated_mpp == ("fallback", 0.5)  # part of the bag cache key
    slide, mpp, bags = _open_bags(job)
    assert mpp == 0.5 and bags and all(b.slide_mpp == 0.5 for b in bags)
    [job] = plan_jobs([slide_copy], n_parents_per_slide=2, magnifications=(10, 20), slide_mpp=0.25)
    slide, mpp, _ = _open_bags(job)
    assert mpp == 0.25 and sm.source_of(slide) == "stated"
    assert sm.stated_mpp(slide_copy) == 0.25  # --slide-mpp is remembered for the file
    [job] = plan_jobs([cmu_svs], n_parents_per_slide=2, magnifications=(10, 20), slide_mpp=0.25)
    slide, mpp, _ = _open_bags(job)
    assert mpp == pytest.approx(0.499) and sm.source_of(slide) == "file"  # only a fallback
