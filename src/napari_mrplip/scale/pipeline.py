"""The manifest and feature-store stages over many workers, with progress and a summary.

Both stages write a summary JSON (``<manifest>.summary.json``, ``<store>.summary.json``)
listing every slide's status (``captioned``/``embedded``, ``cached``, ``failed`` with its
error) and the throughput, and progress events (``napari_mrplip.progress``, as for training) to
``progress`` when given::

    {"event": "start", "stage": "manifest", "slides": 20, "backend": "dask", "workers": 2, ...}
    {"event": "slide", "slide": "...", "status": "captioned", "bags": 20, "tiles": 420, ...}
    {"event": "done", "summary": {...}}
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path

from napari_mrplip.data.manifest import cache_dir_for, merge_manifest, plan_jobs, read_manifest
from napari_mrplip.progress import ProgressLog

from .runner import barrier, resolve_backend, run_items, torchrun_world
from .tasks import caption_task, embed_task, get_encoder


def _summary(stage: str, results: list[dict], seconds: float, work_key: str) -> dict:
    done = sum(r.get(work_key, 0) for r in results)
    count = lambda s: sum(r["status"] == s for r in results)  # noqa: E731
    return {
        "stage": stage, "slides": len(results), "failed": count("failed"),
        "cached": count("cached"), "done": len(results) - count("failed") - count("cached"),
        work_key: done, "seconds": seconds,
        "tiles_per_s": done / seconds if seconds > 0 else float("nan"),
        "failures": [{"slide": r["slide"], "error": r["error"]}
                     for r in results if r["status"] == "failed"],
        "per_slide": results,
    }  # fmt: skip


def build_manifest_at_scale(
    slides: Sequence[str],
    out_path: str | Path,
    captioner="stain",
    backend: str = "auto",
    workers: int = 1,
    device: str = "auto",
    scheduler: str | None = None,
    batch_tiles: int = 64,
    progress: str | Path | None = None,
    strict: bool = False,
    **sampling,
) -> dict:
    """Caption every slide's bags over the workers, then merge the manifest in slide order.

    Parameters
    ----------
    slides : sequence of str
    out_path : path
        The manifest (``.jsonl``); the per-slide cache is ``<out_path>.cache/``.
    captioner : str or Captioner
        ``"stain"``, a VLM directory, or a picklable Captioner.
    backend, workers, device, scheduler
        See :func:`runner.run_items`.
    batch_tiles : int
        Tiles per captioning batch.
    progress : path, optional
        Progress events file.
    strict : bool
        Raise on the first failed slide (after all ran) instead of leaving it out.
    **sampling
        :func:`~napari_mrplip.data.manifest.plan_jobs` arguments.

    Returns
    -------
    dict
        The summary (also written to ``<out_path>.summary.json`` by rank 0 / the driver).
    """
    out_path = Path(out_path)
    jobs = plan_jobs(slides, **sampling)
    backend = resolve_backend(backend, workers, scheduler)
    events, t0 = ProgressLog(progress), time.perf_counter()
    rank = torchrun_world()[0] if backend == "torchrun" else 0
    if rank == 0:
        events.emit("start", stage="manifest", slides=len(jobs), backend=backend,
                    workers=torchrun_world()[1] if backend == "torchrun" else workers)  # fmt: skip
    task = functools.partial(caption_task, captioner=captioner,
                             cache_dir=str(cache_dir_for(out_path)), batch_tiles=batch_tiles)  # fmt: skip
    on_result = _slide_events(events, len(jobs), "tiles_captioned")
    results = run_items(task, jobs, backend, workers, device, scheduler, on_result)
    summary = _summary("manifest", results, time.perf_counter() - t0, "tiles_captioned")
    if strict and summary["failed"]:
        from napari_mrplip.io.errors import SlideOpenError

        first = summary["failures"][0]
        raise SlideOpenError(
            f"{first['slide']}: {first['error']}"
            + (f" (and {summary['failed'] - 1} more slide(s))" if summary["failed"] > 1 else "")
        )
    if rank == 0:
        cap = captioner
        if isinstance(cap, str):
            from .tasks import get_captioner

            cap = get_captioner(cap, "cpu")  # only its name/version key the cache
        if summary["failed"] < summary["slides"]:  # when every slide failed: the summary only
            merge_manifest(jobs, cap, cache_dir_for(out_path), out_path)
        _write_json(out_path.with_name(out_path.name + ".summary.json"), summary)
        events.emit("done", stage="manifest", summary={k: v for k, v in summary.items()
                                                       if k != "per_slide"})  # fmt: skip
    barrier()
    return summary


def build_feature_store(
    manifest: str | Path,
    store: str | Path,
    encoder: str,
    backend: str = "auto",
    workers: int = 1,
    device: str = "auto",
    scheduler: str | None = None,
    bags_per_shard: int = 8,
    progress: str | Path | None = None,
) -> dict:
    """Encode every tile of every bag of ``manifest`` once into the zarr store at ``store``.

    One task per slide. The store's identity (encoder id, feature size, input size, µm/px)
    is fixed when it is created and checked when it is reused.

    Returns
    -------
    dict
        The summary (also written to ``<store>.summary.json``).
    """
    from napari_mrplip.data.feature_store import FeatureStore, group_by_slide, tile_mpps

    records = read_manifest(manifest)
    backend = resolve_backend(backend, workers, scheduler)
    rank = torchrun_world()[0] if backend == "torchrun" else 0
    enc = get_encoder(encoder, "cpu" if backend == "dask" else _local_device(device))
    FeatureStore.create(store, enc.model_id, _feature_dim(enc), enc.input_size,
                        tile_mpps(records))  # fmt: skip
    items = [[records[i] for i in idx] for idx in group_by_slide(records).values()]
    events, t0 = ProgressLog(progress), time.perf_counter()
    if rank == 0:
        events.emit("start", stage="embed", slides=len(items), backend=backend, workers=workers)
    task = functools.partial(embed_task, store=str(store), encoder=str(encoder),
                             bags_per_shard=bags_per_shard)  # fmt: skip
    on_result = _slide_events(events, len(items), "tiles_embedded")
    results = run_items(task, items, backend, workers, device, scheduler, on_result)
    summary = _summary("embed", results, time.perf_counter() - t0, "tiles_embedded")
    if rank == 0:
        _write_json(Path(store).with_name(Path(store).name + ".summary.json"), summary)
        events.emit("done", stage="embed", summary={k: v for k, v in summary.items()
                                                    if k != "per_slide"})  # fmt: skip
    barrier()
    return summary


def _feature_dim(enc) -> int:
    import numpy as np

    probe = enc.encode_tiles(np.full((1, enc.input_size, enc.input_size, 3), 255, np.uint8))
    return int(probe.shape[-1])


def _local_device(device: str) -> str:
    import os

    from .runner import pick_device

    return pick_device(device, int(os.environ.get("LOCAL_RANK", "0")))


def _slide_events(events: ProgressLog, total: int, key: str):
    seen = [0]

    def on_result(result: dict) -> None:
        seen[0] += 1
        events.emit("slide", slide=result["slide"], status=result["status"],
                    bags=result.get("bags", 0), tiles=result.get(key, 0),
                    seconds=result.get("seconds", 0.0), error=result.get("error", ""),
                    rank=result.get("rank", 0), done=seen[0], total=total)  # fmt: skip

    return on_result


def _write_json(path: Path, data: dict) -> None:
    from napari_mrplip.outputs import write_text

    write_text(path, json.dumps(data, indent=1), overwrite=True)  # temp + rename, umask
