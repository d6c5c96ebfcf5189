"""Fine-tuning runs: split, embed, train (linear / prompt / partial / full), evaluate, save, register.

``finetune(cfg, data)`` is the one entry point; the CLI (``mrplip finetune``) and the
napari Fine-tune panel both call it. Progress goes to ``OUT/progress.jsonl`` in the same
JSON-lines format as pretraining (``napari_mrplip/progress.py``): ``start``, ``embed``, ``step``,
``done`` (with the metrics) or ``error``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_mrplip.outputs import write_text

from .config import FinetuneConfig
from .data import (
    FinetuneDataError,
    ImageTiles,
    LabelledTiles,
    SlideTiles,
    split_by_group,
)
from .head import CosineHead, check_finite
from .linear_probe import fit_linear_probe
from .report import ClassificationReport, evaluate, plot_confusion


class FinetuneCancelled(RuntimeError):
    """The run was cancelled before it finished (nothing was saved)."""


@dataclass
class FinetuneResult:
    """What a run produced.

    Attributes
    ----------
    checkpoint : Path
        The fine-tuned checkpoint directory (loadable by ``get_encoder``).
    report : ClassificationReport
        Held-out metrics of the fine-tuned head.
    zero_shot : ClassificationReport or None
        Held-out metrics of the base model's zero-shot prompts (class names) on the same split;
        None for a vision-only base model (UNI, Virchow, ...), which has no prompts.
    split_by : str
        How the held-out set was chosen (``"group"``, ``"group+tile"``, ``"val-data"``).
    n_train, n_val : int
        Tile counts.
    """

    checkpoint: Path
    report: ClassificationReport
    zero_shot: ClassificationReport | None
    split_by: str
    n_train: int
    n_val: int

    def to_dict(self) -> dict:
        return {
            "checkpoint": str(self.checkpoint),
            "finetuned": self.report.to_dict(),
            "zero_shot": None if self.zero_shot is None else self.zero_shot.to_dict(),
            "split_by": self.split_by,
            "n_train": self.n_train,
            "n_val": self.n_val,
        }


class _Log:
    """Progress events to ``progress.jsonl`` and an optional in-process callback."""

    def __init__(self, out_dir: Path, callback=None):
        from napari_mrplip.progress import ProgressLog

        self.log = ProgressLog(out_dir / "progress.jsonl")
        self.callback = callback

    def __call__(self, event: str, **fields) -> None:
        record = self.log.emit(event, **fields)
        if self.callback is not None:
            self.callback(record)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise FinetuneCancelled("fine-tuning cancelled")


def embed(
    encoder, data: LabelledTiles, idx: np.ndarray, batch_size: int, log=None, cancel=None
) -> np.ndarray:
    """``(len(idx), D)`` float32 embeddings of tiles ``idx`` (in order), through the embedding cache."""
    out, done = [], 0
    for part, local in data.iter_batches(np.sort(idx), batch_size):
        _check_cancel(cancel)
        out.append(_embed_part(encoder, part, local))
        done += len(local)
        if log is not None:
            log("embed", done=done, total=len(idx))
    order = np.argsort(np.argsort(idx))  # iter_batches walks sorted indices
    x = (
        np.concatenate(out).astype(np.float32)
        if out
        else np.zeros((0, encoder.embed_dim), np.float32)
    )
    check_finite(x, "tile embeddings")
    return x[order]


def _embed_part(encoder, part, local: np.ndarray) -> np.ndarray:
    """``(len(local), D)`` float32 embeddings of tiles ``local`` of one tile source.

    Slide tiles go through the process-wide :class:`~napari_mrplip.embed.SlideEmbedder`,
    so regions the heatmap, review or an earlier probe embedded cost no encoder call.
    """
    from napari_mrplip.embed.pool import embedder_for

    if isinstance(part, ImageTiles):  # folder tiles: the one resampler, to the model's input
        from napari_mrplip.tiling.geometry import resize_rgb

        side = int(encoder.input_size)
        tiles = np.stack([resize_rgb(part.images[int(i)], side) for i in local])
        return np.asarray(encoder.encode_tiles(tiles), np.float32)
    if not isinstance(part, SlideTiles):
        raise TypeError(f"unknown tile source {type(part).__name__}")
    return embedder_for(encoder).embed_boxes(part.slide, part.boxes[np.asarray(local)])


def zero_shot_embeddings(encoder, class_names: list[str]) -> np.ndarray:
    """``(C, D)`` prompt-ensemble embeddings of the class names (the zero-shot baseline)."""
    from napari_mrplip.models.zeroshot import prompt_ensemble

    return prompt_ensemble(encoder, list(class_names))


def _align_val(train: LabelledTiles, val: LabelledTiles) -> tuple[LabelledTiles, np.ndarray]:
    """Val tiles whose class the training set has, relabelled to the training class order."""
    known = [c in train.class_names for c in val.class_names]
    keep = np.flatnonzero(np.asarray(known)[val.labels])
    if len(keep) == 0:
        raise FinetuneDataError(
            f"validation data classes {val.class_names} share none with training classes {train.class_names}"
        )
    remap = np.array(
        [train.class_names.index(c) if c in train.class_names else -1 for c in val.class_names]
    )
    relabelled = LabelledTiles(train.class_names, val.parts, remap[val.labels], val.groups)
    return relabelled, keep


def _centroids(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """``(n, D)`` L2-normalised mean embedding per class (zeros for a class without tiles)."""
    out = np.zeros((n, x.shape[1]), np.float32)
    for c in range(n):
        if (y == c).any():
            m = x[y == c].mean(axis=0)
            out[c] = m / max(float(np.linalg.norm(m)), 1e-12)
    return out


def _train_head(cfg, encoder, data, tr, x_tr, init, log, cancel):
    """Dispatch on the mode; returns (head, extras, val-embedding function or None)."""
    y = data.labels[tr]
    steps = cfg.epochs * 10

    def on_step(step, total, loss):
        _check_cancel(cancel)
        if step == total or step % 5 == 0:
            log("step", step=step, total_steps=total, losses={"loss": loss}, lr=cfg.learning_rate)

    if cfg.mode == "linear":
        head = fit_linear_probe(
            x_tr, y, len(data.class_names), init=init, init_scale=_scale(encoder), steps=steps,
            lr=cfg.learning_rate, weight_decay=cfg.weight_decay, seed=cfg.seed, on_step=on_step,
        )  # fmt: skip
        return head, {}, None
    if cfg.mode == "prompt":
        from .prompt_learning import fit_prompt_learning

        head, ctx = fit_prompt_learning(encoder, data.class_names, x_tr, y, cfg, on_step=on_step)
        return head, {"prompt_ctx": ctx}, None
    from .vision import fit_vision

    head, state = fit_vision(encoder, data, tr, init, cfg, on_step=on_step, cancel=cancel)
    return head, {"vision_state": state}, True


def finetune(
    cfg: FinetuneConfig,
    data: LabelledTiles,
    val_data: LabelledTiles | None = None,
    *,
    encoder=None,
    callback=None,
    cancel: threading.Event | None = None,
) -> FinetuneResult:
    """Train, evaluate on held-out tiles, save and register a fine-tuned checkpoint.

    Parameters
    ----------
    cfg : FinetuneConfig
    data : LabelledTiles
        Training tiles (and held-out tiles when ``val_data`` is None: split by group).
    val_data : LabelledTiles, optional
        Separate held-out tiles (e.g. another slide).
    encoder : EncoderBackend, optional
        The base encoder (default: ``get_encoder(cfg.model, cfg.device)``).
    callback : callable, optional
        Receives every progress event dict (in-process runs: the panel's progress bar).
    cancel : threading.Event, optional
        Set to stop; raises :class:`FinetuneCancelled`.
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out, callback)
    try:
        return _run(cfg, data, val_data, encoder, log, cancel, out)
    except (FinetuneDataError, ValueError, RuntimeError, OSError) as e:
        log("error", message=str(e))
        raise


def _run(cfg, data, val_data, encoder, log, cancel, out) -> FinetuneResult:
    if encoder is None:
        from napari_mrplip.models.encoders import get_encoder

        encoder = get_encoder(cfg.model, device=cfg.device)
    if val_data is None:
        tr, va, split_by = split_by_group(data, cfg.val_fraction, cfg.seed)
        vdata = data
    else:
        (vdata, va), tr, split_by = _align_val(data, val_data), np.arange(len(data)), "val-data"
    log("start", total_steps=cfg.epochs * 10, mode=cfg.mode, classes=data.class_names,
        n_train=int(len(tr)), n_val=int(len(va)), split_by=split_by, config=cfg.to_dict())  # fmt: skip
    x_tr = embed(encoder, data, tr, cfg.batch_size, log, cancel)
    x_va = embed(encoder, vdata, va, cfg.batch_size, log, cancel)
    y_va = vdata.labels[va]
    if encoder.has_text:
        zs = zero_shot_embeddings(encoder, data.class_names)
        zs_report = evaluate(y_va, (x_va @ zs.T).argmax(axis=1), data.class_names)
    else:  # vision-only (UNI, Virchow, ...): no prompts; start from the class centroids
        if cfg.mode == "prompt":
            raise ValueError(f"{encoder.no_text_reason} Prompt learning needs a text tower: "
                             "use --mode linear, partial or full")  # fmt: skip
        zs, zs_report = _centroids(x_tr, data.labels[tr], len(data.class_names)), None
    head, extras, retrain = _train_head(cfg, encoder, data, tr, x_tr, zs, log, cancel)
    if retrain:  # the vision tower changed: embed the held-out tiles again, uncached
        x_va = embed(_Uncached(encoder), vdata, va, cfg.batch_size, None, cancel)
    report = evaluate(y_va, head.predict(x_va), data.class_names)
    result = FinetuneResult(out, report, zs_report, split_by, int(len(tr)), int(len(va)))
    _save(cfg, encoder, head, extras, result, out)
    log("done", checkpoint=str(out), metrics=result.to_dict())
    return result


def _scale(encoder) -> float:
    """The encoder's logit scale, or the probe's default 10 where it has none (vision-only)."""
    scale = float(encoder.logit_scale)
    return scale if np.isfinite(scale) and scale > 0 else 10.0


class _Uncached:
    """Wraps an encoder with a fresh model id so cached (pre-training) embeddings are not reused."""

    def __init__(self, encoder):
        self._enc = encoder
        self.model_id = f"{encoder.model_id}:tuned:{id(self)}"

    def __getattr__(self, name):
        return getattr(self._enc, name)


def _save(
    cfg: FinetuneConfig, encoder, head: CosineHead, extras: dict, result: FinetuneResult, out: Path
):
    from napari_mrplip.models.encoders.finetuned import save_finetuned

    plot_confusion(
        result.report,
        out / "confusion.png",
        f"{cfg.mode}: balanced accuracy {result.report.balanced_accuracy:.3f}",
    )
    if result.zero_shot is not None:
        plot_confusion(
            result.zero_shot,
            out / "confusion_zeroshot.png",
            f"zero-shot: balanced accuracy {result.zero_shot.balanced_accuracy:.3f}",
        )
    write_text(out / "metrics.json", json.dumps(result.to_dict(), indent=2), overwrite=True)
    base = Path(cfg.model).resolve() if Path(cfg.model).exists() else cfg.model
    save_finetuned(
        out, base_model=str(base), mode=cfg.mode, class_names=result.report.class_names,
        class_embeddings=head.class_embeddings, logit_scale=head.logit_scale,
        extra={"metrics": result.to_dict(), "config": cfg.to_dict()}, **extras,
    )  # fmt: skip
    if cfg.register:
        from napari_mrplip.models.catalog import register_model

        register_model(out, name=cfg.name or out.name, kind="finetuned")
