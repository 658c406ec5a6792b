// Weight gradient of dense and grouped convolutions as an implicit GEMM on tensor cores, with the reduction
// split over the grid.
//
//   dW[o, (k, c)] = sum over r = (n, t) of  dy[n, o, t] * x[n, c, t*stride + k*dilation - pad_lo]
//
// M = output channels (A = dy), N = (tap, input channel) pairs (B = x gathered at stride), and the reduction
// runs over every batch row and output position: millions of terms for a weight of a few thousand elements.
// The reduction is cut into units of `bt` output positions of one batch row; grid.y splits the units into
// contiguous ranges, grid.x runs over output tiles (fastest, so the tiles of one split run side by side and
// their repeated reads of the same dy and x rows hit L2). Each block streams its units through a cp.async pipeline,
// accumulates in registers, and writes one float32 partial tile; wgrad_sum_splits adds the partials in split
// order. No atomics: the result is bitwise the same on every run.
//
// Tiles are loaded in the tensors' own layout (NCW: rows of channels; NWC: rows of positions) and the fragment
// loads gather through strides, so both layouts and any stride, dilation and padding share one kernel. The x
// tile of a unit holds, per channel, the positions each tap of the column block reads; taps whose windows
// overlap share one segment (for stride 3, dilation 4, K 3 the three taps read one span of 3*bt+8 positions).
//
// Bias gradient (db not null): the row sums of the same dy tiles. Blocks of the first column tile (cblk == 0,
// kblk == 0) keep per-thread row sums (each unit's sum in a fresh register, added with Kahan compensation)
// and write them as O more floats after the split's dw partial, so the second pass sums them in the same fixed
// split order: bitwise deterministic, like dw.
//
// Fusion: a combined dx+dw pass can reuse the dy tile that this kernel stages for the A operand (the dgrad
// kernel reads the same rows).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "conv1d_cuda.h"
#include "cp_async_tiles.cuh"
#include "cuda_types.cuh"
#include "mma_sync_fragments.cuh"
#include "smem_plan.cuh"
#include "wgrad_kernels.cuh"

namespace jax_conv1d::cuda {
namespace wgrad_gemm {

// Warps: kWarpsM along M x 4 along N, each with a (kMT*16) x (kNT*8) accumulator tile. Every launch uses
// kWarpsM = 2 (8 warps). A 128-row tile on 4 x 4 warps of 32 rows (16 warps, 128 registers, no spills) was
// measured slower on an H100 (headline dw 10.1 / 8.7 ms NCW / NWC against 9.0 / 7.7 ms, WaveNet 3.16 against
// 2.80 ms, docs/notes/wgrad_session2.md): each warp reloads the whole B fragment set for half the MMAs, so
// the kernel issues ~45 % more fragment-path instructions, and issue slots, not latency, were the limit.
constexpr int threads_of(int warps_m) { return 32 * 4 * warps_m; }
constexpr int kMaxTaps = 16;   // taps per column block (and x segments)
constexpr int kMaxSmem = 227 * 1024;

struct Params {
  Conv1dParams p;
  int bt;                 // output positions per unit (a multiple of the MMA's k)
  int bch, kb;            // input channels and taps per column block; column n = j*bch + c
  int o_blocks, c_blocks, k_blocks;
  int64_t t_units, units;  // units per batch row, all units
  int splits, nstage;
  int64_t split_stride;                      // floats per split in `partials`: w_size + out_channels
  // x tile of a unit: segment j covers positions [l_base + seg_src[j], + seg_len[j]) of the unit's
  // l_base = t0*stride + k_first*dilation - pad_lo; seg_base[j] is its element offset in the tile.
  int nseg;
  int seg_src[kMaxTaps], seg_len[kMaxTaps], seg_base[kMaxTaps];
  int tap_seg[kMaxTaps], tap_off[kMaxTaps];  // tap j of the block reads segment tap_seg[j] from tap_off[j]
  int vec_x, vec_dy;                         // copy widths (elements)
  int x_pitch, dy_pitch;                     // shared row pitches (elements)
  int x_elems, dy_elems;                     // per pipeline stage
  float* partials;  // [splits][split_stride] (dw, then db), or null when splits == 1
  bool tf32_rn;     // TF32 operands rounded ties-to-even (one instruction) rather than ties-away (two)
  bool row_copies;  // NWC interior windows through per-thread precomputed row copies (RowCopy)
  bool tma;         // NWC float32 TF32: wgrad_tma_kernel (tensor-map boxes) where make_tma_plan accepts the shape
  int tma_rows;     // wgrad_tma_kernel: rows of an x box (the longest segment, rounded up to 8)
  bool ptr_steps;   // NWC float32 TF32 k-steps through advancing fragment pointers (warp_mma_step_tf32_rows)
  bool swizzled;    // NWC float32 TF32 128 x 128 tiles stored unpadded with XOR-swizzled 16-byte chunks and
                    // read by 64-bit A fragment loads (warp_mma_step_tf32_swz, swz_dy)
  bool dy_rounded;  // with swizzled: each thread rounds the dy chunks it copied to TF32 in shared memory (and
                    // sums them for the bias gradient) before the unit's barrier, so A needs no conversion
};

// One thread's share of an interior NWC window (rows = positions, each row `row_bytes` of contiguous channels
// copied in 16-byte chunks): chunk column `col_bytes` of rows r0, r0 + step, ... Computed once per block, so
// a unit's copy is an address add and a cp.async per chunk, with no division, wrap or range check.
struct RowCopy {
  int r0 = 0, step = 1, col_bytes = 0;
  bool active = false;
};

__device__ __forceinline__ RowCopy row_copy_of(int row_bytes, int tid, int nthreads) {
  RowCopy r;
  const int cols = row_bytes / 16;
  r.step = nthreads / cols;
  r.r0 = tid / cols;
  r.col_bytes = (tid - r.r0 * cols) * 16;
  r.active = r.r0 < r.step;
  return r;
}

// Rows [0, rows) of a window whose row 0 starts at `src` (global, 16-byte aligned rows `src_row` bytes apart)
// into shared rows `dst_row` bytes apart from `dst`.
__device__ __forceinline__ void copy_rows16(const RowCopy& rc, const char* src, int64_t src_row, uint32_t dst,
                                            int dst_row, int rows) {
  if (!rc.active) return;
  src += rc.r0 * src_row + rc.col_bytes;
  dst += rc.r0 * dst_row + rc.col_bytes;
  const int64_t src_step = rc.step * src_row;
  const int dst_step = rc.step * dst_row;
  for (int r = rc.r0; r < rows; r += rc.step) {
    cp_async_shared<16>(dst, src);
    src += src_step, dst += dst_step;
  }
}

// Unit u -> (batch row, first output position), advanced one unit at a time: the units of a split are
// consecutive, so only the first needs a division.
struct UnitCursor {
  int64_t n, t0;
  __device__ __forceinline__ void advance(int64_t t_end, int bt) {
    t0 += bt;
    if (t0 >= t_end) t0 = 0, ++n;
  }
};

// warp_mma_step's TF32 k-step with the forward's one-instruction rounding (tf32_round_fast: cvt.rn, ties to
// even) instead of cvt.rna (an FSETP and a predicated add). The two differ only on exact ties; at ~24
// conversions per 16 MMAs the second instruction was a quarter of the compute block's issue slots.
template <int kMT, int kNT>
__device__ __forceinline__ void warp_mma_step_tf32_rn(float (&acc)[kMT][kNT][4], const float* __restrict__ sa,
                                                      const int (&a_row)[kMT][2], int a_k, const float* __restrict__ sb,
                                                      const int (&b_col)[kNT], int b_k, int k0, int lane) {
  const int tq = lane & 3;
  const int ka = (k0 + tq) * a_k, ka4 = ka + 4 * a_k;
  const int kb = (k0 + tq) * b_k, kb4 = kb + 4 * b_k;
  uint32_t a[kMT][4], b[kNT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    a[mt][0] = tf32_round_fast(sa[a_row[mt][0] + ka]);
    a[mt][1] = tf32_round_fast(sa[a_row[mt][1] + ka]);
    a[mt][2] = tf32_round_fast(sa[a_row[mt][0] + ka4]);
    a[mt][3] = tf32_round_fast(sa[a_row[mt][1] + ka4]);
  }
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    b[nt][0] = tf32_round_fast(sb[b_col[nt] + kb]);
    b[nt][1] = tf32_round_fast(sb[b_col[nt] + kb4]);
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
      mma_tf32_16x8x8(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1]);
}

// warp_mma_step_tf32_rn for NWC tiles (both stored position-major), with the fragment addresses carried as
// pointers that advance one k-step at a time. a points at (position k0 + tq, channel wm*16*kMT + g) of the dy
// tile, so every A element of the step is a[const] or a[a4 + const]; b[nt] at (position (k0 + tq)*stride, the
// lane's column). kLinearB: the warp's columns are one run of consecutive channels of one tap (b[nt] = b[0] +
// 8*nt), so B needs one pointer. Cuts the per-step address arithmetic (IMAD + LEA per load in the indexed
// form) to a few adds.
template <int kMT, int kNT, bool kLinearB>
__device__ __forceinline__ void warp_mma_step_tf32_rows(float (&acc)[kMT][kNT][4], const float* a, int a4,
                                                        const float* const (&b)[kNT], int b4) {
  uint32_t af[kMT][4], bf[kNT][2];
  const float* a_hi = a + a4;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    af[mt][0] = tf32_round_fast(a[mt * 16]);
    af[mt][1] = tf32_round_fast(a[mt * 16 + 8]);
    af[mt][2] = tf32_round_fast(a_hi[mt * 16]);
    af[mt][3] = tf32_round_fast(a_hi[mt * 16 + 8]);
  }
  if constexpr (kLinearB) {
    const float* b_lo = b[0];
    const float* b_hi = b_lo + b4;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      bf[nt][0] = tf32_round_fast(b_lo[nt * 8]);
      bf[nt][1] = tf32_round_fast(b_hi[nt * 8]);
    }
  } else {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      bf[nt][0] = tf32_round_fast(b[nt][0]);
      bf[nt][1] = tf32_round_fast(b[nt][b4]);
    }
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
      mma_tf32_16x8x8(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], bf[nt][0], bf[nt][1]);
}

// Swizzled dy tiles (Params::swizzled, NWC float32 TF32, 128-channel tile). The dy tile keeps its rows
// unpadded (128 floats, a multiple of 32 banks) and stores 16-byte chunk q of position row r at chunk
// q ^ swz_dy(r). Lane (g, tq) of warp row wm takes for m-tile mt the channel pair wm*64 + 2*(8*mt + g) + {0, 1}
// as its fragment rows g and g + 8, so a[0..1] (k = tq) and a[2..3] (k = tq + 4) are one 64-bit load each:
// 8 loads per k-step instead of 16. For each half-warp (g 0..3 or 4..7, tq 0..3) the 16 pairs fall on 16
// distinct 8-byte bank pairs (the XOR moves the 4 rows' chunks apart). Only the channel <-> fragment-row
// assignment differs from the padded tiles; each accumulator still sums the same products in the same order,
// but a different lane owns them, so the result bits are those of another (equally valid) assignment.
__host__ __device__ __forceinline__ int swz_dy(int r) { return (r & 3) << 1; }

__device__ __forceinline__ void st_shared_zero16(uint32_t dst) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(dst), "r"(0));
}

// copy_rows16 into a swizzled tile, rows outside [row_lo, row_hi) zero-filled. `col_bytes` is this thread's
// already swizzled chunk offset: the thread's rows are `step` apart with step a multiple of 4, so every row it
// copies has the same r & 3 and the same swizzle.
__device__ __forceinline__ void copy_rows16_checked(const RowCopy& rc, int col_bytes, const char* src, int64_t src_row,
                                                    uint32_t dst, int dst_row, int rows, int row_lo, int row_hi) {
  if (!rc.active) return;
  src += rc.r0 * src_row + rc.col_bytes;  // global: the unswizzled chunk
  dst += rc.r0 * dst_row + col_bytes;
  const int64_t src_step = rc.step * src_row;
  const int dst_step = rc.step * dst_row;
  for (int r = rc.r0; r < rows; r += rc.step) {
    if (r >= row_lo && r < row_hi)
      cp_async_shared<16>(dst, src);
    else
      st_shared_zero16(dst);
    src += src_step, dst += dst_step;
  }
}

// warp_mma_step_tf32_rows with A from a swizzled dy tile: a_even / a_odd point at this lane's pair of m-tile 0
// / 1 at row k0 + tq (m-tiles 2 and 3 are 32 floats further), the row k0 + tq + 4 is 4*128 floats on.
// kARounded: the dy tile already holds TF32 bit patterns (Params::dy_rounded).
template <int kNT, bool kLinearB, bool kARounded>
__device__ __forceinline__ void warp_mma_step_tf32_swz(float (&acc)[4][kNT][4], const float* a_even, const float* a_odd,
                                                       const float* const (&b)[kNT], int b4) {
  uint32_t af[4][4], bf[kNT][2];
#pragma unroll
  for (int mt = 0; mt < 4; ++mt) {
    const float* a = (mt & 1 ? a_odd : a_even) + 32 * (mt >> 1);
    const float2 lo = *reinterpret_cast<const float2*>(a);
    const float2 hi = *reinterpret_cast<const float2*>(a + 4 * 128);
    if constexpr (kARounded) {
      af[mt][0] = __float_as_uint(lo.x);
      af[mt][1] = __float_as_uint(lo.y);
      af[mt][2] = __float_as_uint(hi.x);
      af[mt][3] = __float_as_uint(hi.y);
    } else {
      af[mt][0] = tf32_round_fast(lo.x);
      af[mt][1] = tf32_round_fast(lo.y);
      af[mt][2] = tf32_round_fast(hi.x);
      af[mt][3] = tf32_round_fast(hi.y);
    }
  }
  if constexpr (kLinearB) {
    const float* b_lo = b[0];
    const float* b_hi = b_lo + b4;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      bf[nt][0] = tf32_round_fast(b_lo[nt * 8]);
      bf[nt][1] = tf32_round_fast(b_hi[nt * 8]);
    }
  } else {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      bf[nt][0] = tf32_round_fast(b[nt][0]);
      bf[nt][1] = tf32_round_fast(b[nt][b4]);
    }
  }
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
      mma_tf32_16x8x8(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], bf[nt][0], bf[nt][1]);
}

// kNCW and kBT (output positions per unit) are compile-time so the k-steps of a unit unroll completely and the
// fragment loads of NCW's contiguous axes fold into immediate offsets.
template <class Op, int kMT, int kNT, int kWarpsM, bool kAContig, bool kNCW, int kBT>
__global__ void __launch_bounds__(threads_of(kWarpsM), 1)
    wgrad_gemm_kernel(const Params prm, const typename Op::T* __restrict__ x, const typename Op::T* __restrict__ dy,
                      typename Op::T* __restrict__ dw, typename Op::T* __restrict__ db) {
  using T = typename Op::T;
  constexpr int kThreads = threads_of(kWarpsM);
  constexpr int kBM = 16 * kMT * kWarpsM;
  static_assert(kBT % Op::kK == 0 && kBT % 4 == 0, "a unit is whole k-steps");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const smem = reinterpret_cast<T*>(smem_raw);
  const Conv1dParams& p = prm.p;
  constexpr bool ncw = kNCW;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp % kWarpsM, wn = warp / kWarpsM, g = lane >> 2, tq = lane & 3;

  // Output tile of this block.
  int tile = blockIdx.x;
  const int kblk = tile % prm.k_blocks;
  tile /= prm.k_blocks;
  const int cblk = tile % prm.c_blocks;
  tile /= prm.c_blocks;
  const int oblk = tile % prm.o_blocks;
  const int grp = tile / prm.o_blocks;
  const int64_t og = p.out_per_group(), cg = p.in_per_group();
  const int64_t o_first = grp * og + int64_t(oblk) * kBM;  // global output channel of tile row 0
  const int o_valid = static_cast<int>(std::min<int64_t>(kBM, og - int64_t(oblk) * kBM));
  const int64_t c_in_group = int64_t(cblk) * prm.bch;
  const int64_t c_first = grp * cg + c_in_group;
  const int c_valid = static_cast<int>(std::min<int64_t>(prm.bch, cg - c_in_group));
  const int k_first = kblk * prm.kb;

  // Reduction range of this split.
  const int64_t split = blockIdx.y;
  const int64_t u_begin = split * prm.units / prm.splits;
  const int64_t u_end = (split + 1) * prm.units / prm.splits;
  const int64_t count = u_end - u_begin;

  // Fragment addressing: A (m = out channel, k = position) from the dy tile, B (k = position, n = column)
  // from the x tile.
  const int a_m = ncw ? prm.dy_pitch : 1;
  const int a_k = ncw ? 1 : prm.dy_pitch;
  int a_row[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) a_row[mt][h] = (wm * kMT * 16 + mt * 16 + g + 8 * h) * a_m;
  const int b_c = ncw ? prm.x_pitch : 1, b_l = ncw ? 1 : prm.x_pitch;
  const int b_k = static_cast<int>(p.stride) * b_l;
  int b_col0[kNT], b_seg[kNT];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    const int n = wn * kNT * 8 + nt * 8 + g;
    int j = n / prm.bch;
    const int c = n - j * prm.bch;
    if (j >= prm.kb) j = 0;  // padding columns: any in-range address, the results are dropped
    b_seg[nt] = prm.tap_seg[j];
    b_col0[nt] = prm.seg_base[b_seg[nt]] + c * b_c + prm.tap_off[j] * b_l;
  }

  const int stage_elems = prm.dy_elems + prm.x_elems;

  // 16-bit NWC: both tiles are stored reduction-major, so fragments load with ldmatrix.trans (the host picks
  // pitches that are multiples of 8 elements). Byte offsets of this lane's rows, before the stage's base and
  // the k-step's row offset; see warp_mma_step_16bit_ldsm.
  constexpr bool kLdsm = sizeof(T) == 2 && !kNCW;
  uint32_t a_lane0 = 0, b_lane0[kNT / 2 > 0 ? kNT / 2 : 1] = {};
  if constexpr (kLdsm) {
    const int r8 = lane & 7, i4 = lane >> 3;
    a_lane0 = ((r8 + 8 * (i4 >> 1)) * prm.dy_pitch + wm * kMT * 16 + 8 * (i4 & 1)) * int(sizeof(T));
#pragma unroll
    for (int q = 0; q < kNT / 2; ++q) {
      const int n0 = wn * kNT * 8 + (2 * q + (i4 >> 1)) * 8;  // first of the 8 columns of this lane's matrix
      int j = n0 / prm.bch, c = n0 - j * prm.bch;
      if (j >= prm.kb) j = 0, c = 0;  // padding columns: any in-range address, the results are dropped
      const int col = prm.seg_base[prm.tap_seg[j]] + prm.tap_off[j] * prm.x_pitch + c;
      b_lane0[q] = (col + (r8 + 8 * (i4 & 1)) * static_cast<int>(p.stride) * prm.x_pitch) * int(sizeof(T));
    }
  }
  auto unit_origin = [&](int64_t u, int64_t& n, int64_t& t0) {  // 32-bit: the host checks units < 2^31
    const uint32_t uu = static_cast<uint32_t>(u), tu = static_cast<uint32_t>(prm.t_units);
    const uint32_t nn = uu / tu;
    n = nn;
    t0 = int64_t(uu - nn * tu) * kBT;
  };
  const int64_t t_end = prm.t_units * kBT;
  UnitCursor load_at, compute_at;
  unit_origin(u_begin, load_at.n, load_at.t0);
  compute_at = load_at;

  // NWC windows with 16-byte chunks whose rows are whole chunks: per-thread row copies for interior units.
  constexpr int sz = static_cast<int>(sizeof(T));
  const bool dy_rows = !ncw && prm.row_copies && prm.vec_dy * sz == 16 && o_valid == kBM && (kBM * sz) % 16 == 0;
  const bool x_rows = !ncw && prm.row_copies && prm.vec_x * sz == 16 && c_valid == prm.bch && (prm.bch * sz) % 16 == 0;
  const RowCopy dy_copy = dy_rows ? row_copy_of(kBM * sz, tid, kThreads) : RowCopy{};
  const RowCopy x_copy = x_rows ? row_copy_of(prm.bch * sz, tid, kThreads) : RowCopy{};

  // Swizzled dy tile (host-checked: NWC float32 TF32, 128-row tile, 16-byte chunks).
  constexpr bool kSwizzle = !kNCW && std::is_same_v<Op, MmaTf32> && kMT == 4 && kWarpsM == 2;
  const bool swz = kSwizzle && prm.swizzled;
  const RowCopy sw_dy = swz ? row_copy_of(kBM * sz, tid, kThreads) : RowCopy{};
  const int sw_dy_col = ((sw_dy.col_bytes / 16) ^ swz_dy(sw_dy.r0)) * 16;
  const bool dy_rounded = swz && prm.dy_rounded;

  auto load_unit = [&](int stage) {
    const int64_t n = load_at.n, t0 = load_at.t0;
    load_at.advance(t_end, kBT);
    T* dy_s = smem + stage * stage_elems;
    T* x_s = dy_s + prm.dy_elems;
    const int64_t l_base = t0 * p.stride + int64_t(k_first) * p.dilation - p.pad_lo;
    if (swz) {  // rows past the end of dy land as zeros; their source pointers are never read
      copy_rows16_checked(sw_dy, sw_dy_col, reinterpret_cast<const char*>(dy + (n * p.y_n + o_first * p.y_o + t0 * p.y_t)),
                          p.y_t * sz, smem_u32(dy_s), kBM * sz, kBT, 0,
                          static_cast<int>(std::min<int64_t>(kBT, p.out_length - t0)));
    } else if (dy_rows && t0 + kBT <= p.out_length) {
      copy_rows16(dy_copy, reinterpret_cast<const char*>(dy + (n * p.y_n + o_first * p.y_o + t0 * p.y_t)),
                  p.y_t * sz, smem_u32(dy_s), prm.dy_pitch * sz, kBT);
    } else {
      TileWindow wd;
      wd.offset = n * p.y_n + o_first * p.y_o + t0 * p.y_t;
      wd.line_stride = p.y_o;
      wd.pos_stride = p.y_t;
      wd.lines = kBM;
      wd.positions = kBT;
      wd.line_valid = o_valid;
      wd.pos_lo = 0;
      wd.pos_hi = p.out_length - t0;
      load_window_fast(dy, wd, dy_s, prm.dy_pitch, prm.vec_dy, ncw, tid, kThreads);
    }
    for (int j = 0; j < prm.nseg; ++j) {
      const int64_t ls = l_base + prm.seg_src[j];
      if (x_rows && ls >= 0 && ls + prm.seg_len[j] <= p.in_length) {
        copy_rows16(x_copy, reinterpret_cast<const char*>(x + (n * p.x_n + c_first * p.x_c + ls * p.x_l)),
                    p.x_l * sz, smem_u32(x_s + prm.seg_base[j]), prm.x_pitch * sz, prm.seg_len[j]);
        continue;
      }
      TileWindow wx;
      wx.offset = n * p.x_n + c_first * p.x_c + ls * p.x_l;
      wx.line_stride = p.x_c;
      wx.pos_stride = p.x_l;
      wx.lines = prm.bch;
      wx.positions = prm.seg_len[j];
      wx.line_valid = c_valid;
      wx.pos_lo = -ls;
      wx.pos_hi = p.in_length - ls;
      load_window_fast(x, wx, x_s + prm.seg_base[j], prm.x_pitch, prm.vec_x, ncw, tid, kThreads);
    }
  };

  constexpr bool kCompensated = std::is_same_v<Op, Mma3xTf32>;  // float32-accurate: see the step's comment
  float acc[kMT][kNT][4], comp[kMT][kNT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = comp[mt][nt][e] = 0.0f;

  // Bias rows of this thread: tile rows bias_row + (kThreads/4)*i, positions (tid & 3) + 4*j of each unit;
  // lanes (g, tq) read the same (row, position) pattern as the A fragments, for which the pitch is conflict-free.
  constexpr int kBiasRowStep = kThreads / 4;
  constexpr int kBiasRows = kBM / kBiasRowStep;
  static_assert(kBM % kBiasRowStep == 0, "every tile row has its four bias lanes");
  const bool want_bias = db != nullptr && cblk == 0 && kblk == 0;
  const int bias_row = tid >> 2, bias_pos = tid & 3;
  float bias_acc[kBiasRows], bias_comp[kBiasRows];
#pragma unroll
  for (int i = 0; i < kBiasRows; ++i) bias_acc[i] = bias_comp[i] = 0.0f;

  // Pointer-stepped NWC TF32 fragments (warp_mma_step_tf32_rows): lane offsets of A and B at k-step 0.
  constexpr bool kRowsStep = !kNCW && std::is_same_v<Op, MmaTf32>;
  const bool ptr_steps = kRowsStep && prm.ptr_steps && prm.tf32_rn;
  bool linear_b = true;
#pragma unroll
  for (int nt = 1; nt < kNT; ++nt) linear_b = linear_b && b_col0[nt] == b_col0[0] + 8 * nt;
  linear_b = __all_sync(0xffffffffu, linear_b);
  const int a_lane_off = wm * kMT * 16 + g + tq * a_k;
  const int b_lane_off = tq * b_k;
  // Swizzled dy: element offsets of this lane's channel pairs of m-tiles 0 and 1 at k = tq (swz_dy).
  int sw_a_even = 0, sw_a_odd = 0;
  if (swz) {
    const int chunk0 = (wm * kMT * 16) / 4 + (g >> 1);  // m-tile mt's pair lies in chunk chunk0 + 4*mt
    sw_a_even = tq * kBM + ((chunk0 ^ swz_dy(tq)) * 4) + 2 * (g & 1);
    sw_a_odd = tq * kBM + (((chunk0 + 4) ^ swz_dy(tq)) * 4) + 2 * (g & 1);
  }

  auto compute_unit = [&](int stage) {
    const int64_t t0 = compute_at.t0;
    compute_at.advance(t_end, kBT);
    const T* dy_s = smem + stage * stage_elems;
    const T* x_s = dy_s + prm.dy_elems;
    int b_col[kNT];
    if (ncw) {
      // NCW x rows were copied from their aligned-down start; the same shift locates position 0.
      const int64_t l_base = t0 * p.stride + int64_t(k_first) * p.dilation - p.pad_lo;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) b_col[nt] = b_col0[nt] + low_bits(l_base + prm.seg_src[b_seg[nt]], prm.vec_x);
    } else {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) b_col[nt] = b_col0[nt];
    }
    if (swz) {
      if constexpr (kSwizzle) {
        const float* b[kNT];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) b[nt] = x_s + b_col[nt] + b_lane_off;
        auto steps = [&](auto linear, auto rounded) {
#pragma unroll
          for (int k0 = 0; k0 < kBT; k0 += 8) {
            warp_mma_step_tf32_swz<kNT, decltype(linear)::value, decltype(rounded)::value>(
                acc, dy_s + sw_a_even + k0 * kBM, dy_s + sw_a_odd + k0 * kBM, b, 4 * b_k);
            if constexpr (decltype(linear)::value) {
              b[0] += 8 * b_k;
            } else {
#pragma unroll
              for (int nt = 0; nt < kNT; ++nt) b[nt] += 8 * b_k;
            }
          }
        };
        using Yes = std::true_type;
        using No = std::false_type;
        if (dy_rounded)
          linear_b ? steps(Yes{}, Yes{}) : steps(No{}, Yes{});
        else
          linear_b ? steps(Yes{}, No{}) : steps(No{}, No{});
      }
    } else if (ptr_steps) {
      if constexpr (kRowsStep) {
        const float* a = dy_s + a_lane_off;
        const float* b[kNT];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) b[nt] = x_s + b_col[nt] + b_lane_off;
        if (linear_b) {
#pragma unroll
          for (int k0 = 0; k0 < kBT; k0 += 8) {
            warp_mma_step_tf32_rows<kMT, kNT, true>(acc, a, 4 * a_k, b, 4 * b_k);
            a += 8 * a_k;
            b[0] += 8 * b_k;
          }
        } else {
#pragma unroll
          for (int k0 = 0; k0 < kBT; k0 += 8) {
            warp_mma_step_tf32_rows<kMT, kNT, false>(acc, a, 4 * a_k, b, 4 * b_k);
            a += 8 * a_k;
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) b[nt] += 8 * b_k;
          }
        }
      }
    } else {
#pragma unroll
      for (int k0 = 0; k0 < kBT; k0 += Op::kK) {
        if constexpr (kLdsm) {
          const uint32_t dy_a = smem_u32(dy_s) + a_lane0 + k0 * prm.dy_pitch * int(sizeof(T));
          const uint32_t x_k = smem_u32(x_s) + k0 * static_cast<int>(p.stride) * prm.x_pitch * int(sizeof(T));
          uint32_t b_lane[kNT / 2];
#pragma unroll
          for (int q = 0; q < kNT / 2; ++q) b_lane[q] = x_k + b_lane0[q];
          warp_mma_step_16bit_ldsm<Op, kMT, kNT>(acc, dy_a, b_lane);
        } else if constexpr (kCompensated)
          warp_mma_step_3xtf32_compensated<kMT, kNT>(acc, comp, dy_s, a_row, a_k, x_s, b_col, b_k, k0, lane);
        else if constexpr (std::is_same_v<Op, MmaTf32>) {
          if (prm.tf32_rn)
            warp_mma_step_tf32_rn<kMT, kNT>(acc, dy_s, a_row, a_k, x_s, b_col, b_k, k0, lane);
          else
            warp_mma_step<Op, kMT, kNT, kAContig, false>(acc, dy_s, a_row, a_k, x_s, b_col, b_k, k0, lane);
        } else
          warp_mma_step<Op, kMT, kNT, kAContig, false>(acc, dy_s, a_row, a_k, x_s, b_col, b_k, k0, lane);
      }
    }
    if (want_bias && !dy_rounded) {
#pragma unroll
      for (int i = 0; i < kBiasRows; ++i) {
        const int m = bias_row + kBiasRowStep * i;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < kBT / 4; ++j) {
          const int t = bias_pos + 4 * j;
          const int col = swz ? (((m >> 2) ^ swz_dy(t)) << 2) + (m & 3) : m;
          sum += to_acc(dy_s[ncw ? m * prm.dy_pitch + t : t * prm.dy_pitch + col]);
        }
        const float y = sum - bias_comp[i];
        const float tt = bias_acc[i] + y;
        bias_comp[i] = (tt - bias_acc[i]) - y;
        bias_acc[i] = tt;
      }
    }
  };

  // Pipeline: nstage-1 units in flight while one is computed.
  // dy_rounded: this thread's dy chunks of a landed stage (the same 16 bytes of channels 4*(tid % 32) .. +3 in
  // rows warp, warp + 8, ...) rounded to TF32 in place, their raw values summed for the bias gradient (a fresh
  // sum per unit, added with Kahan compensation). Only the thread's own cp.async data is read, which its own
  // wait made visible, and the unit's barrier that follows publishes the rounded words to the other warps.
  float rb_acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, rb_comp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  auto round_dy_stage = [&](int stage) {
    if constexpr (kSwizzle) {
      constexpr int kRowStep = kThreads / (kBM / 4);  // rows between a thread's chunks: 8
      static_assert(kBT % kRowStep == 0, "whole rows per thread");
      float* row = reinterpret_cast<float*>(smem + stage * stage_elems) + sw_dy.r0 * kBM + sw_dy_col / 4;
      float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < kBT / kRowStep; ++i) {
        float4* v4 = reinterpret_cast<float4*>(row + i * kRowStep * kBM);
        float4 v = *v4;
        if (want_bias) sum[0] += v.x, sum[1] += v.y, sum[2] += v.z, sum[3] += v.w;
        v.x = __uint_as_float(tf32_round_fast(v.x));
        v.y = __uint_as_float(tf32_round_fast(v.y));
        v.z = __uint_as_float(tf32_round_fast(v.z));
        v.w = __uint_as_float(tf32_round_fast(v.w));
        *v4 = v;
      }
      if (want_bias) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float y = sum[e] - rb_comp[e];
          const float tt = rb_acc[e] + y;
          rb_comp[e] = (tt - rb_acc[e]) - y;
          rb_acc[e] = tt;
        }
      }
    }
  };

  // Units are loaded and computed in order, so each side walks its own cursor.
  for (int s = 0; s < prm.nstage - 1; ++s) {
    if (s < count) load_unit(s);
    cp_async_commit();
  }
  int load_stage = prm.nstage - 1, compute_stage = 0;
  for (int64_t i = 0; i < count; ++i) {
    cp_async_wait_pending(prm.nstage - 2);
    if (dy_rounded) round_dy_stage(compute_stage);
    __syncthreads();  // unit i has landed, and every warp is done with the stage about to be refilled
    if (i + prm.nstage - 1 < count) load_unit(load_stage);
    cp_async_commit();
    compute_unit(compute_stage);
    load_stage = load_stage + 1 == prm.nstage ? 0 : load_stage + 1;
    compute_stage = compute_stage + 1 == prm.nstage ? 0 : compute_stage + 1;
  }
  cp_async_wait<0>();

  // Epilogue: every (split, weight element) of the tile is written exactly once, zeros included.
  const int64_t w_size = p.w_size();
  float* const part = prm.partials ? prm.partials + split * prm.split_stride : nullptr;
  if (want_bias && dy_rounded) {
    // The 8 warps' sums of each channel (warp w summed rows w, w + 8, ...), added in warp order.
    __syncthreads();  // every warp is done with the stages; their first 4 KB become the exchange
    float* red = reinterpret_cast<float*>(smem_raw);
#pragma unroll
    for (int e = 0; e < 4; ++e) red[sw_dy.r0 * kBM + sw_dy.col_bytes / 4 + e] = rb_acc[e] - rb_comp[e];
    __syncthreads();
    if (tid < kBM) {
      float v = 0.0f;
      for (int w = 0; w < kThreads / (kBM / 4); ++w) v += red[w * kBM + tid];
      if (part)
        part[w_size + o_first + tid] = v;
      else
        db[o_first + tid] = from_acc<T>(v);
    }
  }
  if (want_bias && !dy_rounded) {
#pragma unroll
    for (int i = 0; i < kBiasRows; ++i) {
      // The four lanes of a row, added in a fixed pattern.
      float v = bias_acc[i] - bias_comp[i];
      v += __shfl_xor_sync(0xffffffffu, v, 1);
      v += __shfl_xor_sync(0xffffffffu, v, 2);
      const int m = bias_row + kBiasRowStep * i;
      if (bias_pos == 0 && m < o_valid) {
        if (part)
          part[w_size + o_first + m] = v;
        else
          db[o_first + m] = from_acc<T>(v);
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        // The swizzled dy tile assigns channels to fragment rows differently (see swz_dy).
        const int m = swz ? wm * kMT * 16 + 2 * (8 * mt + g) + (e >> 1) : wm * kMT * 16 + mt * 16 + g + 8 * (e >> 1);
        const int n = wn * kNT * 8 + nt * 8 + 2 * tq + (e & 1);
        const int j = n / prm.bch, c = n - j * prm.bch;
        const int64_t k = k_first + j;
        if (m >= o_valid || j >= prm.kb || c >= c_valid || k >= p.kernel_size) continue;
        const int64_t idx = (o_first + m) * p.w_o + (c_in_group + c) * p.w_c + k * p.w_k;
        const float v = kCompensated ? acc[mt][nt][e] - comp[mt][nt][e] : acc[mt][nt][e];
        if (part)
          part[idx] = v;
        else
          dw[idx] = from_acc<T>(v);
      }
}

// ---- host side -------------------------------------------------------------------------------------------

struct Plan {
  Params prm;
  int mt = 4, nt = 4;  // block tile (32*mt) x (32*nt), on 2 x 4 warps
  int64_t mma_cols = 0;  // MMA columns over the whole weight (channel and tap blocks times the tile width)
  size_t smem = 0;
  dim3 grid;
};

// Fills everything but the split count; false when the shape is outside the kernel's range. only_nt = 8: the
// 128 x 256 tile of the TMA kernel (wgrad_tma.cuh; the padded kernel has no such instantiation), else the
// cheaper of 128 x 128 and 128 x 192.
template <class Op>
bool make_plan(const Conv1dParams& p, Plan* plan, int only_nt = 0) {
  using T = typename Op::T;
  constexpr int sz = sizeof(T);
  const int64_t og = p.out_per_group(), cg = p.in_per_group(), K = p.kernel_size;
  Params& q = plan->prm;
  q = Params{};
  q.p = p;
  // JAX_CONV1D_WGRAD_TF32=rna: the previous ties-away rounding (for A/B runs).
  const char* tf32 = std::getenv("JAX_CONV1D_WGRAD_TF32");
  q.tf32_rn = !(tf32 && std::string(tf32) == "rna");
  // JAX_CONV1D_WGRAD_LOADS=window / =rows / JAX_CONV1D_WGRAD_STEPS=indexed: the session-3 tile copies, the
  // session-4 per-thread row copies, the indexed k-step addressing (same results bit for bit; for A/B runs).
  // The default loads NWC float32 tiles through tensor maps (wgrad_tma.cuh) where the shape allows.
  const char* loads = std::getenv("JAX_CONV1D_WGRAD_LOADS");
  const std::string loads_s = loads ? loads : "";
  q.row_copies = loads_s != "window";
  const char* steps = std::getenv("JAX_CONV1D_WGRAD_STEPS");
  q.ptr_steps = !(steps && std::string(steps) == "indexed");
  // The compensated float32-accurate sums keep twice the accumulators: the narrow tile keeps them in registers.
  plan->mt = (og <= 64 || std::is_same_v<Op, Mma3xTf32>) ? 2 : 4;
  const int bm = 32 * plan->mt;

  // Column blocks: the fewest MMA columns over the whole weight, then the widest channel block.
  int64_t best_cost = -1;
  for (int nt : {4, 6, 8}) {
    if (only_nt ? nt != only_nt : nt == 8) continue;
    if (plan->mt == 2 && nt != 4) continue;  // instantiated shapes: (4,4), (4,6), (2,4); TMA only: (4,8)
    if (std::is_same_v<Op, Mma3xTf32> && nt == 6) continue;  // the compensated sums need the registers
    const int bn = 32 * nt;
    for (int bch = 8; bch <= std::min<int64_t>(bn, round_up(cg, 8)); bch += 8) {
      const int kb = static_cast<int>(std::min<int64_t>({K, bn / bch, kMaxTaps}));
      const int64_t cost = ceil_div(cg, bch) * ceil_div(K, kb) * bn;
      if (best_cost < 0 || cost < best_cost || (cost == best_cost && bch > q.bch)) {
        best_cost = cost, plan->nt = nt, q.bch = bch, q.kb = kb;
      }
    }
  }
  if (best_cost < 0) return false;
  plan->mma_cols = best_cost;

  const bool ncw = p.layout == Layout::kNCW;
  q.vec_dy = ncw ? widest_vec(sz, {p.out_length}) : widest_vec(sz, {p.out_channels, og, bm});
  q.vec_x = ncw ? widest_vec(sz, {p.in_length}) : widest_vec(sz, {p.in_channels, cg, q.bch});
  const int64_t s = p.stride, d = p.dilation;

  // float32 TF32: units of 64 positions first, half the barriers and per-unit set-up per MMA, in fewer stages
  // (measured 25-29 % faster on the headline and WaveNet weight gradients; the input gradient gained from
  // the same trade). JAX_CONV1D_WGRAD_BT=32 keeps the 32-position units, for A/B runs.
  const char* bt_env = std::getenv("JAX_CONV1D_WGRAD_BT");
  const bool try_bt64 = std::is_same_v<Op, MmaTf32> && (bt_env == nullptr || std::string(bt_env) == "64");
  // Swizzled dy tile (warp_mma_step_tf32_swz), NWC float32 TF32 on 128-row tiles whose rows are whole 16-byte
  // chunks. Opt-in (JAX_CONV1D_WGRAD_SWIZZLE=1: dy also rounded once in shared memory, with the bias summed
  // there; =fragments: rounded per fragment): it cuts the compute block of a unit from ~550 to ~340
  // instructions per warp with the same dw bits, but measured no faster on an H100 (WaveNet and pointwise
  // layers within +-5 %, docs/notes/wgrad_session4.md), so the kernel is bound elsewhere and the simpler
  // padded tile stays the default.
  const char* swz_env = std::getenv("JAX_CONV1D_WGRAD_SWIZZLE");
  const bool swz_on = swz_env && (std::string(swz_env) == "1" || std::string(swz_env) == "fragments");
  q.swizzled = std::is_same_v<Op, MmaTf32> && q.tf32_rn && q.ptr_steps && !ncw && plan->mt == 4 && og % 128 == 0 &&
               q.vec_dy * sz == 16 && swz_on;
  q.dy_rounded = q.swizzled && std::string(swz_env) == "1";
  q.tma = loads_s.empty() && !ncw && !q.swizzled && std::is_same_v<Op, MmaTf32>;
  for (int bt : {64, 32, 16}) {
    if (bt == 64 && !try_bt64) continue;
    if (bt % Op::kK) continue;
    q.bt = bt;
    // x segments: the windows of the kb taps, merged where they overlap or nearly touch.
    int64_t starts[kMaxTaps];
    for (int j = 0; j < q.kb; ++j) starts[j] = j * d;
    TapSegments segs;
    if (!merge_tap_windows(starts, q.kb, (bt - 1) * s + 1, &segs)) return false;
    q.nseg = segs.count;
    for (int j = 0; j < segs.count; ++j) {
      q.seg_src[j] = static_cast<int>(segs.start[j]);
      q.seg_len[j] = static_cast<int>(segs.length[j]);
    }
    for (int j = 0; j < q.kb; ++j) {
      q.tap_seg[j] = segs.seg_of[j];
      q.tap_off[j] = static_cast<int>(segs.offset[j]);
    }

    // Shared tiles. Conflict patterns are those of warp_mma_step's loads: lane (g, tq) reads row g and
    // reduction index tq (or 2*tq for 16-bit pairs).
    const int kstep = sz == 4 ? 1 : 2;
    auto rows_g = [&](int gg, int t, int64_t P) { return gg * P + kstep * t; };      // lanes g on rows
    auto rows_t = [&](int gg, int t, int64_t P) { return kstep * t * P + gg; };      // lanes tq on rows
    auto x_rows_g = [&](int gg, int t, int64_t P) { return gg * P + kstep * t * s; };
    auto x_rows_t = [&](int gg, int t, int64_t P) { return kstep * t * s * P + gg; };
    if (ncw) {
      q.dy_pitch = static_cast<int>(pick_pitch(bt, std::max(q.vec_dy, kstep), rows_g, sz));
      q.dy_elems = bm * q.dy_pitch;
      int64_t cols = 0;
      for (int j = 0; j < q.nseg; ++j) {
        q.seg_base[j] = static_cast<int>(cols);
        cols += round_up(q.seg_len[j] + q.vec_x - 1, q.vec_x);
      }
      q.x_pitch = static_cast<int>(pick_pitch(cols, q.vec_x, x_rows_g, sz));
      q.x_elems = q.bch * q.x_pitch;
    } else {
      if (sz == 2) {
        // ldmatrix rows (warp_mma_step_16bit_ldsm): 16-byte aligned, and an odd number of 16-byte groups
        // apart so the 8 rows of a matrix hit distinct bank groups.
        q.dy_pitch = static_cast<int>(round_up(bm, 8));
        if ((q.dy_pitch / 8) % 2 == 0) q.dy_pitch += 8;
      } else {
        q.dy_pitch = static_cast<int>(pick_pitch(bm, q.vec_dy, rows_t, sz));
      }
      if (q.swizzled) q.dy_pitch = bm;  // unpadded rows: the swizzle spreads the banks
      q.dy_elems = bt * q.dy_pitch;
      if (sz == 2) {  // as dy, for rows `stride` apart (an even stride leaves 2-way conflicts)
        q.x_pitch = static_cast<int>(round_up(q.bch, 8));
        if ((s * q.x_pitch / 8) % 2 == 0) q.x_pitch += 8;
      } else {
        q.x_pitch = static_cast<int>(pick_pitch(q.bch, q.vec_x, x_rows_t, sz));
      }
      int64_t rows = 0;
      for (int j = 0; j < q.nseg; ++j) {
        q.seg_base[j] = static_cast<int>(rows * q.x_pitch);
        rows += q.seg_len[j];
      }
      q.x_elems = static_cast<int>(rows * q.x_pitch);
    }
    const int align = 16 / sz;
    q.dy_elems = static_cast<int>(round_up(q.dy_elems, align));
    q.x_elems = static_cast<int>(round_up(q.x_elems, align));
    const size_t stage_bytes = size_t(q.dy_elems + q.x_elems) * sz;
    const size_t budget = std::min<size_t>(device_limits().smem_optin, kMaxSmem);
    q.nstage = static_cast<int>(std::min<size_t>(4, budget / stage_bytes));
    if (q.nstage >= 2) {
      plan->smem = stage_bytes * q.nstage;
      break;
    }
  }
  if (q.nstage < 2) return false;

  q.o_blocks = static_cast<int>(ceil_div(og, bm));
  q.c_blocks = static_cast<int>(ceil_div(cg, q.bch));
  q.k_blocks = static_cast<int>(ceil_div(K, q.kb));
  const int64_t tiles = p.groups * q.o_blocks * q.c_blocks * q.k_blocks;
  if (tiles > 65535) return false;
  q.split_stride = p.w_size() + p.out_channels;
  q.t_units = ceil_div(p.out_length, q.bt);
  q.units = p.batch * q.t_units;
  if (q.units >= (int64_t(1) << 31)) return false;
  plan->grid = dim3(static_cast<unsigned>(tiles), 1, 1);
  return true;
}

// Splits: four waves of blocks (one block fits per SM), no more than the workspace holds. More, shorter
// splits keep each block's accumulation chain short (the tensor cores' float32 adds truncate) at the cost of
// one partial tile per block. Each split holds room for the bias gradient whether or not it is wanted, so the
// split count (and with it every rounding) is the same with and without db.
inline int choose_splits(const Params& q, int64_t tiles, size_t ws_bytes, int waves = 4) {
  int64_t splits = std::max<int64_t>(1, waves * device_limits().sms / tiles);
  splits = std::min<int64_t>({splits, q.units, 65535});
  const size_t fit = ws_bytes / (sizeof(float) * q.split_stride);
  if (static_cast<size_t>(splits) > fit) splits = static_cast<int64_t>(fit);
  return static_cast<int>(splits < 2 ? 1 : splits);
}

template <class Op>
size_t workspace_bytes(const Conv1dParams& p) {
  Plan plan;
  if (!make_plan<Op>(p, &plan)) return 0;
  const int splits = choose_splits(plan.prm, plan.grid.x, SIZE_MAX);
  return splits > 1 ? size_t(splits) * plan.prm.split_stride * sizeof(float) : 0;
}

}  // namespace wgrad_gemm
}  // namespace jax_conv1d::cuda

#include "wgrad_tma.cuh"  // the tensor-map kernel, on the Params and Plan above

namespace jax_conv1d::cuda {
namespace wgrad_gemm {

template <class Op, int kMT, int kNT, int kWarpsM, bool kAContig, bool kNCW, int kBT>
cudaError_t launch(const Plan& plan, const typename Op::T* x, const typename Op::T* dy, typename Op::T* dw,
                   typename Op::T* db, cudaStream_t stream) {
  auto kernel = wgrad_gemm_kernel<Op, kMT, kNT, kWarpsM, kAContig, kNCW, kBT>;
  if (cudaError_t err = allow_dynamic_smem(kernel, plan.smem); err != cudaSuccess) return err;
  kernel<<<plan.grid, threads_of(kWarpsM), plan.smem, stream>>>(plan.prm, x, dy, dw, db);
  return cudaGetLastError();
}

template <class Op, int kMT, int kNT, int kWarpsM, bool kAContig>
cudaError_t launch_layout(const Plan& plan, const typename Op::T* x, const typename Op::T* dy, typename Op::T* dw,
                          typename Op::T* db, cudaStream_t stream) {
  const bool ncw = plan.prm.p.layout == Layout::kNCW;
  if constexpr (std::is_same_v<Op, MmaTf32>) {
    if (plan.prm.bt == 64)
      return ncw ? launch<Op, kMT, kNT, kWarpsM, kAContig, true, 64>(plan, x, dy, dw, db, stream)
                 : launch<Op, kMT, kNT, kWarpsM, kAContig, false, 64>(plan, x, dy, dw, db, stream);
  }
  if (plan.prm.bt == 32)
    return ncw ? launch<Op, kMT, kNT, kWarpsM, kAContig, true, 32>(plan, x, dy, dw, db, stream)
               : launch<Op, kMT, kNT, kWarpsM, kAContig, false, 32>(plan, x, dy, dw, db, stream);
  return ncw ? launch<Op, kMT, kNT, kWarpsM, kAContig, true, 16>(plan, x, dy, dw, db, stream)
             : launch<Op, kMT, kNT, kWarpsM, kAContig, false, 16>(plan, x, dy, dw, db, stream);
}

// Block tiles (rows x columns), all on 2 x 4 warps: 64 x 128, 128 x 128 and 128 x 192.
template <class Op, bool kAContig>
cudaError_t launch_shape(const Plan& plan, const typename Op::T* x, const typename Op::T* dy, typename Op::T* dw,
                         typename Op::T* db, cudaStream_t stream) {
  if constexpr (std::is_same_v<Op, Mma3xTf32>) {
    return launch_layout<Op, 2, 4, 2, kAContig>(plan, x, dy, dw, db, stream);
  } else {
    if (plan.mt == 2) return launch_layout<Op, 2, 4, 2, kAContig>(plan, x, dy, dw, db, stream);
    return plan.nt == 6 ? launch_layout<Op, 4, 6, 2, kAContig>(plan, x, dy, dw, db, stream)
                        : launch_layout<Op, 4, 4, 2, kAContig>(plan, x, dy, dw, db, stream);
  }
}

// The whole weight gradient (and the bias gradient when db is not null) through one operand policy: plan,
// split, launch, and sum the partials.
template <class Op>
cudaError_t run(const Conv1dParams& p, const typename Op::T* x, const typename Op::T* dy, typename Op::T* dw,
                typename Op::T* db, WgradWorkspace ws, cudaStream_t stream) {
  using T = typename Op::T;
  Plan plan;
  if (!make_plan<Op>(p, &plan)) return cudaErrorNotSupported;
  Params& q = plan.prm;
  // JAX_CONV1D_WGRAD_WAVES=1..4: fewer, longer splits (for A/B runs; the workspace is sized for 4).
  const char* waves_env = std::getenv("JAX_CONV1D_WGRAD_WAVES");
  q.splits = choose_splits(q, plan.grid.x, ws.bytes, waves_env ? std::clamp(std::atoi(waves_env), 1, 4) : 4);
  q.partials = q.splits > 1 ? static_cast<float*>(ws.ptr) : nullptr;
  plan.grid.y = q.splits;
  // 16-bit A pairs load as words when dy's positions are contiguous (NCW); float never needs it.
  cudaError_t err = cudaErrorNotSupported;
  if constexpr (std::is_same_v<Op, MmaTf32>) {
    // The 128 x 256 TMA tile where it costs no more MMA columns than the narrow plan, on the shapes verified on
    // the device: K = 2, ungrouped, both taps of 128 channels in one block (WaveNet's layers), so each warp
    // computes 64 x 64 and reads 1 fragment word per MMA instead of 1.5. Half the waves of splits, so a shape
    // that halves its tiles keeps its split count, and with it the bits of the narrow plan.
    Plan wide;
    if (q.tma && p.groups == 1 && p.kernel_size == 2 && wgrad_tma_wide_tile() && make_plan<Op>(p, &wide, 8) &&
        wide.prm.tma && wide.prm.bch == 128 && wide.prm.kb == 2 && wide.mma_cols <= plan.mma_cols) {
      Params& wq = wide.prm;
      const int waves = waves_env ? std::clamp(std::atoi(waves_env), 1, 4) : 4;
      wq.splits = choose_splits(wq, wide.grid.x, ws.bytes, std::max(1, waves / 2));
      wq.partials = wq.splits > 1 ? static_cast<float*>(ws.ptr) : nullptr;
      wide.grid.y = wq.splits;
      err = try_launch_tma<Op>(wide, x, dy, dw, db, stream);
      if (err == cudaSuccess) q = wq;  // the split sums below follow the launched plan
    }
    if (q.tma && err == cudaErrorNotSupported) err = try_launch_tma<Op>(plan, x, dy, dw, db, stream);
  }
  if (err == cudaErrorNotSupported) {  // not the TMA kernel's shape: the padded cp.async kernel
    if constexpr (sizeof(T) == 2) {
      err = p.layout == Layout::kNCW ? launch_shape<Op, true>(plan, x, dy, dw, db, stream)
                                     : launch_shape<Op, false>(plan, x, dy, dw, db, stream);
    } else {
      err = launch_shape<Op, false>(plan, x, dy, dw, db, stream);
    }
  }
  if (err != cudaSuccess || q.splits == 1) return err;
  // dw and db (its partials follow dw's in each split) in one launch.
  return wgrad_sum_splits_strided<T>(q.partials, q.splits, q.split_stride, p.w_size(), dw, stream,
                                     db ? p.out_channels : 0, db);
}

}  // namespace wgrad_gemm
}  // namespace jax_conv1d::cuda
