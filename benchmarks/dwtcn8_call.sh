#!/bin/bash
# Session 8 depthwise device calls (helper dwtcn8).
#   CALL=1: build, the forward and NCW A/B in one process (dwtcn8_ab.py), the forward variants against float64
#           (dw_fwd_variants_check.py), the backward A/B. (Call 1 ran this at commit 1a4cd34, when the A/B's
#           variant lists still held the ring kernel, order 1 and a grid cap; they are gone from the code since.)
#   CALL=2 (default): build, the new defaults against session 7's in one process (forward and backward, bits
#           and timings, XLA's forward beside them), then the backward sweep's depthwise cases against float64.
#           (Call 2's cold build took 145 s and the 180 s limit ended the run as the sweep started.)
#   OUT=$OUT CALL=2 bash benchmarks/dwtcn8_call.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ROOT=$(pwd)
t0=$(date +%s)
stamp() { echo "== $1 at $(( $(date +%s) - t0 )) s"; }
SKIP_BUILD=${SKIP_BUILD:-0} bash benchmarks/device_run.sh > "$OUT/build_step.log" 2>&1 || { tail -40 "$OUT/build_step.log"; exit 1; }
cat "$OUT/build_step.log"
cd /tmp
if [ "${CALL:-2}" = 1 ]; then
  stamp fwd-ab
  timeout ${FWD_S:-45} python3 "$ROOT/benchmarks/dwtcn8_ab.py" --parts fwd ncw --rounds 2 \
    --fwd-cases depthwise_tcn mamba_dw_causal sweep/002 --xla --json "$OUT/ab_fwd.json" > "$OUT/ab_fwd.log" 2>&1
  echo "fwd-ab exit $?"; grep -v "Delay kernel" "$OUT/ab_fwd.log" | cut -c1-230
  stamp check
  timeout ${CHECK_S:-22} python3 "$ROOT/benchmarks/dw_fwd_variants_check.py" --count ${CHECK_COUNT:-3} > "$OUT/check_variants.log" 2>&1
  echo "check exit $?"; grep -E "FAIL|passed|configurations|    " "$OUT/check_variants.log" | head -20
  stamp bwd-ab
  timeout ${BWD_S:-38} python3 "$ROOT/benchmarks/dwtcn8_ab.py" --parts bwd --rounds 2 --xla \
    --json "$OUT/ab_bwd.json" > "$OUT/ab_bwd.log" 2>&1
  echo "bwd-ab exit $?"; grep -v "Delay kernel" "$OUT/ab_bwd.log" | cut -c1-330
else
  stamp ab
  timeout ${AB_S:-50} python3 "$ROOT/benchmarks/dwtcn8_ab.py" --parts fwd bwd --rounds 2 \
    --fwd-cases depthwise_tcn mamba_dw_causal depthwise_tcn_n8 depthwise_tcn_n4 \
    --xla fwd:depthwise_tcn fwd:mamba_dw_causal --json "$OUT/ab.json" > "$OUT/ab.log" 2>&1
  echo "ab exit $?"; grep -v "Delay kernel" "$OUT/ab.log" | cut -c1-330
  stamp bwd-check
  JAX_CONV1D_TRACE_BWD=1 timeout ${CHECK_S:-25} python3 "$ROOT/benchmarks/bwd_check.py" --sweep --quick \
    --only ${BWD_ONLY:-16,17} > "$OUT/bwd_sweep.log" 2>&1
  echo "bwd sweep exit $?"; grep -E "FAIL|ERROR|Error|sweep:|ok" "$OUT/bwd_sweep.log" | grep -v "^  running" | head -30
  grep "^jax_conv1d " "$OUT/bwd_sweep.log" | sort | uniq -c
fi
stamp end
