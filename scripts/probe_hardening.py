"""Hostile-but-fair user probe (issue 10): run many misuse cases and count the outcomes.

Run:  PYTHONPATH=src .venv/bin/python scripts/probe_hardening.py [--json OUT.json]

Every input is generated in a temporary folder (tests/hardening_util.py). Each case runs as
a subprocess under a timeout and an address-space limit and is classified as one of:

- ``worked``: exit 0 where the case should work, and its check of the result passed;
- ``clean error``: non-zero exit, a message, no traceback (where the case should fail);
- ``silently accepted``: exit 0 where the input should have been refused;
- ``traceback``: a Python traceback on stderr;
- ``hang``: killed at the timeout (or by the memory limit);
- ``silent wrong``: exit 0 but the result check failed;
- ``data loss``: an input (or an existing file not meant to be replaced) changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hardening_util import (  # noqa: E402
    boxes_geojson,
    code_pickle,
    declared_tiff,
    digests,
    run_cli,
    write_json,
    write_slide,
)

P = ["--prompt", "tumour", "--background", "background"]
TINY = {
    "name": "probe", "embed_dim": 64, "image_size": 32, "context_length": 48,
    "keyword_context_length": 8,
    "vision": {"kind": "vit", "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text": {"layers": 1, "width": 64, "heads": 2}, "fusion": {"layers": 1, "width": 64, "heads": 2},
    "mrtva": {"proj_dim": 64, "pred_dim": 32},
}  # fmt: skip


def setup(d: Path) -> None:
    """The inputs every case starts from (copied afresh into each case's folder)."""
    import numpy as np
    import tifffile

    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.config import MRPLIPConfig
    from napari_mrplip.models.mrplip import MRPLIP

    write_slide(d / "a.ome.tif", 1)
    write_slide(d / "b.ome.tif", 2)
    write_json(d / "a.geojson", boxes_geojson())
    write_json(d / "ids.geojson", boxes_geojson(ids=True))
    declared_tiff(d / "huge.tif", 2**31 - 1, 2**31 - 1)
    declared_tiff(d / "huget.tif", 2**31 - 1, 2**31 - 1, tiled=True)
    declared_tiff(d / "thin.tif", 100_000, 100_000)
    (d / "trunc.ome.tif").write_bytes((d / "a.ome.tif").read_bytes()[:5000])
    (d / "empty.svs").write_bytes(b"")
    (d / "text.tif").write_text("not a tiff")
    stack = np.random.default_rng(0).integers(0, 255, (3, 300, 400, 3), dtype=np.uint8)
    tifffile.imwrite(d / "stack.tif", stack, photometric="rgb")
    (d / "bad.geojson").write_text('{"type": "FeatureCollection", "features": [')
    write_json(d / "points.geojson", {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]},
         "properties": {}}]})  # fmt: skip
    write_json(d / "tiny.json", TINY)
    save_model(MRPLIP(MRPLIPConfig.from_dict(TINY)), d / "tiny")
    _model_variant(d, "bigtower", lambda c: c["vision"].update(layers=40, width=2048))
    _model_variant(d, "widthe9", lambda c: c["vision"].update(width=10**9))
    _model_variant(d, "patch0", lambda c: c["vision"].update(patch_size=0))
    _model_variant(d, "strtype", lambda c: c.update(embed_dim="wide"))
    plip = d / "plip"
    plip.mkdir()
    write_json(plip / "config.json", {"model_type": "clip", "architectures": ["CLIPModel"]})
    (plip / "pytorch_model.bin").write_bytes(code_pickle(d / "PWNED"))
    conch = d / "conch"
    conch.mkdir()
    (conch / "conch_byte_level_bpe_uncased.json").write_text('{"model": {"type": "BPE", "vo')
    (conch / "pytorch_model.bin").write_bytes(b"junk")
    (conch / "meta.yaml").write_text("model: conch\n")
    (d / "keep.zarr").mkdir()
    (d / "keep.zarr" / "precious.txt").write_text("user data")


def _model_variant(d: Path, name: str, edit) -> None:
    shutil.copytree(d / "tiny", d / name)
    cfg = json.loads((d / name / "mrplip_config.json").read_text())
    edit(cfg)
    write_json(d / name / "mrplip_config.json", cfg)


CASES: list[tuple[str, list[str], str, object]] = [
    # (name, argv, expect "ok"|"error", check(folder) for ok cases)
    ("heatmap one slide", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif"], "ok",
     lambda f: (f / "h.ome.tif").stat().st_size > 0),
    ("heatmap zarr", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.zarr"], "ok",
     lambda f: (f / "h.ome.zarr" / "zarr.json").exists()),
    ("heatmap --out . over slides", ["heatmap", "a.ome.tif", "b.ome.tif", *P, "--out", ".",
                                     "--geojson", "0.5"], "error", None),
    ("heatmap --out slide", ["heatmap", "a.ome.tif", *P, "--out", "a.ome.tif"], "error", None),
    ("heatmap --out other input", ["heatmap", "a.ome.tif", "b.ome.tif", *P, "--out", "b.ome.tif"],
     "error", None),
    ("heatmap --out existing zarr folder", ["heatmap", "a.ome.tif", *P, "--out", "keep.zarr"],
     "error", None),
    ("heatmap --out existing + --overwrite", ["heatmap", "a.ome.tif", *P, "--out", "keep.zarr",
                                              "--overwrite"], "ok",
     lambda f: (f / "keep.zarr" / "zarr.json").exists()),
    ("heatmap --out result.png", ["heatmap", "a.ome.tif", *P, "--out", "result.png"], "error", None),
    ("heatmap batch with bad slide", ["heatmap", "a.ome.tif", "huge.tif", "b.ome.tif", *P,
                                      "--out", "out"], "partial",
     lambda f: (f / "out" / "a.ome.tif").exists() and (f / "out" / "b.ome.tif").exists()),
    ("heatmap geojson in out dir", ["heatmap", "a.ome.tif", *P, "--out", "o", "--geojson", "0.5"],
     "ok", lambda f: (f / "o" / "a.geojson").exists()),
    ("heatmap huge declared", ["heatmap", "huget.tif", *P, "--out", "h.ome.tif"], "error", None),
    ("heatmap overlap 0.999", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--overlap",
                               "0.999"], "error", None),
    ("heatmap overlap 0.99", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--overlap",
                              "0.99"], "error", None),
    ("heatmap overlap 1", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--overlap", "1"],
     "error", None),
    ("heatmap overlap -0.5", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--overlap",
                              "-0.5"], "error", None),
    ("heatmap overlap 0.5", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--overlap", "0.5"],
     "ok", lambda f: (f / "h.ome.tif").exists()),
    ("heatmap max-tiles 3", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--max-tiles", "3"],
     "error", None),
    *[(f"heatmap --mpp {v}", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--mpp", v],
       "error", None) for v in ("0", "-1", "1e9", "nan", "inf", "abc")],
    *[(f"heatmap --slide-mpp {v}", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif",
                                    "--slide-mpp", v], "error", None) for v in ("0", "-2")],
    *[(f"heatmap --device {v}", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--device", v],
       "error", None) for v in ("tpu", "cuda:7", "gpu")],
    *[(f"heatmap --batch-size {v}", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif",
                                     "--batch-size", v], "error", None) for v in ("0", "-5", "1.5")],
    ("heatmap --workers 0", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--workers", "0"],
     "error", None),
    ("heatmap --geojson 2", ["heatmap", "a.ome.tif", *P, "--out", "h.ome.tif", "--geojson", "2"],
     "error", None),
    ("heatmap no prompt", ["heatmap", "a.ome.tif", "--out", "h.ome.tif"], "error", None),
    ("heatmap one prompt softmax", ["heatmap", "a.ome.tif", "--prompt", "x", "--out", "h.ome.tif"],
     "error", None),
    ("heatmap missing slide", ["heatmap", "nope.svs", *P, "--out", "h.ome.tif"], "error", None),
    ("heatmap empty file", ["heatmap", "empty.svs", *P, "--out", "h.ome.tif"], "error", None),
    ("heatmap truncated slide", ["heatmap", "trunc.ome.tif", *P, "--out", "h.ome.tif"], "error",
     None),
    ("heatmap big tower model", ["heatmap", "a.ome.tif", *P, "--model", "bigtower", "--out",
                                 "h.ome.tif"], "error", None),
    ("heatmap width 1e9 model", ["heatmap", "a.ome.tif", *P, "--model", "widthe9", "--out",
                                 "h.ome.tif"], "error", None),
    ("heatmap patch 0 model", ["heatmap", "a.ome.tif", *P, "--model", "patch0", "--out",
                               "h.ome.tif"], "error", None),
    ("heatmap str-typed model", ["heatmap", "a.ome.tif", *P, "--model", "strtype", "--out",
                                 "h.ome.tif"], "error", None),
    ("heatmap PLIP code pickle", ["heatmap", "a.ome.tif", *P, "--model", "plip", "--out",
                                  "h.ome.tif"], "error", None),
    ("heatmap CONCH bad tokenizer", ["heatmap", "a.ome.tif", *P, "--model", "conch", "--out",
                                     "h.ome.tif"], "error", None),
    ("heatmap missing model dir", ["heatmap", "a.ome.tif", *P, "--model", "nodir", "--out",
                                   "h.ome.tif"], "error", None),
    ("info slide", ["info", "a.ome.tif"], "ok", None),
    ("info huge strip", ["info", "huge.tif"], "error", None),
    ("info huge tiled", ["info", "huget.tif"], "error", None),
    ("info thin", ["info", "thin.tif"], "error", None),
    ("info multipage", ["info", "stack.tif"], "any", None),
    ("info text as tif", ["info", "text.tif"], "error", None),
    ("info empty", ["info", "empty.svs"], "error", None),
    ("info truncated", ["info", "trunc.ome.tif"], "error", None),
    ("info folder", ["info", "tiny"], "error", None),
    ("review", ["review", "a.geojson", "--slide", "a.ome.tif"], "ok", None),
    ("review --out new", ["review", "a.geojson", "--slide", "a.ome.tif", "--out", "r.geojson"],
     "ok", lambda f: json.loads((f / "r.geojson").read_text())["features"]),
    ("review --out slide", ["review", "a.geojson", "--slide", "a.ome.tif", "--out", "a.ome.tif"],
     "error", None),
    ("review --out annotations", ["review", "a.geojson", "--slide", "a.ome.tif", "--out",
                                  "a.geojson"], "error", None),
    ("review --out existing", ["review", "a.geojson", "--slide", "a.ome.tif", "--out",
                               "ids.geojson"], "error", None),
    ("review --device cuda", ["review", "a.geojson", "--slide", "a.ome.tif", "--device", "cuda"],
     "error", None),
    ("review --max-tiles 0", ["review", "a.geojson", "--slide", "a.ome.tif", "--max-tiles", "0"],
     "error", None),
    *[(f"review --min-coverage {v}", ["review", "a.geojson", "--slide", "a.ome.tif",
                                      "--min-coverage", v], "error", None) for v in ("1.5", "-1")],
    ("review --mpp 0", ["review", "a.geojson", "--slide", "a.ome.tif", "--mpp", "0"], "error", None),
    ("review bad json", ["review", "bad.geojson", "--slide", "a.ome.tif"], "error", None),
    ("review points only", ["review", "points.geojson", "--slide", "a.ome.tif"], "error", None),
    ("review huge slide", ["review", "a.geojson", "--slide", "huge.tif"], "error", None),
    ("review PLIP code pickle", ["review", "a.geojson", "--slide", "a.ome.tif", "--model", "plip"],
     "error", None),
    ("embed", ["embed", "a.ome.tif", "--cache", "c"], "ok", lambda f: (f / "c").is_dir()),
    ("embed overlap 0.999", ["embed", "a.ome.tif", "--cache", "c", "--overlap", "0.999"], "error",
     None),
    ("embed bad slide among good", ["embed", "a.ome.tif", "huge.tif", "--cache", "c"], "partial",
     lambda f: (f / "c").is_dir()),
    ("pretrain bad config type", ["pretrain", "--config", "tiny/../strtype/mrplip_config.json",
                                  "--slides", "a.ome.tif", "--out", "run"], "error", None),
    ("pretrain resume nothing", ["pretrain", "--out", "run", "--resume"], "error", None),
    ("pretrain --out is a file", ["pretrain", "--config", "tiny.json", "--slides", "a.ome.tif",
                                  "--out", "a.geojson"], "error", None),
    ("finetune --out the model", ["finetune", "--model", "tiny", "--stain-labels", "a.ome.tif",
                                  "--out", "tiny"], "error", None),
    ("finetune --batch-size 0", ["finetune", "--model", "tiny", "--stain-labels", "a.ome.tif",
                                 "--out", "ft", "--batch-size", "0"], "error", None),
]  # fmt: skip


def classify(name, argv, expect, check, base: Path, work: Path) -> dict:
    case = work / name.replace(" ", "_").replace("/", "_")
    shutil.copytree(base, case, symlinks=True)
    before = digests(case)
    run = run_cli(argv, case, timeout=240)
    after = digests(case)
    changed = [k for k in before if after.get(k) != before[k]]
    allowed = {"keep.zarr/precious.txt"} if "--overwrite" in argv else set()
    if run.timed_out or run.rc in (-9, 137):
        outcome = "hang"
    elif [c for c in changed if c not in allowed] or (base / "PWNED").exists() or (
        case / "PWNED"
    ).exists():
        outcome = "data loss"
    elif "Traceback" in run.stderr:
        outcome = "traceback"
    elif run.rc == 0 and expect == "error":
        outcome = "silently accepted"
    elif run.rc == 0 or (expect == "partial" and run.rc == 1) or expect == "any":
        ok = check is None or bool(check(case))
        outcome = "worked" if ok else "silent wrong"
        if expect == "any" and run.rc != 0:
            outcome = "clean error" if run.clean_error else "traceback"
    else:
        outcome = "clean error" if run.clean_error else "traceback"
    shutil.rmtree(case, ignore_errors=True)
    return {"case": name, "expect": expect, "rc": run.rc, "outcome": outcome,
            "seconds": round(run.seconds, 1), "max_rss_mb": run.max_rss_bytes // 2**20,
            "message": run.stderr.strip().splitlines()[-1][:200] if run.stderr.strip() else ""}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write every case's record here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base, work = Path(tmp) / "base", Path(tmp) / "work"
        base.mkdir()
        work.mkdir()
        setup(base)
        records = []
        for name, argv, expect, check in CASES:
            rec = classify(name, argv, expect, check, base, work)
            records.append(rec)
            print(f"{rec['outcome']:<18} {rec['seconds']:>6.1f}s {rec['max_rss_mb']:>5} MB  "
                  f"{name}: {rec['message'][:90]}", flush=True)  # fmt: skip
    counts = Counter(r["outcome"] for r in records)
    order = ["worked", "clean error", "silently accepted", "traceback", "hang", "silent wrong",
             "data loss"]  # fmt: skip
    print("\n" + ", ".join(f"{k}: {counts.get(k, 0)}" for k in order) + f" (of {len(records)})")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "cases": records}, indent=1))
    return 0 if sum(counts.get(k, 0) for k in order[2:]) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
