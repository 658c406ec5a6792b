#!/bin/bash
# compute-sanitizer racecheck on the backward sweep cases, one process per run, with the full hazard reports.
#
# On the device machine, from the repository root (builds first, as device_run.sh; RACE_SKIP_BUILD=1 reuses an
# install):   bash benchmarks/racecheck_bwd.sh
# Session 8's run of the ten cases in one process (kns=grad) printed one racecheck error, then every check from
# the tenth on (case 1 NCW bf16) failed with CUDA_ERROR_ILLEGAL_ADDRESS; its log kept only the summary lines.
# Here every run has its own process and log ($OUT/race_<name>.log), so one broken context hides nothing else,
# and the hazard lines (kernel, file:line of both accesses) are kept. docs/notes/race8_session8.md has the map
# of checks to kernels and what each run tells apart.
#
# Runs, most telling first (each under RACE_TIMEOUT_S; runs that would start after RACE_BUDGET_S are skipped):
#   a  case 1 NCW bf16 alone, kns=grad: the check where the context broke (dgrad_gemm_kernel bf16 NCW, staged)
#   b  the same check with racecheck on but no kernel instrumented: does the tool's presence alone break it
#      (XLA's dw GEMM and db sum run in this check, uninstrumented)?
#   a2 as a, with JAX_CONV1D_BWD_GEMM=0: dw on our wgrad_gemm_kernel, so no XLA GEMM in the process
#   c  case 1 NCW f32/hi alone, kns=grad: the check before (dgrad + wgrad 3xTF32 with fused bias, split sums)
#   f  synccheck (barrier and mbarrier misuse) on case 1 NCW bf16, kns=grad
#   d  cases 0, 5, 7, 13, 22, 11 one process each, kns=grad (dgrad_gemm / wgrad_gemm / sum / bias kernels)
#   e  kernels the kns=grad filter never instrumented: the stride-1 dx that runs the forward implicit GEMM
#      (conv1d_fwd_igemm_kernel: cases 0 and 5) and the fused depthwise backward (namespace dw_fused: 15, 16, 17)
#   g  (RACE_FULL=1 only) session 8's single-process run of all ten cases, full log, own time limit
# Runs d and e take XLA_FLAGS=--xla_gpu_autotune_level=0 (RACE_XLA_FLAGS) where this jax accepts it: XLA's own
# kernels are not under test, and autotuning under the sanitizer costs time.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ROOT=$(pwd)
BUDGET=${RACE_BUDGET_S:-150}
PER_RUN=${RACE_TIMEOUT_S:-45}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_CONV1D_TRACE_BWD=1
if [ "${RACE_SKIP_BUILD:-0}" != 1 ]; then
  bash "$ROOT/benchmarks/device_run.sh" || exit 1  # no steps: the sm_90a build only
fi
cd /tmp
compute-sanitizer --version | tail -1
# The racecheck options this version has (older ones lack some); the full list goes to the log.
compute-sanitizer --help > "$OUT/race_help.txt" 2>&1
OPTS="--tool racecheck --print-limit 1000"
for opt in "--racecheck-report all" "--show-backtrace device"; do
  grep -q -- "${opt%% *}" "$OUT/race_help.txt" && OPTS="$OPTS $opt"
done
echo "options: $OPTS"
grep -A3 -- "--racecheck" "$OUT/race_help.txt" | head -40 > "$OUT/race_options.txt"

XFLAGS=${RACE_XLA_FLAGS---xla_gpu_autotune_level=0}
PROBE="import jax.numpy as j; j.ones(4).sum().block_until_ready()"
if [ -n "$XFLAGS" ] && ! XLA_FLAGS="$XFLAGS" timeout 60 python3 -c "$PROBE" \
    > "$OUT/race_xla_flags.log" 2>&1; then
  echo "XLA_FLAGS=$XFLAGS rejected (see race_xla_flags.log): runs d and e keep the default autotuning"
  XFLAGS=""
fi

start=$(date +%s)
# run NAME KERNEL_FILTER XLA_FLAGS BWD_CHECK_ARGS...
run() {
  local name=$1 filter=$2 xflags=$3; shift 3
  local elapsed=$(( $(date +%s) - start ))
  if [ $elapsed -ge "$BUDGET" ]; then echo "== $name: skipped (${elapsed} s of ${BUDGET} s spent)"; return; fi
  local log="$OUT/race_$name.log" t0=$(date +%s)
  XLA_FLAGS="$xflags" timeout "$PER_RUN" compute-sanitizer ${TOOL_OPTS:-$OPTS} --kernel-name "kns=$filter" \
    python3 "$ROOT/benchmarks/bwd_check.py" --sweep --quick "$@" > "$log" 2>&1
  local rc=$?
  local env_note=${JAX_CONV1D_BWD_GEMM:+ JAX_CONV1D_BWD_GEMM=$JAX_CONV1D_BWD_GEMM}
  echo "== $name (kns=$filter$env_note; $*): exit $rc, $(( $(date +%s) - t0 )) s"
  grep -E "SUMMARY|^sweep:|ILLEGAL|rror" "$log" | grep -v "Race reported" | sort | uniq -c | head -8
  # The first hazards with both accesses' places (kernel, file:line).
  grep -E -A4 "Race reported|Warning: .*[Rr]ace|Error: .*[Hh]azard" "$log" | cut -c1-240 | head -30
  # Where a check failed, the kernels it had run.
  grep -B8 -E "^    (FAIL|ERROR)" "$log" | grep -E "running|jax_conv1d" | head -12
}

NONE=jax_conv1d_race8_no_kernel_has_this_name
run a_case1_ncw_bf16 grad "" --only 1 --check "NCW bf16"
run b_case1_ncw_bf16_uninstrumented "$NONE" "" --only 1 --check "NCW bf16"
# dw on our wgrad kernel instead of XLA's GEMM (the only other kernels of that check)
JAX_CONV1D_BWD_GEMM=0 run a2_case1_ncw_bf16_our_wgrad grad "" --only 1 --check "NCW bf16"
run c_case1_ncw_f32hi grad "" --only 1 --check "NCW f32/hi"
# synccheck (barrier and mbarrier misuse) on the check where the context broke
TOOL_OPTS="--tool synccheck --print-limit 1000" run f_case1_ncw_bf16_synccheck grad "" --only 1 --check "NCW bf16"
for idx in 0 5 7 13 22 11; do
  run "d_case$idx" grad "$XFLAGS" --only $idx
done
run e_case0_as_forward conv1d_fwd_igemm "$XFLAGS" --only 0
run e_case5_as_forward conv1d_fwd_igemm "$XFLAGS" --only 5
for idx in 15 16 17; do
  run "e_case${idx}_dw_fused" dw_fused "$XFLAGS" --only $idx
done
# RACE_FULL=1: session 8's run itself (the ten cases in one process), with the full log
if [ "${RACE_FULL:-0}" = 1 ]; then
  BUDGET=100000 PER_RUN=${RACE_FULL_TIMEOUT_S:-200} run g_session8_all_ten grad "" --only 0,1,5,7,11,13,15,16,17,22
fi
echo "racecheck runs: $(( $(date +%s) - start )) s"
