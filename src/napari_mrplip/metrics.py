"""Classification and retrieval metrics from counts (numpy only): the one place for them.

Used by zero-shot evaluation (``evaluation``) and fine-tuning reports (``finetune.report``),
which also share :func:`confusion_png` (matplotlib imported only there, no pyplot state).

A value nothing computed is NaN: the recall of a class with no true tile, the precision of a
class never predicted. Balanced accuracy averages recall over the classes present;
weighted F1 weights each class's F1 by its number of true tiles (scikit-learn's
``f1_score(average="weighted")`` convention: F1 = 0 for a present class never predicted
correctly).
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts; rows are true classes, columns predicted classes."""
    t = np.asarray(y_true, np.int64).ravel()
    p = np.asarray(y_pred, np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """``(C,)`` recall (sensitivity) per class; NaN for a class with no true tile."""
    cm = np.asarray(cm, np.float64)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def per_class_precision(cm: np.ndarray) -> np.ndarray:
    """``(C,)`` precision per class; NaN for a class never predicted."""
    cm = np.asarray(cm, np.float64)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, np.diag(cm) / predicted, np.nan)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """``(C,)`` F1 = 2TP / (2TP + FP + FN); NaN for a class neither present nor predicted."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    denom = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes with at least one true tile (NaN when there is none)."""
    r = per_class_recall(cm)
    return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


def weighted_f1(cm: np.ndarray) -> float:
    """F1 averaged over classes weighted by their true-tile counts (NaN for no tiles)."""
    support = np.asarray(cm, np.float64).sum(axis=1)
    if support.sum() == 0:
        return float("nan")
    f1 = np.nan_to_num(per_class_f1(cm))
    return float((f1 * support).sum() / support.sum())


def accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm, np.float64)
    return float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan")


def recall_at_k(similarity: np.ndarray, targets, k: int) -> float:
    """Fraction of queries whose target is among their ``k`` most similar items.

    Parameters
    ----------
    similarity : np.ndarray
        ``(Q, N)`` query x item similarities.
    targets : sequence of int or of sets of int
        The correct item index (or indices) of each query.
    k : int
        Cut-off.
    """
    s = np.asarray(similarity, np.float64)
    if s.ndim != 2 or s.shape[0] == 0:
        raise ValueError(f"expected (Q, N) similarities with Q > 0, got {s.shape}")
    k = min(int(k), s.shape[1])
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    hits = [
        bool({int(i) for i in row} & ({int(t)} if np.isscalar(t) else {int(x) for x in t}))
        for row, t in zip(top, targets)
    ]
    return float(np.mean(hits))


def summary(cm: np.ndarray, classes: list[str]) -> dict:
    """All classification figures of one confusion matrix, JSON-ready (NaN -> None)."""

    def clean(x):
        return None if not np.isfinite(x) else round(float(x), 6)

    recall = per_class_recall(cm)
    return {
        "n_tiles": int(np.asarray(cm).sum()),
        "balanced_accuracy": clean(balanced_accuracy(cm)),
        "weighted_f1": clean(weighted_f1(cm)),
        "accuracy": clean(accuracy(cm)),
        "per_class_recall": {c: clean(r) for c, r in zip(classes, recall)},
        "per_class_support": {c: int(n) for c, n in zip(classes, np.asarray(cm).sum(axis=1))},
        "classes": list(classes),
        "confusion_matrix": np.asarray(cm).astype(int).tolist(),
    }


def confusion_png(cm: np.ndarray, classes: list[str], title: str = "") -> bytes:
    """A confusion matrix as PNG bytes: counts written, colours row-normalised (recall).

    Drawn on a bare ``matplotlib.figure.Figure`` (Agg), so it never touches pyplot's global
    backend (safe inside napari and from worker threads).
    """
    import io

    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    n = len(classes)
    fig = Figure(figsize=(1.6 + 0.9 * n, 1.2 + 0.8 * n), dpi=110)
    ax = fig.add_subplot()
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            color = "white" if frac[i, j] > 0.5 else "black"
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(n), classes, rotation=30, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
