"""Bag manifests: JSON lines of multi-magnification bags with captions and keywords.

One line per bag::

    {"slide": "/abs/path.svs", "slide_mpp": 0.499, "tile_px": 112,
     "magnifications": [5.0, 10.0, 20.0], "tissue_fraction": 0.93,
     "tiles": [{"box": [x0, y0, w, h], "magnification": 5.0, "mpp": 2.0,
                "mag_index": 0, "parent": -1, "caption": "..."}, ...],
     "keywords": ["dense nuclei", "pink stroma", ...], "captioner": "stain:1"}

Captioning is the expensive part, so each slide's bags are cached in
``<out_path>.cache/<key>.jsonl`` where the key hashes the slide (resolved path, size, mtime),
the captioner (name, version) and the sampling parameters. Re-running with the same
inputs reads the cache and captions nothing; a run killed mid-slide resumes after the last
finished group of bags (``slide_cache``). The work is split per slide
(:func:`plan_jobs` -> :func:`caption_slide` per slide, on any worker ->
:func:`merge_manifest` in slide order), which is how ``napari_mrplip.scale`` spreads it
over torchrun ranks or dask workers with an identical result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_mrplip.io import open_slide
from napari_mrplip.io.stated_mpp import adopt, source_of, stated_mpp
from napari_mrplip.tiling.bags import BagSpec, sample_bags

from .bag_tiles import read_bag_tiles
from .captioners import Captioner, caption_tiles
from .keywords import extract_keywords
from .slide_cache import append_partial, read_partial, rewrite_partial, slide_lock, write_lines

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def _captioner_id(captioner: Captioner) -> str:
    return f"{captioner.name}:{getattr(captioner, 'version', '0')}"


def _cache_key(slide_path: Path, captioner: Captioner, params: dict) -> str:
    st = slide_path.stat()
    ident = {
        "schema": SCHEMA_VERSION,
        "slide": str(slide_path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "captioner": _captioner_id(captioner),
        **params,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class SlideJob:
    """One slide's share of a manifest: everything a worker needs, picklable.

    Attributes
    ----------
    slide : str
        The slide path as given.
    params : dict
        :func:`sample_bags` keyword arguments (the seed already combined with the file name).
    stated_mpp : tuple or None
        ``("override" | "fallback", µm/px)`` stated by the user, or None.
    """

    slide: str
    params: dict
    stated_mpp: tuple | None = None


@dataclass
class SlideResult:
    """What one slide's captioning did (``tiles_captioned`` counts this call's work only)."""

    slide: str
    status: str  # "captioned" | "cached" | "failed"
    bags: int = 0
    tiles_captioned: int = 0
    seconds: float = 0.0
    error: str = ""


def plan_jobs(
    slides: Sequence[str | Path],
    n_parents_per_slide: int = 20,
    magnifications: tuple[float, ...] = (5, 10, 20),
    tile_px: int = 112,
    seed: int = 0,
    slide_mpp: float | dict | None = None,
    children_per_parent: int | None = None,
    min_tissue: float = 0.5,
) -> list[SlideJob]:
    """One :class:`SlideJob` per slide, in the given order (the merged manifest's order)."""
    jobs = []
    for slide in slides:
        if isinstance(slide_mpp, dict):
            value = slide_mpp.get(str(slide))
            stated = None if value is None else ("override", float(value))
        else:  # --slide-mpp, else what the user stated for this file (io.stated_mpp)
            value = stated_mpp(slide) if slide_mpp is None else slide_mpp
            stated = None if value is None else ("fallback", float(value))
        params = {
            "n_parents": int(n_parents_per_slide),
            "magnifications": tuple(float(m) for m in magnifications),
            "tile_px": int(tile_px),
            "seed": (int(seed) * 1_000_003 + zlib.crc32(Path(slide).name.encode())) % 2**32,
            "children_per_parent": children_per_parent,
            "min_tissue": float(min_tissue),
        }
        jobs.append(SlideJob(str(slide), params, stated))
    return jobs


def cache_dir_for(out_path: str | Path) -> Path:
    """The per-slide cache directory of a manifest: ``<out_path>.cache``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".cache")


def _cache_file(job: SlideJob, captioner: Captioner, cache_dir: Path) -> Path:
    key = _cache_key(Path(job.slide), captioner, {**job.params, "slide_mpp": job.stated_mpp})
    return cache_dir / f"{key}.jsonl"


def _open_bags(job: SlideJob):
    kind, value = job.stated_mpp or (None, None)
    slide = open_slide(job.slide, mpp=value if kind == "override" else None)
    if kind == "fallback" and source_of(slide) != "file":
        adopt(slide, value)  # the file records none: use (and remember) the stated value
    mpp = slide.mpp
    bags = sample_bags(slide, slide_mpp=mpp, **job.params)
    if not bags:
        log.warning("%s: no tissue position for a bag; skipped", job.slide)
    return slide, mpp, bags


def _caption_group(slide, bags: list[BagSpec], captioner, mpp: float, resolved: str) -> list:
    """Caption the tiles of several bags in one batch; their manifest records."""
    records, tiles, mags = [], [], []
    for bag in bags:
        rec = bag.to_dict()
        tiles.append(read_bag_tiles(slide, rec["tiles"], bag.tile_px, mpp))
        mags += [t.magnification for t in bag.tiles]
        records.append(rec)
    captions = caption_tiles(captioner, np.concatenate(tiles), mags)
    k = 0
    for bag, rec in zip(bags, records):
        for tile_rec in rec["tiles"]:
            tile_rec["caption"] = captions[k]
            k += 1
        rec["keywords"] = extract_keywords([t["caption"] for t in rec["tiles"]])
        rec["magnifications"] = list(bag.magnifications)
        rec.update(slide=resolved, captioner=_captioner_id(captioner))
    return records


def _groups(bags: list[BagSpec], todo: list[int], batch_tiles: int) -> list[list[int]]:
    """Bag indices in groups of about ``batch_tiles`` tiles (whole bags, at least one)."""
    groups, cur, n = [], [], 0
    for i in todo:
        if cur and n + len(bags[i].tiles) > batch_tiles:
            groups.append(cur)
            cur, n = [], 0
        cur.append(i)
        n += len(bags[i].tiles)
    return groups + ([cur] if cur else [])


def caption_slide(
    job: SlideJob,
    captioner: Captioner,
    cache_dir: str | Path,
    batch_tiles: int = 64,
    on_tiles=None,
) -> SlideResult:
    """Caption one slide's bags into its cache file, resuming a killed run's partial work.

    Bags are captioned in groups of about ``batch_tiles`` tiles (one ``caption_batch`` call
    each); every finished group is appended to ``<key>.partial.jsonl`` and fsync'ed before
    the next starts. A rerun skips the bags already there, so a worker killed mid-slide loses
    only its group in flight. Another run captioning the same slide into the same cache waits
    on the slide's lock, then finds it done.

    Parameters
    ----------
    job : SlideJob
    captioner : Captioner
    cache_dir : path
        The manifest's cache directory (:func:`cache_dir_for`).
    batch_tiles : int
        Tiles per captioning batch.
    on_tiles : callable, optional
        ``on_tiles(n)`` after each captioned group (progress bars).

    Returns
    -------
    SlideResult
        Errors propagate (the distributed runner catches and reports them per slide).
    """
    t0 = time.perf_counter()
    cached = _cache_file(job, captioner, Path(cache_dir))
    if cached.is_file():
        return SlideResult(job.slide, "cached", len(read_manifest(cached)))
    partial = cached.with_name(cached.stem + ".partial.jsonl")
    with slide_lock(cached.with_name(cached.stem + ".lock")):
        if cached.is_file():  # another run finished it while this one waited
            return SlideResult(job.slide, "cached", len(read_manifest(cached)))
        done = read_partial(partial)
        rewrite_partial(partial, done)
        slide, mpp, bags = _open_bags(job)
        resolved, n_new = str(Path(job.slide).resolve()), 0
        with slide:
            todo = [i for i in range(len(bags)) if i not in done]
            for group in _groups(bags, todo, max(1, int(batch_tiles))):
                recs = _caption_group(slide, [bags[i] for i in group], captioner, mpp, resolved)
                append_partial(partial, dict(zip(group, recs)))
                done.update(zip(group, recs))
                n = sum(len(bags[i].tiles) for i in group)
                n_new += n
                if on_tiles is not None:
                    on_tiles(n)
        write_lines(cached, [done[i] for i in range(len(bags))])
        partial.unlink(missing_ok=True)
    return SlideResult(job.slide, "captioned", len(bags), n_new, time.perf_counter() - t0)


def merge_manifest(
    jobs: Sequence[SlideJob], captioner: Captioner, cache_dir: str | Path, out_path: str | Path
) -> Path:
    """Concatenate the finished slides' caches in job order into the manifest at ``out_path``.

    The result depends only on the jobs, never on which worker captioned which slide.
    Slides without a finished cache (failed ones) are left out.
    """
    records = []
    for job in jobs:
        try:
            cached = _cache_file(job, captioner, Path(cache_dir))
        except OSError:
            continue  # a missing slide: reported by the run that tried it
        if cached.is_file():
            records += read_manifest(cached)
    if not records:
        raise ValueError(f"no bags from {len(jobs)} slide(s): no tissue found; check the slides")
    write_lines(out_path, records)
    return Path(out_path)


def read_manifest(path: str | Path) -> list[dict]:
    """All bag records of a manifest (clear error naming the line on malformed JSON)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest; build one with build_manifest()")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e}); rebuild the manifest") from e
            if not isinstance(rec, dict) or "tiles" not in rec or "slide" not in rec:
                raise ValueError(f"{path}:{i}: not a bag record (needs 'slide' and 'tiles')")
            out.append(rec)
    return out


def build_manifest(
    slides: Sequence[str | Path],
    out_path: str | Path,
    captioner: Captioner,
    n_parents_per_slide: int = 20,
    magnifications: tuple[float, ...] = (5, 10, 20),
    tile_px: int = 112,
    seed: int = 0,
    slide_mpp: float | dict | None = None,
    children_per_parent: int | None = None,
    min_tissue: float = 0.5,
    progress: bool = True,
    batch_tiles: int = 64,
) -> Path:
    """Sample bags from every slide, caption every tile, and write a JSONL manifest.

    Parameters
    ----------
    slides : sequence of path
        Slide files (anything :func:`open_slide` reads).
    out_path : path
        The manifest to write (``.jsonl``); its cache lives in ``<out_path>.cache/``.
    captioner : Captioner
        E.g. ``StainCaptioner()`` or ``VLMCaptioner(dir)``.
    n_parents_per_slide, magnifications, tile_px, seed, children_per_parent, min_tissue
        Passed to :func:`sample_bags` (the seed is combined with the slide's file name).
    slide_mpp : float or dict, optional
        Level-0 µm/px stated by the user. A float is used for every slide whose file states
        none (files that state one keep theirs); a dict maps a slide path (as given in
        ``slides``) to its value and overrides the file. Slides with neither raise
        :class:`~napari_mrplip.io.MissingMppError`.
    progress : bool
        Show a tqdm bar counting captioned tiles.
    batch_tiles : int
        Tiles per captioning batch (see :func:`caption_slide`).

    Returns
    -------
    Path
        ``out_path``.
    """
    from tqdm.auto import tqdm

    jobs = plan_jobs(
        slides, n_parents_per_slide, magnifications, tile_px, seed, slide_mpp,
        children_per_parent, min_tissue,
    )  # fmt: skip
    cache_dir = cache_dir_for(out_path)
    with tqdm(desc="captioning tiles", unit="tile", disable=not progress) as bar:
        for job in jobs:
            caption_slide(job, captioner, cache_dir, batch_tiles, on_tiles=bar.update)
    return merge_manifest(jobs, captioner, cache_dir, out_path)
