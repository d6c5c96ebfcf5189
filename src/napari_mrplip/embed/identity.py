"""What identifies a slide's content, for the embedding cache key.

Name, byte size and dimensions are not enough: two scans saved under the same name with the
same size and dimensions would share cached embeddings. :func:`content_digest` hashes the
file's head and tail (where TIFF headers and tile-offset tables live) and 16 samples spread
over it (the compressed tile bytes, which differ between any two scans), about 2 MB of reads
whatever the slide's size. For a folder (OME-Zarr) it hashes the metadata files and the
names and sizes of the entries two levels down.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

#: Bytes hashed at the head and at the tail of a file.
EDGE_BYTES = 1 << 20
#: Samples of SAMPLE_BYTES spread evenly between head and tail.
SAMPLES, SAMPLE_BYTES = 16, 1 << 16
_METADATA = ("zarr.json", ".zattrs", ".zgroup", ".zarray")

_memo: dict[tuple, str] = {}
_lock = threading.Lock()


def _file_digest(path: Path, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(EDGE_BYTES))
        if size > 2 * EDGE_BYTES:
            span = size - 2 * EDGE_BYTES - SAMPLE_BYTES
            for i in range(SAMPLES):
                f.seek(EDGE_BYTES + span * i // max(1, SAMPLES - 1))
                h.update(f.read(SAMPLE_BYTES))
        f.seek(max(0, size - EDGE_BYTES))
        h.update(f.read(EDGE_BYTES))
    return h.hexdigest()


def _folder_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for root, dirs, files in os.walk(path):
        depth = len(Path(root).relative_to(path).parts)
        dirs[:] = sorted(dirs) if depth < 2 else []
        for name in sorted(files):
            p = Path(root, name)
            h.update(f"{p.relative_to(path)}|{p.stat().st_size}".encode())
            if name in _METADATA and p.stat().st_size <= EDGE_BYTES:
                h.update(p.read_bytes())
    return h.hexdigest()


def content_digest(path: str | Path) -> str:
    """A hex digest of the slide's content (memoised per path, size and mtime).

    Returns ``"unreadable"`` when the file cannot be read (the cache then keys on the
    rest of the id; the slide itself will fail to read anyway).
    """
    path = Path(path)
    try:
        st = path.stat()
        memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        with _lock:
            if memo in _memo:
                return _memo[memo]
        digest = _folder_digest(path) if path.is_dir() else _file_digest(path, st.st_size)
    except OSError:
        return "unreadable"
    with _lock:
        _memo[memo] = digest
    return digest
