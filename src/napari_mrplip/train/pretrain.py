"""``pretrain(cfg)``: slides -> bag manifest -> MR-PLIP training -> ``OUT/final``.

Output directory layout::

    OUT/pretrain_config.json     the PretrainConfig of the run
    OUT/manifest.jsonl           bags, tiles and captions (cached; never re-captioned)
    OUT/progress.jsonl           JSON-lines progress events (see ``napari_mrplip.progress``)
    OUT/manifest_progress.jsonl  per-slide captioning events (see ``scale.pipeline``)
    OUT/checkpoints/step_XXXXXXX training state (see ``train.checkpointing``)
    OUT/final/                   MR-PLIP checkpoint (``models.checkpoint.load_model``)
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from napari_mrplip.progress import ProgressLog

from .checkpointing import CheckpointError, TrainState, list_checkpoints, load_checkpoint
from .config import PretrainConfig, PretrainConfigError
from .data_setup import build_loader, manifest_path, prepare_manifest, write_vocabulary
from .distributed import DistInfo, barrier, cleanup, init_distributed
from .loop import LoopSettings, run_loop
from .optim import make_optimizer
from .precision import make_scaler
from .schedule import make_scheduler

__all__ = ["PretrainConfig", "PretrainConfigError", "pretrain"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pretrain(cfg: PretrainConfig) -> Path:
    """Run (or resume) a pretraining run; returns ``OUT/final`` (or the last checkpoint if stopped).

    Raises
    ------
    PretrainConfigError
        Bad options, or ``--resume`` with no checkpoint / a fresh run in a used directory.
    napari_mrplip.io.SlideOpenError
        A slide is missing, unreadable, or has no µm/px (pass ``--slide-mpp``).
    """
    if cfg.out.exists() and not cfg.out.is_dir():
        raise PretrainConfigError(f"--out {cfg.out} is a file; name a folder for the run")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(cfg.device)
    log = ProgressLog(cfg.out / "progress.jsonl", enabled=info.is_main)
    try:
        return _pretrain(cfg, info, log)
    except (ValueError, OSError, RuntimeError, KeyError) as e:
        log.emit("error", message=f"{type(e).__name__}: {e}")
        raise
    finally:
        cleanup(info)


def _prepare_out(cfg: PretrainConfig, info: DistInfo) -> list[Path]:
    ckpts = list_checkpoints(cfg.out / "checkpoints")
    if cfg.resume and not ckpts:
        raise PretrainConfigError(f"--resume: no checkpoint in {cfg.out / 'checkpoints'}")
    if not cfg.resume and ckpts:
        raise PretrainConfigError(
            f"{cfg.out} already holds checkpoints; pass --resume to continue that run "
            "or choose another --out directory"
        )
    if info.is_main:
        cfg.out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:  # on resume, only once a checkpoint has been restored
            cfg.save(cfg.out / "pretrain_config.json")
    return ckpts


def _intact(ckpts: list[Path], model_cfg) -> list[Path]:
    """Checkpoints (newest first) whose files exist and whose weights fit ``model_cfg``,
    judged from the safetensors header before any module is built."""
    from napari_mrplip.models.errors import ModelLoadError
    from napari_mrplip.models.mrplip import build_model
    from napari_mrplip.models.weights_check import check_fits, expected_shapes

    shapes = expected_shapes(lambda: build_model(model_cfg))
    good, reasons = [], []
    for ck in reversed(ckpts):
        try:
            if not (ck / "state.pt").is_file():
                raise ModelLoadError(f"{ck}: incomplete (no state.pt)")
            check_fits(ck / "model.safetensors", shapes, f"config {model_cfg.name!r}", names=False)
            good.append(ck)
        except ModelLoadError as e:
            reasons.append(str(e))
    if not good:
        raise CheckpointError(
            f"--resume: no checkpoint in {ckpts[-1].parent} fits this run: {reasons[0]}. "
            "Nothing was changed; resume with the run's own options (plain --resume)"
        )
    return good


def _restore(candidates: list[Path], model, state, info: DistInfo) -> dict:
    """Load the newest checkpoint that loads; say so when falling back to an older one."""
    import sys

    first_error = None
    for ck in candidates:
        try:
            payload = load_checkpoint(ck, model, state, info)
        except CheckpointError as e:
            first_error = first_error or e
            if info.is_main:
                print(f"mrplip pretrain: warning: {e}; trying an older checkpoint", file=sys.stderr)
            continue
        if ck != candidates[0] or first_error is not None:
            print(f"mrplip pretrain: resuming from {ck.name}, the newest intact checkpoint",
                  file=sys.stderr)  # fmt: skip
        return payload
    raise first_error


def _pretrain(cfg: PretrainConfig, info: DistInfo, log: ProgressLog) -> Path:
    from napari_mrplip.models.config import load_config
    from napari_mrplip.models.mrplip import build_model

    model_cfg = load_config(cfg.model_config)  # a bad config fails before OUT is touched
    cfg.micro_batch(info.world_size)  # the global batch must split over ranks x accumulation
    ckpts = _prepare_out(cfg, info)
    if cfg.resume:  # refuse a mismatched --config before anything is built or written
        newest = ckpts[-1]
        ckpts = _intact(ckpts, model_cfg)
        if ckpts[0] != newest:
            import sys

            print(f"mrplip pretrain: warning: {newest.name} is damaged or incomplete; "
                  f"falling back to {ckpts[0].name}", file=sys.stderr)  # fmt: skip
    manifest = prepare_manifest(cfg, model_cfg, info)
    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = build_model(model_cfg).to(info.device)
    if info.rank:
        seed_everything(cfg.seed + info.rank)  # per-rank masking/negative sampling streams
    state = TrainState(
        optimizer=make_optimizer(model, cfg.lr, cfg.weight_decay),
        scheduler=None,
        scaler=make_scaler(cfg.precision, info.device),
    )
    state.scheduler = make_scheduler(
        state.optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio
    )
    start_step, saved_data = 0, None
    if cfg.resume:
        payload = _restore(ckpts, model, state, info)
        start_step, saved_data = int(payload["step"]), payload.get("data")
        if info.is_main:
            cfg.save(cfg.out / "pretrain_config.json")
    loader, sampler = build_loader(cfg, model_cfg, manifest, info, start_step)
    if saved_data and saved_data.get("num_samples") != sampler.num_samples:
        raise PretrainConfigError(
            f"{manifest} holds {sampler.num_samples} bags but the checkpoint was trained on "
            f"{saved_data.get('num_samples')}: resume with the run's own manifest"
        )
    log.emit(
        "start",
        total_steps=cfg.max_steps,
        start_step=start_step,
        world_size=info.world_size,
        device=info.device,
        num_bags=sampler.num_samples,
        config=cfg.to_json(),
    )
    result = run_loop(
        model,
        iter(loader),
        state,
        _settings(cfg),
        info,
        log,
        cfg.out / "checkpoints",
        start_step,
        sampler.state,
    )
    if result.stopped:
        log.emit("stopped", checkpoint=str(result.checkpoint), step=result.step)
        return result.checkpoint
    return _finish(cfg, model, info, log, result.step)


def _settings(cfg: PretrainConfig) -> LoopSettings:
    return LoopSettings(
        total_steps=cfg.max_steps,
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        precision=cfg.precision,
        grad_clip=cfg.grad_clip,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
        log_every=cfg.log_every,
        progress_bar=cfg.progress_bar,
    )


def _finish(cfg: PretrainConfig, model, info: DistInfo, log: ProgressLog, step: int) -> Path:
    from napari_mrplip.models.catalog import register_model
    from napari_mrplip.models.checkpoint import save_model

    final = cfg.out / "final"
    if info.is_main:
        save_model(model.cpu() if not info.device.startswith("cpu") else model, final)
        write_vocabulary(manifest_path(cfg), final)
        if cfg.register:
            register_model(final, name=f"{cfg.out.name} (pretrained)")
        log.emit("done", checkpoint=str(final), step=step)
    barrier(info)
    return final
