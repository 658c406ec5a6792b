// Small device helpers shared by the forward kernel families: index arithmetic, element copies into shared
// memory, and output stores.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "async_copy.cuh"
#include "cuda_types.cuh"

namespace jax_conv1d::cuda {

// Floor division for a possibly negative numerator (window starts left of the input under padding).
__host__ __device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements per 16-byte vector.
template <typename T>
constexpr int vec_width() {
  return 16 / int(sizeof(T));
}

// One element into shared memory, zero when !ok. float goes through cp.async (4 bytes is its smallest size);
// 16-bit elements are copied synchronously, which is correct inside the pipeline because the stage being
// filled is published by the next barrier. Only used where rows break 16-byte alignment.
template <typename T>
__device__ __forceinline__ void copy_elem(T* dst, const T* src, bool ok) {
  if constexpr (sizeof(T) == 4) {
    cp_async_4(dst, src, ok);
  } else {
    *reinterpret_cast<uint16_t*>(dst) = ok ? *reinterpret_cast<const uint16_t*>(src) : uint16_t(0);
  }
}

// Outputs are written once and never read back by the kernel: streaming stores (kStream, the default) keep
// them from evicting the input halos that neighbouring tiles still need from L2. kStream = false stores with
// the normal eviction policy (a timing knob for NCW, whose tile rows share sectors with the next tile's).
template <bool kStream, typename S>
__device__ __forceinline__ void store_global(S* p, const S& v) {
  if constexpr (kStream) {
    __stcs(p, v);
  } else {
    *p = v;
  }
}

template <typename TOut, bool kStream = true>
__device__ __forceinline__ void store_out(TOut* p, float v) {
  store_global<kStream>(p, from_acc<TOut>(v));
}

// Two adjacent outputs; p must be aligned to 2 elements.
template <typename TOut, bool kStream = true>
__device__ __forceinline__ void store_out2(TOut* p, float v0, float v1) {
  if constexpr (std::is_same_v<TOut, float>) {
    store_global<kStream>(reinterpret_cast<float2*>(p), make_float2(v0, v1));
  } else if constexpr (std::is_same_v<TOut, __nv_bfloat16>) {
    store_global<kStream>(reinterpret_cast<__nv_bfloat162*>(p), __floats2bfloat162_rn(v0, v1));
  } else {
    store_global<kStream>(reinterpret_cast<__half2*>(p), __floats2half2_rn(v0, v1));
  }
}

// N consecutive outputs as 16-byte stores; p must be 16-byte aligned and N * sizeof(TOut) a multiple of 16.
template <typename TOut, int N, bool kStream = true>
__device__ __forceinline__ void store_out_vec(TOut* p, const float (&v)[N]) {
  static_assert((N * sizeof(TOut)) % 16 == 0, "whole 16-byte vectors only");
  constexpr int kPer = 16 / int(sizeof(TOut));
#pragma unroll
  for (int i = 0; i < N; i += kPer) {
    uint4 bits;
    if constexpr (std::is_same_v<TOut, float>) {
      bits = make_uint4(__float_as_uint(v[i]), __float_as_uint(v[i + 1]), __float_as_uint(v[i + 2]),
                        __float_as_uint(v[i + 3]));
    } else {
      uint32_t w[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if constexpr (std::is_same_v<TOut, __nv_bfloat16>) {
          const __nv_bfloat162 h = __floats2bfloat162_rn(v[i + 2 * j], v[i + 2 * j + 1]);
          w[j] = *reinterpret_cast<const uint32_t*>(&h);
        } else {
          const __half2 h = __floats2half2_rn(v[i + 2 * j], v[i + 2 * j + 1]);
          w[j] = *reinterpret_cast<const uint32_t*>(&h);
        }
      }
      bits = make_uint4(w[0], w[1], w[2], w[3]);
    }
    store_global<kStream>(reinterpret_cast<uint4*>(p + i), bits);
  }
}

// Part of a 16-byte vector of outputs at the aligned address p, element by element: elements [from, V) of v
// (kHead: the vector starts before the run) or [0, from) (the run ends inside the vector).
template <typename TOut, int V, bool kStream, bool kHead>
__device__ __forceinline__ void store_out_part(TOut* p, const float (&v)[V], int from) {
#pragma unroll
  for (int e = 0; e < V; ++e)
    if (kHead ? e >= from : e < from) store_out<TOut, kStream>(p + e, v[e]);
}

// Barrier over `threads` threads (a multiple of 32) of the block, with ids 1..15 (0 is __syncthreads').
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// A 16-byte vector of T from shared memory, widened to float.
template <typename T>
__device__ __forceinline__ void load_vec_as_float(const T* p, float (&v)[vec_width<T>()]) {
  const uint4 bits = *reinterpret_cast<const uint4*>(p);
  if constexpr (std::is_same_v<T, float>) {
    v[0] = __uint_as_float(bits.x), v[1] = __uint_as_float(bits.y);
    v[2] = __uint_as_float(bits.z), v[3] = __uint_as_float(bits.w);
  } else {
    const uint32_t w[4] = {bits.x, bits.y, bits.z, bits.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float2 f;
      if constexpr (std::is_same_v<T, __nv_bfloat16>) f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[j]));
      else f = __half22float2(*reinterpret_cast<const __half2*>(&w[j]));
      v[2 * j] = f.x, v[2 * j + 1] = f.y;
    }
  }
}

}  // namespace jax_conv1d::cuda
