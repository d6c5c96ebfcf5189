"""Crash-safe per-slide work files: an exclusive lock, and an append-only partial log.

A worker appends each finished group of bags to ``<key>.partial.jsonl`` (flushed and
fsync'ed) before starting the next, so a worker killed mid-slide loses only the group it was
working on; a rerun reads the complete lines back and continues after them. A slide is
finished when its final file is atomically renamed into place. Runs that share a cache (two
runs, or two workers given the same slide) serialise on an ``fcntl`` lock per slide, so the
second waits and then finds the slide done: nothing is computed twice and no file is torn.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def slide_lock(path: str | Path):
    """Hold an exclusive advisory lock on ``path`` (created if absent) for the block.

    POSIX ``flock``: released by the kernel when the holder dies, so a killed worker never
    leaves a stale lock behind. Local filesystems only (documented in docs/data.md).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_partial(path: str | Path) -> dict[int, dict]:
    """``{bag_index: record}`` of the complete lines of a partial log (a torn last line is
    dropped); empty when the file does not exist."""
    from napari_mrplip.progress import read_events  # the one JSON-lines reader

    done: dict[int, dict] = {}
    for item in read_events(path):
        try:
            done[int(item["bag_index"])] = item["record"]
        except (KeyError, TypeError, ValueError):
            continue  # not a bag record
    return done


def rewrite_partial(path: str | Path, done: dict[int, dict]) -> None:
    """Rewrite the log with only its complete entries (drops a torn tail before appending)."""
    write_lines(path, [{"bag_index": i, "record": r} for i, r in sorted(done.items())])


def append_partial(path: str | Path, entries: dict[int, dict]) -> None:
    """Append finished bags and force them to disk before returning."""
    with open(path, "a", encoding="utf-8") as f:
        for i, rec in sorted(entries.items()):
            f.write(json.dumps({"bag_index": i, "record": rec}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_lines(path: str | Path, records: list[dict]) -> None:
    """Write JSON lines atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
