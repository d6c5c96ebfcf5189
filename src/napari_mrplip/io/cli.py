"""``mrplip info SLIDE``: levels, shapes, downsamples, µm/px, magnification, associated images."""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``info`` options."""
    parser.add_argument(
        "slides", nargs="+", metavar="SLIDE", help="slide file(s) or OME-Zarr directories"
    )
    from .stated_mpp import add_slide_mpp

    add_slide_mpp(parser)
    parser.add_argument(
        "--backend", default=None, help="force a backend: tifffile, ome_zarr, openslide"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def describe(slide) -> dict:
    """A JSON-able summary of an open slide."""
    from .stated_mpp import source_of

    meta = slide.metadata
    return {
        "path": str(slide.path),
        "backend": meta.get("backend"),
        "format": meta.get("format"),
        "compression": meta.get("compression"),
        "tile": meta.get("tile"),
        "mpp": slide.mpp,
        "mpp_source": source_of(slide),
        "magnification": slide.magnification,
        "dimensions": list(slide.dimensions),
        "native_levels": slide.native_levels,
        "levels": [
            {
                "shape": [*slide.level_shape(i), 3],
                "downsample": round(ds, 4),
                "mpp": slide.level_mpp(i),
                "chunks": list(lv.chunksize),  # the dask levels napari displays
            }
            for i, (lv, ds) in enumerate(zip(slide.levels, slide.downsamples))
        ],
        "associated": sorted(slide.associated),
    }


def _print_table(info: dict) -> None:
    where = {"file": "from the file", "argument": "from --slide-mpp",
             "stated": "stated earlier"}.get(info.get("mpp_source"), "")  # fmt: skip
    mpp = (f"{info['mpp']:.4f} µm/px ({where})" if info["mpp"]
           else "µm/px unknown (state it once: --slide-mpp 0.25 for 40x, 0.5 for 20x)")  # fmt: skip
    mag = f"{info['magnification']:g}x" if info["magnification"] else "unknown"
    print(
        f"{info['path']}\n  backend {info['backend']} ({info['format']}, {info['compression']}, tile {info['tile']})"
    )
    print(
        f"  size {info['dimensions'][0]} x {info['dimensions'][1]} px, {mpp}, magnification {mag}"
    )
    print(f"  {'level':>5} {'height':>8} {'width':>8} {'downsample':>10} {'µm/px':>8}  native")
    for i, lv in enumerate(info["levels"]):
        um = f"{lv['mpp']:.3f}" if lv["mpp"] else "-"
        native = "yes" if i < (info["native_levels"] or 0) else "built"
        print(
            f"  {i:>5} {lv['shape'][0]:>8} {lv['shape'][1]:>8} {lv['downsample']:>10.3f} {um:>8}  {native}"
        )
    print(f"  associated images: {', '.join(info['associated']) or 'none'}")


def run(args: argparse.Namespace) -> int:
    """Describe each slide; exit 1 if some cannot be opened, 2 if none can."""
    from napari_mrplip.io import SlideOpenError, open_slide

    rc, out = 0, []
    for path in args.slides:
        try:
            with open_slide(path, mpp=args.slide_mpp, backend=args.backend) as slide:
                info = describe(slide)
        except SlideOpenError as e:
            print(f"mrplip info: {e}", file=sys.stderr)
            rc = 1
            continue
        out.append(info)
        if not args.json:
            _print_table(info)
    if args.json:
        print(json.dumps(out, indent=2))
    return 2 if rc and not out else rc
