"""``mrplip review`` end to end on the shared CMU slide with a real (randomly initialised)
MR-PLIP checkpoint loaded through ``get_encoder``: table, JSON lines, --out, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_mrplip.cli import main

DATA = Path(__file__).parent / "data" / "qupath_export.geojson"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.config import load_config
    from napari_mrplip.models.mrplip import build_model

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_model(build_model(load_config("mrplip-tiny")), out)
    return out


def test_review_cli_table_json_and_out(cmu_svs, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "scored.geojson"
    args = [str(DATA), "--slide", str(cmu_svs), "--model", str(tiny_checkpoint), "--mpp", "2.0"]
    assert main(["review", *args, "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split()[:4] == ["rank", "id", "label", "model"] and len(lines) == 5
    assert "MultiPoint" in captured.err and "wrote" in captured.err
    feats = json.loads(out.read_text())["features"]
    orig = json.loads(DATA.read_text())["features"]
    assert [f.get("id") for f in feats] == [f.get("id") for f in orig]
    for new, old in zip(feats, orig):
        assert new["geometry"] == old["geometry"]
        review = new["properties"].pop("mrplip_review", None)
        assert new["properties"] == old["properties"]
        if old["geometry"]["type"] in ("Polygon", "MultiPolygon"):
            assert review["status"] == "unreviewed" and review["model_label"] is not None
    assert main(["review", *args, "--json", "--device", "cpu"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["rank"] for r in recs] == [1, 2, 3, 4]
    scored = [r["disagreement"] for r in recs if r["status"] == "scored"]
    assert scored == sorted(scored, reverse=True)
    assert recs[-1]["status"] == "unlabelled" and recs[-1]["model_label"] in {
        "Stroma",
        "Tumor",
        "Other",
    }


def test_review_cli_bad_inputs(cmu_svs, tmp_path, capsys):
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "GeometryCollection"}')
    assert main(["review", str(bad), "--slide", str(cmu_svs)]) == 2
    assert str(bad) in capsys.readouterr().err
    missing = tmp_path / "nope.svs"
    assert main(["review", str(DATA), "--slide", str(missing), "--model", str(tmp_path)]) == 2
    assert "nope.svs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["review", str(DATA), "--slide", str(cmu_svs), "--prompt", "no-equals-sign"])
