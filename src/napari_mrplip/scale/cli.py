"""``mrplip manifest`` and ``mrplip embed`` (heatmap cache, or ``--store`` feature store).

``mrplip embed SLIDE... --cache DIR`` is unchanged (the heatmap embedding cache,
``heatmap.embed_cli``). ``mrplip embed --store STORE.zarr --manifest M.jsonl --model ENC``
writes the pretraining feature store instead; exactly one of ``--cache`` / ``--store``.
Both distributed stages run on a local process, a dask LocalCluster (``--workers N``), a
running dask scheduler (``--scheduler tcp://host:8786``), or under ``torchrun`` (detected).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_mrplip.cli_types import add_slide_mpp

from .runner import BACKENDS


def _add_scale_options(add) -> None:
    add("--backend", choices=BACKENDS, default="auto",
        help="auto: torchrun when launched by torchrun, dask with --workers>1 or --scheduler")  # fmt: skip
    add("--scheduler", metavar="ADDR", help="address of a running dask scheduler")
    add("--progress", type=Path, metavar="FILE", help="JSON-lines progress events")


def configure_manifest(parser: argparse.ArgumentParser) -> None:
    """Declare the ``mrplip manifest`` options."""
    add = parser.add_argument
    add("slides", nargs="+", metavar="SLIDE")
    add("--out", required=True, type=Path, help="manifest to write (.jsonl)")
    add("--captioner", default="stain", help="'stain' (offline) or a local VLM directory")
    add("--workers", type=int, default=1, help="dask workers of a local cluster [1]")
    add("--device", default="auto", help="auto | cpu | cuda | cuda:N [auto]")
    add("--batch-tiles", type=int, default=64, help="tiles per captioning batch [64]")
    add("--parents-per-slide", type=int, default=20, help="bags per slide [20]")
    add("--magnifications", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    add("--tile-px", type=int, default=224, help="tile side in px [224]")
    add("--children-per-parent", type=int, default=None, help="keep k children per tile [all]")
    add_slide_mpp(parser, fallback=True)
    add("--seed", type=int, default=0)
    _add_scale_options(add)


def run_manifest(args: argparse.Namespace) -> int:
    """Run ``mrplip manifest``: exit 0, 1 when some slides failed, 2 on bad options or when
    every slide failed."""
    from .pipeline import build_manifest_at_scale

    if args.workers < 1 or args.batch_tiles < 1 or args.parents_per_slide < 1:
        print("mrplip manifest: --workers, --batch-tiles, --parents-per-slide must be >= 1",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        summary = build_manifest_at_scale(
            args.slides, args.out, args.captioner, args.backend, args.workers, args.device,
            args.scheduler, args.batch_tiles, args.progress,
            n_parents_per_slide=args.parents_per_slide,
            magnifications=tuple(args.magnifications), tile_px=args.tile_px, seed=args.seed,
            slide_mpp=args.slide_mpp, children_per_parent=args.children_per_parent,
        )  # fmt: skip
    except ValueError as e:  # e.g. no bags at all
        print(f"mrplip manifest: {e}", file=sys.stderr)
        return 2
    return _report("manifest", summary)


def _report(stage: str, summary: dict) -> int:
    print(json.dumps({k: v for k, v in summary.items() if k != "per_slide"}))
    for f in summary["failures"]:
        print(f"mrplip {stage}: skipped {f['slide']}: {f['error']}", file=sys.stderr)
    if summary["failed"] and summary["failed"] == summary["slides"]:
        return 2  # the convention of the batch commands: every slide failed
    return 1 if summary["failed"] else 0


# ---------------------------------------------------------------------- embed
def configure(parser: argparse.ArgumentParser) -> None:
    """Declare ``mrplip embed`` (both modes)."""
    from napari_mrplip.heatmap import embed_cli

    embed_cli.configure(parser)
    for action in parser._actions:  # --cache is required only in cache mode (checked in run)
        if action.dest == "cache":
            action.required = False
        if action.dest == "slides":
            action.nargs = "*"
        if action.dest == "workers":  # cache mode: decoding threads [2]; store mode: workers [1]
            action.default = None
            action.help = "cache: tile decoding threads [2]; --store: dask workers [1]"
    add = parser.add_argument
    add("--store", type=Path, metavar="STORE.zarr",
        help="write the pretraining feature store (with --manifest) instead of the cache")  # fmt: skip
    add("--manifest", type=Path, help="bag manifest whose tiles are embedded (--store mode)")
    add("--bags-per-shard", type=int, default=8, help="bags per zarr shard file (--store) [8]")
    _add_scale_options(add)


def run(args: argparse.Namespace) -> int:
    """Dispatch ``mrplip embed`` to the heatmap cache or the feature store."""
    if (args.cache is None) == (args.store is None):
        print("mrplip embed: give exactly one of --cache DIR (heatmap embedding cache) or "
              "--store STORE.zarr --manifest M.jsonl (pretraining feature store)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.cache is not None:
        from napari_mrplip.heatmap import embed_cli

        if not args.slides:
            print("mrplip embed: --cache needs one or more SLIDE paths", file=sys.stderr)
            return 2
        args.workers = 2 if args.workers is None else args.workers
        return embed_cli.run(args)
    return _run_store(args)


def _run_store(args: argparse.Namespace) -> int:
    from napari_mrplip.data.feature_store import FeatureStoreError
    from napari_mrplip.models.errors import ModelLoadError

    from .pipeline import build_feature_store

    if args.manifest is None or args.slides:
        print("mrplip embed --store: pass --manifest M.jsonl (the slides come from it), "
              "not SLIDE paths", file=sys.stderr)  # fmt: skip
        return 2
    try:
        summary = build_feature_store(
            args.manifest, args.store, args.model, args.backend, max(1, args.workers or 1),
            args.device, args.scheduler, args.bags_per_shard, args.progress,
        )  # fmt: skip
    except (FeatureStoreError, ModelLoadError, FileNotFoundError, ValueError) as e:
        print(f"mrplip embed: {e}", file=sys.stderr)
        return 2
    return _report("embed", summary)
