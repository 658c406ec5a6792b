// Launchers of the input-gradient kernels; conv1d_dgrad.cu dispatches between them.
//
// Both decompose dx by stride phase: positions l with (l + pad_lo) % stride == r receive exactly the taps k
// with k*dilation % stride == r, each from dy at t = q - e_k, where l = q*stride + r - pad_lo and
// e_k = (k*dilation - r) / stride. So no zero-stuffed dy is ever formed, no tap is evaluated where it cannot
// land, and every dx element (including those no tap reaches) is written exactly once.
//
// Every launcher returns cudaErrorNotSupported (launching nothing) for shapes outside its range.
#pragma once

#include <cuda_runtime.h>

#include "../conv1d_params.h"

namespace jax_conv1d::cuda {

// Dense and grouped: implicit GEMM on tensor cores, dx[c, q*s + r - pad] = sum over (o, k in phase r) of
// w[o, c, k] * dy[o, q - e_k].
template <typename T>
cudaError_t dgrad_implicit_gemm(const Conv1dParams& p, const T* dy, const T* w, T* dx, cudaStream_t stream);

// Dense, stride 1, default precision: dx as a forward correlation of dy with the turned-around weight, run by
// the forward implicit GEMM (dgrad_as_forward.cu).
template <typename T>
cudaError_t dgrad_as_forward(const Conv1dParams& p, const T* dy, const T* w, T* dx, cudaStream_t stream);

// groups == C == O: CUDA cores.
template <typename T>
cudaError_t dgrad_depthwise(const Conv1dParams& p, const T* dy, const T* w, T* dx, cudaStream_t stream);

}  // namespace jax_conv1d::cuda
