"""``mrplip info``: the table and the JSON describe the real slides; bad files exit 1."""

from __future__ import annotations

import json

from napari_mrplip.cli import main


def test_info_json_on_real_svs(cmu_svs, capsys):
    assert main(["info", str(cmu_svs), "--json"]) == 0
    [info] = json.loads(capsys.readouterr().out)
    assert info["backend"] == "tifffile" and info["format"] == "svs"
    assert info["mpp"] == 0.499 and info["magnification"] == 20.0
    assert info["associated"] == ["label", "macro", "thumbnail"]
    assert [lv["shape"][:2] for lv in info["levels"]][:2] == [[2967, 2220], [1483, 1110]]


def test_info_table_and_bad_file(tmp_path, os1_ome, capsys):
    bad = tmp_path / "bad.svs"
    bad.write_text("nope")
    assert main(["info", str(os1_ome), str(bad)]) == 1
    out = capsys.readouterr()
    assert "0.2271 µm/px" in out.out and "built" in out.out
    assert "bad.svs" in out.err
