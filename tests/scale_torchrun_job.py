"""A torchrun job for the scale tests: manifest (counted captioner) then feature store.

Usage: torchrun --nproc_per_node N scale_torchrun_job.py OUT ENCODER KILL_AFTER SLIDE...
(KILL_AFTER < 0: no kill). Writes OUT/m.jsonl, OUT/store.zarr; captions logged to OUT/log.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_mrplip.scale.pipeline import build_feature_store, build_manifest_at_scale  # noqa: E402
from scale_helpers import CountingCaptioner  # noqa: E402


def main(out: str, encoder: str, kill_after: str, *slides: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    kill = int(kill_after)
    cap = CountingCaptioner(out_dir / "log", kill if kill >= 0 else None, str(out_dir / "flag"))
    build_manifest_at_scale(
        list(slides), out_dir / "m.jsonl", cap, backend="torchrun", device="cpu",
        batch_tiles=3, n_parents_per_slide=3, children_per_parent=1, tile_px=64,
    )  # fmt: skip
    build_feature_store(out_dir / "m.jsonl", out_dir / "store.zarr", encoder, backend="torchrun",
                        device="cpu", bags_per_shard=2)  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
