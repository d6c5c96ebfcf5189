"""The ``mrplip`` command.

Subcommands live in their own modules and are imported only when used, so
``mrplip --help`` does not pay for torch. Each module provides
``configure(parser: argparse.ArgumentParser) -> None`` and ``run(args) -> int``;
``run`` maps the parsed arguments onto the package's typed config in one place.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("napari_mrplip._napari.demo", "open napari on the sample slide with a prompt heatmap"),
    "info": ("napari_mrplip.io.cli", "print a slide's levels, µm/px and metadata"),
    "heatmap": (
        "napari_mrplip.heatmap.cli",
        "prompt heatmaps for slides, written as OME-TIFF/OME-Zarr",
    ),
    "embed": (
        "napari_mrplip.scale.cli",
        "embed slides into the heatmap cache (--cache) or bag tiles into a feature store (--store)",
    ),
    "manifest": (
        "napari_mrplip.scale.manifest_cli",
        "caption bags of many slides (torchrun / dask workers) into a manifest",
    ),
    "pretrain": ("napari_mrplip.train.cli", "pretrain MR-PLIP on slides (CPU, GPU, torchrun)"),
    "finetune": (
        "napari_mrplip.finetune.cli",
        "fine-tune: linear probe, prompt learning, partial/full",
    ),
    "review": (
        "napari_mrplip.review.cli",
        "score annotations in a QuPath GeoJSON, most suspicious first",
    ),
    "eval": (
        "napari_mrplip.evaluation.cli",
        "measure models: zero-shot accuracy on labelled tiles, image-text retrieval",
    ),
}


def _usage() -> str:
    lines = ["usage: mrplip COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'mrplip COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mrplip`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if argv[0] in {"-V", "--version"}:
        from napari_mrplip import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"mrplip: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from napari_mrplip.io.stated_mpp import announce_to

    announce_to(True)  # one line when a command uses a µm/px stated earlier
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"mrplip {name}", description=COMMANDS[name][1])
    module.configure(parser)
    args = parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
