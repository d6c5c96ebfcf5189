"""Embedding cache: tile embeddings by (slide, model, µm/px, tile position, tile size).

Embeddings of one lattice (:class:`~napari_mrplip.tiling.grid.TileGrid`) are stored in
square blocks of ``BLOCK x BLOCK`` tiles; a tile's position in the lattice is its key within
the block. In memory the blocks sit in a bounded LRU; on disk (optional) each lattice is a
zarr group ``DISK_DIR/<slide id>/<model id>/<grid key>/`` with arrays ``emb`` (rows, cols, D)
float32 and ``filled`` (rows, cols) bool, chunked by block, so re-opening a slide reads the
embeddings back instead of re-encoding them.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Tiles per block side (also the zarr chunk side).
BLOCK = 16
#: On-disk layout version: 2 adds a checksum per block (``crc``, bound to its position).
FORMAT = 2


class CacheWarning(UserWarning):
    """The on-disk cache was damaged, unreadable or read-only; results are unaffected."""


def block_checksum(br: int, bc: int, emb: np.ndarray, filled: np.ndarray) -> int:
    """64-bit hash of a block's embeddings, filled flags and position ``(br, bc)``.

    Binding the position means a chunk copied from another block does not verify.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray([br, bc, *emb.shape], np.int64).tobytes())
    h.update(np.ascontiguousarray(emb, np.float32).tobytes())
    h.update(np.ascontiguousarray(filled, bool).tobytes())
    return int.from_bytes(h.digest(), "little") or 1  # 0 is the fill value: "none stored"


@functools.cache
def _store_errors() -> tuple[type[BaseException], ...]:
    """Errors a damaged or unwritable zarr store raises (zarr is imported on first need only:
    ``except`` evaluates this when an exception is raised, and an in-memory cache never does)."""
    errors: tuple = (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError)
    try:
        import zarr

        errors += (zarr.errors.BaseZarrError,)
    except (ImportError, AttributeError):
        pass
    return errors


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
    """A stable id for a slide: its name plus a hash of its size, dimensions and content.

    The content part (:func:`~napari_mrplip.embed.identity.content_digest`) hashes the
    header, tile-offset tables and samples of the tile bytes, so two different scans with the
    same name, size and dimensions get different ids. Moving the file keeps the id (the cache
    follows the data).
    """
    from .identity import content_digest

    path = Path(slide.path)
    try:
        size = path.stat().st_size if path.is_file() else 0
    except OSError:
        size = 0
    content = content_digest(path)
    raw = f"{path.name}|{size}|{slide.dimensions}|{slide.n_levels}|{content}"
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
        self._grids: dict[GridKey, object] = {}
        self._lock = threading.RLock()
        self.disk_reads = 0
        self.disk_writes = 0
        self._warned: set[str] = set()
        #: True when the disk cache is only read (the folder is not writable).
        self.read_only = False
        if self.disk_dir is not None and self.disk_dir.is_dir():
            if not os.access(self.disk_dir, os.W_OK):
                self.read_only = True
                self._warn(f"embedding cache {self.disk_dir} is read-only: it is read, not "
                           "written")  # fmt: skip

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
        """The zarr group of ``key`` (created if needed), or None when it cannot be used."""
        if key in self._stores:
            return self._stores[key]
        try:
            group = self._open_store(key)
        except _store_errors() as e:
            group = None
            self._warn(f"embedding cache {self.store_path(key)} cannot be used ({e}); tiles "
                       "are computed instead. Delete that folder to rebuild it")  # fmt: skip
        self._stores[key] = group
        return group

    def _open_store(self, key: GridKey):
        import zarr

        path = self.store_path(key)
        if self.read_only:
            return zarr.open_group(str(path), mode="r") if path.is_dir() else None
        group = zarr.open_group(str(path), mode="a")
        rows, cols = key.shape
        ok = "emb" in group and group["emb"].shape == (rows, cols, key.dim)
        if not (ok and group.attrs.get("format") == FORMAT and "crc" in group):
            nb = (-(-rows // BLOCK), -(-cols // BLOCK))
            arrays = (("emb", (rows, cols, key.dim), (BLOCK, BLOCK, key.dim), "float32", 0.0),
                      ("filled", (rows, cols), (BLOCK, BLOCK), "bool", False),
                      ("crc", nb, (1, 1), "uint64", 0))  # fmt: skip
            for name, shape, chunks, dtype, fill in arrays:
                group.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                                   fill_value=fill, overwrite=True)  # fmt: skip
            group.attrs.update({"model_id": key.model_id, "grid": key.grid, "format": FORMAT})
        return group

    def _warn(self, message: str) -> None:
        """One warning per distinct problem (not one per block)."""
        kind = message.split(" (")[0]
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, CacheWarning, stacklevel=3)

    def _read_block(self, key: GridKey, br: int, bc: int) -> _Block | None:
        group = self._store(key)
        if group is None:
            return None
        sl = (slice(br * BLOCK, (br + 1) * BLOCK), slice(bc * BLOCK, (bc + 1) * BLOCK))
        try:
            filled = np.asarray(group["filled"][sl])
            if not filled.any():
                return None
            emb = np.asarray(group["emb"][sl], np.float32)
            stored = int(np.asarray(group["crc"][br, bc]))
        except _store_errors() as e:
            self._warn(f"embedding cache {self.store_path(key)}: unreadable chunks are "
                       f"recomputed ({type(e).__name__}: {e})")  # fmt: skip
            return None
        if stored != block_checksum(br, bc, emb, filled):
            self._warn(f"embedding cache {self.store_path(key)}: chunks whose checksum does "
                       "not match are recomputed (damaged or copied from elsewhere)")  # fmt: skip
            return None
        blk = _Block(key.dim)
        h, w = filled.shape
        blk.filled[:h, :w] = filled
        blk.emb[:h, :w] = emb
        self.disk_reads += 1
        return blk

    def _write_block(self, key: GridKey, br: int, bc: int, blk: _Block) -> None:
        group = None if self.read_only else self._store(key)
        if group is None:
            return
        rows, cols = key.shape
        h, w = min(BLOCK, rows - br * BLOCK), min(BLOCK, cols - bc * BLOCK)
        sl = (slice(br * BLOCK, br * BLOCK + h), slice(bc * BLOCK, bc * BLOCK + w))
        emb, filled = blk.emb[:h, :w], blk.filled[:h, :w]
        try:
            group["emb"][sl] = emb
            group["filled"][sl] = filled
            group["crc"][br, bc] = block_checksum(br, bc, emb, filled)  # written last
        except _store_errors() as e:
            if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                self.read_only = True
                self._warn(f"embedding cache {self.disk_dir} is read-only: it is read, not "
                           f"written ({e})")  # fmt: skip
            else:
                self._warn(f"embedding cache {self.store_path(key)} could not be written "
                           f"({type(e).__name__}: {e}); results are unaffected")  # fmt: skip
            return
        self.disk_writes += 1

    # -- lattices as boxes: review and fine-tuning reuse heatmap tiles ---------------
    def register_grid(self, key: GridKey, grid) -> None:
        """Remember ``grid`` (a ``TileGrid``) as the geometry of ``key``'s lattice."""
        with self._lock:
            self._grids[key] = grid

    def lattice_lookup(self, slide_id_: str, model_id: str, tile_px: int, boxes: np.ndarray):
        """Cached lattice embeddings of level-0 boxes that read the same pixels as a lattice tile.

        A box reads the same pixels as lattice tile ``(r, c)`` when both have the same side
        (so the same level and window) and the same rounded origin (``embed.tiles``), and the
        model input is the same.

        Returns
        -------
        emb : np.ndarray
            ``(N, D)`` float32 (zeros where not found); ``None`` when no lattice is known.
        found : np.ndarray
            ``(N,)`` bool.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        found = np.zeros(len(boxes), bool)
        emb = None
        with self._lock:
            grids = [(k, g) for k, g in self._grids.items()
                     if k.slide_id == slide_id_ and k.model_id == model_id and g.out_px == tile_px]  # fmt: skip
        for key, grid in grids:
            side = boxes[:, 2] - boxes[:, 0]
            same = ~found & (np.abs(side - grid.tile_level0) <= 1e-6 * grid.tile_level0)
            same &= np.abs((boxes[:, 3] - boxes[:, 1]) - side) <= 1e-6 * grid.tile_level0
            if not same.any():
                continue
            idx = np.flatnonzero(same)
            s = grid.step_level0
            cols = np.rint(boxes[idx, 0] / s).astype(np.int64)
            rows = np.rint(boxes[idx, 1] / s).astype(np.int64)
            rows_n, cols_n = key.shape
            inside = (rows >= 0) & (rows < rows_n) & (cols >= 0) & (cols < cols_n)
            idx, rows, cols = idx[inside], rows[inside], cols[inside]
            if not len(idx):
                continue
            rb = grid.read_boxes(rows, cols)
            match = (np.rint(rb[:, 0]) == np.rint(boxes[idx, 0])) & (
                np.rint(rb[:, 1]) == np.rint(boxes[idx, 1])
            )
            idx, rows, cols = idx[match], rows[match], cols[match]
            for i, r, c in zip(idx.tolist(), rows.tolist(), cols.tolist()):
                e, ok = self.gather(key, r, r + 1, c, c + 1)
                if ok[0, 0]:
                    if emb is None:
                        emb = np.zeros((len(boxes), key.dim), np.float32)
                    emb[i], found[i] = e[0, 0], True
        return emb, found

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
