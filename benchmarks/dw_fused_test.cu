// Standalone check and timing of the fused depthwise backward (csrc/cuda/bwd_depthwise_fused.cu), no Python.
//
//   nvcc -std=c++17 -arch=sm_90a -O3 --expt-relaxed-constexpr -I csrc benchmarks/dw_fused_test.cu \
//        csrc/cuda/bwd_depthwise_fused.cu csrc/cuda/dgrad_depthwise.cu -o dw_fused_test
//   ./dw_fused_test sweep      # random shapes vs a float64 reference, poisoned outputs, run twice bitwise
//   ./dw_fused_test small      # a few small cases (for compute-sanitizer)
//   ./dw_fused_test bench      # depthwise_tcn and mamba_dw_causal shapes: median times vs the memory floor
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "conv1d_params.h"
#include "cuda/bwd_depthwise.h"
#include "cuda/dgrad_kernels.cuh"
#include "cuda/wgrad_kernels.cuh"
#include "cuda/cuda_types.cuh"

namespace jax_conv1d::cuda {
// benchmarks/dw_fused_noslide.cu: the same pass without the sliding-window kernels.
template <typename T>
cudaError_t conv1d_bwd_depthwise_cuda_noslide(const Conv1dParams& p, const T* x, const T* dy, const T* w, T* dx,
                                              T* dw, T* db, void* scratch, size_t scratch_bytes, cudaStream_t stream);
template <typename T>
size_t conv1d_bwd_depthwise_scratch_bytes_noslide(const Conv1dParams& p);

// Stand-in for conv1d_wgrad.cu's split summation (that file pulls in every dense kernel), so that
// wgrad_depthwise.cu links here: adds the splits in order in float64, as the original does.
template <typename T>
__global__ void sum_splits_kernel(const float* partials, int splits, int64_t w_size, T* dw) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < w_size; e += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0.0;
    for (int s = 0; s < splits; ++s) sum += partials[s * w_size + e];
    dw[e] = from_acc<T>(static_cast<float>(sum));
  }
}
template <typename T>
cudaError_t wgrad_sum_splits(const float* partials, int splits, int64_t w_size, T* dw, cudaStream_t stream) {
  sum_splits_kernel<T><<<256, 256, 0, stream>>>(partials, splits, w_size, dw);
  return cudaGetLastError();
}
template cudaError_t wgrad_sum_splits<float>(const float*, int, int64_t, float*, cudaStream_t);
template cudaError_t wgrad_sum_splits<__nv_bfloat16>(const float*, int, int64_t, __nv_bfloat16*, cudaStream_t);
template cudaError_t wgrad_sum_splits<__half>(const float*, int, int64_t, __half*, cudaStream_t);
}  // namespace jax_conv1d::cuda

using namespace jax_conv1d;
using namespace jax_conv1d::cuda;

bool g_noslide = false;  // run the per-tap build instead

template <typename T>
cudaError_t fused_bwd(const Conv1dParams& p, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db, void* scratch,
                      size_t scratch_bytes, cudaStream_t stream) {
  return g_noslide ? conv1d_bwd_depthwise_cuda_noslide<T>(p, x, dy, w, dx, dw, db, scratch, scratch_bytes, stream)
                   : conv1d_bwd_depthwise_cuda<T>(p, x, dy, w, dx, dw, db, scratch, scratch_bytes, stream);
}

#define CHECK(x)                                                                                    \
  do {                                                                                              \
    cudaError_t e_ = (x);                                                                           \
    if (e_ != cudaSuccess) {                                                                        \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);          \
      std::exit(2);                                                                                 \
    }                                                                                               \
  } while (0)

// lax's SAME/CAUSAL/explicit padding resolved to (lo, hi).
enum class Pad { kValid, kSame, kCausal, kExplicit };

struct Case {
  Layout layout;
  int64_t N, C, L, K, s, d;
  Pad pad;
  int64_t lo = 0, hi = 0;  // kExplicit only
};

Conv1dParams make_params(const Case& cs) {
  Conv1dParams p;
  p.batch = cs.N, p.in_channels = cs.C, p.out_channels = cs.C, p.in_length = cs.L, p.kernel_size = cs.K;
  p.stride = cs.s, p.dilation = cs.d, p.groups = cs.C, p.layout = cs.layout;
  int64_t lo = cs.lo, hi = cs.hi;
  const int64_t span = (cs.K - 1) * cs.d + 1;
  if (cs.pad == Pad::kValid) lo = hi = 0;
  if (cs.pad == Pad::kCausal) lo = span - 1, hi = 0;
  if (cs.pad == Pad::kSame) {
    const int64_t out = (cs.L + cs.s - 1) / cs.s;
    const int64_t total = std::max<int64_t>((out - 1) * cs.s + span - cs.L, 0);
    lo = total / 2, hi = total - lo;
  }
  p.pad_lo = lo;
  p.out_length = conv_out_length(cs.L, cs.K, cs.s, cs.d, lo, hi);
  set_strides(p);
  return p;
}

template <typename T> float to_f(T v);
template <> float to_f(float v) { return v; }
template <> float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> float to_f(__half v) { return __half2float(v); }
template <typename T> T from_f(float v);
template <> float from_f(float v) { return v; }
template <> __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
template <> __half from_f(float v) { return __float2half_rn(v); }
template <typename T> const char* type_name();
template <> const char* type_name<float>() { return "f32"; }
template <> const char* type_name<__nv_bfloat16>() { return "bf16"; }
template <> const char* type_name<__half>() { return "f16"; }
template <typename T> double tolerance();
template <> double tolerance<float>() { return 2e-5; }
template <> double tolerance<__nv_bfloat16>() { return 1e-2; }
template <> double tolerance<__half>() { return 2e-3; }

uint32_t hash32(uint64_t i, uint32_t seed) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>(z >> 32);
}

template <typename T>
__global__ void fill_kernel(T* a, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = uint64_t(i) * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    const float u = static_cast<float>(static_cast<uint32_t>(z >> 40)) * (1.0f / 16777216.0f);
    if constexpr (std::is_same_v<T, float>) a[i] = 2.0f * u - 1.0f;
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) a[i] = __float2bfloat16_rn(2.0f * u - 1.0f);
    else a[i] = __float2half_rn(2.0f * u - 1.0f);
  }
}

template <typename T>
struct DevBuf {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { CHECK(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T))); }
  ~DevBuf() { cudaFree(ptr); }
  void poison() { CHECK(cudaMemset(ptr, 0xff, n * sizeof(T))); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    CHECK(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// Worst |got - ref| over max |ref| (NaN, e.g. an unwritten poisoned element, counts as failure).
template <typename T>
double rel_err(const std::vector<T>& got, const std::vector<double>& ref) {
  double scale = 1e-30, worst = 0.0;
  for (double r : ref) scale = std::max(scale, std::fabs(r));
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(double(to_f(got[i])) - ref[i]);
    if (!(e == e)) return INFINITY;
    worst = std::max(worst, e);
  }
  return worst / scale;
}

struct Mode {
  bool dx, dw, db;
  const char* name;
};

int failures = 0, cases_run = 0;

template <typename T>
void check_case(const Case& cs, const Mode& mode, uint32_t seed, bool limit_scratch = false) {
  const Conv1dParams p = make_params(cs);
  const int64_t Lout = p.out_length;
  const size_t nx = p.x_size(), ny = p.y_size(), nw = p.w_size();
  std::vector<T> hx(nx), hdy(ny), hw(nw);
  for (size_t i = 0; i < nx; ++i) hx[i] = from_f<T>(hash32(i, seed) * (2.0f / 4294967296.0f) - 1.0f);
  for (size_t i = 0; i < ny; ++i) hdy[i] = from_f<T>(hash32(i, seed + 1) * (2.0f / 4294967296.0f) - 1.0f);
  for (size_t i = 0; i < nw; ++i) hw[i] = from_f<T>(hash32(i, seed + 2) * (2.0f / 4294967296.0f) - 1.0f);
  std::vector<double> rdx(nx, 0.0), rdw(nw, 0.0), rdb(cs.C, 0.0);
  for (int64_t n = 0; n < cs.N; ++n)
    for (int64_t c = 0; c < cs.C; ++c)
      for (int64_t t = 0; t < Lout; ++t) {
        const double g = to_f(hdy[n * p.y_n + c * p.y_o + t * p.y_t]);
        rdb[c] += g;
        for (int64_t k = 0; k < cs.K; ++k) {
          const int64_t l = t * cs.s + k * cs.d - p.pad_lo;
          if (l < 0 || l >= cs.L) continue;
          const int64_t xi = n * p.x_n + c * p.x_c + l * p.x_l, wi = c * p.w_o + k * p.w_k;
          rdx[xi] += double(to_f(hw[wi])) * g;
          rdw[wi] += g * double(to_f(hx[xi]));
        }
      }
  DevBuf<T> x(nx), dy(ny), w(nw), dx(nx), dw(nw), db(cs.C);
  CHECK(cudaMemcpy(x.ptr, hx.data(), nx * sizeof(T), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dy.ptr, hdy.data(), ny * sizeof(T), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(w.ptr, hw.data(), nw * sizeof(T), cudaMemcpyHostToDevice));
  size_t scratch_bytes = conv1d_bwd_depthwise_scratch_bytes<T>(p);
  if (limit_scratch) scratch_bytes = size_t(cs.K + 1) * cs.C * sizeof(float) * 2;  // two splits at most
  DevBuf<unsigned char> scratch(scratch_bytes);
  std::vector<T> out[2][3];
  char label[200];
  std::snprintf(label, sizeof(label), "%s %s N%ld C%ld L%ld K%ld s%ld d%ld pad%ld Lout%ld %s%s", type_name<T>(),
                cs.layout == Layout::kNCW ? "NCW" : "NWC", long(cs.N), long(cs.C), long(cs.L), long(cs.K), long(cs.s),
                long(cs.d), long(p.pad_lo), long(Lout), mode.name, limit_scratch ? " scratch2" : "");
  for (int run = 0; run < 2; ++run) {
    dx.poison(), dw.poison(), db.poison();
    cudaError_t err = fused_bwd<T>(p, x.ptr, dy.ptr, w.ptr, mode.dx ? dx.ptr : nullptr,
                                                   mode.dw ? dw.ptr : nullptr, mode.db ? db.ptr : nullptr,
                                                   scratch.ptr, scratch_bytes, nullptr);
    if (err == cudaErrorNotSupported) {
      std::printf("  unsupported %s\n", label);
      return;
    }
    CHECK(err);
    CHECK(cudaDeviceSynchronize());
    out[run][0] = dx.get(), out[run][1] = dw.get(), out[run][2] = db.get();
  }
  ++cases_run;
  const double tol = tolerance<T>();
  double e_dx = mode.dx ? rel_err(out[0][0], rdx) : 0, e_dw = mode.dw ? rel_err(out[0][1], rdw) : 0,
         e_db = mode.db ? rel_err(out[0][2], rdb) : 0;
  bool same = true;
  for (int i = 0; i < 3; ++i)
    same &= std::memcmp(out[0][i].data(), out[1][i].data(), out[0][i].size() * sizeof(T)) == 0;
  // Unwanted outputs must stay untouched (still poisoned).
  bool untouched = true;
  auto poisoned = [](const std::vector<T>& v) {
    for (const T& e : v) {
      uint16_t b[sizeof(T) / 2];
      std::memcpy(b, &e, sizeof(T));
      for (auto x : b)
        if (x != 0xffff) return false;
    }
    return true;
  };
  if (!mode.dx) untouched &= poisoned(out[0][0]);
  if (!mode.dw) untouched &= poisoned(out[0][1]);
  if (!mode.db) untouched &= poisoned(out[0][2]);
  // The standalone entry points route single-gradient requests through the fused pass: same bits.
  bool routed = true;
  if (!g_noslide && mode.dx && !mode.dw && !mode.db) {
    dx.poison();
    CHECK(dgrad_depthwise<T>(p, dy.ptr, w.ptr, dx.ptr, nullptr));
    routed &= std::memcmp(dx.get().data(), out[0][0].data(), nx * sizeof(T)) == 0;
  }
  if (!g_noslide && !mode.dx && mode.dw && !mode.db) {
    dw.poison();
    CHECK(wgrad_depthwise<T>(p, x.ptr, dy.ptr, dw.ptr, WgradWorkspace{scratch.ptr, scratch_bytes}, nullptr));
    routed &= std::memcmp(dw.get().data(), out[0][1].data(), nw * sizeof(T)) == 0;
  }
  const bool ok = e_dx <= tol && e_dw <= tol && e_db <= tol && same && untouched && routed;
  if (!ok) ++failures;
  std::printf("  %s %s  dx %.1e dw %.1e db %.1e%s%s%s\n", ok ? "ok  " : "FAIL", label, e_dx, e_dw, e_db,
              same ? "" : " NOT-BITWISE-REPEATABLE", untouched ? "" : " WROTE-UNWANTED",
              routed ? "" : " STANDALONE-ENTRY-DIFFERS");
}

std::vector<Case> sweep_cases(Layout layout) {
  return {
      {layout, 2, 8, 100, 3, 1, 1, Pad::kSame},
      {layout, 2, 37, 129, 5, 2, 3, Pad::kValid},
      {layout, 1, 64, 1000, 7, 1, 8, Pad::kSame},
      {layout, 3, 130, 517, 4, 1, 1, Pad::kCausal},
      {layout, 2, 16, 300, 9, 3, 2, Pad::kExplicit, 5, 1},
      {layout, 2, 5, 77, 1, 1, 1, Pad::kValid},
      {layout, 1, 24, 411, 6, 2, 4, Pad::kExplicit, -3, 7},
      {layout, 2, 48, 260, 2, 3, 5, Pad::kSame},
      {layout, 1, 3, 50, 9, 1, 8, Pad::kCausal},
      {layout, 2, 40, 2048, 4, 1, 1, Pad::kCausal},
      {layout, 1, 512, 700, 7, 1, 8, Pad::kSame},
      {layout, 2, 7, 33, 3, 2, 1, Pad::kExplicit, 2, 2},
      {layout, 1, 16, 5000, 16, 1, 1, Pad::kSame},
      {layout, 1, 12, 1234, 12, 2, 3, Pad::kValid},
      {layout, 1, 96, 3000, 5, 1, 100, Pad::kSame},
      {layout, 2, 20, 640, 3, 3, 1, Pad::kExplicit, 1, 1},
      {layout, 1, 66, 901, 8, 2, 7, Pad::kCausal},
      {layout, 2, 1, 300, 4, 1, 2, Pad::kSame},
      {layout, 1, 33, 2000, 5, 4, 3, Pad::kExplicit, 9, 0},
      {layout, 5, 8, 40, 3, 1, 1, Pad::kExplicit, 12, 12},
  };
}

template <typename T>
void sweep(bool small) {
  const Mode all{true, true, true, "dx+dw+db"};
  uint32_t seed = 1;
  for (Layout layout : {Layout::kNWC, Layout::kNCW}) {
    auto cases = sweep_cases(layout);
    if (small) cases.resize(4);
    for (const Case& cs : cases) check_case<T>(cs, all, seed += 7);
  }
  if (small) return;
  const Mode modes[] = {{true, false, false, "dx"}, {false, true, false, "dw"}, {false, false, true, "db"},
                        {false, true, true, "dw+db"}};
  for (Layout layout : {Layout::kNWC, Layout::kNCW}) {
    auto cases = sweep_cases(layout);
    for (const Mode& m : modes) check_case<T>(cases[2], m, seed += 7), check_case<T>(cases[4], m, seed += 7);
    check_case<T>(cases[3], all, seed += 7, /*limit_scratch=*/true);
  }
}

// ---- timing ---------------------------------------------------------------------------------------------

template <typename F>
float median_ms(F&& f, int reps = 30) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) CHECK(f());
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    CHECK(cudaEventRecord(a));
    CHECK(f());
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  cudaEventDestroy(a), cudaEventDestroy(b);
  return t[t.size() / 2];
}

template <typename T>
void bench(const char* name, const Case& cs) {
  const Conv1dParams p = make_params(cs);
  const size_t nx = p.x_size(), ny = p.y_size(), nw = p.w_size();
  DevBuf<T> x(nx), dy(ny), w(nw), dx(nx), dw(nw), db(cs.C);
  fill_kernel<T><<<4096, 256>>>(x.ptr, nx, 11);
  fill_kernel<T><<<4096, 256>>>(dy.ptr, ny, 12);
  fill_kernel<T><<<64, 256>>>(w.ptr, nw, 13);
  CHECK(cudaDeviceSynchronize());
  const size_t scratch_bytes = conv1d_bwd_depthwise_scratch_bytes<T>(p);
  DevBuf<unsigned char> scratch(scratch_bytes);
  auto fused = [&](bool want_dx, bool want_dw) {
    return [&, want_dx, want_dw]() {
      return fused_bwd<T>(p, x.ptr, dy.ptr, w.ptr, want_dx ? dx.ptr : nullptr,
                                          want_dw ? dw.ptr : nullptr, want_dw ? db.ptr : nullptr, scratch.ptr,
                                          scratch_bytes, nullptr);
    };
  };
  const double bx = double(nx) * sizeof(T), by = double(ny) * sizeof(T), bw = 3.02e12;
  const double floor_all = (bx + by + bx) / bw * 1e3, floor_one = (bx + by) / bw * 1e3;
  const char* lay = cs.layout == Layout::kNCW ? "NCW" : "NWC";
  const float t_all = median_ms(fused(true, true));
  std::printf("%s %s %s: dx+dw+db %.3f ms (floor %.3f, %.2fx)  scratch %zu B\n", name, lay, type_name<T>(), t_all,
              floor_all, t_all / floor_all, scratch_bytes);
  const float t_dx = median_ms(fused(true, false)), t_dw = median_ms(fused(false, true));
  const float t_old_dx = median_ms([&] { return dgrad_depthwise<T>(p, dy.ptr, w.ptr, dx.ptr, nullptr); });
  std::printf("%s %s %s: dx only %.3f ms, dw+db only %.3f ms (floor %.3f each); dgrad_depthwise() %.3f ms\n",
              name, lay, type_name<T>(), t_dx, t_dw, floor_one, t_old_dx);
  g_noslide = true;
  const float n_all = median_ms(fused(true, true)), n_dx = median_ms(fused(true, false)),
              n_dw = median_ms(fused(false, true));
  g_noslide = false;
  std::printf("%s %s %s: per-tap build (no sliding windows): dx+dw+db %.3f, dx %.3f, dw+db %.3f ms\n", name, lay,
              type_name<T>(), n_all, n_dx, n_dw);

  // Spot check of the full-size result against float64 on a few channels (all of dw/db, sampled dx).
  CHECK(fused(true, true)());
  CHECK(cudaDeviceSynchronize());
  const std::vector<T> hx = x.get(), hdy = dy.get(), hw = w.get(), hdx = dx.get(), hdw = dw.get(), hdb = db.get();
  double worst_dw = 0, worst_dx = 0, worst_db = 0;
  for (int64_t c : {int64_t(0), int64_t(1), cs.C / 2 + 3, cs.C - 1}) {
    std::vector<double> rdw(cs.K, 0.0);
    double rdb = 0, scale_dw = 1e-30, scale_dx = 1e-30;
    for (int64_t n = 0; n < cs.N; ++n)
      for (int64_t t = 0; t < p.out_length; ++t) {
        const double g = to_f(hdy[n * p.y_n + c * p.y_o + t * p.y_t]);
        rdb += g;
        for (int64_t k = 0; k < cs.K; ++k) {
          const int64_t l = t * cs.s + k * cs.d - p.pad_lo;
          if (l >= 0 && l < cs.L) rdw[k] += g * to_f(hx[n * p.x_n + c * p.x_c + l * p.x_l]);
        }
      }
    for (int64_t k = 0; k < cs.K; ++k) scale_dw = std::max(scale_dw, std::fabs(rdw[k]));
    for (int64_t k = 0; k < cs.K; ++k)
      worst_dw = std::max(worst_dw, std::fabs(to_f(hdw[c * p.w_o + k * p.w_k]) - rdw[k]) / scale_dw);
    worst_db = std::max(worst_db, std::fabs(to_f(hdb[c]) - rdb) / std::max(1e-30, std::fabs(rdb)));
    for (int64_t n : {int64_t(0), cs.N - 1})
      for (int64_t l = 0; l < cs.L; l += (l < 100 || l > cs.L - 100) ? 1 : 37) {
        double r = 0;
        for (int64_t k = 0; k < cs.K; ++k) {
          const int64_t num = l + p.pad_lo - k * cs.d;
          if (num < 0 || num % cs.s) continue;
          const int64_t t = num / cs.s;
          if (t < p.out_length) r += double(to_f(hw[c * p.w_o + k * p.w_k])) * to_f(hdy[n * p.y_n + c * p.y_o + t * p.y_t]);
        }
        scale_dx = std::max(scale_dx, std::fabs(r));
        const double e = std::fabs(to_f(hdx[n * p.x_n + c * p.x_c + l * p.x_l]) - r);
        worst_dx = std::max(worst_dx, e == e ? e : INFINITY);
      }
    worst_dx /= scale_dx;
  }
  const bool ok = worst_dx <= tolerance<T>() && worst_dw <= tolerance<T>() && worst_db <= tolerance<T>();
  if (!ok) ++failures;
  std::printf("%s %s %s: full-size spot check (4 channels) dx %.1e dw %.1e db %.1e %s\n", name, lay, type_name<T>(),
              worst_dx, worst_dw, worst_db, ok ? "ok" : "FAIL");
}

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "sweep";
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  if (what == "sweep" || what == "small" || what == "sweep-noslide") {
    const bool small = what == "small";
    g_noslide = what == "sweep-noslide";
    sweep<float>(small);
    sweep<__nv_bfloat16>(small);
    sweep<__half>(small);
    std::printf("sweep: %d cases, %d failures\n", cases_run, failures);
  } else if (what == "profile") {
    // One fused call per shape, for ncu.
    for (const Case& cs : {Case{Layout::kNWC, 16, 512, 65536, 7, 1, 8, Pad::kSame},
                           Case{Layout::kNWC, 8, 5120, 2048, 4, 1, 1, Pad::kCausal}}) {
      const Conv1dParams p = make_params(cs);
      const bool f32 = cs.C == 512;
      const size_t e = f32 ? 4 : 2, scratch_bytes = f32 ? conv1d_bwd_depthwise_scratch_bytes<float>(p)
                                                        : conv1d_bwd_depthwise_scratch_bytes<__nv_bfloat16>(p);
      DevBuf<unsigned char> x(p.x_size() * e), dy(p.y_size() * e), w(p.w_size() * e), dx(p.x_size() * e),
          dw(p.w_size() * e), db(cs.C * e), scratch(scratch_bytes);
      CHECK(cudaMemset(x.ptr, 0x3c, x.n));
      CHECK(cudaMemset(dy.ptr, 0x3c, dy.n));
      CHECK(cudaMemset(w.ptr, 0x3c, w.n));
      if (f32)
        CHECK(conv1d_bwd_depthwise_cuda<float>(p, (float*)x.ptr, (float*)dy.ptr, (float*)w.ptr, (float*)dx.ptr,
                                               (float*)dw.ptr, (float*)db.ptr, scratch.ptr, scratch_bytes, nullptr));
      else
        CHECK(conv1d_bwd_depthwise_cuda<__nv_bfloat16>(
            p, (__nv_bfloat16*)x.ptr, (__nv_bfloat16*)dy.ptr, (__nv_bfloat16*)w.ptr, (__nv_bfloat16*)dx.ptr,
            (__nv_bfloat16*)dw.ptr, (__nv_bfloat16*)db.ptr, scratch.ptr, scratch_bytes, nullptr));
      CHECK(cudaDeviceSynchronize());
    }
  } else if (what == "bench") {
    const Case tcn{Layout::kNWC, 16, 512, 65536, 7, 1, 8, Pad::kSame};
    const Case mamba{Layout::kNWC, 8, 5120, 2048, 4, 1, 1, Pad::kCausal};
    bench<float>("depthwise_tcn", tcn);
    bench<__nv_bfloat16>("mamba_dw_causal", mamba);
    Case tcn_d1 = tcn;
    tcn_d1.d = 1;
    bench<float>("depthwise_tcn_d1", tcn_d1);
    Case tcn_ncw = tcn, mamba_ncw = mamba;
    tcn_ncw.layout = mamba_ncw.layout = Layout::kNCW;
    bench<float>("depthwise_tcn", tcn_ncw);
    bench<__nv_bfloat16>("mamba_dw_causal", mamba_ncw);
    std::printf("bench: %d failures\n", failures);
  }
  return failures ? 1 : 0;
}
