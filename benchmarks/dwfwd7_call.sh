#!/bin/bash
# Session 7 depthwise-forward device call: build, forward check with the new tile / buffers / hint, the
# variants timed in one process (dw_fwd_diag.py), the bench rows, and ncu of the depthwise kernel.
#   OUT=$OUT bash benchmarks/dwfwd7_call.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ROOT=$(pwd)
t0=$(date +%s)
SKIP_BUILD=${SKIP_BUILD:-0} bash benchmarks/device_run.sh > "$OUT/build_step.log" 2>&1 || { tail -40 "$OUT/build_step.log"; exit 1; }
cat "$OUT/build_step.log"
cd /tmp
stamp() { echo "== $1 at $(( $(date +%s) - t0 )) s"; }
stamp check
JAX_CONV1D_DW_TILE=256 JAX_CONV1D_DW_OUT_BUFS=2 JAX_CONV1D_DW_STORE_HINT=1 timeout ${CHECK_S:-40} \
  python3 "$ROOT/benchmarks/fwd_check.py" --depthwise --count ${CHECK_COUNT:-16} --seed 71 > "$OUT/check_new.log" 2>&1
echo "check exit $?"; grep -v "^   ok" "$OUT/check_new.log" | tail -15
stamp diag
timeout ${DIAG_S:-60} python3 "$ROOT/benchmarks/dw_fwd_diag.py" ${DIAG_CASES} > "$OUT/diag.log" 2>&1
echo "diag exit $?"; cat "$OUT/diag.log" | grep -v "^  " | tail -60; grep -c "^  " "$OUT/diag.log"
stamp profile
for variant in "128" "256 2"; do
  set -- $variant
  JAX_CONV1D_DW_TILE=$1 JAX_CONV1D_DW_OUT_BUFS=${2:-1} XLA_PYTHON_CLIENT_PREALLOCATE=false timeout ${NCU_S:-30} \
    ncu --kernel-name regex:depthwise --launch-skip 1 --launch-count 3 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy \
    python3 "$ROOT/benchmarks/fwd_profile.py" depthwise_tcn mamba_dw_causal > "$OUT/ncu_$1.txt" 2>&1
  echo "ncu $variant exit $?"
done
stamp end
