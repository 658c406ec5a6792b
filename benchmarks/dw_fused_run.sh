#!/bin/bash
# On the device machine, from the repository root: build the standalone fused depthwise backward test
# (benchmarks/dw_fused_test.cu) for sm_90a and run: sweep, compute-sanitizer on small cases, bench, ncu.
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=/tmp/dwft; mkdir -p $B
F="-std=c++17 -arch=sm_90a -O3 --expt-relaxed-constexpr -lineinfo -I csrc"
t0=$(date +%s)
nvcc $F -c csrc/cuda/bwd_depthwise_fused.cu -o $B/f.o & p1=$!
nvcc $F -c csrc/cuda/bwd_depthwise_fused_mult2.cu -o $B/f2.o & p6=$!
nvcc $F -c csrc/cuda/dgrad_depthwise.cu -o $B/d.o & p2=$!
nvcc $F -c csrc/cuda/wgrad_depthwise.cu -o $B/w.o & p5=$!
nvcc $F -c benchmarks/dw_fused_test.cu -o $B/t.o & p3=$!
nvcc $F -c benchmarks/dw_fused_noslide.cu -o $B/n.o & p4=$!
wait $p1 && wait $p2 && wait $p3 && wait $p4 && wait $p5 && wait $p6 || { echo "build failed"; exit 1; }
nvcc -arch=sm_90a $B/t.o $B/f.o $B/f2.o $B/n.o $B/d.o $B/w.o -o $B/dw_fused_test || exit 1
echo "build: $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
for step in "$@"; do
  t0=$(date +%s)
  case "$step" in
    sweep) timeout 120 $B/dw_fused_test sweep > "$OUT/sweep.log" 2>&1; echo "sweep exit $?"
      timeout 120 $B/dw_fused_test sweep-noslide > "$OUT/sweep_noslide.log" 2>&1; echo "sweep-noslide exit $?"; tail -1 "$OUT/sweep_noslide.log"
      grep -v "^  ok" "$OUT/sweep.log" | head -40 ;;
    sanitize)
      for tool in memcheck racecheck; do
        timeout 90 compute-sanitizer --tool $tool --print-limit 10 $B/dw_fused_test small 2>&1 | tail -4 | tee "$OUT/sanitize_$tool.log"
      done ;;
    bench) timeout 150 $B/dw_fused_test bench 2>&1 | tee "$OUT/bench.log" ;;
    profile)
      timeout 100 ncu --kernel-name regex:fused_kernel --launch-count 2 --section SpeedOfLight --section WarpStateStats \
        --section SchedulerStats --section Occupancy --section MemoryWorkloadAnalysis $B/dw_fused_test profile > "$OUT/ncu.txt" 2>&1
      grep -v "^==PROF== Profiling" "$OUT/ncu.txt" | cut -c1-150 | grep -v "^    ---" | tail -120 ;;
  esac
  echo "$step: $(( $(date +%s) - t0 )) s"
done
