// The combined backward on CUDA (conv1d_bwd.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "../conv1d_params.h"
#include "wgrad_kernels.cuh"

namespace jax_conv1d::cuda {

// Scratch of one combined call, granted by the handler from XLA's allocator; any part may be empty (the
// passes then run with less splitting, still deterministic).
struct BwdWorkspace {
  WgradWorkspace wgrad;        // the weight gradient's split reduction (its partials include db's)
  void* fused = nullptr;       // the fused depthwise backward's scratch
  size_t fused_bytes = 0;
};

// What each part would like; the handler may grant less.
struct BwdScratchBytes {
  size_t wgrad = 0, fused = 0;
};

template <typename T>
BwdScratchBytes conv1d_bwd_scratch_bytes(const Conv1dParams& p, bool want_dx, bool want_dw, bool want_db);

// dx, dw and db from one (x, dy, w); a null output is not computed. Enqueued on `stream`.
template <typename T>
cudaError_t conv1d_bwd_cuda(const Conv1dParams& p, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db,
                            const BwdWorkspace& ws, cudaStream_t stream);

}  // namespace jax_conv1d::cuda
