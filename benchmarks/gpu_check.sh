#!/usr/bin/env bash
# GPU figures in one prepared run (fits in about 6 minutes on one H200): the CUDA-marked tests,
# then benchmarks/bench_gpu.py (encoder sweep, heatmap engine, whole slide, training MFU).
# Everything goes to $OUT/gpu_check.json and $OUT/gpu_check.log (OUT defaults to ./gpu_out).
#
# Usage:  [SKIP_TESTS=1] benchmarks/gpu_check.sh [--dry-run] [--sections env,encoder,...]
#   --dry-run   CPU only, toy sizes: checks the script without a GPU.
#
# Packages the GPU machine lacks travel as .gpu/site.tar.xz (unpacked wheels, see
# docs/performance.md "GPU"); test slides as .gpu/data (set MRPLIP_SHARED_DATA otherwise).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
if [ -f .gpu/site.tar.xz ] && ! "$PY" -c "import zarr, open_clip, imagecodecs" 2>/dev/null; then
    mkdir -p /tmp/mrplip-site && tar -C /tmp/mrplip-site -xJf .gpu/site.tar.xz
    export PYTHONPATH=/tmp/mrplip-site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
[ -d .gpu/data ] && export MRPLIP_SHARED_DATA=${MRPLIP_SHARED_DATA:-$PWD/.gpu/data}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null
"$PY" -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== CUDA-marked tests"
[ -n "${SKIP_TESTS:-}" ] && echo "skipped (SKIP_TESTS)" || {
files=$(grep -l "mark.gpu" tests/*.py | tr '\n' ' ')
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu $files --junitxml="$OUT/pytest_gpu.xml" 2>&1 | tail -15
echo "pytest exit: ${PIPESTATUS[0]}"; }

echo "== benchmarks"
timeout "${BENCH_TIMEOUT:-420}" "$PY" benchmarks/bench_gpu.py --json "$OUT/gpu_check.json" "$@"
echo "bench exit: $?"
date -u
