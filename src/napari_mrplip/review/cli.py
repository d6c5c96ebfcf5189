"""``mrplip review ANNOT.geojson --slide SLIDE``: score annotations, most suspicious first.

Prints one line per annotation (rank, id, label, model's label, agreement, disagreement,
status) and, with ``--out``, writes the GeoJSON with each feature's model verdict under
``properties.mrplip_review`` (every other property unchanged).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from napari_mrplip import cli_types as ct
from napari_mrplip.outputs import announce, check_output


@dataclass(frozen=True)
class ReviewConfig:
    """Typed form of the command line (parsed once, in :func:`run`)."""

    annotations: Path
    slide: Path
    model: str = "mrplip-demo"
    target_mpp: float | None = None
    slide_mpp: float | None = None
    out: Path | None = None
    extra_labels: tuple[str, ...] = ()
    prompts: dict[str, str] = field(default_factory=dict)
    device: str | None = None
    min_coverage: float = 0.5
    max_tiles: int = 64
    as_json: bool = False
    overwrite: bool = False


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("annotations", type=Path, help="QuPath GeoJSON (FeatureCollection or list)")
    parser.add_argument(
        "--slide", type=Path, required=True, help="the slide the annotations are on"
    )
    parser.add_argument(
        "--model", default="mrplip-demo", help="model spec (name or checkpoint dir)"
    )
    parser.add_argument("--mpp", type=ct.mpp, default=None, help="µm/px to score at (default 0.5)")
    ct.add_slide_mpp(parser)
    parser.add_argument("--out", type=Path, default=None, help="write scored GeoJSON here")
    parser.add_argument(
        "--labels", nargs="*", default=[], help="extra labels to compare against (e.g. background)"
    )
    parser.add_argument(
        "--prompt", action="append", default=[], metavar="LABEL=TEXT",
        help="prompt text for a label, '|' between synonyms (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--device", type=ct.device, default=None, help="torch device (default: best available)"
    )
    parser.add_argument(
        "--min-coverage",
        type=ct.fraction(0.0, 1.0, "--min-coverage"),
        default=0.5,
        help="tile fraction inside polygon",
    )
    parser.add_argument(
        "--max-tiles", type=ct.positive_int, default=64, help="tiles per annotation at most"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out (never an input)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def _prompts(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        label, sep, text = item.partition("=")
        if not sep or not label.strip() or not text.strip():
            raise SystemExit(f"mrplip review: --prompt needs LABEL=TEXT, got {item!r}")
        out[label.strip()] = text.strip()
    return out


def _config(args: argparse.Namespace) -> ReviewConfig:
    return ReviewConfig(
        annotations=args.annotations, slide=args.slide, model=args.model, target_mpp=args.mpp,
        slide_mpp=args.slide_mpp, out=args.out, extra_labels=tuple(args.labels),
        prompts=_prompts(args.prompt), device=args.device, min_coverage=args.min_coverage,
        max_tiles=args.max_tiles, as_json=args.json, overwrite=args.overwrite,
    )  # fmt: skip


def _row(i: int, score) -> str:
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    return (
        f"{i:>4} {score.annotation_id[:36]:<36} {str(score.label)[:18]:<18} "
        f"{str(score.model_label)[:18]:<18} {f(score.agreement):>7} {f(score.disagreement):>7} "
        f"{score.n_tiles:>5} {score.status}"
    )


def _inputs(cfg: ReviewConfig) -> list[Path]:
    inputs = [cfg.annotations, cfg.slide]
    if Path(cfg.model).exists():
        inputs.append(Path(cfg.model))
    return inputs


def review(cfg: ReviewConfig, out=sys.stdout) -> list:
    """Run the review headless; returns the ranked scores."""
    from napari_mrplip.annotations.geojson import read_document
    from napari_mrplip.embed.pool import encoder_for
    from napari_mrplip.io import open_slide

    from .ranking import apply_scores, rank
    from .scoring import score_annotations

    if cfg.out is not None:  # refuse before any work: an input, or an existing file
        check_output(cfg.out, inputs=_inputs(cfg), overwrite=cfg.overwrite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = read_document(cfg.annotations)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    with open_slide(cfg.slide, mpp=cfg.slide_mpp) as slide:  # cheap checks before the model
        encoder = encoder_for(cfg.model, cfg.device)  # the process-wide model
        from tqdm.auto import tqdm

        # tiles are embedded across annotations in chunks; the bar counts tiles (off if not a tty)
        with tqdm(desc="tiles", unit="tile", disable=None, file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            scores = score_annotations(
                doc.annotations, slide, encoder, target_mpp=cfg.target_mpp,
                extra_labels=cfg.extra_labels, prompts=cfg.prompts, min_coverage=cfg.min_coverage,
                max_tiles=cfg.max_tiles, progress=progress,
            )  # fmt: skip
    ranked = rank(scores)
    _print(ranked, cfg.as_json, out)
    if cfg.out is not None:
        apply_scores(doc.annotations, scores)
        doc.write(cfg.out, overwrite=cfg.overwrite, inputs=_inputs(cfg))
        announce(cfg.out, "reviewed GeoJSON")
    return ranked


def _print(ranked, as_json: bool, out) -> None:
    if as_json:
        for i, s in enumerate(ranked, 1):
            rec = {"rank": i, **{k: v for k, v in vars(s).items()}, "disagreement": s.disagreement}
            print(json.dumps(rec), file=out)
        return
    print(
        f"{'rank':>4} {'id':<36} {'label':<18} {'model':<18} {'agree':>7} {'disagr':>7} {'tiles':>5} status",
        file=out,
    )
    for i, s in enumerate(ranked, 1):
        print(_row(i, s), file=out)


def run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    try:
        review(cfg)
    except (ValueError, OSError) as e:
        # GeoJSONError, SlideOpenError, ScoringError and ModelLoadError are ValueErrors whose
        # messages name the file and what to do.
        print(f"mrplip review: {e}", file=sys.stderr)
        return 2
    return 0
