"""``mrplip eval zeroshot|retrieval`` end to end on small tile folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_mrplip.cli import main
from napari_mrplip.models import zeroshot as zs
from open_clip_tiny import tiny_clip, tiny_clip_cfg, write_open_clip_dir

COLOURS = {  # H&E-like colours per class
    "background": (245, 245, 245),
    "dense_nuclei": (70, 40, 120),
    "stroma": (230, 140, 180),
}


def _tile_folder(root: Path, n=4, px=64) -> Path:
    rng = np.random.default_rng(0)
    for cls, rgb in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            noise = rng.integers(-20, 21, (px, px, 3))
            tile = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(tile).save(root / cls / f"t{i}.png")
    return root


def _open_clip_dir(root: Path) -> Path:
    cfg = tiny_clip_cfg()
    return write_open_clip_dir(root, tiny_clip(cfg), cfg)


def test_zeroshot_two_models_side_by_side(tmp_path):
    data = _tile_folder(tmp_path / "tiles")
    other = _open_clip_dir(tmp_path / "random_clip")
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "zeroshot",
            "--data",
            str(data),
            "--model",
            "mrplip-demo",
            "--model",
            str(other),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())["models"]
    assert list(summary) == ["mrplip-demo", str(other)]
    for r in summary.values():
        cm = np.array(r["confusion_matrix"])
        assert cm.shape == (3, 3) and cm.sum() == 12 and (cm.sum(1) == 4).all()
        assert r["classes"] == list(COLOURS)
        assert 0 <= r["balanced_accuracy"] <= 1 and 0 <= r["weighted_f1"] <= 1
    assert (out / "mrplip-demo_confusion.png").stat().st_size > 1000
    assert (out / "comparison.png").is_file()
    assert "| `mrplip-demo` | 12 |" in (out / "summary.md").read_text()
    # the same predictions as the shared scorer applied by hand
    from napari_mrplip.models.encoders import get_encoder

    enc = get_encoder("mrplip-demo", device="cpu")
    tiles = np.stack(
        [
            np.asarray(Image.open(p).convert("RGB").resize((enc.input_size,) * 2, Image.BILINEAR))
            for c in COLOURS
            for p in sorted((data / c).iterdir())
        ]
    )
    classes = zs.prompt_ensemble(enc, [[c.replace("_", " ")] for c in COLOURS])
    pred = zs.classify(enc.encode_tiles(tiles), classes, enc.logit_scale).argmax(1)
    truth = np.repeat(np.arange(3), 4)
    hand = np.zeros((3, 3), int)
    np.add.at(hand, (truth, pred), 1)
    assert (hand == np.array(summary["mrplip-demo"]["confusion_matrix"])).all()
    # outputs are never overwritten silently
    rc = main(
        ["eval", "zeroshot", "--data", str(data), "--model", "mrplip-demo", "--out", str(out)]
    )
    assert rc == 2


def test_zeroshot_with_a_conch_prompt_file_and_bad_inputs(tmp_path, capsys):
    data = _tile_folder(tmp_path / "tiles", n=2)
    prompts = {
        "0": {
            "classnames": {
                "background": ["background", "empty glass"],
                "dense_nuclei": ["dense nuclei", "tumour cells"],
                "stroma": ["stroma", "pink stroma"],
                "fat": ["adipose tissue"],
            },
            "templates": ["CLASSNAME.", "an H&E image of CLASSNAME."],
        }
    }
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    out = tmp_path / "o"
    assert (
        main(
            [
                "eval",
                "zeroshot",
                "--data",
                str(data),
                "--prompts",
                str(tmp_path / "p.json"),
                "--model",
                "mrplip-demo",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads((out / "mrplip-demo.json").read_text())
    assert r["classes"] == ["background", "dense_nuclei", "stroma", "fat"] and r["templates"] == 2
    assert r["per_class_recall"]["fat"] is None  # no true tile: NaN, written as null
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "zeroshot",
                "--data",
                str(tmp_path / "none"),
                "--model",
                "mrplip-demo",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "class subfolders" in capsys.readouterr().err


def test_vision_only_model_is_refused_with_its_reason(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    uni = tmp_path / "uni"
    uni.mkdir()
    args = {
        "img_size": 32,
        "patch_size": 16,
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 2,
        "num_classes": 0,
    }
    (uni / "config.json").write_text(
        json.dumps({"architecture": "vit_large_patch16_224", "model_args": args})
    )
    save_file(
        timm.create_model("vit_large_patch16_224", **args).state_dict(),
        str(uni / "model.safetensors"),
    )
    data = _tile_folder(tmp_path / "tiles", n=1)
    assert (
        main(
            [
                "eval",
                "zeroshot",
                "--data",
                str(data),
                "--model",
                str(uni),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "vision-only" in capsys.readouterr().err


def test_retrieval_recall(tmp_path):
    data = _tile_folder(tmp_path / "tiles", n=2)
    caps = {f"{c}/t{i}.png": f"{c.replace('_', ' ')} tile {i}" for c in COLOURS for i in range(2)}
    (data / "captions.json").write_text(json.dumps(caps))
    out = tmp_path / "r"
    assert (
        main(
            ["eval", "retrieval", "--data", str(data), "--model", "mrplip-demo", "--out", str(out)]
        )
        == 0
    )
    r = json.loads((out / "mrplip-demo.json").read_text())
    assert r["n_images"] == 6 and r["n_captions"] == 6
    assert r["image_to_text_R@10"] == 1.0 and r["text_to_image_R@10"] == 1.0  # k >= N
    assert 0 <= r["image_to_text_R@1"] <= r["image_to_text_R@5"] <= 1
    (data / "captions.json").write_text(json.dumps({"../escape.png": "x"}))
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--data",
                str(data),
                "--model",
                "mrplip-demo",
                "--out",
                str(tmp_path / "r2"),
            ]
        )
        == 2
    )


def test_eval_requires_a_task():
    with pytest.raises(SystemExit):
        main(["eval"])


def _uni_like(root, px=32):
    """A vision-only encoder folder in timm's hub format (UNI's layout, tiny)."""
    import timm
    import torch
    from safetensors.torch import save_file

    root.mkdir()
    args = {
        "img_size": px,
        "patch_size": 16,
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 2,
        "num_classes": 0,
    }
    (root / "config.json").write_text(
        json.dumps({"architecture": "vit_large_patch16_224", "model_args": args})
    )
    torch.manual_seed(1)
    save_file(
        timm.create_model("vit_large_patch16_224", **args).state_dict(),
        str(root / "model.safetensors"),
    )
    return root


def test_vision_only_encoder_fine_tunes(tmp_path, capsys):
    """UNI-like encoders train a linear probe (class-centroid start, no zero-shot baseline);
    prompt learning is refused (no text tower), partial/full say they need MR-PLIP."""
    from napari_mrplip.models.encoders import get_encoder

    uni = _uni_like(tmp_path / "uni")
    data = _tile_folder(tmp_path / "tiles", n=6)
    out = tmp_path / "ft"
    argv = [
        "finetune",
        "--model",
        str(uni),
        "--data",
        str(data),
        "--mode",
        "linear",
        "--out",
        str(out),
    ]
    assert main([*argv, "--epochs", "2", "--device", "cpu"]) == 0, capsys.readouterr().err
    assert "n/a (vision-only model: no prompts)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["zero_shot"] is None and metrics["finetuned"]["balanced_accuracy"] is not None
    enc = get_encoder(str(out), device="cpu")  # the fine-tuned checkpoint scores its classes
    assert enc.encode_text(["stroma"]).shape[0] == 1
    prompt = ["finetune", "--model", str(uni), "--data", str(data), "--mode", "prompt"]
    assert main([*prompt, "--out", str(tmp_path / "p")]) == 2
    assert "Prompt learning needs a text tower" in capsys.readouterr().err
    partial = ["finetune", "--model", str(uni), "--data", str(data), "--mode", "partial"]
    assert main([*partial, "--out", str(tmp_path / "q"), "--epochs", "1"]) == 2
    assert "--mode linear" in capsys.readouterr().err


def test_zeroshot_on_geojson_over_a_slide(tmp_path, cmu_svs):
    """Tiles on the heatmap grid inside classified QuPath polygons of the CMU sample."""
    from napari_mrplip.evaluation.data import geojson_tiles
    from napari_mrplip.io.open import open_slide

    w, h = open_slide(cmu_svs).dimensions

    def box(x0, y0, x1, y1, name):
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "annotation", "classification": {"name": name}}}  # fmt: skip

    doc = {"type": "FeatureCollection", "features": [
        box(0, 0, w // 2, h // 3, "upper"), box(w // 2, 2 * h // 3, w, h, "lower"),
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]},
         "properties": {"objectType": "annotation"}},  # unclassified: not used
    ]}  # fmt: skip
    gj = tmp_path / "regions.geojson"
    gj.write_text(json.dumps(doc))
    tiles = geojson_tiles(gj, cmu_svs, mpp=2.0)
    assert tiles.classes == ["lower", "upper"]
    grid, xy, labels = tiles.for_size(112)
    centres = xy + grid.tile_level0 / 2
    upper = (centres[:, 0] < w // 2) & (centres[:, 1] < h // 3)
    assert ((labels == 1) == upper).all() and (labels == 0).any() and (labels == 1).any()
    assert tiles.read([0, 1], 112).shape == (2, 112, 112, 3)
    out = tmp_path / "out"
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"upper": ["pink stroma"], "lower": ["dense nuclei"]}))
    argv = ["eval", "zeroshot", "--data", str(gj), "--slide", str(cmu_svs), "--mpp", "2"]
    assert (
        main([*argv, "--prompts", str(prompts), "--model", "mrplip-demo", "--out", str(out)]) == 0
    )
    r = json.loads((out / "mrplip-demo.json").read_text())
    assert r["n_tiles"] == len(labels) and r["classes"] == ["lower", "upper"]
    assert main([*argv[:4], "--model", "mrplip-demo", "--out", str(tmp_path / "o2")]) == 2
