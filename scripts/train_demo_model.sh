#!/usr/bin/env bash
# Reproduce the embedded default model, src/napari_mrplip/models/weights/mrplip-demo/.
#
# Trains mrplip-tiny with `mrplip pretrain` on CPU on the real public tissue in
# ../shared/data (CMU-1 H&E, OS-2 Ki67 IHC) and scikit-image's IHC image, with captions from the
# offline StainCaptioner; OS-1 is held out for scripts/eval_demo_model.py. Then exports OUT/final
# in float16 into the package. About 15-25 minutes on 1 CPU thread of a shared 2-core machine.
#
# Environment: CONFIG (mrplip-tiny; mrplip-tiny-dense adds dense token alignment), MAX_STEPS (200), THREADS (1), SLIDES (space-separated; default below), DEST (where
# the float16 export goes; default: the package).
#
# Usage: scripts/train_demo_model.sh [OUT_DIR]   (default runs/mrplip-demo; pass --resume as
#        the second argument to continue an interrupted run)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MRPLIP_SHARED_DATA:-../shared/data}
OUT=${1:-runs/mrplip-demo}
PY=${PYTHON:-.venv/bin/python}
DEST=${DEST:-src/napari_mrplip/models/weights/mrplip-demo}
SLIDES=${SLIDES:-"$DATA/CMU-1-Small-Region.svs $DATA/OS-2-ndpi.ome.tif skimage:immunohistochemistry"}

"$PY" -m napari_mrplip.train \
    --config "${CONFIG:-mrplip-tiny}" \
    --slides $SLIDES \
    --out "$OUT" \
    --magnifications 10 20 --children-per-parent 2 --tile-px 112 --parents-per-slide 100 \
    --batch-size 8 --max-steps "${MAX_STEPS:-200}" --lr 5e-4 --warmup-steps 20 \
    --checkpoint-every 50 --seed 0 --device cpu --threads "${THREADS:-1}" --no-register ${2:-}

"$PY" - "$OUT/final" "$DEST" <<'PYEOF'
import sys
from napari_mrplip.models.checkpoint import load_model, save_model
save_model(load_model(sys.argv[1]), sys.argv[2], dtype="float16")
import shutil, pathlib
v = pathlib.Path(sys.argv[1]) / "vocabulary.json"
if v.is_file():
    shutil.copy(v, pathlib.Path(sys.argv[2]) / "vocabulary.json")  # the training vocabulary
print("exported", sys.argv[1], "->", sys.argv[2], "(float16)")
PYEOF
