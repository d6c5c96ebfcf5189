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
inputs reads the cache and captions nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

from napari_mrplip.io import open_slide
from napari_mrplip.tiling.bags import BagSpec, read_tile_at_mpp, sample_bags

from .captioners import Captioner
from .keywords import extract_keywords

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


def _caption_bag(slide, bag: BagSpec, captioner: Captioner, mpp: float) -> dict:
    record = bag.to_dict()
    for tile_rec, tile in zip(record["tiles"], bag.tiles):
        pixels = read_tile_at_mpp(slide, tile.box, tile.mpp, bag.tile_px, slide_mpp=mpp)
        tile_rec["caption"] = captioner.caption(pixels, tile.magnification)
    record["keywords"] = extract_keywords([t["caption"] for t in record["tiles"]])
    record["magnifications"] = list(bag.magnifications)
    return record


def _slide_records(path: Path, captioner, params: dict, stated_mpp, cache_dir: Path, bar) -> list:
    """Bag records of one slide. ``stated_mpp``: ``("override" | "fallback", value)`` or None."""
    key = _cache_key(path, captioner, {**params, "slide_mpp": stated_mpp})
    cached = cache_dir / f"{key}.jsonl"
    if cached.is_file():
        return read_manifest(cached)
    with open_slide(path) as slide:
        mpp = slide.mpp
        if stated_mpp is not None and (stated_mpp[0] == "override" or mpp is None):
            mpp = stated_mpp[1]
        bags = sample_bags(slide, slide_mpp=mpp, **params)
        if not bags:
            log.warning("%s: no tissue position for a bag; skipped", path)
        records = []
        for bag in bags:
            rec = _caption_bag(slide, bag, captioner, mpp)
            rec.update(slide=str(path.resolve()), captioner=_captioner_id(captioner))
            records.append(rec)
            bar.update(len(bag.tiles))
    _write_jsonl(cached, records)
    return records


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    os.replace(tmp, path)


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

    Returns
    -------
    Path
        ``out_path``.
    """
    from tqdm.auto import tqdm

    out_path = Path(out_path)
    cache_dir = out_path.with_name(out_path.name + ".cache")
    records = []
    with tqdm(desc="captioning tiles", unit="tile", disable=not progress) as bar:
        for slide in slides:
            if isinstance(slide_mpp, dict):
                value = slide_mpp.get(str(slide))
                stated = None if value is None else ("override", float(value))
            else:
                stated = None if slide_mpp is None else ("fallback", float(slide_mpp))
            params = {
                "n_parents": int(n_parents_per_slide),
                "magnifications": tuple(float(m) for m in magnifications),
                "tile_px": int(tile_px),
                "seed": (int(seed) * 1_000_003 + zlib.crc32(Path(slide).name.encode())) % 2**32,
                "children_per_parent": children_per_parent,
                "min_tissue": float(min_tissue),
            }
            records += _slide_records(Path(slide), captioner, params, stated, cache_dir, bar)
    if not records:
        raise ValueError(f"no bags from {len(slides)} slide(s): no tissue found; check the slides")
    _write_jsonl(out_path, records)
    return out_path
