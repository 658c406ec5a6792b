// The forward kernel families behind conv1d_fwd_cuda's dispatcher (conv1d_fwd.cu).
//
// Each launcher returns false, launching nothing, when the shape is outside what its family handles (the
// dispatcher then tries the next family, and finally the direct kernel); otherwise it launches on `stream` and
// stores the launch status in *err.
#pragma once

#include <cuda_runtime.h>

#include "../conv1d_params.h"
#include "device_limits.h"

namespace jax_conv1d::cuda {

// Implicit GEMM on tensor cores (fwd_igemm.cuh): dense and grouped convolutions, float (TF32, or 3xTF32 for
// Precision::kAccurate), bfloat16 and float16.
template <typename T, typename TOut>
bool conv1d_fwd_igemm(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y, cudaStream_t stream,
                      cudaError_t* err);

// Dense NWC on Hopper warp-group MMAs (fwd_wgmma.cuh, sm_90a), taken from inside the implicit GEMM's
// dispatch when JAX_CONV1D_WGMMA=1; false when off or when the shape or device does not fit it.
template <typename T, typename TOut>
bool conv1d_fwd_wgmma(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y, cudaStream_t stream,
                      cudaError_t* err);

// Depthwise (groups == in_channels, any channel multiplier), memory-bound (fwd_depthwise.cu).
template <typename T, typename TOut>
bool conv1d_fwd_depthwise(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y,
                          cudaStream_t stream, cudaError_t* err);

// Grouped convolutions with few channels per group, on CUDA cores (fwd_grouped_small.cu). grouped_small_fits:
// the shapes the family takes at all (Og <= 32, Cg * K <= 1024; it may still decline a window too large for
// shared memory); grouped_small_preferred: those the default dispatch sends it (groups > 1, Cg >= 2; NCW:
// Og <= 32, Cg * K <= 128, at most 11 FMAs per byte of x and y; NWC: Og <= 16, Cg * K <= 64, at most 9).
bool grouped_small_fits(const Conv1dParams& p);
bool grouped_small_preferred(const Conv1dParams& p, int in_bytes, int out_bytes);
template <typename T, typename TOut>
bool conv1d_fwd_grouped_small(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y,
                              cudaStream_t stream, cudaError_t* err);


// Work split for persistent kernels: `combos` independent groups of `tiles` equal tiles each, every group's
// tiles dealt in turn to that group's blocks, `capacity` blocks resident at once. Returns the blocks per group
// giving the shortest schedule (the fewest such blocks on ties).
int64_t blocks_per_combo(int64_t combos, int64_t tiles, int64_t capacity);

// Bulk copies (TMA) are used on sm_90+ unless JAX_CONV1D_FWD_BULK=0 (read per call, for comparisons);
// JAX_CONV1D_FWD_BULK=always also where a family would pick per-thread copies for speed (the implicit GEMM's
// under-filled channels-first grids), so tests of small shapes can reach the bulk path.
bool bulk_copies_enabled();
bool bulk_copies_forced();

// Encodes the 3-D tensor map (C, L, N) of a channels-last input (16-byte aligned, C * elem_bytes a multiple
// of 16) with boxes of box_channels x box_rows x 1, zero fill out of range, optionally the 64-byte swizzle.
// `map` points to a CUtensorMap; false if the driver offers no encoder or rejects the shape.
bool encode_nwc_window_map(void* map, const void* x, int elem_bytes, int64_t n, int64_t length, int64_t channels,
                           int box_channels, int box_rows, bool swizzle64);

}  // namespace jax_conv1d::cuda
