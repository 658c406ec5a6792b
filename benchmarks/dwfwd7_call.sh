#!/bin/bash
# Session 7 depthwise-forward device call: build, the tile variants against float64, the variants timed in one
# process (dw_fwd_diag.py), the bench rows (default and JAX_CONV1D_DW_TILE=64), the spread study.
#   OUT=$OUT bash benchmarks/dwfwd7_call.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ROOT=$(pwd)
t0=$(date +%s)
SKIP_BUILD=${SKIP_BUILD:-0} bash benchmarks/device_run.sh > "$OUT/build_step.log" 2>&1 || { tail -40 "$OUT/build_step.log"; exit 1; }
cat "$OUT/build_step.log"
cd /tmp
stamp() { echo "== $1 at $(( $(date +%s) - t0 )) s"; }
stamp check
timeout ${CHECK_S:-40} python3 "$ROOT/benchmarks/dw_fwd_variants_check.py" --count ${CHECK_COUNT:-16} > "$OUT/check_variants.log" 2>&1
echo "check exit $?"; grep -E "FAIL|passed|configurations" "$OUT/check_variants.log" | head -12; tail -1 "$OUT/check_variants.log"
stamp diag
timeout ${DIAG_S:-35} python3 "$ROOT/benchmarks/dw_fwd_diag.py" ${DIAG_CASES} > "$OUT/diag.log" 2>&1
echo "diag exit $?"; grep -v "^  " "$OUT/diag.log" | grep -v "Delay kernel" | tail -70
stamp bench
B="depthwise_tcn mamba_dw_causal sweep/002 sweep/029 sweep/045 sweep/013"
timeout ${BENCH_S:-30} python3 -m jax_conv1d.bench --cases $B --sweep 48 --no-backward --json "$OUT/bench.json" 2>&1 \
  | grep -v "Delay kernel" > "$OUT/bench.log"; echo "bench exit $?"; tail -12 "$OUT/bench.log"
stamp bench64
JAX_CONV1D_DW_TILE=64 timeout ${BENCH64_S:-20} python3 -m jax_conv1d.bench --cases depthwise_tcn mamba_dw_causal \
  --no-backward --json "$OUT/bench64.json" 2>&1 | grep -v "Delay kernel" > "$OUT/bench64.log"; echo "bench64 exit $?"; tail -5 "$OUT/bench64.log"
stamp spread
timeout ${SPREAD_S:-25} python3 "$ROOT/benchmarks/dw_fwd_spread.py" > "$OUT/spread.log" 2>&1
echo "spread exit $?"; grep -v "Delay kernel" "$OUT/spread.log" | cut -c1-220 | tail -45
stamp end
