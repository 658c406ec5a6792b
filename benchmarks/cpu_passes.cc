// Times the three CPU passes directly (no JAX): float32, output buffers allocated and touched once up front,
// so the figures are the passes' own work without the page faults a fresh XLA output costs. Reports the
// best wall time and best process CPU time over the repetitions (CPU time is steadier on a busy machine).
//
// Build and run from the repository root (one command line):
//   g++ -O3 -march=native -std=c++17 -Icsrc benchmarks/cpu_passes.cc csrc/cpu/conv1d_fwd_cpu.cc
//       csrc/cpu/conv1d_dgrad_cpu.cc csrc/cpu/conv1d_wgrad_cpu.cc -lpthread -o /tmp/cpu_passes
//   JAX_CONV1D_CPU_THREADS=2 /tmp/cpu_passes NWC 8 64 128 65535 3 3 4 0 0 1       # headline, scaled
// Arguments: layout N C O L K stride dilation pad_lo pad_hi groups [passes=fwd,dx,dw] [reps=5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "cpu/conv1d_cpu.h"

using namespace jax_conv1d;
using namespace jax_conv1d::cpu;

namespace {

double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename Fn>
void time_pass(const char* name, Fn fn, double flops, int reps) {
  fn();  // warm-up
  double best_cpu = 1e30, best_wall = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double c0 = cpu_seconds(), w0 = wall_seconds();
    fn();
    best_cpu = std::min(best_cpu, cpu_seconds() - c0);
    best_wall = std::min(best_wall, wall_seconds() - w0);
  }
  std::printf("  %-6s wall %8.2f ms   cpu %8.2f ms   %6.1f GFLOP/s per cpu-second\n", name, best_wall * 1e3,
              best_cpu * 1e3, flops / best_cpu * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 12) {
    std::fprintf(stderr, "usage: %s NCW|NWC N C O L K stride dilation pad_lo pad_hi groups [fwd,dx,dw] [reps]\n",
                 argv[0]);
    return 2;
  }
  Conv1dParams p;
  p.layout = std::string(argv[1]) == "NWC" ? Layout::kNWC : Layout::kNCW;
  p.batch = std::atol(argv[2]);
  p.in_channels = std::atol(argv[3]);
  p.out_channels = std::atol(argv[4]);
  p.in_length = std::atol(argv[5]);
  p.kernel_size = std::atol(argv[6]);
  p.stride = std::atol(argv[7]);
  p.dilation = std::atol(argv[8]);
  p.pad_lo = std::atol(argv[9]);
  const int64_t pad_hi = std::atol(argv[10]);
  p.groups = std::atol(argv[11]);
  const std::string passes = argc > 12 ? argv[12] : "fwd,dx,dw";
  const int reps = argc > 13 ? std::atoi(argv[13]) : 5;
  p.out_length = conv_out_length(p.in_length, p.kernel_size, p.stride, p.dilation, p.pad_lo, pad_hi);
  set_strides(p);

  std::vector<float> x(p.x_size()), w(p.w_size()), y(p.y_size()), dx(p.x_size()), dw(p.w_size());
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uni(-0.5f, 0.5f);
  for (auto* v : {&x, &w, &y})
    for (float& e : *v) e = uni(rng);
  const double flops = 2.0 * p.batch * p.out_channels * p.in_per_group() * p.kernel_size * p.out_length;
  std::printf("%s N%ld C%ld O%ld L%ld K%ld stride %ld dilation %ld groups %ld -> Lout %ld (%.2f GFLOP per pass)\n",
              argv[1], long(p.batch), long(p.in_channels), long(p.out_channels), long(p.in_length),
              long(p.kernel_size), long(p.stride), long(p.dilation), long(p.groups), long(p.out_length),
              flops * 1e-9);
  if (passes.find("fwd") != std::string::npos)
    time_pass("fwd", [&] { conv1d_fwd_cpu<float, float>(p, x.data(), w.data(), nullptr, y.data()); }, flops, reps);
  if (passes.find("dx") != std::string::npos)
    time_pass("dgrad", [&] { conv1d_dgrad_cpu<float>(p, y.data(), w.data(), dx.data()); }, flops, reps);
  if (passes.find("dw") != std::string::npos)
    time_pass("wgrad", [&] { conv1d_wgrad_cpu<float>(p, x.data(), y.data(), dw.data()); }, flops, reps);
  return 0;
}
