"""Before/after: run one benchmark against two revisions of the package, side by side in one run.

The benchmark script is the working tree's and only the imported package differs
(``PYTHONPATH`` points at ``src/`` of each revision, the base exported with ``git archive``),
unless ``--own-script`` runs each revision's own copy of the benchmark (when its API changed). Runs alternate
(base, head, head, base, …) so drift in machine load falls on both arms alike. Every numeric
figure the benchmark writes to ``--json`` is reported as the median over rounds and as a speed
ratio head/base (> 1: head is faster; rates are divided, times inverted).

On a shared machine the load drifts between runs by more than the differences sought. With
``--arm A --ref-arm R`` each run's time of arm ``A`` is first divided by the time of a
reference arm ``R`` that does not depend on the package (e.g. OpenSlide), measured interleaved
in the same run; the drift cancels and what is compared is ``R / A`` before and after. Usage::

    python benchmarks/compare_revisions.py --base 3947a22 --rounds 3 -- \\
        benchmarks/bench_io.py --reps 60 --no-who
    python benchmarks/compare_revisions.py --own-script --stdout-json --base-args "--threads 1" \
        -- benchmarks/bench_heatmap.py --only core --threads 1
    python benchmarks/compare_revisions.py --arm ours --ref-arm openslide --match median -- \
        benchmarks/bench_io.py --reps 60 --no-who
    python benchmarks/compare_revisions.py --base 3947a22 --rounds 3 -- \\
        benchmarks/bench_train.py --slides src/napari_mrplip/_napari/sample/CMU-1-Small-Region.svs

Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export_revision(rev: str, dest: Path) -> Path:
    """``src/`` (and ``benchmarks/``) of ``rev`` under ``dest`` (``git archive``; the work tree
    is not touched); returns the ``src`` folder."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src", "benchmarks"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    shared = ROOT.parent / "shared"  # older benchmarks find their slides beside the checkout
    if shared.is_dir() and not (dest.parent / "shared").exists():
        (dest.parent / "shared").symlink_to(shared)
    return dest / "src"


def flatten(obj, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON value; rows of a list are named by their text fields."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= flatten(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            tag = (
                " | ".join(str(x) for x in v.values() if isinstance(x, str))
                if isinstance(v, dict)
                else ""
            )
            if isinstance(v, dict):
                v = {k: x for k, x in v.items() if not isinstance(x, str)}
            out |= flatten(v, f"{prefix}{tag or i}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = float(obj)
    return out


def run_once(script: list[str], src: Path, out: Path, stdout_json: bool) -> dict[str, float]:
    """One benchmark run with ``src`` first on ``PYTHONPATH``; its JSON flattened.

    The JSON is the file the benchmark writes to ``--json``, or with ``stdout_json`` the first
    JSON object it prints (kept in ``out`` as well).
    """
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, *script, *([] if stdout_json else ["--json", str(out)])]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with PYTHONPATH={src}:\n{proc.stderr[-3000:]}")
    if stdout_json:
        text = proc.stdout[proc.stdout.index("{") :]
        out.write_text(json.dumps(json.JSONDecoder().raw_decode(text)[0], indent=2))
    return flatten(json.loads(out.read_text()))


def speed_ratio(key: str, base: float, head: float) -> float | None:
    """head/base speed: rates divide, times (``_ms``, ``_s`` suffix) invert; else ``None``."""
    if base == 0 or head == 0:
        return None
    if key.endswith(("_per_s", "tiles_s", "samples_s")):
        return head / base
    if key.endswith(("_ms", "time_s", "seconds")):
        return base / head
    return None


def relative(run: dict[str, float], arm: str, ref: str) -> dict[str, float]:
    """``ref / arm`` for each figure named ``"… | <arm>.<field>"`` that has a ``ref`` twin."""
    out = {}
    for k, v in run.items():
        twin = k.replace(f"| {arm}.", f"| {ref}.")
        if f"| {arm}." in k and twin in run and v > 0:
            out[k.replace(f"| {arm}.", f"| {arm} speed vs {ref} (") + ")"] = run[twin] / v
    return out


def table(runs: dict[str, list[dict]], match: str) -> None:
    """Markdown rows: figure, base median, head median, head speed vs base."""
    print(
        "\n| figure | base (median) | head (median) | head vs base |\n| --- | ---: | ---: | ---: |"
    )
    keys = [k for k in runs["head"][0] if k in runs["base"][0] and match in k]
    for k in keys:
        b = statistics.median(x[k] for x in runs["base"])
        h = statistics.median(x[k] for x in runs["head"])
        ratio = h / b if " speed vs " in k and b else speed_ratio(k, b, h)
        print(f"| {k} | {b:.4g} | {h:.4g} | {'' if ratio is None else f'{ratio:.2f}x'} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="3947a22", help="the 'before' revision [3947a22]")
    ap.add_argument("--rounds", type=int, default=3, help="runs per arm [3]")
    ap.add_argument("--match", default="", help="report only keys containing this text")
    ap.add_argument("--arm", default=None, help="rows named '… | ARM.…' are also reported …")
    ap.add_argument("--ref-arm", default=None, help="… as speed relative to this arm, per run")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="report the runs already in this folder (base-R.json, head-R.json)")  # fmt: skip
    ap.add_argument(
        "--own-script",
        action="store_true",
        help="the base runs its own copy of the benchmark (its arguments: --base-args)",
    )
    ap.add_argument(
        "--base-args",
        default=None,
        help="with --own-script: the base's arguments, one string [the head's]",
    )
    ap.add_argument(
        "--stdout-json",
        action="store_true",
        help="read the first JSON object the benchmark prints (it has no --json)",
    )
    ap.add_argument("script", nargs=argparse.REMAINDER, help="-- benchmark.py [its arguments]")
    args = ap.parse_args(argv)
    script = [a for a in args.script if a != "--"] or ap.error("name a benchmark after --")
    if args.reuse:
        runs = {a: [flatten(json.loads(p.read_text())) for p in sorted(args.reuse.glob(f"{a}-*.json"))]
                for a in ("base", "head")}  # fmt: skip
        return report(runs, args, script)
    work = Path(tempfile.mkdtemp(prefix="mrplip-revs-"))
    print(f"runs are kept in {work}", file=sys.stderr)
    arms = {"base": export_revision(args.base, work / "base"), "head": ROOT / "src"}
    scripts = {"base": script, "head": script}
    if args.own_script:
        base_args = script[1:] if args.base_args is None else args.base_args.split()
        scripts["base"] = [str(work / "base" / script[0]), *base_args]
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    for r in range(args.rounds):
        order = ("base", "head") if r % 2 == 0 else ("head", "base")
        for arm in order:
            out = work / f"{arm}-{r}.json"
            runs[arm].append(run_once(scripts[arm], arms[arm], out, args.stdout_json))
            print(f"round {r + 1}/{args.rounds} {arm} done", file=sys.stderr)
    return report(runs, args, script)


def report(runs: dict[str, list[dict]], args, script: list[str]) -> int:
    """Print the header and the tables for ``runs`` (``{"base": [...], "head": [...]}``)."""
    head_rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"{' '.join(script)}: base {args.base} vs head {head_rev}, {len(runs['base'])} rounds "
          f"each; {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} "
          "at the end")  # fmt: skip
    table(runs, args.match)
    if args.arm and args.ref_arm:
        rel = {a: [relative(r, args.arm, args.ref_arm) for r in rs] for a, rs in runs.items()}
        table(rel, args.match)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
