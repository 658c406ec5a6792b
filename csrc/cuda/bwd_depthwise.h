// Both gradients of a depthwise convolution (groups == C, O = m*C with channel multiplier m = 1 or 2) in one
// pass over x and dy.
//
// One kernel streams tiles of dy and of the x positions its taps read, writes dx for the tile's positions and
// keeps float32 partial sums of dw[c, k] and db[c] per block; a second small kernel adds the blocks' partials
// in a fixed order (bitwise deterministic, no atomics). See bwd_depthwise_fused.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "../conv1d_params.h"

namespace jax_conv1d::cuda {

// m = O / C for a depthwise convolution with a channel multiplier (groups == C, O a multiple of C), else 0.
// The dispatchers try the depthwise kernels for every m > 0; each answers cudaErrorNotSupported for the m it
// does not cover.
inline int64_t depthwise_channel_multiplier(const Conv1dParams& p) {
  if (p.in_channels < 1 || p.groups != p.in_channels || p.out_channels % p.in_channels != 0) return 0;
  return p.out_channels / p.in_channels;
}

// dx, dw and db may each be null (that gradient is not wanted). `scratch` (16-byte aligned) holds the
// partials; with less than conv1d_bwd_depthwise_scratch_bytes the reduction is split fewer ways. Returns
// cudaErrorNotSupported, launching nothing, for shapes outside the kernel's range (not depthwise, multiplier
// above 2, K > 16, stride > 32, windows too long for shared memory, scratch too small for a single split).
template <typename T>
cudaError_t conv1d_bwd_depthwise_cuda(const Conv1dParams& p, const T* x, const T* dy, const T* w, T* dx, T* dw,
                                      T* db, void* scratch, size_t scratch_bytes, cudaStream_t stream);

// Scratch with which the pass splits as far as it likes (at most 64 MB; 0 for unsupported shapes).
template <typename T>
size_t conv1d_bwd_depthwise_scratch_bytes(const Conv1dParams& p);

}  // namespace jax_conv1d::cuda
