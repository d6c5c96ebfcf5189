"""``mrplip pretrain`` (and ``python -m napari_mrplip.train``): arguments -> ``PretrainConfig``.

This is the one place where command-line arguments become a typed config. With ``--resume``
the run's saved ``OUT/pretrain_config.json`` is the base and only options given on the
command line override it (so ``mrplip pretrain --out RUN --resume`` is enough).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_mrplip.cli_types import add_slide_mpp

from .config import DEVICES, PRECISIONS, SKIMAGE_IHC, PretrainConfig, PretrainConfigError

#: argparse dest -> PretrainConfig field, for the options that map one to one.
_FIELDS = {
    "config": "model_config",
    "slides": "slides",
    "max_steps": "max_steps",
    "batch_size": "batch_size",
    "device": "device",
    "slide_mpp": "slide_mpp",
    "precision": "precision",
    "grad_accum": "grad_accum",
    "lr": "lr",
    "warmup_steps": "warmup_steps",
    "checkpoint_every": "checkpoint_every",
    "workers": "workers",
    "magnifications": "magnifications",
    "tile_px": "tile_px",
    "parents_per_slide": "parents_per_slide",
    "children_per_parent": "children_per_parent",
    "seed": "seed",
    "weight_decay": "weight_decay",
    "manifest": "manifest",
    "captioner": "captioner",
    "log_every": "log_every",
    "threads": "threads",
    "features": "features",
    "feature_encoder": "feature_encoder",
    "caption_batch": "caption_batch",
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the pretraining options (defaults are ``None`` = "not given")."""
    add = parser.add_argument
    add(
        "--config",
        help="model config: built-in name (mrplip-tiny, mrplip-b16, "
        "mrplip-frozen-features) or a JSON file [mrplip-tiny]",
    )
    add("--slides", nargs="+", metavar="PATH", help=f"slide files, or {SKIMAGE_IHC}")
    add("--out", required=True, type=Path, help="output directory of the run")
    add("--max-steps", type=int, help="optimizer steps [300]")
    add("--batch-size", type=int, help="global bags per optimizer step [8]")
    add("--device", choices=DEVICES, help="[auto: cuda if available]")
    add_slide_mpp(parser, fallback=True)
    add("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    add("--precision", choices=PRECISIONS, help="autocast precision [fp32]")
    add("--grad-accum", type=int, help="micro-batches per optimizer step [1]")
    add("--lr", type=float, help="peak learning rate [5e-4]")
    add("--weight-decay", type=float, help="AdamW weight decay [0.05]")
    add("--warmup-steps", type=int, help="linear warm-up steps before cosine decay [20]")
    add("--checkpoint-every", type=int, help="steps between checkpoints, 0 = end only [100]")
    add("--workers", type=int, help="DataLoader workers per process [0]")
    add(
        "--threads",
        type=int,
        help="torch CPU threads per process [torch default]; 1 is much faster on a busy machine",
    )
    add("--magnifications", type=float, nargs="+", help="coarsest first [5 10 20]")
    add("--tile-px", type=int, help="tile side in px at every magnification [model input]")
    add("--parents-per-slide", type=int, help="bags sampled per slide [16]")
    add("--children-per-parent", type=int, help="keep k random children per tile [all]")
    add("--seed", type=int, help="[0]")
    add("--manifest", type=Path, help="bag manifest to use or create [OUT/manifest.jsonl]")
    add("--captioner", help="'stain' (offline) or a local VLM directory [stain]")
    add("--caption-batch", type=int, help="tiles per captioning batch [64]")
    add(
        "--features",
        type=Path,
        metavar="STORE.zarr",
        help="feature store of the manifest's bags (mrplip embed --store), for a features config",
    )
    add("--feature-encoder", metavar="SPEC",
        help="frozen tile encoder of a features config: run on pixels without --features, "
        "or the encoder the store must come from")  # fmt: skip
    add("--log-every", type=int, help="steps between progress events [1]")
    add("--no-augment", action="store_true", help="no random flips/rotations (deterministic)")
    add("--no-progress-bar", action="store_true", help="no tqdm bar (events are still written)")
    add("--no-register", action="store_true", help="do not add OUT/final to the model list")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """The ``PretrainConfig`` of a parsed command line (saved config as base on --resume)."""
    saved = args.out / "pretrain_config.json"
    base: dict = {}
    if args.resume and saved.is_file():
        try:
            base = json.loads(saved.read_text())
        except (OSError, ValueError) as e:
            raise PretrainConfigError(
                f"{saved}: cannot read the run's saved options ({e}); the file is truncated or "
                "corrupt. Restore it, or delete it and pass the run's options again with --resume"
            ) from e
        if not isinstance(base, dict):
            raise PretrainConfigError(f"{saved}: not a pretrain config (expected a JSON object)")
    given = {f: getattr(args, a) for a, f in _FIELDS.items() if getattr(args, a) is not None}
    base.update(given)
    base.update(out=args.out, resume=args.resume)
    for flag, field in (
        ("no_augment", "augment"),
        ("no_progress_bar", "progress_bar"),
        ("no_register", "register"),
    ):
        if getattr(args, flag):
            base[field] = False
    if not base.get("slides"):
        raise PretrainConfigError("--slides is required (one or more slide paths)")
    return PretrainConfig.from_json(base)


def run(args: argparse.Namespace) -> int:
    """Run ``pretrain``; bad input -> a one-line error and exit status 2."""
    from napari_mrplip.data.feature_store import FeatureStoreError
    from napari_mrplip.io.errors import SlideOpenError, TileReadError
    from napari_mrplip.models.errors import ConfigError, ModelLoadError
    from napari_mrplip.outputs import DiskFullError

    from .checkpointing import CheckpointError
    from .pretrain import pretrain

    try:
        cfg = config_from_args(args)
        final = pretrain(cfg)
    except (
        DiskFullError,
        PretrainConfigError,
        SlideOpenError,
        TileReadError,
        CheckpointError,
        ConfigError,
        ModelLoadError,
        FeatureStoreError,
    ) as e:
        print(f"mrplip pretrain: error: {e}", file=sys.stderr)
        return 2
    print(final)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m napari_mrplip.train", description="pretrain MR-PLIP on slides"
    )
    configure(parser)
    from napari_mrplip.io.stated_mpp import announce_to

    announce_to(True)  # as ``mrplip``: one line when a µm/px stated earlier is used
    return run(parser.parse_args(argv))
