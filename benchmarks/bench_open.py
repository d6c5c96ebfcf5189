"""First slide open in a fresh process: imports, ``open_slide`` and one ``read_region``, before vs after.

Each measurement is a new interpreter (``python -X importtime``), so the imports a first open
pays are in the figure. The two arms are two source trees of the project (``--before`` and
``--after``, each a ``src`` folder) run with the same Python; runs are interleaved (the arm order
alternates run by run) and medians are reported. Run on demand, never in the test suite:

    git worktree add /tmp/lazyio-before 096597b
    .venv/bin/python benchmarks/bench_open.py --before /tmp/lazyio-before/src --runs 7

Per run, slide and arm, two fresh processes: one under ``-X importtime``, giving *imports* = the
sum of its self times (everything the process imported, the interpreter's own start-up modules
included; the flag slows imports a little), and one without it, giving *open + read* = wall time
from before ``import napari_mrplip.io`` to after ``open_slide(path)`` and one 512²
``read_region`` at the slide's centre, and *process* = the whole child process as the parent
sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLIDES = [
    ROOT / "src" / "napari_mrplip" / "_napari" / "sample" / "CMU-1-Small-Region.svs",
    ROOT / "tests" / "data" / "OS-2-ndpi.ome.tif",
]

CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
import napari_mrplip.io
from napari_mrplip.io import open_slide
slide = open_slide(sys.argv[1])
w, h = slide.dimensions
region = slide.read_region(max(0, w // 2 - 256), max(0, h // 2 - 256), 512, 512)
t1 = time.perf_counter()
print(json.dumps({
    "open_read_s": t1 - t0,
    "package": napari_mrplip.__file__,
    "loaded": sorted(m for m in ("dask", "zarr", "scipy") if m in sys.modules),
}))
"""


def import_total_s(stderr: str) -> float:
    """Sum of the self times (µs) of every ``-X importtime`` line, in seconds."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            self_us = line.split(":", 1)[1].split("|")[0].strip()
            if self_us.isdigit():
                total += int(self_us)
    return total / 1e6


def _child(src: Path, slide: Path, *flags: str) -> tuple[dict, str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *flags, "-c", CHILD, str(slide)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    process_s = time.perf_counter() - start
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(out["package"]).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"the child imported {out['package']}, not the tree at {src}")
    return out, done.stderr, process_s


def measure(src: Path, slide: Path) -> dict:
    """Two fresh processes opening ``slide`` with the project at ``src`` (see the module doc)."""
    _, stderr, _ = _child(src, slide, "-X", "importtime")
    out, _, process_s = _child(src, slide)
    return {**out, "imports_s": import_total_s(stderr), "process_s": process_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="src folder of the old tree")
    parser.add_argument("--after", type=Path, default=ROOT / "src", help="src folder (this tree)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("slides", nargs="*", type=Path, default=SLIDES)
    args = parser.parse_args()
    arms = {"before": args.before, "after": args.after}
    results = {(s.name, a): [] for s in args.slides for a in arms}
    load = os.getloadavg()[0]
    for run in range(args.runs):
        order = list(arms) if run % 2 == 0 else list(arms)[::-1]
        for slide in args.slides:
            for arm in order:
                results[slide.name, arm].append(measure(arms[arm], slide))
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load:.1f} before and {os.getloadavg()[0]:.1f} after; {args.runs} runs"
    )
    print("| slide | arm | imports s | open + read s | process s | dask/zarr loaded |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for slide in args.slides:
        med = {}
        for arm in arms:
            rows = results[slide.name, arm]
            med[arm] = {
                k: statistics.median(r[k] for r in rows)
                for k in ("imports_s", "open_read_s", "process_s")
            }
            loaded = ", ".join(rows[0]["loaded"]) or "none"
            m = med[arm]
            print(
                f"| {slide.name} | {arm} | {m['imports_s']:.3f} | {m['open_read_s']:.3f} | "
                f"{m['process_s']:.3f} | {loaded} |"
            )
        ratio = {k: med["before"][k] / med["after"][k] for k in med["after"]}
        print(
            f"| {slide.name} | before / after | {ratio['imports_s']:.2f}x | "
            f"{ratio['open_read_s']:.2f}x | {ratio['process_s']:.2f}x | |"
        )


if __name__ == "__main__":
    main()
