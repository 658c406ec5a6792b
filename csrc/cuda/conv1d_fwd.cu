// Forward pass: the dispatcher that picks a kernel family from the shape, and the direct kernel that is
// always correct and catches everything the fast families decline (float64, shapes past their limits).
//
// Order: depthwise (groups == C) -> small groups (grouped_small_preferred: few channels and FMAs per byte,
// CUDA cores) -> implicit GEMM on tensor cores (everything else) -> direct.
// JAX_CONV1D_FWD_KERNEL=direct|igemm|depthwise|grouped|auto (read per call) pins one family, for tests and
// benchmarks; a pinned family that declines the shape still falls back to the direct kernel.
#include <cuda.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "conv1d_cuda.h"
#include "cuda_types.cuh"
#include "fwd_kernels.h"
#include "tensor_map_encoder.h"

namespace jax_conv1d::cuda {

namespace {

// One thread per output element in memory order, so the stores coalesce in either layout.
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

enum class FwdFamily { kAuto, kDirect, kIgemm, kDepthwise, kGrouped };

FwdFamily pinned_family() {
  const char* v = std::getenv("JAX_CONV1D_FWD_KERNEL");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return FwdFamily::kAuto;
  if (std::strcmp(v, "direct") == 0) return FwdFamily::kDirect;
  if (std::strcmp(v, "igemm") == 0) return FwdFamily::kIgemm;
  if (std::strcmp(v, "depthwise") == 0) return FwdFamily::kDepthwise;
  if (std::strcmp(v, "grouped") == 0) return FwdFamily::kGrouped;
  return FwdFamily::kAuto;
}

}  // namespace

bool bulk_copies_enabled() {
  const char* v = std::getenv("JAX_CONV1D_FWD_BULK");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

bool bulk_copies_forced() {
  const char* v = std::getenv("JAX_CONV1D_FWD_BULK");
  return v != nullptr && std::strcmp(v, "always") == 0;
}

bool encode_nwc_window_map(void* map, const void* x, int elem_bytes, int64_t n, int64_t length, int64_t channels,
                           int box_channels, int box_rows, bool swizzle64) {
  const TensorMapEncodeTiled encode = tensor_map_encoder();
  if (encode == nullptr || (elem_bytes != 4 && elem_bytes != 2)) return false;
  const cuuint64_t dims[3] = {cuuint64_t(channels), cuuint64_t(length), cuuint64_t(n)};
  const cuuint64_t strides[2] = {cuuint64_t(channels * elem_bytes), cuuint64_t(channels * length * elem_bytes)};
  const cuuint32_t box[3] = {cuuint32_t(box_channels), cuuint32_t(box_rows), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  // Out-of-range elements arrive as zeros either way; the type only sets the element size here.
  const CUtensorMapDataType type = elem_bytes == 4 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32 : CU_TENSOR_MAP_DATA_TYPE_UINT16;
  const CUresult r = encode(static_cast<CUtensorMap*>(map), type, 3, const_cast<void*>(x), dims, strides, box,
                            element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            swizzle64 ? CU_TENSOR_MAP_SWIZZLE_64B : CU_TENSOR_MAP_SWIZZLE_NONE,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

int64_t blocks_per_combo(int64_t combos, int64_t tiles, int64_t capacity) {
  if (combos < 1 || tiles < 1) return 1;
  capacity = capacity < 1 ? 1 : capacity;
  int64_t best = 1, best_cost = -1;
  const int64_t limit = tiles < capacity ? tiles : capacity;
  for (int64_t b = 1; b <= limit; ++b) {
    const int64_t waves = (combos * b + capacity - 1) / capacity;
    const int64_t cost = waves * ((tiles + b - 1) / b);
    if (best_cost < 0 || cost < best_cost) best = b, best_cost = cost;
  }
  return best;
}

template <typename T, typename TOut>
cudaError_t conv1d_fwd_cuda(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y,
                            cudaStream_t stream) {
  const int64_t total = p.y_size();
  if (total == 0) return cudaSuccess;
  if constexpr (!std::is_same_v<T, double>) {
    const FwdFamily pin = pinned_family();
    cudaError_t err = cudaSuccess;
    const bool depthwise = p.groups == p.in_channels && p.in_per_group() == 1;
    if (depthwise && (pin == FwdFamily::kAuto || pin == FwdFamily::kDepthwise) &&
        conv1d_fwd_depthwise<T, TOut>(p, x, w, bias, y, stream, &err))
      return err;
    // Small groups would fill a tensor-core tile with padding; pinned, the family takes dense shapes too.
    const bool small_groups = !depthwise && grouped_small_preferred(p, sizeof(T), sizeof(TOut));
    if (((pin == FwdFamily::kAuto && small_groups) || pin == FwdFamily::kGrouped) &&
        conv1d_fwd_grouped_small<T, TOut>(p, x, w, bias, y, stream, &err))
      return err;
    if ((pin == FwdFamily::kAuto && !depthwise) || pin == FwdFamily::kIgemm) {
      if (conv1d_fwd_igemm<T, TOut>(p, x, w, bias, y, stream, &err)) return err;
    }
  }
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
