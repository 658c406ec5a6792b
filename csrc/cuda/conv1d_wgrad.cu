// Weight gradient: the dispatcher, the split-sum second stage, and the direct kernel every shape can fall
// back to.
//
// Order: depthwise (groups == C == O) -> wgrad_depthwise; everything else -> wgrad_implicit_gemm (tensor
// cores). A kernel that does not cover the shape answers cudaErrorNotSupported and the direct kernel runs.
// float64 always runs the direct kernel.
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "conv1d_cuda.h"
#include "cuda_types.cuh"
#include "wgrad_kernels.cuh"

namespace jax_conv1d::cuda {

namespace {

constexpr int kThreads = 256;

// Direct form: one block per dw element reduces dy[n, o, t] * x[n, c, t*stride + k*dilation - pad_lo] over all
// (n, t). Each thread sums a fixed strided subset in float64 (the reduction can run to millions of terms) and
// the block combines them in a fixed tree, so results are bitwise reproducible and no atomics are used.
template <typename T>
__global__ void __launch_bounds__(kThreads) conv1d_wgrad_direct(Conv1dParams p, const T* __restrict__ x,
                                                                const T* __restrict__ dy, T* __restrict__ dw) {
  __shared__ double partial[kThreads];
  const int64_t cg = p.in_per_group(), og = p.out_per_group();
  const int64_t reduction = p.batch * p.out_length;
  for (int64_t e = blockIdx.x; e < p.w_size(); e += gridDim.x) {
    int64_t o, c, k;  // e runs over w in memory order
    if (p.layout == Layout::kNCW) {
      k = e % p.kernel_size, c = (e / p.kernel_size) % cg, o = e / (p.kernel_size * cg);
    } else {
      o = e % p.out_channels, c = (e / p.out_channels) % cg, k = e / (p.out_channels * cg);
    }
    const int64_t g = o / og;
    const int64_t off = k * p.dilation - p.pad_lo;
    double acc = 0.0;
    for (int64_t r = threadIdx.x; r < reduction; r += kThreads) {
      const int64_t t = r % p.out_length, n = r / p.out_length;
      const int64_t l = t * p.stride + off;
      if (l < 0 || l >= p.in_length) continue;
      acc += double(to_acc(dy[n * p.y_n + o * p.y_o + t * p.y_t])) *
             double(to_acc(x[n * p.x_n + (g * cg + c) * p.x_c + l * p.x_l]));
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) dw[e] = from_acc<T>(static_cast<acc_t<T>>(partial[0]));
    __syncthreads();  // partial[] is reused by the next element
  }
}

template <typename T>
cudaError_t wgrad_direct(const Conv1dParams& p, const T* x, const T* dy, T* dw, cudaStream_t stream) {
  const int64_t total = p.w_size();
  const int blocks = static_cast<int>(total < (1 << 20) ? total : (1 << 20));
  conv1d_wgrad_direct<T><<<blocks, kThreads, 0, stream>>>(p, x, dy, dw);
  return cudaGetLastError();
}

// Second stage of the split reductions: one thread per weight element adds the splits in order, in float64
// (a few hundred float32 partials; the cost is nothing next to the first stage).
template <typename T>
__global__ void __launch_bounds__(kThreads) wgrad_sum_splits_kernel(const float* __restrict__ partials, int splits,
                                                                    int64_t w_size, T* __restrict__ dw) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < w_size; e += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0.0;
    for (int s = 0; s < splits; ++s) sum += partials[s * w_size + e];
    dw[e] = from_acc<T>(static_cast<float>(sum));
  }
}

// JAX_CONV1D_TRACE_BWD set: each call names the kernel it ran on stderr (for checking the dispatch).
bool trace_dispatch() {
  static const bool on = std::getenv("JAX_CONV1D_TRACE_BWD") != nullptr;
  return on;
}

bool is_depthwise(const Conv1dParams& p) {
  return p.groups == p.in_channels && p.groups == p.out_channels;
}

}  // namespace

template <typename T>
cudaError_t wgrad_sum_splits(const float* partials, int splits, int64_t w_size, T* dw, cudaStream_t stream) {
  wgrad_sum_splits_kernel<T><<<grid_for(w_size, kThreads), kThreads, 0, stream>>>(partials, splits, w_size, dw);
  return cudaGetLastError();
}

template <typename T>
size_t conv1d_wgrad_workspace_bytes(const Conv1dParams& p) {
  if constexpr (std::is_same_v<T, double>) {
    return 0;
  } else {
    if (p.w_size() == 0 || p.batch == 0 || p.out_length == 0) return 0;
    return is_depthwise(p) ? wgrad_depthwise_workspace<T>(p) : wgrad_implicit_gemm_workspace<T>(p);
  }
}

template <typename T>
cudaError_t conv1d_wgrad_cuda(const Conv1dParams& p, const T* x, const T* dy, T* dw, WgradWorkspace ws,
                              cudaStream_t stream) {
  if (p.w_size() == 0) return cudaSuccess;
  if (p.batch == 0 || p.out_length == 0) return cudaMemsetAsync(dw, 0, p.w_size() * sizeof(T), stream);
  if constexpr (!std::is_same_v<T, double>) {
    const cudaError_t err = is_depthwise(p) ? wgrad_depthwise<T>(p, x, dy, dw, ws, stream)
                                            : wgrad_implicit_gemm<T>(p, x, dy, dw, ws, stream);
    if (err != cudaErrorNotSupported) {  // NotSupported: nothing was launched
      if (trace_dispatch())
        std::fprintf(stderr, "jax_conv1d wgrad: %s (workspace %zu bytes)\n",
                     is_depthwise(p) ? "depthwise" : "implicit_gemm", ws.bytes);
      return err;
    }
  }
  if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d wgrad: direct\n");
  return wgrad_direct<T>(p, x, dy, dw, stream);
}

template <typename T>
cudaError_t conv1d_wgrad_cuda(const Conv1dParams& p, const T* x, const T* dy, T* dw, cudaStream_t stream) {
  return conv1d_wgrad_cuda<T>(p, x, dy, dw, WgradWorkspace{}, stream);
}

#define JC_INSTANTIATE(T)                                                                                      \
  template cudaError_t conv1d_wgrad_cuda<T>(const Conv1dParams&, const T*, const T*, T*, cudaStream_t);       \
  template cudaError_t conv1d_wgrad_cuda<T>(const Conv1dParams&, const T*, const T*, T*, WgradWorkspace,      \
                                            cudaStream_t);                                                     \
  template size_t conv1d_wgrad_workspace_bytes<T>(const Conv1dParams&);
JC_INSTANTIATE(float)
JC_INSTANTIATE(double)
JC_INSTANTIATE(__nv_bfloat16)
JC_INSTANTIATE(__half)
#undef JC_INSTANTIATE

template cudaError_t wgrad_sum_splits<float>(const float*, int, int64_t, float*, cudaStream_t);
template cudaError_t wgrad_sum_splits<__nv_bfloat16>(const float*, int, int64_t, __nv_bfloat16*, cudaStream_t);
template cudaError_t wgrad_sum_splits<__half>(const float*, int, int64_t, __half*, cudaStream_t);

}  // namespace jax_conv1d::cuda
