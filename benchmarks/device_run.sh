#!/bin/bash
# One device session for the backward kernels: install (the prebuilt wheel in dist/ when it imports, else a
# build for sm_90a), then the correctness sweep and the timings. Usage, from the repository copy on the device:
#   bash benchmarks/device_run.sh "<sweep args>" "<bench args>"     (either may be "skip")
set -o pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
cd "$REPO"
if ls dist/*.whl >/dev/null 2>&1 && python3 -m pip install --no-deps --no-index --force-reinstall dist/*.whl \
    >"$OUT/build.log" 2>&1 && (cd /tmp && python3 -c "import jax_conv1d._cuda"); then
  echo "installed the prebuilt wheel"
else
  echo "building from source"
  python3 -m pip install --no-build-isolation --no-deps \
    --config-settings=cmake.define.JAX_CONV1D_CUDA_ARCHITECTURES=90a-real . >>"$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
cd /tmp
export PYTHONUNBUFFERED=1
echo "start $(date +%T)"
if [ "$1" != "skip" ]; then
  JAX_CONV1D_TRACE_BWD=1 python3 "$REPO/benchmarks/bwd_check.py" --sweep $1 >"$OUT/sweep.log" 2>&1
  echo "sweep exit $? at $(date +%T)"
  grep -E "FAIL|ERROR|Error|error|sweep:|^jax " "$OUT/sweep.log" | head -60
  grep -v "^jax_conv1d " "$OUT/sweep.log" | tail -4
  grep "^jax_conv1d " "$OUT/sweep.log" | sort | uniq -c
fi
if [ "$2" != "skip" ]; then
  python3 "$REPO/benchmarks/bwd_check.py" --bench $2 >"$OUT/bench.log" 2>&1
  echo "bench exit $? at $(date +%T)"
  grep -v "^  timing" "$OUT/bench.log" | tail -40
fi
