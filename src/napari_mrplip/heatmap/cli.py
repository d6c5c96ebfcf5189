"""``mrplip heatmap SLIDE... --prompt TEXT [...] --out PATH``: heatmaps written as OME-TIFF/Zarr."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from napari_mrplip import cli_types as ct
from napari_mrplip.tiling.grid import MAX_OVERLAP


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the ``mrplip heatmap`` options."""
    parser.add_argument("slides", nargs="+", metavar="SLIDE", help="whole-slide image files")
    parser.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="a prompt (one output channel, in order); 'a|b' = synonyms; repeat",
    )
    parser.add_argument(
        "--background",
        action="append",
        default=[],
        metavar="TEXT",
        help="background/negative prompt competing in the softmax; repeatable",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="output .ome.tif or .ome.zarr (one slide) or a directory (several)",
    )
    parser.add_argument(
        "--model",
        default="mrplip-demo",
        metavar="DIR|NAME",
        help="model: 'mrplip-demo' (embedded), a checkpoint or open_clip/PLIP/CONCH dir",
    )
    parser.add_argument("--mpp", type=ct.mpp, default=None, help="µm/px to score at (default 0.5)")
    ct.add_slide_mpp(parser)
    parser.add_argument(
        "--device", type=ct.device, default="auto", help="auto (GPU if present), cpu, cuda, cuda:N"
    )
    parser.add_argument(
        "--batch-size", type=ct.positive_int, default=None, help="tiles per model call"
    )
    parser.add_argument(
        "--overlap",
        type=ct.fraction(0.0, MAX_OVERLAP, "overlap"),
        default=0.0,
        help="tile overlap fraction, rounded to 1-1/k (0.5, 0.75)",
    )
    parser.add_argument("--mode", choices=("softmax", "cosine"), default="softmax")
    parser.add_argument("--workers", type=ct.positive_int, default=None,
                        help="tile-decoding threads (default: the cores torch leaves free; "
                        "every core on a GPU)")  # fmt: skip
    parser.add_argument(
        "--max-tiles",
        type=ct.positive_int,
        default=None,
        metavar="N",
        help="tile budget per slide (default 4,000,000); a larger lattice is refused",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (never an input slide)"
    )
    parser.add_argument(
        "--cache", default=None, metavar="DIR", help="on-disk embedding cache (see 'mrplip embed')"
    )
    parser.add_argument(
        "--all-tiles", action="store_true", help="score glass too (default: tissue tiles only)"
    )
    parser.add_argument(
        "--dense",
        action="store_true",
        help="sub-tile maps from the patch tokens (g x g scores per tile, MR-PLIP models)",
    )
    parser.add_argument(
        "--geojson",
        type=ct.fraction(0.0, 1.0, "the GeoJSON threshold"),
        default=None,
        metavar="THRESHOLD",
        help="also write regions with score >= THRESHOLD as QuPath GeoJSON",
    )
    parser.add_argument(
        "--format",
        choices=("ome.tif", "ome.zarr"),
        default="ome.tif",
        help="file format when --out is a directory",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="dask.distributed scheduler to spread slides over",
    )


def job_from_args(args: argparse.Namespace):
    """Map parsed arguments onto :class:`HeatmapJob` (the one place that reads ``args``)."""
    from napari_mrplip.heatmap.jobs import HeatmapJob

    return HeatmapJob(
        slides=tuple(args.slides), out=args.out, prompts=tuple(args.prompt),
        background=tuple(args.background), model=args.model, mpp=args.mpp,
        slide_mpp=args.slide_mpp, device=args.device, batch_size=args.batch_size,
        overlap=args.overlap, mode=args.mode, workers=args.workers, cache_dir=args.cache,
        tissue_only=not args.all_tiles, geojson_threshold=args.geojson, dense=args.dense,
        out_suffix="." + args.format, overwrite=args.overwrite, max_tiles=args.max_tiles,
    )  # fmt: skip


def _check_some_slide_opens(job) -> None:
    """Raise (exit 2) when no slide of the job opens, naming each; cheap: opening is lazy."""
    from napari_mrplip.io import SlideOpenError, open_slide

    errors = []
    for path in job.slides:
        try:
            with open_slide(path, mpp=job.slide_mpp):
                return
        except SlideOpenError as e:
            errors.append(str(e))
    raise SlideOpenError("; ".join(errors) + ("" if len(errors) == 1 else
                         f" (none of the {len(errors)} slides opens)"))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run ``mrplip heatmap``: 0 when every slide was written, 1 if some failed (the others are
    written), 2 on bad input (options, outputs, model) or when every slide failed."""
    from napari_mrplip.embed.batching import DeviceUnavailableError
    from napari_mrplip.heatmap.jobs import (
        ModelUnavailableError,
        check_outputs,
        load_encoder,
        run_job,
    )
    from napari_mrplip.models.prompts import PromptError, validate_prompts
    from napari_mrplip.models.vocabulary import prompt_warnings

    job = job_from_args(args)
    try:
        validate_prompts(job.prompts, job.background)
        if job.mode == "softmax" and len(job.prompts) + len(job.background) < 2:
            raise PromptError("softmax needs two prompts in total: add --prompt or --background "
                              "(e.g. --background background), or use --mode cosine")  # fmt: skip
        check_outputs(job)  # the output policy, before any work
        _check_some_slide_opens(job)  # before the model is loaded
        if args.scheduler is None:
            encoder = load_encoder(job.model, job.device)  # fail before the first slide
            if job.dense:
                from napari_mrplip.heatmap.dense import dense_grid_of

                dense_grid_of(encoder)  # DenseUnavailableError (a ValueError): exit 2
            for msg in prompt_warnings(encoder.vocabulary, job.prompts):
                print(f"mrplip heatmap: warning: {msg}", file=sys.stderr)
    except (PromptError, ModelUnavailableError, DeviceUnavailableError, ValueError) as e:
        print(f"mrplip heatmap: {e}", file=sys.stderr)
        return 2
    with warnings.catch_warnings():  # one line per warning, not a source listing
        warnings.showwarning = _show_warning
        summaries = run_job(job, scheduler=args.scheduler)
    failed = [s for s in summaries if "error" in s]
    for s in summaries:
        if "error" in s:
            err = s["error"] if s["error"].startswith(s["slide"]) else f"{s['slide']}: {s['error']}"
            print(f"mrplip heatmap: {err}", file=sys.stderr)
        else:
            print(json.dumps(s, default=str))
            print(f"wrote heatmap: {s['out']}" + (f" and {s['geojson']}" if "geojson" in s else ""),
                  file=sys.stderr)  # fmt: skip
    print(f"mrplip heatmap: {len(summaries) - len(failed)} of {len(summaries)} slides written"
          + (f"; failed: {', '.join(s['slide'] for s in failed)}" if failed else ""),
          file=sys.stderr)  # fmt: skip
    return (2 if len(failed) == len(summaries) else 1) if failed else 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"mrplip heatmap: warning: {message}", file=sys.stderr)
