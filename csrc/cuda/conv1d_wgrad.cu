// Weight gradient, direct form: one block per dw element reduces dy[n, o, t] * x[n, c, t*stride + k*dilation
// - pad_lo] over all (n, t). Each thread sums a fixed strided subset in float64 (the reduction can run to
// millions of terms) and the block combines them in a fixed tree, so results are bitwise reproducible and no
// atomics are used.
#include "conv1d_cuda.h"
#include "cuda_types.cuh"

namespace jax_conv1d::cuda {

namespace {

constexpr int kThreads = 256;

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

}  // namespace

template <typename T>
cudaError_t conv1d_wgrad_cuda(const Conv1dParams& p, const T* x, const T* dy, T* dw, cudaStream_t stream) {
  const int64_t total = p.w_size();
  if (total == 0) return cudaSuccess;
  const int blocks = static_cast<int>(total < (1 << 20) ? total : (1 << 20));
  conv1d_wgrad_direct<T><<<blocks, kThreads, 0, stream>>>(p, x, dy, dw);
  return cudaGetLastError();
}

template cudaError_t conv1d_wgrad_cuda<float>(const Conv1dParams&, const float*, const float*, float*, cudaStream_t);
template cudaError_t conv1d_wgrad_cuda<double>(const Conv1dParams&, const double*, const double*, double*,
                                               cudaStream_t);
template cudaError_t conv1d_wgrad_cuda<__nv_bfloat16>(const Conv1dParams&, const __nv_bfloat16*,
                                                      const __nv_bfloat16*, __nv_bfloat16*, cudaStream_t);
template cudaError_t conv1d_wgrad_cuda<__half>(const Conv1dParams&, const __half*, const __half*, __half*,
                                               cudaStream_t);

}  // namespace jax_conv1d::cuda
