#!/bin/bash
# Session 8 depthwise device call (helper dwtcn8): build, the forward and NCW A/B in one process
# (dwtcn8_ab.py), the forward variants against float64 (dw_fwd_variants_check.py), the backward A/B.
#   OUT=$OUT bash benchmarks/dwtcn8_call.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ROOT=$(pwd)
t0=$(date +%s)
stamp() { echo "== $1 at $(( $(date +%s) - t0 )) s"; }
SKIP_BUILD=${SKIP_BUILD:-0} bash benchmarks/device_run.sh > "$OUT/build_step.log" 2>&1 || { tail -40 "$OUT/build_step.log"; exit 1; }
cat "$OUT/build_step.log"
cd /tmp
stamp fwd-ab
timeout ${FWD_S:-45} python3 "$ROOT/benchmarks/dwtcn8_ab.py" --parts ${FWD_PARTS:-fwd ncw} --rounds ${ROUNDS:-2} \
  --json "$OUT/ab_fwd.json" > "$OUT/ab_fwd.log" 2>&1
echo "fwd-ab exit $?"; grep -v "Delay kernel" "$OUT/ab_fwd.log" | cut -c1-230
stamp check
timeout ${CHECK_S:-22} python3 "$ROOT/benchmarks/dw_fwd_variants_check.py" --count ${CHECK_COUNT:-3} > "$OUT/check_variants.log" 2>&1
echo "check exit $?"; grep -E "FAIL|passed|configurations|    " "$OUT/check_variants.log" | head -20; tail -1 "$OUT/check_variants.log"
stamp bwd-ab
timeout ${BWD_S:-38} python3 "$ROOT/benchmarks/dwtcn8_ab.py" --parts bwd --rounds ${ROUNDS:-2} \
  --json "$OUT/ab_bwd.json" > "$OUT/ab_bwd.log" 2>&1
echo "bwd-ab exit $?"; grep -v "Delay kernel" "$OUT/ab_bwd.log" | cut -c1-330
stamp end
