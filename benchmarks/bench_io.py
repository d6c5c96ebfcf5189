"""Region-read benchmark: ours vs OpenSlide ``read_region`` vs raw imagecodecs decode.

One run, the same files and the same regions for every arm, arms interleaved (rotating order per
region), median and p90 in milliseconds. Run on demand, never in the test suite:

    .venv/bin/python benchmarks/bench_io.py [--workdir /tmp/mrplip-bench] [--reps 150] [--json F]

Files: a generated JPEG SVS-like slide and a JPEG-2000 (Aperio 33005) SVS-like slide, both
tiled 256 px with real IHC tissue tiles (scikit-image), and the real CMU-1-Small-Region.svs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from tifffile.tifffile import jpeg_decode_colorspace

from napari_mrplip.io import SlideOpenError, open_slide
from napari_mrplip.io.derived import block_mean, derived_source
from napari_mrplip.io.synthetic import write_synthetic_slide

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: The real H&E slide: ``../shared`` when it is there, else the copy shipped in the package.
CMU = SHARED / "CMU-1-Small-Region.svs"
if not CMU.is_file():
    CMU = Path(__file__).resolve().parents[1] / "src/napari_mrplip/_napari/sample" / CMU.name


def raw_decoder(page):
    """Decode one tile's bytes exactly as imagecodecs would, no TIFF/zarr/dask layer."""
    if page.compression == 7:
        cs, ocs = jpeg_decode_colorspace(
            page.photometric, page.planarconfig, page.extrasamples, page.is_jfif
        )
        tables = page.jpegtables
        return lambda b: imagecodecs.jpeg_decode(b, tables=tables, colorspace=cs, outcolorspace=ocs)
    return imagecodecs.jpeg2k_decode


def raw_region(fh, page, decode, x, y, w, h):
    """Decode every tile under the window (bytes already read into memory are not timed apart)."""
    tw, th = page.tilewidth, page.tilelength
    cols = -(-page.imagewidth // tw)
    for r in range(y // th, (y + h - 1) // th + 1):
        for c in range(x // tw, (x + w - 1) // tw + 1):
            i = r * cols + c
            fh.seek(page.dataoffsets[i])
            decode(fh.read(page.databytecounts[i]))


def _regions(rng, kind, width, height, tile, n):
    if kind == "aligned":
        return [
            (
                int(rng.integers(0, width // tile)) * tile,
                int(rng.integers(0, height // tile)) * tile,
                tile,
            )
            for _ in range(n)
        ]
    size = min(224 if kind == "unaligned224" else 2048, width - 4, height - 4)
    return [
        (
            int(rng.integers(1, width - size - 1)) | 1,
            int(rng.integers(1, height - size - 1)) | 1,
            size,
        )
        for _ in range(n)
    ]


def _native(slide) -> int:
    """Stored levels: the ``Slide.native_levels`` field (a metadata key before issue 9)."""
    n = getattr(slide, "native_levels", None)
    return int(n if n is not None else slide.metadata["native_levels"])


def _derived_arms(slide, osr, level) -> dict:
    """Extra arms at a built level: the dask graph (ours before) and OpenSlide at the same scale.

    OpenSlide has no level at a built level's downsample, so its arm reads the stored level's
    ``2**n`` times larger window and reduces it with the same block mean (what a caller would do).
    """
    source, n = derived_source([lv.shape for lv in slide.levels], _native(slide), level)
    lv, f = slide.levels[level], 1 << n
    arms = {"ours before (dask)": lambda x, y, s: np.asarray(lv[y : y + s, x : x + s].compute())}
    if source < osr.level_count:
        ods = osr.level_downsamples[source]

        def openslide_reduced(x, y, s):
            rgba = osr.read_region((int(x * f * ods), int(y * f * ods)), source, (s * f, s * f))
            return block_mean(np.asarray(rgba)[..., :3], n)

        arms["openslide"] = openslide_reduced
    return arms


def _arms(slide, osr, fh, page, level) -> dict:
    """Callables ``(x_level, y_level, size)`` for each arm that can read this level."""
    ds = slide.downsamples[level]
    arms = {"ours": lambda x, y, s: slide.read_region(int(x * ds), int(y * ds), s, s, level)}
    if level >= _native(slide):
        return arms | _derived_arms(slide, osr, level)
    if level < osr.level_count:
        ods = osr.level_downsamples[level]
        arms["openslide"] = lambda x, y, s: np.asarray(
            osr.read_region((int(x * ods), int(y * ods)), level, (s, s))
        )
    if page is not None:
        dec = raw_decoder(page)
        arms["raw decode"] = lambda x, y, s: raw_region(fh, page, dec, x, y, s, s)
    return arms


def _time_arms(arms: dict, regions: list) -> dict[str, list[float]]:
    """Milliseconds per call; arms rotate their order from one region to the next."""
    times = {a: [] for a in arms}
    names = list(arms)
    for k, (x, y, s) in enumerate(regions):
        for j in range(len(names)):
            arm = names[(k + j) % len(names)]
            t = time.perf_counter()
            arms[arm](x, y, s)
            times[arm].append((time.perf_counter() - t) * 1e3)
    return times


def bench_file(path: Path, reps: int, seed: int = 0) -> list[tuple]:
    """Rows (file, case, arm, median_ms, p90_ms, n) for one slide."""
    import openslide

    slide = open_slide(path)
    osr = openslide.OpenSlide(str(path))
    osr.set_cache(openslide.OpenSlideCache(0))  # no arm may answer from a cache of decoded tiles
    tf = tifffile.TiffFile(path)
    fh = open(path, "rb")  # noqa: SIM115
    rng = np.random.default_rng(seed)
    rows = []
    cases = [
        ("aligned", 0, reps),
        ("unaligned224", 0, reps),
        ("2048 L0", 0, max(5, reps // 15)),
        ("2048 L1", 1, max(5, reps // 15)),
    ]
    if _native(slide) == 1:  # level 1 is built: the derived-level fast path
        cases.append(("unaligned224 L1", 1, reps))
    for case, level, n in cases:
        native = _native(slide) > level
        page = tf.series[0].levels[level].pages[0] if native else None
        lw, lh = slide.levels[level].shape[1], slide.levels[level].shape[0]
        kind = case.split()[0] if case.startswith(("aligned", "unaligned224")) else "big"
        tile = page.tilewidth if page is not None else 256
        regions = _regions(rng, kind, lw, lh, tile, n)
        times = _time_arms(_arms(slide, osr, fh, page, level), regions)
        if kind == "big" and regions[0][2] != 2048:
            case = f"{case} ({regions[0][2]}² in bounds)"
        for arm, ts in times.items():
            ts = ts[1:] if len(ts) > 2 else ts  # drop the first (cold) read
            rows.append(
                (path.name, case, arm, statistics.median(ts), float(np.percentile(ts, 90)), len(ts))
            )
    slide.close(), osr.close(), tf.close(), fh.close()
    return rows


def who_reads(paths: list[Path]) -> list[tuple]:
    """(file, levels seen by ours, levels seen by OpenSlide or its error)."""
    import openslide

    out = []
    for p in paths:
        try:
            with open_slide(p) as s:
                ours = f"{_native(s)} native + {len(s.levels) - _native(s)} built"
        except SlideOpenError as e:
            ours = f"error: {e}"
        try:
            osr = openslide.OpenSlide(str(p))
            theirs = f"{osr.level_count} level(s)"
            osr.close()
        except openslide.OpenSlideError as e:
            theirs = f"cannot open ({type(e).__name__})"
        out.append((p.name, ours, theirs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/mrplip-bench"))
    ap.add_argument("--reps", type=int, default=150)
    ap.add_argument("--size", type=int, default=16384, help="level-0 side of the generated slides")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    ap.add_argument("--no-who", action="store_true", help="skip the who-reads-what table")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    jpeg = args.workdir / "svs_like_jpeg.svs"
    j2k = args.workdir / "svs_like_j2k.svs"
    ome = args.workdir / "pyramid.ome.tif"
    size = (args.size, args.size)
    for path, kind, codec in [
        (jpeg, "svs", "jpeg"),
        (j2k, "svs", "jpeg2000"),
        (ome, "ome", "jpeg"),
    ]:
        if not path.exists():
            write_synthetic_slide(path, size=size, kind=kind, codec=codec)
    files = [jpeg, j2k, CMU]
    print(
        f"load average before: {os.getloadavg()[0]:.1f}; machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, tifffile {tifffile.__version__}, imagecodecs {imagecodecs.__version__}"
    )
    print("\n| file | case | arm | median ms | p90 ms | n | vs OpenSlide | vs raw | vs before |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    report = []
    for f in files:
        rows = bench_file(f, args.reps)
        report += [dict(zip(("file", "case", "arm", "median_ms", "p90_ms", "n"), r)) for r in rows]
        med = {(r[1], r[2]): r[3] for r in rows}
        for name, case, arm, m, p90, n in rows:
            vs_os = (
                f"{med[(case, 'openslide')] / m:.2f}x"
                if (case, "openslide") in med and arm == "ours"
                else ""
            )
            vs_raw = (
                f"{m / med[(case, 'raw decode')]:.2f}"
                if (case, "raw decode") in med and arm == "ours"
                else ""
            )
            before = med.get((case, "ours before (dask)"))
            vs_before = f"{before / m:.1f}x" if before and arm == "ours" else ""
            print(
                f"| {name} | {case} | {arm} | {m:.2f} | {p90:.2f} | {n} | {vs_os} | {vs_raw} "
                f"| {vs_before} |"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.no_who:
        return
    print("\n| file | ours | OpenSlide |\n| --- | --- | --- |")
    for name, ours, theirs in who_reads(
        [
            ome,
            *(
                p
                for p in (SHARED / "OS-1-detail.ome.tif", SHARED / "OS-2-ndpi.ome.tif")
                if p.is_file()
            ),
            *files,
        ]
    ):
        print(f"| {name} | {ours} | {theirs} |")


if __name__ == "__main__":
    main()
