"""Test helper for the hardening acceptance tests: hostile inputs generated on the spot, and a
subprocess runner with a wall-clock limit, a memory limit and the child's own peak memory.

Not library code. Every file is generated here (no shared data, no downloads).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Address-space limit of every child (torch maps several GB of virtual memory at import).
MEMORY_LIMIT_BYTES = 24 * 1024**3
#: Peak resident memory a child may reach (the embedded model run uses ~1.4 GB).
MAX_RSS_BYTES = 3 * 1024**3


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_bytes: int
    timed_out: bool

    @property
    def clean_error(self) -> bool:
        """A non-zero exit with a message and no traceback."""
        return self.rc != 0 and not self.timed_out and self.stderr.strip() != "" and (
            "Traceback" not in self.stderr
        )


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def run_cli(args: list[str], cwd: Path, timeout: float = 180.0, env: dict | None = None) -> Run:
    """``mrplip ARGS`` in ``cwd`` under a timeout and an address-space limit."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MRPLIP_HOME", str(cwd / ".mrplip-home"))
    out, err = cwd / ".stdout", cwd / ".stderr"
    with out.open("w") as fo, err.open("w") as fe:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "napari_mrplip.cli", *args], cwd=cwd,
                                env=env, stdout=fo, stderr=fe, preexec_fn=_limits)  # fmt: skip
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
    text_out, text_err = out.read_text(), err.read_text()
    out.unlink()
    err.unlink()
    timed_out = proc.returncode < 0 and seconds >= timeout
    return Run(proc.returncode, text_out, text_err, seconds, usage.ru_maxrss * 1024, timed_out)


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hex digest)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".std")
    }


def tissue_image(seed: int, side: int = 768) -> np.ndarray:
    """An RGB uint8 image: a pink-purple disc of noisy 'tissue' on white glass."""
    rng = np.random.default_rng(seed)
    img = np.full((side, side, 3), 242, np.uint8)
    yy, xx = np.mgrid[:side, :side]
    disc = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 3) ** 2
    n = int(disc.sum())
    img[disc] = np.stack([rng.integers(150, 220, n), rng.integers(60, 120, n),
                          rng.integers(120, 190, n)], axis=1).astype(np.uint8)  # fmt: skip
    return img


def write_slide(path: Path, seed: int, side: int = 768, compression="zlib") -> Path:
    from napari_mrplip.io.writers import write_pyramid

    return write_pyramid(path, tissue_image(seed, side), mpp=0.5, tile=256,
                         compression=compression, overwrite=True)  # fmt: skip


def boxes_geojson(n: int = 8, ids: bool = False) -> dict:
    """``n`` labelled squares in a row (QuPath 0.2 style: no ids unless ``ids``)."""
    feats = []
    for i in range(n):
        x = 100 + 60 * i
        ring = [[x, 100], [x + 50, 100], [x + 50, 200], [x, 200], [x, 100]]
        feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "annotation",
                               "classification": {"name": "Tumor" if i % 2 else "Stroma"}}}  # fmt: skip
        if ids:
            feat["id"] = f"id-{i}"
        feats.append(feat)
    return {"type": "FeatureCollection", "features": feats}


def declared_tiff(path: Path, width: int, height: int, tiled: bool = False) -> Path:
    """A minimal RGB TIFF holding 16 bytes of pixels but declaring ``width x height``."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 2),
               (277, 3, 3)]  # fmt: skip
    entries += [(322, 3, 256), (323, 3, 256), (324, 4, 8), (325, 4, 16)] if tiled else [
        (273, 4, 8), (278, 4, height), (279, 4, 16)]  # fmt: skip
    body = b"II*\x00" + struct.pack("<I", 24) + b"\0" * 16 + struct.pack("<H", len(entries))
    for tag, typ, val in sorted(entries):
        if typ == 3:  # SHORT, left-justified in the 4-byte value field
            body += struct.pack("<HHIHH", tag, typ, 1, val, 0)
        else:  # LONG
            body += struct.pack("<HHII", tag, typ, 1, val)
    path.write_bytes(body + struct.pack("<I", 0))
    return path


def code_pickle(marker: Path) -> bytes:
    """A pickle that would create ``marker`` if anything ever unpickled it unsafely."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Payload())


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path
