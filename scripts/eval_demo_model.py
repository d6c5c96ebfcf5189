"""Evaluate an MR-PLIP model on held-out tiles: caption retrieval and zero-shot classification.

Tiles come from a slide the model never saw (default: OS-1, held out from the embedded
model's training) on a half-overlapping grid at 20x and 10x. Each tile gets its
StainCaptioner caption and stain statistics.

1. Text-to-image retrieval: every caption queries all tiles; a hit at k when one of the k
   most similar tiles carries exactly that caption ("exact caption"), or the same content
   (magnification and findings, ignoring the captioner's random choice of phrasing: "same
   content"). Chance is computed exactly per query (``1 - C(N - m, k) / C(N, k)`` with m
   tiles sharing the key).
2. Zero-shot "dense nuclei" / "stroma" / "background" with CONCH-style prompt ensembles;
   labels from the stain statistics (the StainCaptioner's own thresholds); balanced accuracy
   over the classes present, chance = 1 / (classes present).

The same numbers for the untrained (random-init) model of the same config are printed
as a baseline. Usage::

    python scripts/eval_demo_model.py [--model mrplip-demo] [--slide ../shared/data/OS-1-detail.ome.tif]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from math import comb
from pathlib import Path

import numpy as np

from napari_mrplip.data.captioners import (
    BACKGROUND,
    DENSE_NUCLEI,
    SPARSE_NUCLEI,
    STROMA_RICH,
    StainCaptioner,
)
from napari_mrplip.embed.tiles import read_tile
from napari_mrplip.io import open_slide
from napari_mrplip.tiling.geometry import magnification_to_mpp

CLASSES = ("dense nuclei", "stroma", "background")
DEFAULT_SLIDE = Path(__file__).resolve().parents[2] / "shared" / "data" / "OS-1-detail.ome.tif"


def grid_tiles(slide, magnification: float, tile_px: int, exclude=()) -> list[np.ndarray]:
    """Tiles of ``tile_px`` at ``magnification`` on a half-overlapping grid over the slide.

    Grid boxes intersecting any of the level-0 boxes ``exclude`` (x0, y0, w, h) are skipped.
    """
    side = tile_px * magnification_to_mpp(magnification) / slide.mpp  # level-0 px
    stride = side / 2
    w, h = slide.dimensions
    out = []
    for y in np.arange(0, h - side + 1, stride):
        for x in np.arange(0, w - side + 1, stride):
            box = (int(x), int(y), int(round(side)), int(round(side)))
            if any(_overlap(box, other) for other in exclude):
                continue
            out.append(read_tile(slide, (box[0], box[1], box[0] + box[2], box[1] + box[3]), tile_px))
    return out


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def training_boxes(manifest: Path | None, slide: Path) -> list[tuple]:
    """Level-0 parent boxes of ``slide``'s bags in a training manifest (to keep out)."""
    if manifest is None:
        return []
    from napari_mrplip.data.manifest import read_manifest

    target = str(Path(slide).resolve())
    return [tuple(r["tiles"][0]["box"]) for r in read_manifest(manifest) if r["slide"] == target]


def label(stats: dict) -> int | None:
    """Class index from stain statistics, or None when no class clearly applies."""
    if stats["background_fraction"] >= BACKGROUND:
        return 2
    dense = stats["nuclear_fraction"] / DENSE_NUCLEI
    stroma = stats["stroma_fraction"] / STROMA_RICH
    if max(dense, stroma) < 1.0:
        return None
    return 0 if dense >= stroma else 1


def content_signature(stats: dict, magnification: float) -> str:
    """What a StainCaptioner caption says, without its random choice of phrasing."""
    flags = {
        "background": stats["background_fraction"] >= BACKGROUND,
        "dense": stats["nuclear_fraction"] >= DENSE_NUCLEI,
        "moderate": SPARSE_NUCLEI <= stats["nuclear_fraction"] < DENSE_NUCLEI,
        "sparse": stats["nuclear_fraction"] < SPARSE_NUCLEI,
        "stroma_rich": stats["stroma_fraction"] >= STROMA_RICH,
        "stroma": 0.15 <= stats["stroma_fraction"] < STROMA_RICH,
        "dab": stats["dab_fraction"] > 0.01,
        "fat": stats["fat_fraction"] > 0.15,
        "lumen": stats["lumen_fraction"] > 0.08,
        "edge": stats["background_fraction"] > 0.25,
    }
    return f"{magnification:g}x:" + ",".join(k for k, v in flags.items() if v)


def retrieval(text_emb: np.ndarray, tile_emb: np.ndarray, keys: list[str], ks=(1, 5)):
    """Recall@k of caption -> tile and its exact chance level.

    A query hits at k when one of the k most similar tiles has the query's key (its exact
    caption, or its content signature).
    """
    sim = text_emb @ tile_emb.T
    order = np.argsort(-sim, axis=1)
    caps = np.array(keys)
    n = len(keys)
    out = {}
    for k in ks:
        hits = [bool((caps[order[q, :k]] == caps[q]).any()) for q in range(n)]
        m = [int((caps == c).sum()) for c in caps]
        chance = [1 - comb(n - mi, k) / comb(n, k) for mi in m]
        out[f"recall@{k}"] = float(np.mean(hits))
        out[f"chance@{k}"] = float(np.mean(chance))
    return out


def zero_shot(encoder, tile_emb: np.ndarray, labels: list[int | None]):
    """Balanced accuracy over labelled tiles (classes present), and the confusion matrix."""
    from napari_mrplip.models.zeroshot import classify, prompt_ensemble

    class_emb = prompt_ensemble(encoder, list(CLASSES))
    pred = classify(tile_emb, class_emb, encoder.logit_scale).argmax(axis=1)
    keep = [i for i, y in enumerate(labels) if y is not None]
    y = np.array([labels[i] for i in keep])
    p = pred[keep]
    present = sorted(set(y.tolist()))
    recalls = {CLASSES[c]: float((p[y == c] == c).mean()) for c in present}
    confusion = [[int(((y == a) & (p == b)).sum()) for b in range(3)] for a in range(3)]
    return {
        "balanced_accuracy": float(np.mean(list(recalls.values()))) if recalls else float("nan"),
        "chance": 1.0 / max(len(present), 1),
        "per_class_recall": recalls,
        "n_labelled": len(keep),
        "confusion_rows_true_cols_pred": confusion,
    }


def evaluate(spec: str, tiles: np.ndarray, captions: list[str], labels, signatures) -> dict:
    from napari_mrplip.models.encoders import get_encoder

    encoder = get_encoder(spec, device="cpu")
    tile_emb = np.concatenate([encoder.encode_tiles(tiles[i : i + 64])
                               for i in range(0, len(tiles), 64)])  # fmt: skip
    text_emb = encoder.encode_text(captions)
    return {"retrieval_exact_caption": retrieval(text_emb, tile_emb, captions),
            "retrieval_same_content": retrieval(text_emb, tile_emb, signatures),
            "zero_shot": zero_shot(encoder, tile_emb, labels)}  # fmt: skip


def random_init_dir(config, out: Path) -> str:
    """The untrained model of ``config`` (seed 0) written as a checkpoint dir (baseline)."""
    import torch

    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.mrplip import build_model

    torch.manual_seed(0)
    return str(save_model(build_model(config), out))


def _cap_per_label(labels: list, cap: int) -> list[int]:
    """Indices keeping at most ``cap`` tiles per label (evenly spaced, deterministic)."""
    keep = []
    for value in set(labels):
        idx = [i for i, y in enumerate(labels) if y == value]
        if len(idx) > cap:
            idx = [idx[int(j)] for j in np.linspace(0, len(idx) - 1, cap)]
        keep += idx
    return sorted(keep)


def tile_set(path: Path, magnifications, tile_px: int, exclude=(), max_per_label: int = 60):
    """Tiles, StainCaptioner captions, labels and a summary for one slide.

    At most ``max_per_label`` tiles per label (and unlabelled) are kept, so that a slide of
    mostly glass does not turn retrieval into a background-only task.
    """
    captioner = StainCaptioner()
    tiles, captions, labels, mags, sigs = [], [], [], [], []
    with open_slide(path) as slide:
        for mag in magnifications:
            for tile in grid_tiles(slide, mag, tile_px, exclude):
                stats = captioner.stats(tile, mag)
                tiles.append(tile)
                captions.append(captioner.caption(tile, mag))
                labels.append(label(stats))
                sigs.append(content_signature(stats, mag))
                mags.append(mag)
    keep = _cap_per_label(labels, max_per_label)
    tiles, captions, labels, mags, sigs = (
        [seq[i] for i in keep] for seq in (tiles, captions, labels, mags, sigs)
    )
    info = {
        "slide": str(path), "n_tiles": len(tiles), "excluded_training_boxes": len(exclude),
        "tiles_per_magnification": {f"{m:g}x": mags.count(m) for m in magnifications},
        "distinct_captions": len(set(captions)), "distinct_content_signatures": len(set(sigs)),
        "label_counts": {c: labels.count(i) for i, c in enumerate(CLASSES)},
    }  # fmt: skip
    return np.stack(tiles), captions, labels, sigs, info


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mrplip-demo")
    p.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    p.add_argument("--magnifications", type=float, nargs="+", default=[20.0, 10.0])
    p.add_argument(
        "--extra-slide",
        type=Path,
        default=None,
        help="also evaluate on this (training) slide's regions outside any training bag",
    )
    p.add_argument(
        "--exclude-manifest",
        type=Path,
        default=None,
        help="training manifest whose bag boxes are excluded on --extra-slide",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    from napari_mrplip.models.checkpoint import load_model, resolve_checkpoint

    model = load_model(args.model)
    sets = {"held_out_slide": tile_set(args.slide, args.magnifications, model.config.image_size)}
    if args.extra_slide is not None:
        exclude = training_boxes(args.exclude_manifest, args.extra_slide)
        sets["unseen_regions_of_training_slide"] = tile_set(
            args.extra_slide, args.magnifications, model.config.image_size, exclude
        )
    result = {"model": str(resolve_checkpoint(args.model))}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = random_init_dir(model.config, Path(tmp) / "random")
        for name, (tiles, captions, labels, sigs, info) in sets.items():
            result[name] = {
                **info,
                "trained": evaluate(args.model, tiles, captions, labels, sigs),
                "random_init": evaluate(baseline, tiles, captions, labels, sigs),
            }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
