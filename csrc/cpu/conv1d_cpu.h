// CPU implementations of the three passes. Each pass has a path per layout (its hot loops rely on that
// layout's contiguous axis, as set_strides lays tensors out) and one for depthwise convolutions; sizes and
// the remaining strides come from Conv1dParams. Notes and measurements: docs/performance.md (CPU handlers).
#pragma once

#include <type_traits>

#include "../conv1d_params.h"
#include "scalar_types.h"

namespace jax_conv1d::cpu {

// float32 accumulation for every 16- and 32-bit type, float64 for float64 (the op's contract).
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// y = conv(x, w) + bias; bias may be null.
template <typename T, typename TOut>
void conv1d_fwd_cpu(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y);

// dx = the input gradient from dy (shaped like y) and w; every dx element is written.
template <typename T>
void conv1d_dgrad_cpu(const Conv1dParams& p, const T* dy, const T* w, T* dx);

// dw = the weight gradient from x and dy.
template <typename T>
void conv1d_wgrad_cpu(const Conv1dParams& p, const T* x, const T* dy, T* dw);

// db[o] = the sum of dy over batch and positions, in a fixed order (float runs, float64 chunk totals).
template <typename T>
void conv1d_bias_grad_cpu(const Conv1dParams& p, const T* dy, T* db);

// The combined backward: each of dx, dw, db that is not null is computed (conv1d_bwd_cpu.cc).
template <typename T>
void conv1d_bwd_cpu(const Conv1dParams& p, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db);

// Length-axis tiling shared by the passes: [begin, end) of output positions whose taps land in the input.
// A tap k of output t reads input l = t*stride + k*dilation - pad_lo; these bound t so that 0 <= l < L.
inline int64_t first_valid_t(const Conv1dParams& p, int64_t k) {
  const int64_t off = k * p.dilation - p.pad_lo;  // l = t*stride + off
  if (off >= 0) return 0;
  return (-off + p.stride - 1) / p.stride;
}
inline int64_t end_valid_t(const Conv1dParams& p, int64_t k) {
  const int64_t off = k * p.dilation - p.pad_lo;
  const int64_t room = p.in_length - off;  // need t*stride < room
  if (room <= 0) return 0;
  const int64_t e = (room + p.stride - 1) / p.stride;
  return e < p.out_length ? e : p.out_length;
}

}  // namespace jax_conv1d::cpu
