#!/bin/bash
# Session 8, helper sweep8: one device call = build, the 48-configuration sweep (forward and backward, XLA in
# the same process), then the named rows again over several rounds, all under one time limit (LIMIT seconds
# from the start). Run from the repository root with OUT set. Steps: TESTS="tests/x.py ..." runs pytest first;
# SWEEP=1 (default) runs the bench; ROWS="sweep/018 ..."
# runs benchmarks/sweep_rows.py on them (ROWS_ARGS); CHECKS="bwd fwd" runs the correctness sweeps last.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ROOT=$(pwd); T0=$(date +%s); LIMIT=${LIMIT:-232}
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
bash benchmarks/device_run.sh 2>&1 | tee "$OUT/build_step.log"
cd /tmp
if [ -n "$TESTS" ]; then  # pytest node ids or paths, relative to the repository root
  paths=""; for t in $TESTS; do paths="$paths $ROOT/$t"; done
  timeout ${TEST_TIMEOUT:-40} python3 -P -m pytest -q -p no:cacheprovider $paths 2>&1 | tee "$OUT/pytest.log" | tail -8
  echo "tests exit $? at $(( $(date +%s) - T0 )) s"
fi
if [ "${SWEEP:-1}" = 1 ]; then
  t=$(( $(left) - ${ROWS_RESERVE:-30} )); echo "sweep bench: $t s allowed"
  timeout $t python3 -m jax_conv1d.bench --cases 'sweep/*' ${SWEEP_ARGS} --no-scratch --json "$OUT/sweep.json" \
    > "$OUT/sweep.log" 2>&1
  echo "sweep bench exit $? at $(( $(date +%s) - T0 )) s"; grep -E "^sweep |^device" "$OUT/sweep.log"
fi
if [ -n "$ROWS" ]; then
  t=$(( $(left) - ${CHECK_RESERVE:-2} )); echo "rows: $t s allowed"
  timeout $t python3 "$ROOT/benchmarks/sweep_rows.py" ${ROWS_ARGS} $ROWS 2>&1 | tee "$OUT/rows.log"
  echo "rows exit $? at $(( $(date +%s) - T0 )) s"
fi
for c in $CHECKS; do
  t=$(( $(left) - 2 )); [ $t -lt 5 ] && break
  case $c in
    bwd) JAX_CONV1D_TRACE_BWD=1 timeout $t python3 "$ROOT/benchmarks/bwd_check.py" --sweep ${BWD_SWEEP} > "$OUT/bwd_sweep.log" 2>&1
         echo "bwd sweep exit $?"; grep -E "FAIL|ERROR|Error|sweep:" "$OUT/bwd_sweep.log" | head -20 ;;
    fwd) timeout $t python3 "$ROOT/benchmarks/fwd_check.py" --count "${CHECK_COUNT:-0}" ${FWD_CHECK_ARGS} > "$OUT/check.log" 2>&1
         echo "fwd check exit $?"; grep -E "FAIL|passed|^\.\.\." "$OUT/check.log" | tail -5 ;;
  esac
done
echo "done at $(( $(date +%s) - T0 )) s"
