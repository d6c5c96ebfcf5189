"""Classification metrics for fine-tuning: balanced accuracy, per-class recall, confusion matrix.

Pure numpy (the picture is ``napari_mrplip.metrics.confusion_png``), so the
widget and the CLI can compute and draw them without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from napari_mrplip.metrics import confusion_matrix, confusion_png, per_class_recall


@dataclass
class ClassificationReport:
    """Held-out metrics of a classifier.

    Attributes
    ----------
    class_names : list of str
        The C class names, in label order.
    confusion : list of list of int
        ``(C, C)`` counts; row = true class, column = predicted class.
    recall : dict of str to float
        Per-class recall (NaN-free: classes absent from the split are left out).
    balanced_accuracy : float
        Mean recall over the classes present in the split.
    accuracy : float
        Fraction of correct predictions.
    n : int
        Number of evaluated examples.
    """

    class_names: list[str]
    confusion: list[list[int]]
    recall: dict[str, float]
    balanced_accuracy: float
    accuracy: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line per metric, for logs and the CLI."""
        rec = ", ".join(f"{k}={v:.3f}" for k, v in self.recall.items())
        return (
            f"balanced accuracy {self.balanced_accuracy:.3f} (accuracy {self.accuracy:.3f}, "
            f"n={self.n}); recall: {rec}"
        )


def evaluate(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]
) -> ClassificationReport:
    """All metrics for predictions ``y_pred`` against labels ``y_true`` (both ``(N,)`` int)."""
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    rec = per_class_recall(cm)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("cannot evaluate on an empty held-out split")
    return ClassificationReport(
        class_names=list(class_names),
        confusion=cm.tolist(),
        recall={c: float(r) for c, r in zip(class_names, rec) if not np.isnan(r)},
        balanced_accuracy=float(np.nanmean(rec)),
        accuracy=float(np.trace(cm) / n),
        n=n,
    )


def plot_confusion(report: ClassificationReport, path: str | Path, title: str = "") -> Path:
    """Draw the confusion matrix (row-normalised colours, counts written) to a PNG."""
    title = title or f"balanced accuracy {report.balanced_accuracy:.3f}"
    path = Path(path)
    path.write_bytes(confusion_png(report.confusion, list(report.class_names), title))
    return path
