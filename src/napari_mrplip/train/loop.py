"""The optimisation loop: model-agnostic, distributed-aware, resumable, stoppable.

The loop only knows that ``model.compute_losses(batch, rank, world_size)`` returns a dict of
named scalar losses including ``loss`` (the weighted sum, which it back-propagates); it logs
every ``*loss`` term. Gradient accumulation, autocast/GradScaler, gradient clipping, the lr
schedule, DDP gradient sync, progress events, periodic atomic checkpoints and SIGINT/SIGTERM
handling live here.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from napari_mrplip.progress import ProgressLog

from .checkpointing import TrainState, prune_checkpoints, save_checkpoint
from .distributed import DistInfo, all_reduce_mean, any_flag
from .precision import autocast

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp of log(1/temperature) when a config has none


@dataclass
class LoopSettings:
    """What the loop needs from ``PretrainConfig`` (kept separate so fine-tuning can reuse it)."""

    total_steps: int
    batch_size: int  # global bags per optimizer step
    grad_accum: int = 1
    precision: str = "fp32"
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 1
    progress_bar: bool = True


@dataclass
class LoopResult:
    step: int  # optimizer steps finished
    stopped: bool  # True when a signal ended the run early
    checkpoint: Path | None  # the last training-state checkpoint written
    losses: dict[str, float]  # last logged losses


class StopRequest:
    """Sets ``requested`` on SIGINT/SIGTERM (main thread only); restores handlers on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class LossModule(nn.Module):
    """``forward(batch)`` = ``model.compute_losses(batch, rank, world_size)`` so DDP can wrap it."""

    def __init__(self, model: nn.Module, rank: int, world_size: int):
        super().__init__()
        self.model = model
        self.rank = rank
        self.world_size = world_size

    def forward(self, batch) -> dict[str, torch.Tensor]:
        return self.model.compute_losses(batch, self.rank, self.world_size)


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """``LossModule`` around the model, inside DDP when running distributed."""
    module = LossModule(model, info.rank, info.world_size)
    if not info.distributed:
        return module
    device_ids = [info.local_rank] if info.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=True
    )


def _micro_step(wrapped, batch, settings: LoopSettings, scaler, device: str, sync: bool):
    """Forward + backward of one micro-batch; returns its detached loss terms."""
    no_sync = getattr(wrapped, "no_sync", None)
    ctx = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
    with ctx:
        with autocast(settings.precision, device):
            losses = wrapped(batch.to(device, non_blocking=True))
        if "loss" not in losses:
            raise KeyError("model.compute_losses must return the weighted total under 'loss'")
        scaler.scale(losses["loss"].float() / settings.grad_accum).backward()
    return {k: float(v.detach()) for k, v in losses.items() if k.endswith("loss")}


def _optimizer_step(model: nn.Module, state: TrainState, grad_clip: float) -> None:
    state.scaler.unscale_(state.optimizer)
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, torch.Tensor):
        ceiling = getattr(getattr(model, "config", None), "max_logit_scale", None)
        with torch.no_grad():
            scale.clamp_(0.0, math.log(ceiling) if ceiling else MAX_LOGIT_SCALE)


def _one_step(wrapped, model, batches: Iterator, state, settings, info) -> dict[str, float]:
    totals: dict[str, float] = {}
    for m in range(settings.grad_accum):
        batch = next(batches)
        sync = m == settings.grad_accum - 1
        for k, v in _micro_step(wrapped, batch, settings, state.scaler, info.device, sync).items():
            totals[k] = totals.get(k, 0.0) + v / settings.grad_accum
    _optimizer_step(model, state, settings.grad_clip)
    return totals


def run_loop(
    model: nn.Module,
    batches: Iterator,
    state: TrainState,
    settings: LoopSettings,
    info: DistInfo,
    log: ProgressLog,
    checkpoint_root: Path,
    start_step: int,
    data_state: Callable[[int], dict],
) -> LoopResult:
    """Train from ``start_step`` to ``settings.total_steps`` (or until SIGINT/SIGTERM).

    ``batches`` yields this rank's micro-batches (``BagBatch``) in order; ``data_state(step)``
    returns the loader position stored with a checkpoint.
    """
    from tqdm.auto import tqdm

    wrapped = wrap_model(model, info)
    wrapped.train()
    state.optimizer.zero_grad(set_to_none=True)
    step, last, ckpt = start_step, {}, None
    bar = tqdm(
        total=settings.total_steps,
        initial=start_step,
        disable=not (settings.progress_bar and info.is_main),
        desc="pretrain",
        unit="step",
    )
    with StopRequest() as stop, bar:
        while step < settings.total_steps:
            t0 = time.perf_counter()
            losses = _one_step(wrapped, model, batches, state, settings, info)
            _check_finite(losses, step + 1)
            step += 1
            last = all_reduce_mean(losses, info)
            rate = settings.batch_size / max(time.perf_counter() - t0, 1e-9)
            if step % settings.log_every == 0 or step == settings.total_steps:
                lr = state.optimizer.param_groups[0]["lr"]
                log.emit(
                    "step",
                    step=step,
                    total_steps=settings.total_steps,
                    losses=last,
                    lr=lr,
                    samples_per_s=rate,
                )
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}")
            stopping = any_flag(stop.requested, info)
            periodic = settings.checkpoint_every and step % settings.checkpoint_every == 0
            if stopping or periodic or step == settings.total_steps:
                ckpt = save_checkpoint(checkpoint_root, step, model, state, data_state(step), info)
                if info.is_main:
                    prune_checkpoints(checkpoint_root, settings.keep_checkpoints)
                log.emit("checkpoint", step=step, path=str(ckpt))
            if stopping:
                return LoopResult(step, True, ckpt, last)
    return LoopResult(step, False, ckpt, last)


def _check_finite(losses: dict[str, float], step: int) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"non-finite loss at step {step}: {bad}; lower --lr, raise --warmup-steps, "
            "or train with --precision fp32/bf16"
        )
