"""Plot every loss term of a run's ``progress.jsonl`` (raw and smoothed) into a PNG.

Usage: python scripts/plot_loss_curve.py runs/mrplip-demo/progress.jsonl docs/mrplip-demo-loss.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from napari_mrplip.progress import loss_curve, read_events  # noqa: E402


def smooth(values: np.ndarray, window: int = 15) -> np.ndarray:
    """Centred moving average (shorter windows at the ends)."""
    out = np.empty_like(values)
    half = window // 2
    for i in range(len(values)):
        out[i] = values[max(0, i - half) : i + half + 1].mean()
    return out


def plot(progress: Path, out: Path) -> Path:
    events = read_events(progress)
    names = [k for k in next(e for e in events if e["event"] == "step")["losses"]]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, name in zip(axes.flat, names):
        curve = loss_curve(events, name)
        steps = np.array(sorted(curve))
        values = np.array([curve[s] for s in steps])
        ax.plot(steps, values, color="0.75", lw=0.8, label="per step")
        ax.plot(steps, smooth(values), color="C0", lw=1.8, label="moving average (15)")
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"MR-PLIP pretraining losses: {progress.parent.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    return out


if __name__ == "__main__":
    print(plot(Path(sys.argv[1]), Path(sys.argv[2])))
