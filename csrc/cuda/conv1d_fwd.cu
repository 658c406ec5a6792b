// Forward pass, direct form: one thread per output element in memory order, so the stores coalesce in
// either layout. The tensor-core kernels of the forward issue will dispatch ahead of this one.
#include "conv1d_cuda.h"
#include "cuda_types.cuh"

namespace jax_conv1d::cuda {

namespace {

template <typename T, typename TOut>
__global__ void conv1d_fwd_direct(Conv1dParams p, const T* __restrict__ x, const T* __restrict__ w,
                                  const T* __restrict__ bias, TOut* __restrict__ y) {
  using Acc = acc_t<T>;
  const int64_t total = p.y_size();
  const int64_t cg = p.in_per_group(), og = p.out_per_group();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, o, t;
    if (p.layout == Layout::kNCW) {
      t = i % p.out_length, o = (i / p.out_length) % p.out_channels, n = i / (p.out_length * p.out_channels);
    } else {
      o = i % p.out_channels, t = (i / p.out_channels) % p.out_length, n = i / (p.out_channels * p.out_length);
    }
    const int64_t g = o / og;
    Acc acc = bias ? to_acc(bias[o]) : Acc(0);
    const T* xn = x + n * p.x_n + g * cg * p.x_c;
    const T* wo = w + o * p.w_o;
    for (int64_t k = 0; k < p.kernel_size; ++k) {
      const int64_t l = t * p.stride + k * p.dilation - p.pad_lo;
      if (l < 0 || l >= p.in_length) continue;
      for (int64_t c = 0; c < cg; ++c) acc += to_acc(wo[c * p.w_c + k * p.w_k]) * to_acc(xn[c * p.x_c + l * p.x_l]);
    }
    y[i] = from_acc<TOut>(acc);
  }
}

}  // namespace

template <typename T, typename TOut>
cudaError_t conv1d_fwd_cuda(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y,
                            cudaStream_t stream) {
  const int64_t total = p.y_size();
  if (total == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  conv1d_fwd_direct<T, TOut><<<grid_for(total, kThreads), kThreads, 0, stream>>>(p, x, w, bias, y);
  return cudaGetLastError();
}

#define JC_INSTANTIATE(T, TOUT) \
  template cudaError_t conv1d_fwd_cuda<T, TOUT>(const Conv1dParams&, const T*, const T*, const T*, TOUT*, cudaStream_t);
JC_INSTANTIATE(float, float)
JC_INSTANTIATE(double, double)
JC_INSTANTIATE(__nv_bfloat16, __nv_bfloat16)
JC_INSTANTIATE(__nv_bfloat16, float)
JC_INSTANTIATE(__half, __half)
JC_INSTANTIATE(__half, float)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cuda
