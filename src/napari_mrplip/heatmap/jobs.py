"""Batch heatmaps over many slides: typed job config, one-slide worker, dask fan-out.

The CLI maps its arguments onto :class:`HeatmapJob` once; everything below takes the job.
With a dask.distributed scheduler each slide is one task; a worker process loads the
encoder once, in the process-wide pool (``embed.pool``), for the slides that follow.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from napari_mrplip.heatmap.result import HeatmapRequest

log = logging.getLogger(__name__)

#: Output suffixes recognised as files (anything else is a directory for many slides).
SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".ome.zarr", ".zarr")


class ModelUnavailableError(RuntimeError):
    """The encoder named by ``--model`` could not be loaded."""


@dataclass(frozen=True)
class HeatmapJob:
    """What ``mrplip heatmap`` does, as data.

    Attributes
    ----------
    slides : tuple of str
        Slide paths.
    out : str
        Output file (one slide) or directory (several slides; one ``<stem>.ome.tif`` each).
    prompts, background : tuple of str
        Output channels (in order) and extra softmax competitors.
    model : str
        Encoder spec for ``models.encoders.get_encoder``.
    mpp : float or None
        µm/px to score at (None: the model's own, 0.5 by default).
    slide_mpp : float or None
        Level-0 µm/px for slides whose metadata lacks it.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
    overwrite : bool
        Replace existing outputs (never an input slide).
    max_tiles : int or None
        Tile budget per slide (None: ``tiling.grid.MAX_TILES``).
    """

    slides: tuple[str, ...]
    out: str
    prompts: tuple[str, ...]
    background: tuple[str, ...] = ()
    model: str = "mrplip-demo"
    mpp: float | None = None
    slide_mpp: float | None = None
    device: str = "auto"
    batch_size: int | None = None
    overlap: float = 0.0
    mode: str = "softmax"
    workers: int | None = None  # None: embed.batching.decode_workers(device)
    cache_dir: str | None = None
    tissue_only: bool = True
    geojson_threshold: float | None = None
    dense: bool = False  # patch-token (sub-tile) maps, heatmap.dense
    out_suffix: str = ".ome.tif"
    overwrite: bool = False
    max_tiles: int | None = None
    extra: dict = field(default_factory=dict)


def load_encoder(spec: str, device: str):
    """The process-wide encoder for ``spec`` on ``device`` (``embed.pool.encoder_for``).

    Raises
    ------
    ModelUnavailableError
        The model loaders are not installed, or ``spec`` cannot be loaded; says which.
    """
    try:
        from napari_mrplip.embed.pool import encoder_for

        return encoder_for(spec, device)  # resolves the device (DeviceUnavailableError)
    except ImportError as e:
        raise ModelUnavailableError(
            f"cannot load model {spec!r}: the model loaders are not installed ({e})"
        ) from e
    except (ValueError, OSError) as e:
        raise ModelUnavailableError(f"cannot load model {spec!r}: {e}") from e


def output_paths(job: HeatmapJob) -> list[Path]:
    """One output path per slide: ``out`` itself for one slide with a file suffix."""
    out = Path(job.out)
    is_file = any(out.name.lower().endswith(s) for s in SUFFIXES)
    if not is_file and out.suffix and not out.is_dir():
        raise ValueError(
            f"--out {out}: unknown output format {out.suffix!r}; name an .ome.tif or "
            ".ome.zarr file (one slide) or a folder (several)"
        )
    if len(job.slides) == 1 and is_file:
        return [out]
    if is_file:
        raise ValueError(
            f"--out {out} names a file but {len(job.slides)} slides were given; "
            "pass a directory to get one heatmap per slide"
        )
    names = [Path(s).name.split(".")[0] for s in job.slides]
    if len(set(names)) != len(names):
        names = [f"{i:03d}_{n}" for i, n in enumerate(names)]
    return [out / f"{n}{job.out_suffix}" for n in names]


def geojson_path(out_path: str | Path) -> Path:
    """Where ``--geojson`` writes the regions of the heatmap at ``out_path``."""
    return Path(str(out_path).rsplit(".ome.", 1)[0].rsplit(".", 1)[0] + ".geojson")


def check_outputs(job: HeatmapJob) -> list[Path]:
    """Apply the output policy to every file the job will write, before any work.

    Raises
    ------
    napari_mrplip.outputs.OutputError
        An output is one of the slides, exists (without ``overwrite``), or two slides would
        write the same file.
    """
    from napari_mrplip.outputs import OutputError, check_output

    outs = output_paths(job)
    planned = list(outs)
    if job.geojson_threshold is not None:
        planned += [geojson_path(o) for o in outs]
    seen: set[Path] = set()
    for p in planned:
        check_output(p, inputs=job.slides, overwrite=job.overwrite)
        if p.resolve() in seen:
            raise OutputError(f"{p}: two outputs of this run have the same name; rename a slide")
        seen.add(p.resolve())
    return outs


def _request(job: HeatmapJob, slide) -> HeatmapRequest:
    """The engine request for one slide. Without ``--mpp``, a slide with no µm/px is scored
    at level 0 (with a warning); with it, the grid refuses such a slide (``MissingMppError``
    saying how to state its µm/px), never a map at another scale than asked."""
    from napari_mrplip.io.stated_mpp import HOW_TO_STATE

    mpp, level = job.mpp, None
    if slide.mpp is None and job.mpp is None:
        warnings.warn(
            f"{slide.path}: the file states no µm/px, so tiles are scored at pyramid level 0 "
            "(model input size in level-0 px) and the heatmap has no physical size; "
            f"{HOW_TO_STATE}, or pass --slide-mpp.",
            UserWarning,
            stacklevel=2,
        )
        level = 0
    return HeatmapRequest(
        prompts=job.prompts, background=job.background, target_mpp=mpp, level=level,
        overlap=job.overlap, mode=job.mode, tissue_only=job.tissue_only,
        max_tiles=job.max_tiles,
    )  # fmt: skip


def heatmap_one(job: HeatmapJob, slide_path: str, out_path: str, loader: Callable = None) -> dict:
    """Compute and write one slide's heatmap; returns a summary dict (JSON-able)."""
    from napari_mrplip.embed.cache import EmbeddingCache
    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.heatmap.export import heatmap_to_geojson, write_heatmap
    from napari_mrplip.io import open_slide

    encoder = (loader or load_encoder)(job.model, job.device)
    cache = EmbeddingCache(disk_dir=job.cache_dir) if job.cache_dir else None
    engine = HeatmapEngine(encoder, cache=cache, batch_size=job.batch_size, workers=job.workers)
    with open_slide(slide_path, mpp=job.slide_mpp) as slide:
        if job.dense:
            from napari_mrplip.heatmap.dense import compute_dense

            result, _tile = compute_dense(engine, slide, _request(job, slide))
        else:
            result = engine.compute(slide, _request(job, slide))
    path = write_heatmap(result, out_path, overwrite=job.overwrite, inputs=job.slides)
    summary = {
        "slide": str(slide_path), "out": str(path), "tiles": result.total,
        "encoded": engine.tiles_encoded, "failed_tiles": result.meta.get("failed_tiles", 0),
        "grid": result.scores.shape[1:], "batch_size": engine.batch_size,
    }  # fmt: skip
    if job.geojson_threshold is not None:
        import json

        from napari_mrplip.outputs import write_text

        gj = geojson_path(path)
        text = json.dumps(heatmap_to_geojson(result, job.geojson_threshold))
        write_text(gj, text, overwrite=job.overwrite, inputs=job.slides)
        summary["geojson"] = str(gj)
    return summary


def run_job(job: HeatmapJob, scheduler: str | None = None, loader: Callable = None) -> list:
    """Heatmaps for every slide, locally in turn or as dask.distributed tasks.

    Returns one summary per slide, or a ``{"slide", "error"}`` dict for slides that failed
    (a bad slide does not stop the batch).
    """
    outs = output_paths(job)
    if scheduler is None:
        return [_safe_one(job, s, str(o), loader) for s, o in zip(job.slides, outs)]
    from distributed import Client

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = [
            client.submit(_safe_one, job, s, str(o), loader, pure=False)
            for s, o in zip(job.slides, outs)
        ]
        return client.gather(futures)
    finally:
        if client is not scheduler:
            client.close()


def _safe_one(job: HeatmapJob, slide_path: str, out_path: str, loader) -> dict:
    """One slide; any error that is about this slide becomes a ``{"slide", "error"}`` record
    so the batch goes on (SlideOpenError, TileBudgetError, OutputError are ValueErrors;
    TileReadError and DiskFullError are OSErrors)."""
    try:
        return heatmap_one(job, slide_path, out_path, loader)
    except (ValueError, OSError, ModelUnavailableError) as e:
        return {"slide": str(slide_path), "error": str(e)}
