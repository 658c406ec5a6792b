// Launchers of the weight-gradient kernels; conv1d_wgrad.cu dispatches between them.
//
// Every launcher returns cudaErrorNotSupported (and launches nothing) for shapes outside its range, so the
// dispatcher can fall through to the next kernel and finally to the always-correct direct kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "../conv1d_params.h"

namespace jax_conv1d::cuda {

// Scratch for split reductions: per-split float32 partial weight gradients (and, for the dense kernel, the
// bias gradient's partials after them), summed in a fixed order by wgrad_sum_splits. May be empty (ptr null):
// the kernels then run with one split.
struct WgradWorkspace {
  void* ptr = nullptr;
  size_t bytes = 0;
};

// The weight-gradient dispatcher (conv1d_wgrad.cu): the split reductions use `ws` when it is large enough for
// more than one split; an empty workspace still gives the right answer, with less parallelism.
// db (out_channels elements) may be null; when given it receives the bias gradient, sum over (n, t) of dy,
// accumulated in float32 (float64 for double) in a fixed order: fused into the dense kernel's splits, a
// separate deterministic reduction for the other families.
template <typename T>
cudaError_t conv1d_wgrad_cuda(const Conv1dParams& p, const T* x, const T* dy, T* dw, T* db, const WgradWorkspace& ws,
                              cudaStream_t stream);

// Bytes of scratch with which conv1d_wgrad_cuda would split the reduction as far as it likes (0 when it needs
// none), bias gradient or not; the handler may grant less.
template <typename T>
size_t conv1d_wgrad_workspace_bytes(const Conv1dParams& p);

// Dense and grouped: implicit GEMM on tensor cores, dW[o, (c,k)] = sum over (n,t) of dy[n,o,t] * x[n,c,t*s+k*d-pad],
// and db[o] (when db is not null) = the row sums of the same dy tiles.
template <typename T>
cudaError_t wgrad_implicit_gemm(const Conv1dParams& p, const T* x, const T* dy, T* dw, T* db, WgradWorkspace ws,
                                cudaStream_t stream);
template <typename T>
size_t wgrad_implicit_gemm_workspace(const Conv1dParams& p);  // 0: unsupported shape or no split

// groups == C == O: CUDA cores, one (channel, tap) accumulator set per thread.
template <typename T>
cudaError_t wgrad_depthwise(const Conv1dParams& p, const T* x, const T* dy, T* dw, WgradWorkspace ws,
                            cudaStream_t stream);
template <typename T>
size_t wgrad_depthwise_workspace(const Conv1dParams& p);

// dw[e] = sum over s < splits of partials[s * w_size + e], in order of s: the second stage of every split
// reduction, deterministic by construction.
template <typename T>
cudaError_t wgrad_sum_splits(const float* partials, int splits, int64_t w_size, T* dw, cudaStream_t stream);

// out[e] = sum over s < splits of partials[s * split_stride + e] for e < count, in order of s; with out2, the
// next count2 elements of each split likewise into out2 (one launch).
template <typename T>
cudaError_t wgrad_sum_splits_strided(const float* partials, int splits, int64_t split_stride, int64_t count, T* out,
                                     cudaStream_t stream, int64_t count2 = 0, T* out2 = nullptr);

// db[o] = sum over (n, t) of dy[n, o, t] in float64, each element's terms in a fixed order: the bias gradient of
// the families that do not fuse it (depthwise, direct, float64).
template <typename T>
cudaError_t bias_grad(const Conv1dParams& p, const T* dy, T* db, cudaStream_t stream);

}  // namespace jax_conv1d::cuda
