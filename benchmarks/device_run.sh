#!/bin/bash
# On the device machine, from the repository root: build for sm_90a only, then run the named steps.
#   bash benchmarks/device_run.sh check bwd-check tests main bench-core sanitize
# Steps: check (forward kernels vs float64), bwd-check (backward sweep, BWD_SWEEP args), bwd-bench (BWD_BENCH
# args), tests (the pytest suite on the GPU), main (python -m jax_conv1d), example (WaveNet step, both backends),
# sanitize, profile, bwd-profile, step-profile (WaveNet step per kernel), step-variants (its wavenet.Config
# variants in one process, GPU time by kind; STEP_VARIANTS args, STEP_HLO=1), layers (its conv layers one by one),
# wgrad-bias (C++ check of dw + db), f64-highest (precision=highest on the headline geometry vs float64, F64_ARGS),
# bench-<name> (python -m jax_conv1d.bench with BENCH_ARGS), multi-gpu (sharding tests on all GPUs and
# benchmarks/multi_gpu.py with MULTI_GPU_ARGS).
# Logs and JSON land in $OUT (the device tool's return folder).
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ROOT=$(pwd)
export CMAKE_BUILD_PARALLEL_LEVEL=16 PYTHONUNBUFFERED=1
t0=$(date +%s)
if [ "${SKIP_BUILD:-0}" != 1 ]; then  # SKIP_BUILD=1: a second invocation in the same call reuses the install
  python3 -m pip install --no-build-isolation --no-deps \
    --config-settings=cmake.define.JAX_CONV1D_CUDA_ARCHITECTURES=90a-real . > "$OUT/build.log" 2>&1 \
    || { tail -60 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
cd /tmp
for step in "$@"; do
  t0=$(date +%s)
  case "$step" in
    check) timeout 200 python3 "$ROOT/benchmarks/fwd_check.py" --count "${CHECK_COUNT:-60}" 2>&1 | tee "$OUT/check.log" | grep -v "^   ok" ;;
    sanitize)
      # Only our kernels are instrumented (kernel-name filters); XLA's run at full speed. The backward filter
      # (kns=grad) misses the stride-1 dx that runs the forward kernel and the fused depthwise backward (dw_fused):
      # benchmarks/racecheck_bwd.sh covers those, one process per check. Full logs are kept (hazard reports
      # included); the summaries are printed.
      for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
        XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 150 compute-sanitizer --tool $tool --kernel-name kns=conv1d_fwd \
          --print-limit 20 python3 "$ROOT/benchmarks/fwd_check.py" --sanitize > "$OUT/sanitize_$tool.log" 2>&1
        tail -6 "$OUT/sanitize_$tool.log"
        XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 200 compute-sanitizer --tool $tool --kernel-name kns=grad \
          --print-limit 20 python3 "$ROOT/benchmarks/bwd_check.py" --sweep --quick --only ${SANITIZE_BWD_CASES:-0,1,5,7,11,13,15,16,17,22} \
          > "$OUT/sanitize_bwd_$tool.log" 2>&1
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Error|error|sweep:" "$OUT/sanitize_bwd_$tool.log" | tail -6
      done ;;
    profile)
      XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 120 ncu --kernel-name regex:conv1d_fwd --launch-count 1 \
        --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats \
        python3 "$ROOT/benchmarks/fwd_profile.py" ${PROFILE_CASES} > "$OUT/ncu.txt" 2>&1
      grep -v "^==PROF== Profiling" "$OUT/ncu.txt" | cut -c1-200 | tail -90 ;;
    bwd-profile)
      XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 150 ncu --kernel-name regex:"gemm_kernel|depthwise_kernel" \
        --launch-count ${PROFILE_COUNT:-4} --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
        --section InstructionStats --section Occupancy python3 "$ROOT/benchmarks/bwd_profile.py" > "$OUT/ncu_bwd.txt" 2>&1
      grep -v "^==PROF== Profiling" "$OUT/ncu_bwd.txt" | cut -c1-160 | tail -150 ;;
    multi-gpu)  # issue 6: the sharding cases and a two-process step on the GPUs, then benchmarks/multi_gpu.py
      export NCCL_NVLS_ENABLE=0 XLA_PYTHON_CLIENT_PREALLOCATE=false
      nvidia-smi topo -m > "$OUT/topo.txt" 2>&1; head -8 "$OUT/topo.txt"
      timeout 330 python3 -m pytest -q -p no:cacheprovider -k "on_the_gpus or two_process" "$ROOT/tests/test_sharding.py" \
        "$ROOT/tests/test_distributed.py" 2>&1 | tee "$OUT/multi_gpu_tests.log" | tail -15
      unset XLA_PYTHON_CLIENT_PREALLOCATE
      timeout ${MULTI_GPU_TIMEOUT:-300} python3 "$ROOT/benchmarks/multi_gpu.py" ${MULTI_GPU_ARGS} --json "$OUT/multi_gpu.json" 2>&1 | tee "$OUT/multi_gpu.log" ;;
    f64-highest) timeout 200 python3 "$ROOT/benchmarks/highest_f64_check.py" ${F64_ARGS} 2>&1 | tee "$OUT/f64_highest.log" ;;
    step-variants)  # the step's variants timed in one process, GPU time by kind; kernel lists (and the
      # optimized HLO with STEP_HLO=1) packed into one file, since the device tool returns few files
      A=/tmp/step_variants; rm -rf $A; mkdir -p $A/lists
      if [ "${STEP_HLO:-0}" = 1 ]; then export XLA_FLAGS="--xla_dump_to=$A/hlo --xla_dump_hlo_module_re=.*train_step.* --xla_dump_hlo_as_text"; fi
      timeout ${STEP_TIMEOUT:-150} python3 "$ROOT/benchmarks/step_variants.py" --list $A/lists ${STEP_VARIANTS} 2>&1 | tee "$OUT/step_variants.txt"
      unset XLA_FLAGS; rm -f $A/hlo/*before_optimizations* 2>/dev/null
      tar -czf "$OUT/step_variants.tgz" -C $A . ;;
    layers) timeout 200 python3 "$ROOT/benchmarks/layer_breakdown.py" 2>&1 | tee "$OUT/layers.txt" ;;
    step-profile) timeout 200 python3 "$ROOT/benchmarks/step_profile.py" --backend ${STEP_BACKEND:-ours} 2>&1 | tee "$OUT/step_profile.txt" | tail -50 ;;
    bwd-check) JAX_CONV1D_TRACE_BWD=1 timeout 300 python3 "$ROOT/benchmarks/bwd_check.py" --sweep ${BWD_SWEEP} > "$OUT/bwd_sweep.log" 2>&1
      echo "bwd sweep exit $?"; grep -E "FAIL|ERROR|Error|sweep:" "$OUT/bwd_sweep.log" | head -40
      grep "^jax_conv1d " "$OUT/bwd_sweep.log" | sort | uniq -c ;;
    bwd-bench) timeout 300 python3 "$ROOT/benchmarks/bwd_check.py" --bench ${BWD_BENCH} > "$OUT/bwd_bench.log" 2>&1
      grep -v "^  timing" "$OUT/bwd_bench.log" | tail -40 ;;
    wgrad-bias)  # the weight-gradient entry with the bias gradient, against float64 (benchmarks/wgrad_bias_check.cu)
      B=/tmp/wgrad_bias; mkdir -p $B
      for f in conv1d_wgrad wgrad_implicit_gemm_f32 wgrad_implicit_gemm_bf16 wgrad_implicit_gemm_f16 wgrad_depthwise; do
        nvcc -std=c++17 -arch=sm_90a -O2 --expt-relaxed-constexpr -I "$ROOT/csrc" -c "$ROOT/csrc/cuda/$f.cu" -o $B/$f.o &
      done
      nvcc -std=c++17 -arch=sm_90a -O2 --expt-relaxed-constexpr -I "$ROOT/csrc" -c "$ROOT/benchmarks/wgrad_bias_check.cu" -o $B/main.o
      wait
      nvcc -arch=sm_90a $B/*.o -o $B/check && timeout 200 $B/check 2>&1 | tee "$OUT/wgrad_bias.log" | grep -v " ok$" ;;
    tests) timeout ${TEST_TIMEOUT:-400} python3 -P -m pytest -q ${TEST_PATHS:-"$ROOT/tests"} ${PYTEST_ARGS} 2>&1 | tee "$OUT/pytest.log" | tail -15 ;;
    main) timeout 300 python3 -P -m jax_conv1d 2>&1 | tee "$OUT/main.log" | tail -15 ;;
    example)
      for backend in ours flax; do
        timeout 200 python3 "$ROOT/examples/wavenet.py" --backend $backend --steps ${EXAMPLE_STEPS:-10} --no-progress 2>&1 \
          | tee "$OUT/example_$backend.log" | tail -4
      done ;;
    bench-*) timeout ${BENCH_TIMEOUT:-200} python3 -m jax_conv1d.bench ${BENCH_ARGS} --json "$OUT/$step.json" 2>&1 | tee "$OUT/$step.log" | tail -40 ;;
    *) echo "unknown step $step" ;;
  esac
  echo "$step: $(( $(date +%s) - t0 )) s"
done
