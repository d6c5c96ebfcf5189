"""Evaluation outputs: per-model JSON, confusion-matrix PNGs, a side-by-side table and plot.

Every file goes through the output policy (:mod:`napari_mrplip.outputs`): nothing is
overwritten without ``overwrite=True``, writes are atomic.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np

from napari_mrplip.metrics import confusion_png
from napari_mrplip.outputs import announce, write_bytes, write_text


def safe_name(model: str) -> str:
    """A file-name-safe stem for a model spec (``hf-hub:org/x`` -> ``hf-hub_org_x``)."""
    stem = re.sub(r"[^A-Za-z0-9.-]+", "_", model.strip("/"))
    return stem.strip("._")[-80:] or "model"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def comparison_png(results: dict[str, dict]) -> bytes:
    """Grouped bars: balanced accuracy and weighted F1 per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    ba = [results[m]["balanced_accuracy"] or 0.0 for m in names]
    f1 = [results[m]["weighted_f1"] or 0.0 for m in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(names), 3.2))
    ax.bar(x - 0.18, ba, 0.36, label="balanced accuracy")
    ax.bar(x + 0.18, f1, 0.36, label="weighted F1")
    ax.set_xticks(x, [n if len(n) < 28 else "..." + n[-25:] for n in names], fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("zero-shot, same tiles and prompts", fontsize=9)
    data = _png(fig)
    plt.close(fig)
    return data


def table(results: dict[str, dict]) -> str:
    """Markdown: one row per model, per-class recall columns."""
    classes = next(iter(results.values()))["classes"]
    head = ["model", "tiles", "balanced acc.", "weighted F1"] + [f"recall {c}" for c in classes]

    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in results.items():
        cells = [f"`{name}`", str(r["n_tiles"]), f(r["balanced_accuracy"]), f(r["weighted_f1"])]
        cells += [f(r["per_class_recall"].get(c)) for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_all(out: Path, results: dict[str, dict], overwrite: bool, kind: str = "zeroshot") -> None:
    """``OUT/<model>.json`` + ``OUT/<model>_confusion.png`` per model, ``OUT/summary.*``."""
    out.mkdir(parents=True, exist_ok=True)
    stems: set[str] = set()
    for name, r in results.items():
        stem = safe_name(name)
        while stem in stems:
            stem += "_"
        stems.add(stem)
        path = write_text(out / f"{stem}.json", json.dumps(r, indent=2), overwrite=overwrite)
        announce(path, f"{kind} results of {name}")
        if "confusion_matrix" in r:
            png = confusion_png(np.asarray(r["confusion_matrix"]), r["classes"], name)
            announce(
                write_bytes(out / f"{stem}_confusion.png", png, overwrite=overwrite),
                "confusion matrix",
            )
    summary = {"kind": kind, "models": results}
    write_text(out / "summary.json", json.dumps(summary, indent=2), overwrite=overwrite)
    if kind == "zeroshot":
        write_text(out / "summary.md", table(results), overwrite=overwrite)
        write_bytes(out / "comparison.png", comparison_png(results), overwrite=overwrite)
    announce(out / "summary.json", "summary")
