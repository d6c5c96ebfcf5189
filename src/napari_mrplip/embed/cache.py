"""Embedding cache: tile embeddings by (slide, model, µm/px, tile position, tile size).

Embeddings of one lattice (:class:`~napari_mrplip.tiling.grid.TileGrid`) are stored in
square blocks of ``BLOCK x BLOCK`` tiles; a tile's position in the lattice is its key within
the block. In memory the blocks sit in a bounded LRU; on disk (optional) each lattice is a
zarr group ``DISK_DIR/<slide id>/<model id>/<grid key>/`` with arrays ``emb`` (rows, cols, D)
float32 and ``filled`` (rows, cols) bool, chunked by block, so re-opening a slide reads the
embeddings back instead of re-encoding them.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Tiles per block side (also the zarr chunk side).
BLOCK = 16


@dataclass(frozen=True)
class GridKey:
    """Identifies one lattice of one slide under one model.

    Attributes
    ----------
    slide_id : str
        From :func:`slide_id`.
    model_id : str
        The encoder's ``model_id``.
    grid : str
        ``TileGrid.key`` (µm/px or level, tile size in level-0 px, overlap, input px).
    shape : (int, int)
        Lattice (rows, cols).
    dim : int
        Embedding dimension D.
    """

    slide_id: str
    model_id: str
    grid: str
    shape: tuple[int, int]
    dim: int


def slide_id(slide) -> str:
    """A stable id for a slide file: its name plus a hash of name, size on disk and dimensions.

    Moving the file keeps the id (the cache follows the data); a different scan does not.
    """
    path = Path(slide.path)
    try:
        size = path.stat().st_size if path.is_file() else 0
    except OSError:
        size = 0
    raw = f"{path.name}|{size}|{slide.dimensions}|{len(slide.levels)}"
    digest = hashlib.sha1(raw.encode()).hexdigest()[:12]
    return f"{_safe(path.name)}-{digest}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "_"


class _Block:
    __slots__ = ("emb", "filled")

    def __init__(self, dim: int):
        self.emb = np.zeros((BLOCK, BLOCK, dim), np.float32)
        self.filled = np.zeros((BLOCK, BLOCK), bool)


class EmbeddingCache:
    """Bounded in-memory LRU of tile embeddings, optionally backed by zarr on disk.

    Parameters
    ----------
    max_items : int
        Upper bound on tiles held in memory (rounded to whole blocks of ``BLOCK**2``).
    disk_dir : str or Path, optional
        Directory for the persistent zarr store (e.g. next to the slides).
    """

    def __init__(self, max_items: int = 131_072, disk_dir: str | Path | None = None):
        if max_items < 1:
            raise ValueError(f"max_items must be positive, got {max_items}")
        self.max_blocks = max(1, -(-max_items // (BLOCK * BLOCK)))
        self.disk_dir = None if disk_dir is None else Path(disk_dir)
        self._blocks: OrderedDict[tuple, _Block] = OrderedDict()
        self._stores: dict[GridKey, object] = {}
        self._boxes: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self.disk_reads = 0
        self.disk_writes = 0

    # -- lattice embeddings -------------------------------------------------------------
    def gather(self, key: GridKey, r0: int, r1: int, c0: int, c1: int):
        """Cached embeddings of tiles ``[r0, r1) x [c0, c1)``.

        Returns
        -------
        emb : np.ndarray
            ``(r1-r0, c1-c0, D)`` float32 (zeros where not cached).
        filled : np.ndarray
            ``(r1-r0, c1-c0)`` bool, True where cached.
        """
        emb = np.zeros((r1 - r0, c1 - c0, key.dim), np.float32)
        filled = np.zeros((r1 - r0, c1 - c0), bool)
        with self._lock:
            for blk, src, dst in self._blocks_in(key, r0, r1, c0, c1):
                emb[dst] = blk.emb[src]
                filled[dst] = blk.filled[src]
        return emb, filled

    def filled_mask(self, key: GridKey, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """``(r1-r0, c1-c0)`` bool: which tiles of the range have a cached embedding."""
        filled = np.zeros((r1 - r0, c1 - c0), bool)
        with self._lock:
            for blk, src, dst in self._blocks_in(key, r0, r1, c0, c1):
                filled[dst] = blk.filled[src]
        return filled

    def map_filled(self, key: GridKey, r0: int, r1: int, c0: int, c1: int, fn, n_out: int):
        """Apply ``fn`` to the cached embeddings of tiles ``[r0, r1) x [c0, c1)`` in place.

        No dense ``(R, C, D)`` copy is made: ``fn`` sees each block's embeddings as a
        ``(BLOCK**2, D)`` view and returns ``(BLOCK**2, n_out)``. This is what makes a new
        prompt over 100,000 cached tiles one pass of small matrix products.

        Returns
        -------
        out : np.ndarray
            ``(n_out, r1-r0, c1-c0)`` float32, NaN where not cached.
        filled : np.ndarray
            ``(r1-r0, c1-c0)`` bool.
        """
        out = np.full((n_out, r1 - r0, c1 - c0), np.nan, np.float32)
        filled = np.zeros((r1 - r0, c1 - c0), bool)
        with self._lock:
            for blk, src, dst in self._blocks_in(key, r0, r1, c0, c1):
                sub = blk.filled[src]
                if not sub.any():
                    continue
                vals = fn(blk.emb.reshape(BLOCK * BLOCK, -1)).reshape(BLOCK, BLOCK, n_out)
                vals = np.moveaxis(vals[src], -1, 0)
                out[(slice(None), *dst)] = np.where(sub, vals, np.nan)
                filled[dst] = sub
        return out, filled

    def _blocks_in(self, key: GridKey, r0: int, r1: int, c0: int, c1: int):
        """Yield ``(block, src, dst)`` for every cache block meeting tiles ``[r0, r1) x [c0, c1)``.

        ``src`` indexes the block's own ``(BLOCK, BLOCK)`` arrays and ``dst`` the
        ``(r1-r0, c1-c0)`` output; the caller holds the lock.
        """
        for br in range(r0 // BLOCK, -(-r1 // BLOCK)):
            for bc in range(c0 // BLOCK, -(-c1 // BLOCK)):
                rs, re_ = max(r0, br * BLOCK), min(r1, (br + 1) * BLOCK)
                cs, ce = max(c0, bc * BLOCK), min(c1, (bc + 1) * BLOCK)
                src = (
                    slice(rs - br * BLOCK, re_ - br * BLOCK),
                    slice(cs - bc * BLOCK, ce - bc * BLOCK),
                )
                dst = (slice(rs - r0, re_ - r0), slice(cs - c0, ce - c0))
                yield self._block(key, br, bc), src, dst

    def put(self, key: GridKey, rows: np.ndarray, cols: np.ndarray, emb: np.ndarray) -> None:
        """Store ``emb`` ``(N, D)`` for tiles at ``rows``, ``cols`` ``(N,)`` of the lattice."""
        rows, cols = np.asarray(rows), np.asarray(cols)
        touched = set()
        with self._lock:
            for r, c, e in zip(rows.tolist(), cols.tolist(), np.asarray(emb, np.float32)):
                br, bc = r // BLOCK, c // BLOCK
                blk = self._block(key, br, bc)
                blk.emb[r % BLOCK, c % BLOCK] = e
                blk.filled[r % BLOCK, c % BLOCK] = True
                touched.add((br, bc))
            if self.disk_dir is not None:
                for br, bc in touched:
                    self._write_block(key, br, bc, self._blocks[(key, br, bc)])

    def _block(self, key: GridKey, br: int, bc: int) -> _Block:
        k = (key, br, bc)
        blk = self._blocks.get(k)
        if blk is not None:
            self._blocks.move_to_end(k)
            return blk
        blk = self._read_block(key, br, bc) if self.disk_dir is not None else None
        blk = blk or _Block(key.dim)
        self._blocks[k] = blk
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)
        return blk

    # -- disk -----------------------------------------------------------------------------
    def store_path(self, key: GridKey) -> Path:
        """Directory of the zarr group holding ``key``'s lattice."""
        return self.disk_dir / key.slide_id / _safe(key.model_id) / _safe(key.grid)

    def _store(self, key: GridKey):
        import zarr

        group = self._stores.get(key)
        if group is not None:
            return group
        rows, cols = key.shape
        group = zarr.open_group(str(self.store_path(key)), mode="a")
        if "emb" not in group or group["emb"].shape != (rows, cols, key.dim):
            group.create_array(
                "emb",
                shape=(rows, cols, key.dim),
                chunks=(BLOCK, BLOCK, key.dim),
                dtype="float32",
                fill_value=0.0,
                overwrite=True,
            )
            group.create_array(
                "filled",
                shape=(rows, cols),
                chunks=(BLOCK, BLOCK),
                dtype="bool",
                fill_value=False,
                overwrite=True,
            )
            group.attrs.update({"model_id": key.model_id, "grid": key.grid, "format": 1})
        self._stores[key] = group
        return group

    def _read_block(self, key: GridKey, br: int, bc: int) -> _Block | None:
        group = self._store(key)
        sl = (slice(br * BLOCK, (br + 1) * BLOCK), slice(bc * BLOCK, (bc + 1) * BLOCK))
        filled = np.asarray(group["filled"][sl])
        if not filled.any():
            return None
        blk = _Block(key.dim)
        h, w = filled.shape
        blk.filled[:h, :w] = filled
        blk.emb[:h, :w] = np.asarray(group["emb"][sl])
        self.disk_reads += 1
        return blk

    def _write_block(self, key: GridKey, br: int, bc: int, blk: _Block) -> None:
        group = self._store(key)
        rows, cols = key.shape
        h, w = min(BLOCK, rows - br * BLOCK), min(BLOCK, cols - bc * BLOCK)
        sl = (slice(br * BLOCK, br * BLOCK + h), slice(bc * BLOCK, bc * BLOCK + w))
        group["emb"][sl] = blk.emb[:h, :w]
        group["filled"][sl] = blk.filled[:h, :w]
        self.disk_writes += 1

    # -- arbitrary boxes (review, linear probe) -----------------------------------------
    def get_box(self, key: tuple) -> np.ndarray | None:
        """Embedding of an arbitrary tile keyed by (slide, model, scale, box), or None."""
        with self._lock:
            e = self._boxes.get(key)
            if e is not None:
                self._boxes.move_to_end(key)
            return e

    def put_box(self, key: tuple, emb: np.ndarray) -> None:
        with self._lock:
            self._boxes[key] = np.asarray(emb, np.float32)
            while len(self._boxes) > self.max_blocks * BLOCK * BLOCK:
                self._boxes.popitem(last=False)

    def __len__(self) -> int:
        """Tiles currently cached in memory (lattice tiles + boxes)."""
        with self._lock:
            return sum(int(b.filled.sum()) for b in self._blocks.values()) + len(self._boxes)
