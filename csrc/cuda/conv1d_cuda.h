// Launchers for the CUDA passes. Each enqueues on `stream` and returns the launch's cudaError_t.
#pragma once

#include <cuda_runtime.h>

#include "../conv1d_params.h"

namespace jax_conv1d::cuda {

template <typename T, typename TOut>
cudaError_t conv1d_fwd_cuda(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y,
                            cudaStream_t stream);

template <typename T>
cudaError_t conv1d_dgrad_cuda(const Conv1dParams& p, const T* dy, const T* w, T* dx, cudaStream_t stream);

template <typename T>
cudaError_t conv1d_wgrad_cuda(const Conv1dParams& p, const T* x, const T* dy, T* dw, cudaStream_t stream);

// Grid size for a grid-stride loop over `count` items: enough blocks to fill the device several times over,
// never more than the items need.
int grid_for(int64_t count, int threads);

}  // namespace jax_conv1d::cuda
