// Input gradient: the dispatcher and the direct kernel every shape can fall back to.
//
// Order: depthwise (groups == C == O) -> dgrad_depthwise; depthwise with a channel multiplier (groups == C,
// O = m*C) -> the fused depthwise backward asked for dx alone (bwd_depthwise_fused.cu, m <= 2); dense stride-1
// at default precision -> the forward implicit GEMM on the turned-around weight (dgrad_as_forward.cu);
// everything else -> dgrad_implicit_gemm (tensor cores). A kernel that does not cover the shape answers
// cudaErrorNotSupported and the direct kernel runs. float64 always runs the direct kernel.
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "bwd_depthwise.h"
#include "conv1d_cuda.h"
#include "cuda_types.cuh"
#include "dgrad_kernels.cuh"

namespace jax_conv1d::cuda {

namespace {

// Gather form: one thread per dx element collects the (output channel, tap) pairs whose read landed on it:
// t = (l + pad_lo - k*dilation) / stride when that division is exact and t is in range. No zero-stuffed dy is
// ever built, and positions no tap reaches are written as zero.
template <typename T>
__global__ void conv1d_dgrad_direct(Conv1dParams p, const T* __restrict__ dy, const T* __restrict__ w,
                                    T* __restrict__ dx) {
  using Acc = acc_t<T>;
  const int64_t total = p.x_size();
  const int64_t cg = p.in_per_group(), og = p.out_per_group();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, l;
    if (p.layout == Layout::kNCW) {
      l = i % p.in_length, c = (i / p.in_length) % p.in_channels, n = i / (p.in_length * p.in_channels);
    } else {
      c = i % p.in_channels, l = (i / p.in_channels) % p.in_length, n = i / (p.in_channels * p.in_length);
    }
    const int64_t g = c / cg, cc = c % cg;
    Acc acc = Acc(0);
    for (int64_t k = 0; k < p.kernel_size; ++k) {
      const int64_t num = l + p.pad_lo - k * p.dilation;
      if (num < 0 || num % p.stride != 0) continue;
      const int64_t t = num / p.stride;
      if (t >= p.out_length) continue;
      const T* dyt = dy + n * p.y_n + t * p.y_t;
      for (int64_t o = g * og; o < (g + 1) * og; ++o)
        acc += to_acc(w[o * p.w_o + cc * p.w_c + k * p.w_k]) * to_acc(dyt[o * p.y_o]);
    }
    dx[i] = from_acc<T>(acc);
  }
}

template <typename T>
cudaError_t dgrad_direct(const Conv1dParams& p, const T* dy, const T* w, T* dx, cudaStream_t stream) {
  constexpr int kThreads = 256;
  conv1d_dgrad_direct<T><<<grid_for(p.x_size(), kThreads), kThreads, 0, stream>>>(p, dy, w, dx);
  return cudaGetLastError();
}

// JAX_CONV1D_TRACE_BWD set: each call names the kernel it ran on stderr (for checking the dispatch).
bool trace_dispatch() {
  static const bool on = std::getenv("JAX_CONV1D_TRACE_BWD") != nullptr;
  return on;
}

}  // namespace

template <typename T>
cudaError_t conv1d_dgrad_cuda(const Conv1dParams& p, const T* dy, const T* w, T* dx, cudaStream_t stream) {
  if (p.x_size() == 0) return cudaSuccess;
  if (p.out_length == 0 || p.out_channels == 0) return cudaMemsetAsync(dx, 0, p.x_size() * sizeof(T), stream);
  if constexpr (!std::is_same_v<T, double>) {
    const bool depthwise = p.groups == p.in_channels && p.groups == p.out_channels;
    if (!depthwise && depthwise_channel_multiplier(p) > 1) {
      const cudaError_t err =
          conv1d_bwd_depthwise_cuda<T>(p, nullptr, dy, w, dx, nullptr, nullptr, nullptr, 0, stream);
      if (err != cudaErrorNotSupported) {  // NotSupported: nothing was launched
        if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d dgrad: depthwise multiplier\n");
        return err;
      }
    }
    if (!depthwise) {
      const cudaError_t err = dgrad_as_forward<T>(p, dy, w, dx, stream);
      if (err != cudaErrorNotSupported) {  // NotSupported: nothing was launched
        if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d dgrad: as_forward\n");
        return err;
      }
    }
    const cudaError_t err = depthwise ? dgrad_depthwise<T>(p, dy, w, dx, stream)
                                      : dgrad_implicit_gemm<T>(p, dy, w, dx, stream);
    if (err != cudaErrorNotSupported) {  // NotSupported: nothing was launched
      if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d dgrad: %s\n", depthwise ? "depthwise" : "implicit_gemm");
      return err;
    }
  }
  if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d dgrad: direct\n");
  return dgrad_direct<T>(p, dy, w, dx, stream);
}

template cudaError_t conv1d_dgrad_cuda<float>(const Conv1dParams&, const float*, const float*, float*, cudaStream_t);
template cudaError_t conv1d_dgrad_cuda<double>(const Conv1dParams&, const double*, const double*, double*,
                                               cudaStream_t);
template cudaError_t conv1d_dgrad_cuda<__nv_bfloat16>(const Conv1dParams&, const __nv_bfloat16*,
                                                      const __nv_bfloat16*, __nv_bfloat16*, cudaStream_t);
template cudaError_t conv1d_dgrad_cuda<__half>(const Conv1dParams&, const __half*, const __half*, __half*,
                                               cudaStream_t);

}  // namespace jax_conv1d::cuda
