// Asynchronous copies of 2-D windows of a global tensor into shared memory (cp.async, sm_80+), used by the
// backward kernels' pipelines.
//
// A window is `lines` x `positions` elements of a (batch, channel, length) tensor in either layout: lines are
// channels, positions run along the length axis. One of the two axes is contiguous in memory; copies go along
// it in chunks of `vec` elements (16, 8 or 4 bytes through cp.async, single 16-bit elements synchronously).
// Elements outside the tensor's valid range (padding, ragged edges) land in shared memory as zeros, so the
// matrix code never needs a bounds check.
#pragma once

#include <cstdint>

#include "cuda_types.cuh"

namespace jax_conv1d::cuda {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

template <int kBytes>
__device__ __forceinline__ void cp_async(void* dst, const void* src) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
  if constexpr (kBytes == 16) {
    // .cg: the data is streamed once through L2; L1 would only be polluted.
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(smem_u32(dst)), "l"(src), "n"(kBytes));
  }
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// wait_group with a run-time count (pipelines whose depth is chosen at launch); a larger count than the cases
// here waits for more groups than needed, which is safe.
__device__ __forceinline__ void cp_async_wait_pending(int n) {
  switch (n) {
    case 0: cp_async_wait<0>(); break;
    case 1: cp_async_wait<1>(); break;
    case 2: cp_async_wait<2>(); break;
    case 3: cp_async_wait<3>(); break;
    default: cp_async_wait<4>(); break;
  }
}

// Remainder modulo a power of two, non-negative for negative a too (window offsets can be negative where
// padding reaches before the tensor).
__host__ __device__ __forceinline__ int low_bits(int64_t a, int pow2) { return static_cast<int>(a & (pow2 - 1)); }

// Element (line a, position i) of the window lives at global offset `offset + a*line_stride + i*pos_stride`.
// Lines >= line_valid and positions outside [pos_lo, pos_hi) read as zero.
struct TileWindow {
  int64_t offset;
  int64_t line_stride, pos_stride;
  int lines, positions;
  int line_valid;
  int64_t pos_lo, pos_hi;
};

template <typename T, int kBytes>
__device__ __forceinline__ void copy_chunk(T* dst, const T* src) {
  if constexpr (kBytes >= 4)
    cp_async<kBytes>(dst, src);
  else
    *dst = *src;  // one 16-bit element: cp.async copies at least 4 bytes
}

// Walks tasks tid, tid + nthreads, ... of a (rows x cols) grid without a division per task.
struct GridWalk {
  int row, col, drow, dcol, cols;
  __device__ __forceinline__ GridWalk(int tid, int nthreads, int cols_) : cols(cols_) {
    row = tid / cols, col = tid - row * cols;
    drow = nthreads / cols, dcol = nthreads - drow * cols;
  }
  __device__ __forceinline__ void next() {
    row += drow, col += dcol;
    if (col >= cols) col -= cols, ++row;
  }
};

// Window bounds as int: anything beyond +-2^30 positions is as good as infinitely far from a tile.
__device__ __forceinline__ int clamp_int(int64_t v) {
  constexpr int64_t kFar = int64_t(1) << 30;
  return static_cast<int>(v < -kFar ? -kFar : (v > kFar ? kFar : v));
}

// Positions contiguous (NCW): each line lands in its own shared row of `pitch` elements. The copy starts at
// the aligned-down address, so position i sits at row element `shift + i` with shift = offset mod vec; the
// caller guarantees line_stride % vec == 0 (one shift for every line) and locates position 0 with the same
// low_bits(offset, vec).
template <typename T, int kBytes>
__device__ __forceinline__ void load_pos_contiguous(const T* __restrict__ g, const TileWindow& w, T* dst, int pitch,
                                                    int tid, int nthreads) {
  constexpr int vec = kBytes / static_cast<int>(sizeof(T));
  const int shift = low_bits(w.offset, vec);
  const int chunks = (shift + w.positions + vec - 1) / vec;
  const int lo = clamp_int(w.pos_lo), hi = clamp_int(w.pos_hi);
  const int64_t base = w.offset - shift;
  for (GridWalk it(tid, nthreads, chunks); it.row < w.lines; it.next()) {
    const int a = it.row, i0 = it.col * vec - shift;
    T* d = dst + a * pitch + it.col * vec;
    const int64_t src = base + a * w.line_stride + it.col * vec;
    const bool line_ok = a < w.line_valid;
    if (line_ok && i0 >= lo && i0 + vec <= hi) {
      copy_chunk<T, kBytes>(d, g + src);
    } else {
#pragma unroll
      for (int e = 0; e < vec; ++e) {
        const int i = i0 + e;
        d[e] = (line_ok && i >= lo && i < hi) ? g[src + e] : from_acc<T>(0.0f);
      }
    }
  }
}

// Lines contiguous (NWC): position i lands in shared row i (of `pitch` elements), line a at column a. The
// caller guarantees offset % vec == 0 and pos_stride % vec == 0, so every chunk is aligned.
template <typename T, int kBytes>
__device__ __forceinline__ void load_line_contiguous(const T* __restrict__ g, const TileWindow& w, T* dst, int pitch,
                                                     int tid, int nthreads) {
  constexpr int vec = kBytes / static_cast<int>(sizeof(T));
  const int chunks = (w.lines + vec - 1) / vec;
  const int lo = clamp_int(w.pos_lo), hi = clamp_int(w.pos_hi);
  for (GridWalk it(tid, nthreads, chunks); it.row < w.positions; it.next()) {
    const int i = it.row, a0 = it.col * vec;
    T* d = dst + i * pitch + a0;
    const int64_t src = w.offset + i * w.pos_stride + a0;
    const bool pos_ok = i >= lo && i < hi;
    if (pos_ok && a0 + vec <= w.line_valid) {
      copy_chunk<T, kBytes>(d, g + src);
    } else {
#pragma unroll
      for (int e = 0; e < vec; ++e) d[e] = (pos_ok && a0 + e < w.line_valid) ? g[src + e] : from_acc<T>(0.0f);
    }
  }
}

template <typename T, int kBytes>
__device__ __forceinline__ void load_window_as(const T* __restrict__ g, const TileWindow& w, T* dst, int pitch,
                                               bool pos_contiguous, int tid, int nthreads) {
  if (pos_contiguous)
    load_pos_contiguous<T, kBytes>(g, w, dst, pitch, tid, nthreads);
  else
    load_line_contiguous<T, kBytes>(g, w, dst, pitch, tid, nthreads);
}

// `vec` elements per copy (16/8/4 bytes through cp.async; 2 bytes synchronously).
template <typename T>
__device__ __forceinline__ void load_window(const T* __restrict__ g, const TileWindow& w, T* dst, int pitch, int vec,
                                            bool pos_contiguous, int tid, int nthreads) {
  switch (vec * static_cast<int>(sizeof(T))) {
    case 16: load_window_as<T, 16>(g, w, dst, pitch, pos_contiguous, tid, nthreads); break;
    case 8: load_window_as<T, 8>(g, w, dst, pitch, pos_contiguous, tid, nthreads); break;
    case 4: load_window_as<T, 4>(g, w, dst, pitch, pos_contiguous, tid, nthreads); break;
    default: load_window_as<T, sizeof(T)>(g, w, dst, pitch, pos_contiguous, tid, nthreads); break;
  }
}

}  // namespace jax_conv1d::cuda

// ---- Window copies with a walk computed once (appended for the input-gradient kernel) ---------------------
//
// GridWalk divides by the column count when constructed; a kernel that copies windows of one shape many
// times builds the walk once and passes a copy. The column count is fixed by the caller: for positions
// contiguous (NCW), `cols` chunks must cover shift + positions for every shift < vec (the destination rows have
// room for them); chunks past the window read tensor elements nobody uses, or zeros outside the tensor.

namespace jax_conv1d::cuda {

template <typename T, int kBytes>
__device__ __forceinline__ void load_pos_contiguous_walk(const T* __restrict__ g, const TileWindow& w, T* dst,
                                                         int pitch, GridWalk it) {
  constexpr int vec = kBytes / static_cast<int>(sizeof(T));
  const int shift = low_bits(w.offset, vec);
  const int lo = clamp_int(w.pos_lo), hi = clamp_int(w.pos_hi);
  const int64_t base = w.offset - shift;
  for (; it.row < w.lines; it.next()) {
    const int a = it.row, i0 = it.col * vec - shift;
    T* d = dst + a * pitch + it.col * vec;
    const int64_t src = base + a * w.line_stride + it.col * vec;
    const bool line_ok = a < w.line_valid;
    if (line_ok && i0 >= lo && i0 + vec <= hi) {
      copy_chunk<T, kBytes>(d, g + src);
    } else {
#pragma unroll
      for (int e = 0; e < vec; ++e) {
        const int i = i0 + e;
        d[e] = (line_ok && i >= lo && i < hi) ? g[src + e] : from_acc<T>(0.0f);
      }
    }
  }
}

template <typename T, int kBytes>
__device__ __forceinline__ void load_line_contiguous_walk(const T* __restrict__ g, const TileWindow& w, T* dst,
                                                          int pitch, GridWalk it) {
  constexpr int vec = kBytes / static_cast<int>(sizeof(T));
  const int lo = clamp_int(w.pos_lo), hi = clamp_int(w.pos_hi);
  for (; it.row < w.positions; it.next()) {
    const int i = it.row, a0 = it.col * vec;
    T* d = dst + i * pitch + a0;
    const int64_t src = w.offset + i * w.pos_stride + a0;
    const bool pos_ok = i >= lo && i < hi;
    if (pos_ok && a0 + vec <= w.line_valid) {
      copy_chunk<T, kBytes>(d, g + src);
    } else {
#pragma unroll
      for (int e = 0; e < vec; ++e) d[e] = (pos_ok && a0 + e < w.line_valid) ? g[src + e] : from_acc<T>(0.0f);
    }
  }
}

// `walk` over (lines x chunks) for positions contiguous, (positions x chunks) for lines contiguous.
template <typename T>
__device__ __forceinline__ void load_window_walk(const T* __restrict__ g, const TileWindow& w, T* dst, int pitch,
                                                 int vec, bool pos_contiguous, GridWalk walk) {
  switch (vec * static_cast<int>(sizeof(T))) {
#define JC_LOAD_WINDOW_WALK(BYTES)                                          \
  case BYTES:                                                              \
    if (pos_contiguous)                                                    \
      load_pos_contiguous_walk<T, BYTES>(g, w, dst, pitch, walk);          \
    else                                                                   \
      load_line_contiguous_walk<T, BYTES>(g, w, dst, pitch, walk);         \
    break;
    JC_LOAD_WINDOW_WALK(16)
    JC_LOAD_WINDOW_WALK(8)
    JC_LOAD_WINDOW_WALK(4)
#undef JC_LOAD_WINDOW_WALK
    default:
      if (pos_contiguous)
        load_pos_contiguous_walk<T, sizeof(T)>(g, w, dst, pitch, walk);
      else
        load_line_contiguous_walk<T, sizeof(T)>(g, w, dst, pitch, walk);
      break;
  }
}

}  // namespace jax_conv1d::cuda
