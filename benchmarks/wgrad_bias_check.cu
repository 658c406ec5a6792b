// Device check of the weight-gradient entry with the bias gradient (conv1d_wgrad_cuda with db != null), which
// no FFI handler reaches yet: dw and db against a float64 host reference on random data, for every family
// (dense implicit GEMM at each precision, grouped, depthwise, float64/direct), both layouts, with the full
// split workspace and with none; dw must be bitwise the same with and without db, and every run bitwise the
// same as the last. Outputs start poisoned with NaN.
//
// Build and run on the device (benchmarks/device_run.sh step wgrad-bias does this, compiling in parallel):
//   nvcc -std=c++17 -arch=sm_90a -O2 --expt-relaxed-constexpr -I csrc benchmarks/wgrad_bias_check.cu \
//     csrc/cuda/conv1d_wgrad.cu csrc/cuda/wgrad_implicit_gemm_{f32,bf16,f16}.cu csrc/cuda/wgrad_depthwise.cu \
//     -o /tmp/wgrad_bias_check && /tmp/wgrad_bias_check
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../csrc/conv1d_params.h"
#include "../csrc/cuda/conv1d_cuda.h"
#include "../csrc/cuda/wgrad_kernels.cuh"

namespace jax_conv1d::cuda {
// The handlers' definition lives in cuda_handlers.cu (which needs XLA's headers); the same rule here.
int grid_for(int64_t count, int threads) {
  const int64_t needed = (count + threads - 1) / threads;
  return static_cast<int>(needed < 132 * 32 ? needed : 132 * 32);
}
}  // namespace jax_conv1d::cuda

using namespace jax_conv1d;

#define CHECK_CUDA(call)                                                                       \
  do {                                                                                         \
    cudaError_t e_ = (call);                                                                   \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(2);                                                                            \
    }                                                                                          \
  } while (0)

template <typename T> T from_double(double v);
template <> float from_double<float>(double v) { return static_cast<float>(v); }
template <> double from_double<double>(double v) { return v; }
template <> __nv_bfloat16 from_double<__nv_bfloat16>(double v) { return __float2bfloat16_rn(static_cast<float>(v)); }
template <> __half from_double<__half>(double v) { return __float2half_rn(static_cast<float>(v)); }
double to_double(float v) { return v; }
double to_double(double v) { return v; }
double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }
double to_double(__half v) { return __half2float(v); }

struct Case {
  int64_t n, c, o, l, k, s, d, lo, hi, g;
};

double rel_err(const std::vector<double>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

template <typename T>
struct DeviceRun {
  std::vector<T> dw, db;
};

template <typename T>
DeviceRun<T> run_device(const Conv1dParams& p, const T* x, const T* dy, bool with_db, bool with_ws) {
  T *dw = nullptr, *db = nullptr;
  void* ws_ptr = nullptr;
  CHECK_CUDA(cudaMalloc(&dw, p.w_size() * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&db, p.out_channels * sizeof(T)));
  CHECK_CUDA(cudaMemset(dw, 0xff, p.w_size() * sizeof(T)));  // NaN in every float type
  CHECK_CUDA(cudaMemset(db, 0xff, p.out_channels * sizeof(T)));
  cuda::WgradWorkspace ws;
  if (with_ws) {
    ws.bytes = cuda::conv1d_wgrad_workspace_bytes<T>(p);
    if (ws.bytes) {
      CHECK_CUDA(cudaMalloc(&ws_ptr, ws.bytes));
      CHECK_CUDA(cudaMemset(ws_ptr, 0xff, ws.bytes));
      ws.ptr = ws_ptr;
    }
  }
  CHECK_CUDA(cuda::conv1d_wgrad_cuda<T>(p, x, dy, dw, with_db ? db : nullptr, ws, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  DeviceRun<T> r;
  r.dw.resize(p.w_size());
  r.db.resize(p.out_channels);
  CHECK_CUDA(cudaMemcpy(r.dw.data(), dw, p.w_size() * sizeof(T), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(r.db.data(), db, p.out_channels * sizeof(T), cudaMemcpyDeviceToHost));
  cudaFree(dw);
  cudaFree(db);
  if (ws_ptr) cudaFree(ws_ptr);
  return r;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_double(v[i]);
  return out;
}

template <typename T>
bool check_case(const Case& cs, Layout layout, Precision precision, const char* dtype, double tol_dw, double tol_db,
                std::mt19937_64& rng) {
  Conv1dParams p;
  p.batch = cs.n, p.in_channels = cs.c, p.out_channels = cs.o, p.in_length = cs.l, p.kernel_size = cs.k;
  p.stride = cs.s, p.dilation = cs.d, p.pad_lo = cs.lo, p.groups = cs.g, p.layout = layout, p.precision = precision;
  p.out_length = conv_out_length(cs.l, cs.k, cs.s, cs.d, cs.lo, cs.hi);
  set_strides(p);
  std::normal_distribution<double> normal;
  std::vector<T> hx(p.x_size()), hdy(p.y_size());
  for (auto& v : hx) v = from_double<T>(normal(rng));
  for (auto& v : hdy) v = from_double<T>(normal(rng));
  // Reference on the stored (rounded) inputs, in float64.
  std::vector<double> rdw(p.w_size(), 0.0), rdb(p.out_channels, 0.0);
  const int64_t cg = p.in_per_group(), og = p.out_per_group();
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t o = 0; o < p.out_channels; ++o)
      for (int64_t t = 0; t < p.out_length; ++t) {
        const double g = to_double(hdy[n * p.y_n + o * p.y_o + t * p.y_t]);
        rdb[o] += g;
        for (int64_t c = 0; c < cg; ++c)
          for (int64_t k = 0; k < p.kernel_size; ++k) {
            const int64_t l = t * p.stride + k * p.dilation - p.pad_lo;
            if (l < 0 || l >= p.in_length) continue;
            rdw[o * p.w_o + c * p.w_c + k * p.w_k] +=
                g * to_double(hx[n * p.x_n + ((o / og) * cg + c) * p.x_c + l * p.x_l]);
          }
      }
  T *x = nullptr, *dy = nullptr;
  CHECK_CUDA(cudaMalloc(&x, hx.size() * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&dy, hdy.size() * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(x, hx.data(), hx.size() * sizeof(T), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dy, hdy.data(), hdy.size() * sizeof(T), cudaMemcpyHostToDevice));
  const DeviceRun<T> a = run_device<T>(p, x, dy, true, true);
  const DeviceRun<T> b = run_device<T>(p, x, dy, true, true);
  const DeviceRun<T> no_db = run_device<T>(p, x, dy, false, true);
  const DeviceRun<T> one_split = run_device<T>(p, x, dy, true, false);
  cudaFree(x);
  cudaFree(dy);
  const double e_dw = rel_err(widen(a.dw), rdw), e_db = rel_err(widen(a.db), rdb);
  const double e_dw1 = rel_err(widen(one_split.dw), rdw), e_db1 = rel_err(widen(one_split.db), rdb);
  const bool det = same_bits(a.dw, b.dw) && same_bits(a.db, b.db);
  const bool dw_same = same_bits(a.dw, no_db.dw);
  const bool ok = e_dw <= tol_dw && e_db <= tol_db && e_dw1 <= tol_dw && e_db1 <= tol_db && det && dw_same;
  std::printf("%-4s %-5s %-3s (%ld,%ld,%ld,%ld,K%ld,s%ld,d%ld,pad %ld/%ld,g%ld)  dw %.1e db %.1e"
              " | no ws: dw %.1e db %.1e | det %s, dw same without db %s  %s\n",
              layout == Layout::kNCW ? "NCW" : "NWC", dtype, precision == Precision::kAccurate ? "hi" : "",
              (long)cs.n, (long)cs.c, (long)cs.o, (long)cs.l, (long)cs.k, (long)cs.s, (long)cs.d, (long)cs.lo,
              (long)cs.hi, (long)cs.g, e_dw, e_db, e_dw1, e_db1, det ? "yes" : "NO", dw_same ? "yes" : "NO",
              ok ? "ok" : "FAIL");
  return ok;
}

int main() {
  std::mt19937_64 rng(1234);
  const Case dense[] = {
      {2, 64, 128, 900, 3, 3, 4, 0, 0, 1},      // headline geometry: 128-row tiles
      {3, 64, 128, 301, 3, 3, 4, 2, 5, 1},      // ragged last unit, padding
      {2, 128, 256, 200, 2, 1, 16, 16, 0, 1},   // wavenet-like, causal, two row tiles
      {2, 64, 64, 160, 3, 1, 2, 2, 2, 4},       // grouped
      {1, 33, 65, 123, 3, 2, 2, 1, 1, 1},       // odd channel counts
      {2, 12, 20, 150, 4, 5, 7, -3, 2, 1},      // negative padding
      {1, 16, 24, 70, 3, 40, 1, 0, 0, 1},       // stride beyond the tiled range: direct kernel
  };
  const Case depthwise[] = {
      {2, 64, 64, 300, 7, 1, 8, 24, 24, 64},
      {3, 40, 40, 131, 4, 1, 1, 3, 0, 40},
  };
  int fails = 0, total = 0;
  for (Layout layout : {Layout::kNCW, Layout::kNWC}) {
    for (const Case& cs : dense) {
      fails += !check_case<float>(cs, layout, Precision::kDefault, "f32", 1e-3, 1e-6, rng);
      fails += !check_case<float>(cs, layout, Precision::kAccurate, "f32", 2e-6, 1e-6, rng);
      fails += !check_case<__nv_bfloat16>(cs, layout, Precision::kDefault, "bf16", 1e-2, 1e-2, rng);
      fails += !check_case<__half>(cs, layout, Precision::kDefault, "f16", 2e-3, 2e-3, rng);
      total += 4;
    }
    for (const Case& cs : depthwise) {
      fails += !check_case<float>(cs, layout, Precision::kDefault, "f32", 1e-3, 1e-6, rng);
      fails += !check_case<__nv_bfloat16>(cs, layout, Precision::kDefault, "bf16", 1e-2, 1e-2, rng);
      total += 2;
    }
    fails += !check_case<double>(dense[1], layout, Precision::kDefault, "f64", 1e-12, 1e-12, rng);
    fails += !check_case<double>(depthwise[0], layout, Precision::kDefault, "f64", 1e-12, 1e-12, rng);
    total += 2;
  }
  std::printf("wgrad bias check: %d/%d ok\n", total - fails, total);
  return fails ? 1 : 0;
}
