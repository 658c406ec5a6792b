#!/bin/bash
# sdw6's one device call: build (sm_90a), the route A/B on sweep/018, 042, 030, then the GPU phase tests.
ROOT=$(pwd)
OUT=$OUT bash benchmarks/device_run.sh 2>&1 | tail -5
cd /tmp
timeout ${AB_TIMEOUT:-120} python3 "$ROOT/benchmarks/bwd_route_ab.py" --budget 0.25 \
  --variants default,phase,phase/gemm,gemm/phase,ours/phase sweep/018 sweep/042 sweep/030 2>&1 | tee "$OUT/ab.log"
timeout ${TEST_TIMEOUT:-45} python3 -P -m pytest -v -p no:cacheprovider -k "gpu_lowers and phase" \
  "$ROOT/tests/test_gemm_backward.py" 2>&1 | grep -E "PASS|FAIL|ERROR|passed|failed|Error" | tee "$OUT/pytest.log" | tail -40
