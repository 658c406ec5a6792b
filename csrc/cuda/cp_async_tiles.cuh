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

// ---- Window copies with a walk computed once (appended for the input-gradient kernel) ---------------------
//
// GridWalk divides by the column count when constructed; a kernel that copies windows of one shape many
// times builds the walk once and passes a copy. The column count is fixed by the caller: for positions
// contiguous (NCW), `cols` chunks must cover shift + positions for every shift < vec (the destination rows have
// room for them); chunks past the window read tensor elements nobody uses, or zeros outside the tensor.

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


// Windows wholly inside the tensor (every tile but those at the edges) copy through load_window_interior: one
// cp.async per chunk with incrementally advanced addresses and no bounds checks, about a third of load_window's
// instructions per chunk (whose range checks and 64-bit index arithmetic per chunk took ~45 instructions, a
// large share of a pipelined kernel's issue slots).
//
// True when every chunk load_window would copy lies inside the valid lines and positions.
__device__ __forceinline__ bool window_is_interior(const TileWindow& w, int vec, bool pos_contiguous) {
  if (w.line_valid < w.lines) return false;
  if (pos_contiguous) {
    const int shift = low_bits(w.offset, vec);
    const int chunks = (shift + w.positions + vec - 1) / vec;
    return -shift >= w.pos_lo && chunks * vec - shift <= w.pos_hi;
  }
  const int chunks = (w.lines + vec - 1) / vec;
  return chunks * vec <= w.line_valid && w.pos_lo <= 0 && w.positions <= w.pos_hi;
}

// cp.async to a shared-memory address already in the shared window (no generic-to-shared conversion per copy).
template <int kBytes>
__device__ __forceinline__ void cp_async_shared(uint32_t dst, const void* src) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
  if constexpr (kBytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(dst), "l"(src), "n"(kBytes));
}

// The chunks of a (rows x cols) grid of copies, walked as in GridWalk but with both addresses advanced
// incrementally: no multiplications or 64-bit index arithmetic per chunk.
template <int kBytes>
__device__ __forceinline__ void copy_chunk_grid(const char* src, int64_t src_row, uint32_t dst, int dst_row, int rows,
                                                int cols, int tid, int nthreads) {
  int row = tid / cols, col = tid - row * cols;
  const int drow = nthreads / cols, dcol = nthreads - drow * cols;
  src += row * src_row + col * kBytes;
  dst += row * dst_row + col * kBytes;
  const int64_t src_step = drow * src_row + dcol * kBytes, src_wrap = src_row - cols * kBytes;
  const int dst_step = drow * dst_row + dcol * kBytes, dst_wrap = dst_row - cols * kBytes;
  while (row < rows) {
    cp_async_shared<kBytes>(dst, src);
    row += drow, col += dcol;
    src += src_step, dst += dst_step;
    if (col >= cols) col -= cols, ++row, src += src_wrap, dst += dst_wrap;
  }
}

// load_window for a window that window_is_interior accepted; same shared layout as load_pos_contiguous /
// load_line_contiguous.
template <typename T, int kBytes>
__device__ __forceinline__ void load_window_interior_as(const T* __restrict__ g, const TileWindow& w, T* dst,
                                                        int pitch, bool pos_contiguous, int tid, int nthreads) {
  constexpr int vec = kBytes / static_cast<int>(sizeof(T));
  constexpr int64_t sz = sizeof(T);
  const uint32_t d = smem_u32(dst);
  if (pos_contiguous) {  // rows are lines
    const int shift = low_bits(w.offset, vec);
    const int chunks = (shift + w.positions + vec - 1) / vec;
    copy_chunk_grid<kBytes>(reinterpret_cast<const char*>(g + (w.offset - shift)), w.line_stride * sz, d,
                            pitch * static_cast<int>(sz), w.lines, chunks, tid, nthreads);
  } else {  // rows are positions
    const int chunks = (w.lines + vec - 1) / vec;
    copy_chunk_grid<kBytes>(reinterpret_cast<const char*>(g + w.offset), w.pos_stride * sz, d,
                            pitch * static_cast<int>(sz), w.positions, chunks, tid, nthreads);
  }
}

// load_window, through the unchecked copy when the window is interior.
template <typename T>
__device__ __forceinline__ void load_window_fast(const T* __restrict__ g, const TileWindow& w, T* dst, int pitch,
                                                 int vec, bool pos_contiguous, int tid, int nthreads) {
  if (window_is_interior(w, vec, pos_contiguous)) {
    switch (vec * static_cast<int>(sizeof(T))) {
      case 16: load_window_interior_as<T, 16>(g, w, dst, pitch, pos_contiguous, tid, nthreads); return;
      case 8: load_window_interior_as<T, 8>(g, w, dst, pitch, pos_contiguous, tid, nthreads); return;
      case 4: load_window_interior_as<T, 4>(g, w, dst, pitch, pos_contiguous, tid, nthreads); return;
      default: break;  // 16-bit elements one at a time: the checked path
    }
  }
  load_window(g, w, dst, pitch, vec, pos_contiguous, tid, nthreads);
}

}  // namespace jax_conv1d::cuda
