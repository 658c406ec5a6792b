// Stride-1 input gradients through the forward implicit GEMM.
//
// With stride 1 the input gradient is itself a forward correlation: dy is the input (O channels, length T),
// the weight is turned around (w'[c, o, k'] = w[o, c, K-1-k'], in and out channels swapped) and padded by
// pad_lo' = (K-1)*dilation - pad_lo:
//   dx[c, l] = sum_{o,k} w[o, c, k] * dy[o, l + pad_lo - k*d] = sum_{o,k'} w'[c, o, k'] * dy[o, l + k'*d - pad_lo'].
// Reads of dy outside [0, T) are zeros in both, so pad_hi needs no counterpart. The turned-around weight is
// only a different set of strides (a negative tap stride from the last tap), so nothing is copied. The
// forward kernel streams its input through the copy engine with the weight resident, which the WaveNet
// layers measured faster than the phase-decomposed dgrad kernel (docs/performance.md, backward v4).
//
// Dense convolutions only (grouped weights cannot be swapped by strides alone: the group offset of the
// output channel differs), default precision only (the dgrad kernel's 3xTF32 keeps its long-reduction fix).
#include <cstdlib>
#include <cstring>

#include "cuda_types.cuh"
#include "dgrad_kernels.cuh"
#include "fwd_kernels.h"

namespace jax_conv1d::cuda {

bool dgrad_as_forward_enabled() {
  const char* v = std::getenv("JAX_CONV1D_DGRAD_AS_FORWARD");  // "0": the phase-decomposed kernel, for A/B
  return v == nullptr || std::strcmp(v, "0") != 0;
}

Conv1dParams dgrad_as_forward_params(const Conv1dParams& p) {
  Conv1dParams q;
  q.batch = p.batch;
  q.in_channels = p.out_channels;
  q.out_channels = p.in_channels;
  q.in_length = p.out_length;
  q.out_length = p.in_length;
  q.kernel_size = p.kernel_size;
  q.stride = 1;
  q.dilation = p.dilation;
  q.pad_lo = (p.kernel_size - 1) * p.dilation - p.pad_lo;
  q.groups = 1;
  q.layout = p.layout;
  q.precision = p.precision;
  // dy and dx are plain tensors of the layout; only the weight is read differently.
  q.x_n = p.y_n, q.x_c = p.y_o, q.x_l = p.y_t;
  q.y_n = p.x_n, q.y_o = p.x_c, q.y_t = p.x_l;
  q.w_o = p.w_c, q.w_c = p.w_o, q.w_k = -p.w_k;
  return q;
}

template <typename T>
cudaError_t dgrad_as_forward(const Conv1dParams& p, const T* dy, const T* w, T* dx, cudaStream_t stream) {
  const bool covered = p.stride == 1 && p.groups == 1 && p.precision == Precision::kDefault && p.pad_lo >= 0 &&
                       p.pad_lo <= (p.kernel_size - 1) * p.dilation;
  if (!covered || !dgrad_as_forward_enabled()) return cudaErrorNotSupported;
  const Conv1dParams q = dgrad_as_forward_params(p);
  const T* w_last_tap = w + (p.kernel_size - 1) * p.w_k;
  cudaError_t err = cudaSuccess;
  if (!conv1d_fwd_igemm<T, T>(q, dy, w_last_tap, nullptr, dx, stream, &err)) return cudaErrorNotSupported;
  return err;
}

template cudaError_t dgrad_as_forward<float>(const Conv1dParams&, const float*, const float*, float*, cudaStream_t);
template cudaError_t dgrad_as_forward<__nv_bfloat16>(const Conv1dParams&, const __nv_bfloat16*, const __nv_bfloat16*,
                                                     __nv_bfloat16*, cudaStream_t);
template cudaError_t dgrad_as_forward<__half>(const Conv1dParams&, const __half*, const __half*, __half*, cudaStream_t);

}  // namespace jax_conv1d::cuda
