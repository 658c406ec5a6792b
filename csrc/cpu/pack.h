// Element moves used while packing operands: widen the storage type to the accumulation type and gather
// rows that sit `stride` elements apart. Constant strides get their own loops so the compiler can vectorise
// the gather (the headline workload reads x with stride 3).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "scalar_types.h"

namespace jax_conv1d::cpu {

template <typename F, typename T>
inline F widen(T v) {
  return static_cast<F>(to_float(v));
}

template <typename F, typename T, int S>
inline void gather_fixed(F* __restrict dst, const T* __restrict src, int64_t count) {
  for (int64_t j = 0; j < count; ++j) dst[j] = widen<F>(src[j * S]);
}

// dst[j] = src[j * stride] for j < count.
template <typename F, typename T>
inline void gather(F* __restrict dst, const T* __restrict src, int64_t count, int64_t stride) {
  if (count <= 0) return;
  if constexpr (std::is_same_v<F, T>) {
    if (stride == 1) {
      std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(F));
      return;
    }
  }
  switch (stride) {
    case 1: return gather_fixed<F, T, 1>(dst, src, count);
    case 2: return gather_fixed<F, T, 2>(dst, src, count);
    case 3: return gather_fixed<F, T, 3>(dst, src, count);
    case 4: return gather_fixed<F, T, 4>(dst, src, count);
    default:
      for (int64_t j = 0; j < count; ++j) dst[j] = widen<F>(src[j * stride]);
  }
}

template <typename F, int S>
inline void interleave_fixed(F* __restrict out, const F* const* src, int64_t count) {
  const int64_t full = count / S;
  const F* __restrict s0 = src[0];
  const F* __restrict s1 = src[S > 1 ? 1 : 0];
  const F* __restrict s2 = src[S > 2 ? 2 : 0];
  const F* __restrict s3 = src[S > 3 ? 3 : 0];
  for (int64_t j = 0; j < full; ++j) {
    out[j * S] = s0[j];
    if constexpr (S > 1) out[j * S + 1] = s1[j];
    if constexpr (S > 2) out[j * S + 2] = s2[j];
    if constexpr (S > 3) out[j * S + 3] = s3[j];
  }
  for (int64_t i = full * S; i < count; ++i) out[i] = src[i % S][i / S];
}

// out[i] = src[i % s][i / s] for i < count: rows computed per phase (positions s apart) merged back.
template <typename F>
inline void interleave(F* __restrict out, const F* const* src, int64_t s, int64_t count) {
  switch (s) {
    case 1: return interleave_fixed<F, 1>(out, src, count);
    case 2: return interleave_fixed<F, 2>(out, src, count);
    case 3: return interleave_fixed<F, 3>(out, src, count);
    case 4: return interleave_fixed<F, 4>(out, src, count);
    default:
      for (int64_t i = 0; i < count; ++i) out[i] = src[i % s][i / s];
  }
}

template <typename F>
inline void fill_zero(F* dst, int64_t count) {
  if (count > 0) std::memset(dst, 0, static_cast<size_t>(count) * sizeof(F));
}

// Rounds an accumulator to the storage type of an output.
template <typename TOut, typename F>
inline TOut narrow(F v) {
  if constexpr (std::is_same_v<F, double>) return from_double<TOut>(v);
  else return from_float<TOut>(v);
}

// dst[i] = narrow(src[i]) for i < count, dst contiguous. Plain stores on purpose: XLA hands out
// large outputs as freshly mapped pages that the kernel has just zeroed through the cache, so stores hit
// cached lines; streaming (cache-bypassing) stores measured 10-20% slower end to end here.
template <typename TOut, typename F>
inline void store_row(TOut* __restrict dst, const F* __restrict src, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] = narrow<TOut>(src[i]);
}

}  // namespace jax_conv1d::cpu
