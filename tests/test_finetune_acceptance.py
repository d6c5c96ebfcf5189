"""Acceptance: stain-labelled real slides -> linear probe beats chance -> checkpoint scores via get_encoder."""

from __future__ import annotations

import numpy as np
import pytest

from finetune_tiny import synthetic_tiles, tiny_checkpoint
from napari_mrplip.finetune.data import FinetuneDataError


@pytest.mark.slow
def test_stain_labelled_probe_beats_chance_and_checkpoint_scores(
    tmp_path, monkeypatch, cmu_svs, os1_ome
):
    from napari_mrplip.finetune.cli import configure, run
    from napari_mrplip.io import open_slide
    from napari_mrplip.models.encoders import get_encoder

    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    model = tiny_checkpoint(tmp_path)
    out = tmp_path / "probe"
    import argparse

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([
        "--model", str(model), "--stain-labels", str(cmu_svs), "--mode", "linear", "--out", str(out),
        "--mpp", "2.0", "--tile-px", "48", "--epochs", "10", "--device", "cpu",
    ])  # fmt: skip
    assert run(args) == 0
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    ft = metrics["finetuned"]
    assert metrics["split_by"] == "group" and len(ft["recall"]) == 3  # 3 classes held out by region
    assert ft["balanced_accuracy"] > 1 / 3 + 0.2, metrics  # clearly above chance for 3 classes
    enc = get_encoder(str(out), device="cpu")
    assert enc.prompts == ["dense nuclei", "stroma", "background"]
    # its prompts score exactly like the head: glass tiles come out as "background"
    glass = open_slide(cmu_svs).read_region(0, 0, 128, 128, 0)[None]
    probs = enc.classify(glass)
    text = enc.encode_text(enc.prompts)
    assert np.allclose(text, enc.class_embeddings)
    assert probs.argmax() == 2


def test_empty_folder_and_one_class_folder_are_clear_errors(tmp_path):
    from PIL import Image

    from napari_mrplip.finetune.sources import tiles_from_folder

    (tmp_path / "empty").mkdir()
    with pytest.raises(FinetuneDataError, match="no class subfolders"):
        tiles_from_folder(tmp_path / "empty")
    root = tmp_path / "tiles"
    (root / "stroma").mkdir(parents=True)
    (root / "tumour").mkdir()
    for i, t in enumerate(synthetic_tiles(3, "stroma")):
        Image.fromarray(t).save(root / "stroma" / f"{i}.png")
    with pytest.raises(FinetuneDataError, match="no tiles inside: tumour"):
        tiles_from_folder(root)
    (root / "tumour" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(FinetuneDataError, match="bad.png: cannot read"):
        tiles_from_folder(root)


def test_class_with_no_tiles_inside_its_region_is_named(cmu_svs):
    from napari_mrplip.finetune.sources import tiles_in_regions
    from napari_mrplip.io import open_slide

    slide = open_slide(cmu_svs)
    big = np.array([[0, 0], [800, 0], [800, 800], [0, 800]], float)
    tiny = np.array([[1000, 1000], [1010, 1000], [1010, 1010], [1000, 1010]], float)
    with pytest.raises(FinetuneDataError, match="no tiles inside: tumour"):
        tiles_in_regions(slide, [(big, "glass"), (tiny, "tumour")], tile_px=64, mpp=1.0)
    with pytest.raises(FinetuneDataError, match="at least 2 classes"):
        tiles_in_regions(slide, [(big, "glass")], tile_px=64, mpp=1.0)


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    from napari_mrplip.cli import main

    (tmp_path / "empty").mkdir()
    code = main(
        [
            "finetune",
            "--model",
            str(tiny_checkpoint(tmp_path)),
            "--data",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "no class subfolders" in capsys.readouterr().err
