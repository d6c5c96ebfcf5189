"""Run one task per item (slide) locally, on dask.distributed workers, or over torchrun ranks.

Every backend returns the per-item result dicts **in item order**, so whatever merges them
produces the same output for any number of workers. A task that raises is reported as
``{"status": "failed", "error": ...}`` and the run goes on (a corrupt slide costs only
itself). Each worker picks its own device: ``cuda:<worker index mod GPUs>`` when CUDA is
available, else ``cpu``.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

BACKENDS = ("auto", "local", "dask", "torchrun")


def torchrun_world() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment (``(0, 1)`` outside torchrun)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def resolve_backend(backend: str, workers: int, scheduler: str | None) -> str:
    """``auto``: torchrun under torchrun, dask with a scheduler or several workers, else local."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if torchrun_world()[1] > 1:
        return "torchrun"
    return "dask" if scheduler or workers > 1 else "local"


def pick_device(device: str, index: int) -> str:
    """``auto`` -> ``cuda:<index mod GPUs>`` when CUDA is available, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{index % n}" if n else "cpu"


def safe_call(task: Callable, item, device: str) -> dict:
    """``task(item, device)`` with any exception turned into a ``failed`` result."""
    t0 = time.perf_counter()
    try:
        return task(item, device)
    except Exception as e:  # noqa: BLE001 - one bad slide must not stop the run
        log.debug("task failed: %s", traceback.format_exc())
        return {"slide": _name(item), "status": "failed", "seconds": time.perf_counter() - t0,
                "error": f"{type(e).__name__}: {e}"}  # fmt: skip


def _name(item) -> str:
    slide = getattr(item, "slide", None)
    if slide is None and isinstance(item, (list, tuple)) and item and isinstance(item[0], dict):
        slide = item[0].get("slide")
    return str(slide if slide is not None else item)


def _dask_task(task: Callable, item, device: str) -> dict:
    from distributed import get_worker

    try:
        index = int(get_worker().name)
    except (ValueError, TypeError):
        index = abs(hash(get_worker().name))
    return safe_call(task, item, pick_device(device, index))


def run_items(
    task: Callable,
    items: Sequence,
    backend: str = "auto",
    workers: int = 1,
    device: str = "auto",
    scheduler: str | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run ``task(item, device) -> dict`` for every item; results in item order.

    Parameters
    ----------
    task : callable
        Picklable (a module-level function or ``functools.partial`` of one).
    items : sequence
    backend : {"auto", "local", "dask", "torchrun"}
    workers : int
        Dask workers of a local cluster (ignored with ``scheduler`` or torchrun).
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``) instead of a local cluster.
    on_result : callable, optional
        Called with each result as it arrives (progress events). Under torchrun each rank
        calls it for its own items.
    """
    backend = resolve_backend(backend, workers, scheduler)
    if backend == "local":
        out = []
        for item in items:
            out.append(safe_call(task, item, pick_device(device, 0)))
            if on_result:
                on_result(out[-1])
        return out
    if backend == "dask":
        return _run_dask(task, items, workers, device, scheduler, on_result)
    return _run_torchrun(task, items, device, on_result)


def _run_dask(task, items, workers, device, scheduler, on_result) -> list[dict]:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=max(1, int(workers)), threads_per_worker=1, processes=True,
            dashboard_address=":0", silence_logs=logging.ERROR,
        )  # fmt: skip
    client = Client(scheduler if scheduler else cluster)
    try:
        futures = [
            client.submit(_dask_task, task, item, device, pure=False, key=f"slide-{i}")
            for i, item in enumerate(items)
        ]
        if on_result:
            for fut in as_completed(futures):
                on_result(fut.result())
        return client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_torchrun(task, items, device, on_result) -> list[dict]:
    import torch.distributed as dist

    rank, world = torchrun_world()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", init_method="env://")  # CPU objects only: gloo
    mine = {}
    for i in range(rank, len(items), world):
        mine[i] = safe_call(task, items[i], dev)
        if on_result:
            on_result({**mine[i], "rank": rank})
    if world == 1:
        return [mine[i] for i in range(len(items))]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, mine)
    merged = {k: v for part in gathered for k, v in part.items()}
    return [merged[i] for i in range(len(items))]


def barrier() -> None:
    """Wait for every torchrun rank (no-op outside torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
