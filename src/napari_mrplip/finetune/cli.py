"""``mrplip finetune``: fine-tune a model on labelled tiles and report held-out metrics.

Examples::

    mrplip finetune --model mrplip-demo --data annotations.geojson --slide slide.svs --out ft/
    mrplip finetune --model mrplip-demo --data tiles/ --mode prompt --out ft/
    mrplip finetune --model mrplip-demo --stain-labels CMU-1-Small-Region.svs \\
        --val-slide OS-1-detail.ome.tif --mode linear --out ft/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_mrplip import cli_types as ct

from .config import MODES, FinetuneConfig


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``mrplip finetune``'s options to ``parser``."""
    parser.add_argument(
        "--model", default="mrplip-demo", help="base model spec (default: mrplip-demo)"
    )
    src = parser.add_argument_group("training data (one of)")
    src.add_argument(
        "--data", help="QuPath GeoJSON (with --slide) or a folder of class subfolders of tiles"
    )
    src.add_argument("--slide", help="the slide a GeoJSON's level-0 coordinates refer to")
    src.add_argument(
        "--stain-labels",
        nargs="+",
        metavar="SLIDE",
        help="label every tile of these slides from stain statistics",
    )
    parser.add_argument(
        "--val-slide", help="held-out slide (labelled by --val-data or by stain statistics)"
    )
    parser.add_argument("--val-data", help="GeoJSON labelling --val-slide")
    parser.add_argument("--mode", choices=MODES, default="linear")
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument(
        "--mpp", type=ct.mpp, default=0.5, help="tile µm/px (default 0.5, about 20x)"
    )
    ct.add_slide_mpp(parser)
    parser.add_argument(
        "--tile-px", type=ct.positive_int, help="tile side in px at --mpp (default: the model's input size)"
    )
    parser.add_argument(
        "--stride",
        type=ct.fraction(0.05, 1.0, "--stride"),
        default=1.0,
        help="tile stride as a fraction of the tile (stain labels)",
    )
    parser.add_argument("--epochs", type=ct.positive_int, default=20)
    parser.add_argument("--lr", type=ct.fraction(0.0, 10.0, "--lr"))
    parser.add_argument("--batch-size", type=ct.positive_int, default=32)
    parser.add_argument(
        "--device", type=ct.device, help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument("--val-fraction", type=ct.fraction(0.0, 0.9, "--val-fraction"), default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-ctx", type=ct.positive_int, default=4, help="context tokens (prompt mode)")
    parser.add_argument(
        "--unfreeze-blocks", type=int, default=2, help="vision blocks trained (partial mode)"
    )
    parser.add_argument("--name", help="name in the model catalogue")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty --out (never an input)"
    )
    parser.add_argument(
        "--no-register", action="store_true", help="do not add the result to the model catalogue"
    )


def _config(args) -> FinetuneConfig:
    return FinetuneConfig(
        model=args.model, mode=args.mode, out_dir=args.out, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, device=args.device, val_fraction=args.val_fraction,
        seed=args.seed, n_ctx=args.n_ctx, unfreeze_blocks=args.unfreeze_blocks, name=args.name,
        register=not args.no_register,
    )  # fmt: skip


def _open(path: str, slide_mpp: float | None):
    from napari_mrplip.io import open_slide

    return open_slide(path, mpp=slide_mpp)


def load_training_data(args, tile_px: int):
    """The training :class:`LabelledTiles` named by ``--data/--slide/--stain-labels``."""
    from . import sources as src

    if args.stain_labels:
        data = None
        for path in args.stain_labels:
            part = src.tiles_from_stain_labels(
                _open(path, args.slide_mpp), tile_px=tile_px, mpp=args.mpp, stride_frac=args.stride
            )
            data = part if data is None else data.extend(part)
        return data
    if not args.data:
        raise ValueError(
            "give training data: --data GEOJSON --slide SLIDE, --data TILE_FOLDER or --stain-labels SLIDE"
        )
    path = Path(args.data)
    if path.is_dir():
        return src.tiles_from_folder(path)
    if not args.slide:
        raise ValueError(f"{path}: a GeoJSON needs --slide (the slide its coordinates refer to)")
    return src.tiles_from_geojson(
        path, _open(args.slide, args.slide_mpp), tile_px=tile_px, mpp=args.mpp
    )


def load_val_data(args, tile_px: int):
    """Held-out tiles from ``--val-slide`` (``None`` without one: split the training data)."""
    from . import sources as src

    if not args.val_slide:
        return None
    slide = _open(args.val_slide, args.slide_mpp)
    if args.val_data:
        return src.tiles_from_geojson(args.val_data, slide, tile_px=tile_px, mpp=args.mpp)
    return src.tiles_from_stain_labels(
        slide, tile_px=tile_px, mpp=args.mpp, stride_frac=min(args.stride, 0.5), min_classes=1
    )


def _check_out(args) -> None:
    """The output policy for the checkpoint folder: never an input, never a non-empty
    folder (or a file) without ``--overwrite``."""
    from napari_mrplip.outputs import check_output

    out = Path(args.out)
    inputs = [p for p in (args.model, args.data, args.slide, args.val_slide, args.val_data,
                          *(args.stain_labels or [])) if p and Path(p).exists()]  # fmt: skip
    # the panel's process launcher creates these before the command runs
    own = {"process-stderr.log", "progress.jsonl"}
    empty_dir = out.is_dir() and not [p for p in out.iterdir() if p.name not in own]
    check_output(out, inputs=inputs, overwrite=args.overwrite or empty_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a folder for the checkpoint")


def run(args) -> int:
    """Run ``mrplip finetune``; 0 on success, 2 on bad input (message on stderr)."""
    from napari_mrplip.io import SlideOpenError
    from napari_mrplip.models.encoders import get_encoder

    from .data import FinetuneDataError
    from .run import FinetuneCancelled, finetune

    try:
        _check_out(args)
        cfg = _config(args)
        encoder = get_encoder(cfg.model, device=cfg.device)
        tile_px = args.tile_px or int(encoder.input_size)
        data = load_training_data(args, tile_px)
        val = load_val_data(args, tile_px)
        print(
            f"training tiles: {data.counts()}"
            + (f"; held-out: {val.counts()}" if val is not None else "")
        )
        result = finetune(cfg, data, val, encoder=encoder)
    except (FinetuneDataError, SlideOpenError, ValueError, OSError) as e:
        print(f"mrplip finetune: {e}", file=sys.stderr)
        return 2
    except (FinetuneCancelled, KeyboardInterrupt):
        print("mrplip finetune: cancelled; nothing saved", file=sys.stderr)
        return 130
    print(f"split: {result.split_by} ({result.n_train} train / {result.n_val} held-out tiles)")
    print(f"fine-tuned ({cfg.mode}): {result.report.summary()}")
    zs = result.zero_shot
    print(f"zero-shot baseline:  {zs.summary() if zs else 'n/a (vision-only model: no prompts)'}")
    print(f"checkpoint: {result.checkpoint}")
    return 0
