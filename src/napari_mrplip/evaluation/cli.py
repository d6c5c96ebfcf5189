"""``mrplip eval zeroshot|retrieval``: measure models on labelled or captioned tiles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_mrplip.cli_types import add_slide_mpp, positive_int
from napari_mrplip.cli_types import device as device_type
from napari_mrplip.cli_types import mpp as mpp_type


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="task", required=True)
    z = sub.add_parser("zeroshot", help="zero-shot classification of labelled tiles")
    z.add_argument(
        "--data",
        required=True,
        type=Path,
        help="folder of class subfolders of tiles, or a QuPath GeoJSON (with --slide)",
    )
    z.add_argument("--slide", type=Path, help="the slide a GeoJSON --data annotates")
    z.add_argument(
        "--mpp",
        type=mpp_type,
        default=0.5,
        help="µm/px the models see for --slide tiles (default 0.5)",
    )
    add_slide_mpp(z)
    z.add_argument(
        "--prompts",
        type=Path,
        help="prompt JSON: {CLASS: [names]} or CONCH's {classnames, templates} "
        "(default: the class names with the shared templates)",
    )
    r = sub.add_parser("retrieval", help="image<->text recall@k on captioned tiles")
    r.add_argument(
        "--data",
        required=True,
        type=Path,
        help="folder of tiles with captions.json (file name -> caption)",
    )
    for p in (z, r):
        p.add_argument(
            "--model",
            action="append",
            required=True,
            help="a model spec (repeat to compare): mrplip-demo, a folder, "
            "hf-hub:org/name, open_clip:ARCH@FILE, ...",
        )
        p.add_argument("--out", required=True, type=Path, help="output folder")
        p.add_argument(
            "--device",
            type=device_type,
            default=None,
            help="auto, cpu, cuda, cuda:N (default: auto)",
        )
        p.add_argument("--batch-size", type=positive_int, default=32)
        p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _load_data(args):
    from napari_mrplip.evaluation import data as d
    from napari_mrplip.evaluation import prompts as pr

    if args.data.is_file() and args.data.suffix.lower() in (".geojson", ".json"):
        if args.slide is None:
            raise d.EvalDataError(
                f"{args.data} is a GeoJSON: pass the slide it annotates (--slide)"
            )
        tiles = d.geojson_tiles(args.data, args.slide, args.mpp, args.slide_mpp)
    else:
        tiles = d.tile_folder(args.data)
    prompts = pr.read_prompt_file(args.prompts) if args.prompts else pr.from_names(tiles.classes)
    return tiles, pr.align(prompts, tiles.classes, str(args.prompts or args.data))


def run(args) -> int:
    from napari_mrplip.evaluation import report
    from napari_mrplip.models.encoders import get_encoder

    try:
        if args.task == "zeroshot":
            from napari_mrplip.evaluation.zeroshot import evaluate

            tiles, prompts = _load_data(args)
            work = lambda enc: evaluate(enc, tiles, prompts, args.batch_size)  # noqa: E731
        else:
            from napari_mrplip.evaluation.retrieval import captioned_folder, evaluate

            caps = captioned_folder(args.data)
            work = lambda enc: evaluate(enc, caps, args.batch_size)  # noqa: E731
        results = {}
        for spec in args.model:
            device = None if args.device in (None, "auto") else args.device
            results[spec] = work(get_encoder(spec, device=device))
            print(
                f"{spec}: "
                + ", ".join(
                    f"{k}={v:.3f}"
                    for k, v in results[spec].items()
                    if isinstance(v, float) and k != "seconds"
                ),
                file=sys.stderr,
            )
        report.write_all(args.out, results, args.overwrite, kind=args.task)
    except ValueError as e:  # ModelLoadError, EvalDataError, PromptFileError, OutputError, ...
        print(f"mrplip eval: {e}", file=sys.stderr)
        return 2
    return 0
