// The fused depthwise backward kernel and its launch templates, shared by bwd_depthwise_fused.cu (plan,
// entry points, multiplier 1) and bwd_depthwise_fused_mult2.cu (the multiplier-2 instantiations, compiled
// beside it so that neither translation unit holds all ~90 kernels).
//
// Both gradients of a depthwise convolution (groups == C, O = m*C, channel multiplier m = 1 or 2) in one pass,
// on CUDA cores. Output channel o reads input channel o / m; the kernel runs over the O "virtual channels"
// (dy, w, dw and db are already in that order):
//
//   dx[n, c, l] = sum over j < m, (t, k) with t*s + k*d - pad = l of w[c*m+j, k] * dy[n, c*m+j, t]
//   dw[o, k]    = sum over (n, t) of dy[n, o, t] * x[n, o/m, t*s + k*d - pad]
//   db[o]       = sum over (n, t) of dy[n, o, t]
//
// A thread owns kVec consecutive virtual channels, m dividing kVec, so the m virtual channels of each of its
// kVec/m input channels are its own: x is staged once per input channel and widened on load, and dx sums its
// m channels in registers in a fixed order (j = 0 .. m-1) before one kVec/m-wide store. NCW with m = 2 gives a
// thread the two dy rows of one x channel (kVec = 2).
//
// Tiles are indexed by u: a tile of bt values u0 .. u0+bt-1 serves dw/db for t = u and dx for the positions
// l = u*s + r - pad (0 <= r < s), whose taps read dy[u - e_k] with e_k = floor(k*d / s) (the stride-phase
// decomposition of dgrad_phases.cuh). So one tile needs dy over [u0 - H, u0 + bt) with H = max e_k, and x over
// [u0*s - pad, u0*s - pad + (bt-1)*s + (K-1)*d + 1): both are staged once (cp.async, zeros outside the tensors,
// so no tap needs a bounds check; NWC windows wholly inside the tensor skip the range checks: copy_rows_16),
// dx is written straight from registers and dw/db accumulate in registers.
// u runs over the union of the t range [0, Lout) and the q range of dx, so every dx element is written exactly
// once and every (n, t) term counted once.
//
// Grid: (channel blocks, splits) for NWC, so that the blocks of one split launch together and a wave covers
// whole rows; (splits, channel blocks) for NCW (FusedPlan::cb_fastest). A block walks a contiguous range of
// (n, tile) units through a 2-3 stage pipeline; at the end its threads' partials are summed in a fixed order
// and written to scratch as [split][k][c] (k == K: db), and a second kernel adds the splits in order (float64).
// NWC: each thread owns
// kVec consecutive channels (16-byte shared and global accesses), threads of a row span 128 bytes of channels;
// NCW: one warp per channel row, lanes along positions. All index math inside a tile is 32-bit.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../conv1d_params.h"
#include "cp_async_tiles.cuh"
#include "cuda_types.cuh"
#include "smem_plan.cuh"

// The namespace is a macro only so that benchmarks/dw_fused_noslide.cu can build a second copy of all this
// (without the sliding walk) beside the first in one program.
#ifndef JC_DW_FUSED_NS
#define JC_DW_FUSED_NS dw_fused
#endif

namespace jax_conv1d::cuda::JC_DW_FUSED_NS {

constexpr int kThreads = 256;
constexpr int kMaxTaps = 16;

struct FusedPlan {
  Conv1dParams p;
  int cb;            // channels per block
  int bt;            // u values per tile
  int halo;          // H: dy positions before the tile that its dx taps read
  int64_t u_lo;      // u of the first tile
  int t_units;       // tiles per batch row
  int64_t units;     // batch * t_units
  int splits, c_blocks, nstage;
  int dy_rows, x_rows;  // window lengths in positions
  int vec_dy, vec_x;    // global copy widths in elements
  int dy_pitch, x_pitch, dy_elems, x_elems;
  int tap_x[kMaxTaps];   // x window position read by tap k at u = u0: k*d
  int tap_dy[kMaxTaps];  // dy window position read by tap k for dx at q = u0: H - e_k
  int tap_r[kMaxTaps];   // residue k*d mod s: the dx phase tap k serves
  // Sliding windows (kSlide): register slot m of the x window holds tap m - (kTaps - K), read at position
  // offset slide_x[m]; slot m of the dy window holds tap kTaps-1-m, read at slide_dy[m] (see the kernel).
  int slide_x[kMaxTaps], slide_dy[kMaxTaps];
  int slide_runs;        // runs of 4 positions a + d*(4*b + j) per tile: bt / (4*d) values of b for each a < d
  // kSlidingExact with both gradients walks runs of run_len (4 or 8) positions a + d*(run_len*b + j) once for
  // dx and dw: merged_runs = bt / (run_len*d) values of b for each a < d.
  int run_len, merged_runs;
  int vec;               // virtual channels per thread (the kernel's kVec)
  int mult;              // channel multiplier m = O / C (the kernel's kMult)
  // NWC tiles whose rows lie wholly inside the tensor copy through copy_rows_16 (fixed column per thread, no
  // range checks): log2 of the 16-byte chunks in a dy / x row, or -1 where rows are not whole 16-byte chunks.
  int rows_dy_log2, rows_x_log2;
  bool exact_taps;       // K equals the kernel's tap count (the sliding walk then takes kSlidingExact)
  bool want_dx, want_dwdb;
  bool cb_fastest;       // launch grid (c_blocks, splits): a wave covers whole rows of a few splits' tiles
  float* partials;       // [splits][K + 1][O]
};

// kVec elements of T at shared address `addr` (aligned to their size) widened to float. Addresses are 32-bit
// shared-window byte offsets so that each tap costs one add and one LDS (generic pointers made the compiler
// rebuild the shared window base around every load).
template <typename T, int kVec>
__device__ __forceinline__ void lds_vec(uint32_t addr, float (&v)[kVec]) {
  constexpr int kBytes = kVec * static_cast<int>(sizeof(T));
  uint32_t w[kBytes < 4 ? 1 : kBytes / 4];
  if constexpr (kBytes == 16) {
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
                 : "r"(addr));
  } else if constexpr (kBytes == 8) {
    asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];\n" : "=r"(w[0]), "=r"(w[1]) : "r"(addr));
  } else if constexpr (kBytes == 4) {
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(w[0]) : "r"(addr));
  } else {
    unsigned short h;
    asm volatile("ld.shared.b16 %0, [%1];\n" : "=h"(h) : "r"(addr));
    w[0] = h;
  }
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    if constexpr (sizeof(T) == 4) {
      v[i] = __uint_as_float(w[i]);
    } else {
      const uint32_t bits = (w[i / 2] >> (16 * (i % 2))) & 0xffffu;
      if constexpr (std::is_same_v<T, __nv_bfloat16>)
        v[i] = __uint_as_float(bits << 16);
      else
        v[i] = __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
    }
  }
}

// kN channels at `addr`: one vector (NWC, or a single channel), or kN rows `row_bytes` apart (NCW with
// several channels per thread; `rows` is a compile-time false for multiplier 1, so that branch vanishes).
template <typename T, int kN>
__device__ __forceinline__ void lds_chan(uint32_t addr, int row_bytes, bool rows, float (&v)[kN]) {
  if (kN == 1 || !rows) {
    lds_vec<T, kN>(addr, v);
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      float one[1];
      lds_vec<T, 1>(addr + i * row_bytes, one);
      v[i] = one[0];
    }
  }
}

// x for kVec virtual channels: the kVec / kMult input channels they read, each repeated kMult times.
template <typename T, int kVec, int kMult>
__device__ __forceinline__ void lds_x(uint32_t addr, int row_bytes, bool rows, float (&v)[kVec]) {
  float e[kVec / kMult];
  lds_chan<T, kVec / kMult>(addr, row_bytes, rows, e);
#pragma unroll
  for (int i = 0; i < kVec; ++i) v[i] = e[i / kMult];
}

template <typename T>
__device__ __forceinline__ uint32_t storage_bits(float v) {
  if constexpr (sizeof(T) == 4)
    return __float_as_uint(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  else
    return __half_as_ushort(__float2half_rn(v));
}

// kVec floats rounded to T and stored at p with one access.
template <typename T, int kVec>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[kVec]) {
  constexpr int kBytes = kVec * static_cast<int>(sizeof(T));
  if constexpr (kBytes < 4) {
    *p = from_acc<T>(v[0]);
  } else {
    uint32_t w[kBytes / 4];
#pragma unroll
    for (int i = 0; i < kBytes / 4; ++i) {
      if constexpr (sizeof(T) == 4)
        w[i] = storage_bits<T>(v[i]);
      else
        w[i] = storage_bits<T>(v[2 * i]) | (storage_bits<T>(v[2 * i + 1]) << 16);
    }
    if constexpr (kBytes == 16)
      *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
    else if constexpr (kBytes == 8)
      *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
    else
      *reinterpret_cast<uint32_t*>(p) = w[0];
  }
}

// dx of the kVec / kMult input channels behind kVec virtual channels: each sums its kMult channels in order.
template <typename T, int kVec, int kMult>
__device__ __forceinline__ void store_dx(T* p, const float (&a)[kVec]) {
  if constexpr (kMult == 1) {
    store_vec<T, kVec>(p, a);
  } else {
    float r[kVec / kMult];
#pragma unroll
    for (int i = 0; i < kVec / kMult; ++i) {
      r[i] = a[i * kMult];
#pragma unroll
      for (int j = 1; j < kMult; ++j) r[i] += a[i * kMult + j];
    }
    store_vec<T, kVec / kMult>(p, r);
  }
}

// `rows` rows of 2^log2_chunks 16-byte chunks from global (rows `g_row` bytes apart) to shared (rows `s_row`
// bytes apart), for a window that lies wholly inside the tensor. Each thread keeps one chunk column and steps
// through the rows by constant byte offsets: ~4 instructions per chunk, where load_window's general walk
// (range checks, zero fill, 64-bit index math per chunk) costs ~60; that walk was most of the instructions of
// short-tile shapes such as mamba's (docs/notes/dwbwd7_session7.md).
__device__ __forceinline__ void copy_rows_16(const void* src, int64_t g_row, int rows, uint32_t dst, int s_row,
                                             int log2_chunks, int tid, int nthreads) {
  const int col = tid & ((1 << log2_chunks) - 1), r0 = tid >> log2_chunks, step = nthreads >> log2_chunks;
  const char* g = static_cast<const char*>(src) + r0 * g_row + col * 16;
  uint32_t d = dst + r0 * s_row + col * 16;
  const int64_t g_step = step * g_row;
  const uint32_t d_step = static_cast<uint32_t>(step * s_row);
#pragma unroll 4
  for (int r = r0; r < rows; r += step) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(g));
    g += g_step;
    d += d_step;
  }
}

// kTaps >= K (per-thread tap arrays in registers, loops unrolled); kVec channels per thread (NCW: kMult);
// How a thread walks a tile's positions.
//  kAnyStride: position groups interleaved; dx loops over the s residues and sums the taps of each.
//  kUnitStride: stride 1, so every tap serves the one dx phase and the per-output residue test disappears.
//  kSliding (NWC, stride 1, 4*d divides bt): each thread takes runs of 4 positions d apart; position t + d reads
//   through tap k what position t read through tap k + 1 (x) or k - 1 (dy), so the taps live in a register
//   window that shifts by one slot per position and each position costs one new shared load per tensor
//   instead of K.
//  kSlidingExact: kSliding with K == kTaps known at compile time: the per-tap `k < K` tests and the
//   conversions the compiler duplicated into their branches disappear (same arithmetic, same bits).
enum Walk : int { kAnyStride = 0, kUnitStride = 1, kSliding = 2, kSlidingExact = 3 };

template <typename T, int kTaps, int kVec, int kWalk, int kMult>
__global__ void __launch_bounds__(kThreads, 2)
    bwd_depthwise_fused_kernel(const FusedPlan prm, const T* __restrict__ x, const T* __restrict__ dy,
                               const T* __restrict__ w, T* __restrict__ dx) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const smem = reinterpret_cast<T*>(smem_raw);
  const Conv1dParams& p = prm.p;
  const bool ncw = p.layout == Layout::kNCW;
  const int tid = threadIdx.x;
  const int K = kWalk == kSlidingExact ? kTaps : static_cast<int>(p.kernel_size);
  constexpr bool kSlide = kWalk == kSliding || kWalk == kSlidingExact;
  static_assert(kVec % kMult == 0, "a thread owns whole input channels");
  const bool rows = kMult > 1 && ncw;  // NCW with several (virtual) channel rows per thread
  const int s = kWalk == kAnyStride ? static_cast<int>(p.stride) : 1;

  // Channels below are virtual (output) channels; x and dx channel o / kMult.
  const int64_t vch = p.out_channels;
  // Which grid axis is the split and which the channel block (cb_fastest: blocks of one split, all channel
  // blocks, are launched together, so a wave reads whole rows; else one split after another per channel block).
  const int64_t split = prm.cb_fastest ? blockIdx.y : blockIdx.x;
  const int64_t c_first = int64_t(prm.cb_fastest ? blockIdx.x : blockIdx.y) * prm.cb;
  const int c_valid = static_cast<int>(vch - c_first < prm.cb ? vch - c_first : prm.cb);
  // NWC: cgroups threads across a row of channels, pgroups rows at a time; NCW: a warp per channel row.
  const int cgroups = prm.cb / kVec;
  const int pgroups = kThreads / cgroups;
  const int cg = ncw ? tid / pgroups : tid % cgroups;
  const int pg = ncw ? tid % pgroups : tid / cgroups;
  const int c_local = cg * kVec;
  const bool c_ok = c_local < c_valid;  // kVec divides O: a thread's channels are all valid or all not

  const int64_t u_begin = split * prm.units / prm.splits;
  const int64_t u_end = (split + 1) * prm.units / prm.splits;
  const int64_t count = u_end - u_begin;
  const int stage_elems = prm.dy_elems + prm.x_elems;

  auto unit_origin = [&](int64_t u, int64_t* n, int64_t* u0) {
    const uint32_t nn = static_cast<uint32_t>(u) / static_cast<uint32_t>(prm.t_units);  // units < 2^31
    *n = nn;
    *u0 = prm.u_lo + int64_t(static_cast<uint32_t>(u) - nn * static_cast<uint32_t>(prm.t_units)) * prm.bt;
  };

  auto load_unit = [&](int64_t u, int stage) {
    int64_t n, u0;
    unit_origin(u, &n, &u0);
    T* dy_s = smem + stage * stage_elems;
    const int64_t t_start = u0 - prm.halo;
    TileWindow wd;
    wd.offset = n * p.y_n + c_first * p.y_o + t_start * p.y_t;
    wd.line_stride = p.y_o;
    wd.pos_stride = p.y_t;
    wd.lines = prm.cb;
    wd.positions = prm.dy_rows;
    wd.line_valid = c_valid;
    wd.pos_lo = -t_start;
    wd.pos_hi = p.out_length - t_start;
    constexpr int sz = sizeof(T);
    // The strided walk keeps the general loader: the row copies' extra code made ptxas spill in three of its
    // instantiations, and the measured gain was on the stride-1 walks (mamba).
    constexpr bool kRowCopies = kWalk != kAnyStride;
    const bool whole_cb = kRowCopies && c_valid == prm.cb;
    if (prm.rows_dy_log2 >= 0 && whole_cb && t_start >= 0 && t_start + prm.dy_rows <= p.out_length)
      copy_rows_16(dy + wd.offset, p.y_t * sz, prm.dy_rows, smem_u32(dy_s), prm.dy_pitch * sz, prm.rows_dy_log2,
                   tid, kThreads);
    else
      load_window(dy, wd, dy_s, prm.dy_pitch, prm.vec_dy, ncw, tid, kThreads);
    if (prm.want_dwdb) {
      const int64_t l_start = u0 * p.stride - p.pad_lo;
      TileWindow wx;
      wx.offset = n * p.x_n + (c_first / kMult) * p.x_c + l_start * p.x_l;
      wx.line_stride = p.x_c;
      wx.pos_stride = p.x_l;
      wx.lines = prm.cb / kMult;
      wx.positions = prm.x_rows;
      wx.line_valid = c_valid / kMult;
      wx.pos_lo = -l_start;
      wx.pos_hi = p.in_length - l_start;
      if (prm.rows_x_log2 >= 0 && whole_cb && l_start >= 0 && l_start + prm.x_rows <= p.in_length)
        copy_rows_16(x + wx.offset, p.x_l * sz, prm.x_rows, smem_u32(dy_s + prm.dy_elems), prm.x_pitch * sz,
                     prm.rows_x_log2, tid, kThreads);
      else
        load_window(x, wx, dy_s + prm.dy_elems, prm.x_pitch, prm.vec_x, ncw, tid, kThreads);
    }
  };

  // Byte strides inside the tiles: NCW rows are channels, NWC rows are positions.
  constexpr int sz = sizeof(T);
  const int dy_c = (ncw ? prm.dy_pitch : 1) * sz, dy_p = (ncw ? 1 : prm.dy_pitch) * sz;
  const int x_c = (ncw ? prm.x_pitch : 1) * sz, x_p = (ncw ? 1 : prm.x_pitch) * sz;
  int xo[kTaps], dyo[kTaps], tr[kTaps];
  float wv[kTaps][kVec];
  const int64_t c_thread = c_first + (c_ok ? c_local : 0);
#pragma unroll
  for (int k = 0; k < kTaps; ++k) {
    xo[k] = k < K ? prm.tap_x[k] * x_p : 0;
    dyo[k] = k < K ? prm.tap_dy[k] * dy_p : 0;
    tr[k] = k < K ? prm.tap_r[k] : -1;
#pragma unroll
    for (int v = 0; v < kVec; ++v)
      {
      // Sliding: weight slot k holds tap kTaps-1-k (the dy window's order).
      const int tap = kSlide ? kTaps - 1 - k : k;
      wv[k][v] = (tap >= 0 && tap < K && prm.want_dx) ? to_acc(w[(c_thread + v) * p.w_o + tap * p.w_k]) : 0.0f;
    }
  }
  int sx[kTaps], sdy[kTaps];
#pragma unroll
  for (int m = 0; m < kTaps; ++m) {
    sx[m] = kSlide ? prm.slide_x[m] * x_p : 0;
    sdy[m] = kSlide ? prm.slide_dy[m] * dy_p : 0;
  }
  const int d = static_cast<int>(p.dilation);
  const int step_x = d * x_p, step_dy = d * dy_p;

  float acc[kTaps][kVec], accb[kVec];
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    accb[v] = 0.0f;
#pragma unroll
    for (int k = 0; k < kTaps; ++k) acc[k][v] = 0.0f;
  }
  const uint32_t smem_base = smem_u32(smem_raw);

  auto compute_unit = [&](int64_t u, int stage) {
    int64_t n, u0;
    unit_origin(u, &n, &u0);
    const uint32_t dy_s = smem_base + stage * stage_elems * sz;
    const uint32_t x_s = dy_s + prm.dy_elems * sz;
    const int64_t t_start = u0 - prm.halo, l_start = u0 * p.stride - p.pad_lo;
    // NCW rows were copied from aligned-down starts; the loader's shift locates position 0.
    const int shift_dy = ncw ? low_bits(n * p.y_n + c_first * p.y_o + t_start, prm.vec_dy) : 0;
    const int shift_x = ncw ? low_bits(n * p.x_n + (c_first / kMult) * p.x_c + l_start, prm.vec_x) : 0;
    const uint32_t dyc = dy_s + c_local * dy_c + shift_dy * sz;
    if constexpr (kWalk == kSlidingExact) {
      if (prm.want_dx && prm.want_dwdb) {
        // Both gradients in one walk: the dy value position t reads for dw/db (tile row t + H) is the newest
        // slot (tap 0) of dx's window at q = t, so each position loads dy once for both, and x once. Same
        // positions per thread and the same FMA order as the two separate walks below: the same bits.
        const uint32_t xc = x_s + c_local * x_c;
        T* const dx_tile = dx + (n * p.x_n + c_thread * p.x_c + l_start * p.x_l);
        const int lo = c_ok ? clamp_int(-l_start) : 0, hi = c_ok ? clamp_int(p.in_length - l_start) : 0;
        const int xl = static_cast<int>(p.x_l);
        for (GridWalk run(pg, pgroups, d); run.row < prm.merged_runs; run.next()) {
          const int t0 = run.col + prm.run_len * d * run.row;
          const uint32_t xr = xc + t0 * x_p, dq = dyc + t0 * dy_p;
          float xw[kTaps][kVec], gw[kTaps][kVec];
#pragma unroll
          for (int m = 0; m < kTaps - 1; ++m) {
            lds_vec<T, kVec>(xr + sx[m], xw[m]);
            lds_vec<T, kVec>(dq + sdy[m], gw[m]);
          }
          for (int j4 = 0; j4 < prm.run_len; j4 += 4) {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const int jj = j4 + j;
              lds_vec<T, kVec>(xr + sx[kTaps - 1] + jj * step_x, xw[kTaps - 1]);
              lds_vec<T, kVec>(dq + sdy[kTaps - 1] + jj * step_dy, gw[kTaps - 1]);
#pragma unroll
              for (int v = 0; v < kVec; ++v) accb[v] += gw[kTaps - 1][v];
#pragma unroll
              for (int m = 0; m < kTaps; ++m)
#pragma unroll
                for (int v = 0; v < kVec; ++v) acc[m][v] = fmaf(gw[kTaps - 1][v], xw[m][v], acc[m][v]);
              const int i = t0 + jj * d;
              if (i >= lo && i < hi) {
                float a[kVec];
#pragma unroll
                for (int v = 0; v < kVec; ++v) a[v] = 0.0f;
#pragma unroll
                for (int m = 0; m < kTaps; ++m)
#pragma unroll
                  for (int v = 0; v < kVec; ++v) a[v] = fmaf(wv[m][v], gw[m][v], a[v]);
                store_vec<T, kVec>(dx_tile + i * xl, a);
              }
#pragma unroll
              for (int m = 0; m < kTaps - 1; ++m)
#pragma unroll
                for (int v = 0; v < kVec; ++v) xw[m][v] = xw[m + 1][v], gw[m][v] = gw[m + 1][v];
            }
          }
        }
        return;
      }
    }
    if (kSlide && prm.want_dwdb) {
      const uint32_t xc = x_s + (c_local / kMult) * x_c;
      const uint32_t dyt = dyc + prm.halo * dy_p;
      for (GridWalk run(pg, pgroups, d); run.row < prm.slide_runs; run.next()) {
        const int t0 = run.col + 4 * d * run.row;
        const uint32_t xr = xc + t0 * x_p, dr = dyt + t0 * dy_p;
        float win[kTaps][kVec];
#pragma unroll
        for (int m = 0; m < kTaps - 1; ++m)
          if (m >= kTaps - K) lds_x<T, kVec, kMult>(xr + sx[m], x_c, rows, win[m]);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          lds_x<T, kVec, kMult>(xr + sx[kTaps - 1] + j * step_x, x_c, rows, win[kTaps - 1]);
          float g[kVec];
          lds_vec<T, kVec>(dr + j * step_dy, g);
#pragma unroll
          for (int v = 0; v < kVec; ++v) accb[v] += g[v];
#pragma unroll
          for (int m = 0; m < kTaps; ++m)
            if (m >= kTaps - K) {
#pragma unroll
              for (int v = 0; v < kVec; ++v) acc[m][v] = fmaf(g[v], win[m][v], acc[m][v]);
            }
#pragma unroll
          for (int m = 0; m < kTaps - 1; ++m)
#pragma unroll
            for (int v = 0; v < kVec; ++v) win[m][v] = win[m + 1][v];
        }
      }
    } else if (prm.want_dwdb) {
      const uint32_t xc = x_s + (c_local / kMult) * x_c + shift_x * sz;
      const uint32_t dyt = dyc + prm.halo * dy_p;
      for (int t = pg; t < prm.bt; t += pgroups) {
        float g[kVec];
        lds_chan<T, kVec>(dyt + t * dy_p, dy_c, rows, g);
#pragma unroll
        for (int v = 0; v < kVec; ++v) accb[v] += g[v];
        const uint32_t xt = xc + t * s * x_p;
#pragma unroll
        for (int k = 0; k < kTaps; ++k) {
          if (k < K) {
            float xv[kVec];
            lds_x<T, kVec, kMult>(xt + xo[k], x_c, rows, xv);
#pragma unroll
            for (int v = 0; v < kVec; ++v) acc[k][v] = fmaf(g[v], xv[v], acc[k][v]);
          }
        }
      }
    }
    if (prm.want_dx && c_ok) {
      // dx positions l_start + i, i in [0, bt*s); the valid ones are [lo, hi).
      T* const dx_tile = dx + (n * p.x_n + (c_thread / kMult) * p.x_c + l_start * p.x_l);
      const int lo = clamp_int(-l_start), hi = clamp_int(p.in_length - l_start);
      const int xl = static_cast<int>(p.x_l);
      if constexpr (kSlide) {
        for (GridWalk run(pg, pgroups, d); run.row < prm.slide_runs; run.next()) {
          const int q0 = run.col + 4 * d * run.row;
          const uint32_t dq = dyc + q0 * dy_p;
          float win[kTaps][kVec];
#pragma unroll
          for (int m = 0; m < kTaps - 1; ++m)
            if (m >= kTaps - K) lds_vec<T, kVec>(dq + sdy[m], win[m]);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            lds_vec<T, kVec>(dq + sdy[kTaps - 1] + j * step_dy, win[kTaps - 1]);
            const int i = q0 + j * d;
            if (i >= lo && i < hi) {
              float a[kVec];
#pragma unroll
              for (int v = 0; v < kVec; ++v) a[v] = 0.0f;
#pragma unroll
              for (int m = 0; m < kTaps; ++m)
                if (m >= kTaps - K) {
#pragma unroll
                  for (int v = 0; v < kVec; ++v) a[v] = fmaf(wv[m][v], win[m][v], a[v]);
                }
              store_dx<T, kVec, kMult>(dx_tile + i * xl, a);
            }
#pragma unroll
            for (int m = 0; m < kTaps - 1; ++m)
#pragma unroll
              for (int v = 0; v < kVec; ++v) win[m][v] = win[m + 1][v];
          }
        }
      } else {
      for (int q = pg; q < prm.bt; q += pgroups) {
        const uint32_t dyq = dyc + q * dy_p;
#pragma unroll 1
        for (int r = 0; r < s; ++r) {
          const int i = q * s + r;
          if (i < lo || i >= hi) continue;
          float a[kVec];
#pragma unroll
          for (int v = 0; v < kVec; ++v) a[v] = 0.0f;
#pragma unroll
          for (int k = 0; k < kTaps; ++k) {
            if (k < K && (kWalk == kUnitStride || tr[k] == r)) {
              float g[kVec];
              lds_chan<T, kVec>(dyq + dyo[k], dy_c, rows, g);
#pragma unroll
              for (int v = 0; v < kVec; ++v) a[v] = fmaf(wv[k][v], g[v], a[v]);
            }
          }
          store_dx<T, kVec, kMult>(dx_tile + i * xl, a);
        }
      }
      }
    }
  };

  for (int st = 0; st < prm.nstage - 1; ++st) {
    if (st < count) load_unit(u_begin + st, st);
    cp_async_commit();
  }
  for (int64_t i = 0; i < count; ++i) {
    cp_async_wait_pending(prm.nstage - 2);
    __syncthreads();
    const int64_t next = i + prm.nstage - 1;
    if (next < count) load_unit(u_begin + next, static_cast<int>(next % prm.nstage));
    cp_async_commit();
    compute_unit(u_begin + i, static_cast<int>(i % prm.nstage));
  }
  if (!prm.want_dwdb) return;
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory is reused below

  // Sum the position groups of each channel in order: red[pg][c][k], k == K holding db.
  float* red = reinterpret_cast<float*>(smem_raw);
  const int cb = prm.cb, kk = K + 1;
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    float* r = red + (pg * cb + c_local + v) * kk;
#pragma unroll
    for (int m = 0; m < kTaps; ++m) {
      const int k = kSlide ? m - (kTaps - K) : m;  // sliding accumulators are indexed by window slot
      if (k >= 0 && k < K) r[k] = acc[m][v];
    }
    r[K] = accb[v];
  }
  __syncthreads();
  const int64_t C = vch;
  float* out = prm.partials + split * kk * C + c_first;
  for (int e = tid; e < cb * kk; e += kThreads) {
    const int k = e / cb, c = e - k * cb;  // c fastest: coalesced partial rows
    if (c >= c_valid) continue;
    float sum = 0.0f;
    for (int g = 0; g < pgroups; ++g) sum += red[(g * cb + c) * kk + k];
    out[k * C + c] = sum;
  }
}

struct Variant {
  int taps, vec;
};


template <typename T>
Variant pick_variant(const Conv1dParams& p, int mult) {
  constexpr int full = 16 / static_cast<int>(sizeof(T));
  const int K = static_cast<int>(p.kernel_size);
  Variant v;
  v.taps = K <= 4 ? 4 : (K <= 8 ? 8 : 16);
  // Accumulators (taps x vec) plus weights (taps x vec) must stay under ~128 registers for 2 blocks per SM.
  const int vec = std::min(full, v.taps == 4 ? 8 : (v.taps == 8 ? 4 : 2));
  // The narrow choice is one thread per input channel: m virtual channels (O is a multiple of m).
  v.vec = (p.layout == Layout::kNWC && p.out_channels % vec == 0) ? vec : mult;
  return v;
}

template <typename T, int kTaps, int kVec, int kWalk, int kMult>
cudaError_t launch(const FusedPlan& q, size_t smem, const T* x, const T* dy, const T* w, T* dx,
                   cudaStream_t stream) {
  auto kernel = bwd_depthwise_fused_kernel<T, kTaps, kVec, kWalk, kMult>;
  if (cudaError_t err = allow_dynamic_smem(kernel, smem); err != cudaSuccess) return err;
  const dim3 grid = q.cb_fastest ? dim3(q.c_blocks, q.splits) : dim3(q.splits, q.c_blocks);
  kernel<<<grid, kThreads, smem, stream>>>(q, x, dy, w, dx);
  return cudaGetLastError();
}

// q.vec is kMult (one input channel per thread) or the wide width make_plan chose for the walk.
template <typename T, int kTaps, int kMult>
cudaError_t launch_vec(const FusedPlan& q, size_t smem, const T* x, const T* dy, const T* w, T* dx,
                       cudaStream_t stream) {
  constexpr int full = 16 / static_cast<int>(sizeof(T));
  constexpr int vec_wide = std::min(full, kTaps == 4 ? 8 : (kTaps == 8 ? 4 : 2));
  constexpr int vec_slide = std::max(1, std::min(vec_wide, 16 / kTaps));
  if (q.slide_runs > 0) {
    if constexpr (kTaps * kMult <= 16) {
      // The exact-K walk is built for the wide multiplier-1 kernels of 4 and 8 taps only (mamba's K = 4 among
      // them), to keep the instantiation count down.
      if constexpr (kMult == 1 && kTaps <= 8 && vec_slide > 1) {
        if (q.vec == vec_slide && q.exact_taps)
          return launch<T, kTaps, vec_slide, kSlidingExact, kMult>(q, smem, x, dy, w, dx, stream);
      }
      if (q.vec == kMult) return launch<T, kTaps, kMult, kSliding, kMult>(q, smem, x, dy, w, dx, stream);
      if (q.vec == vec_slide) return launch<T, kTaps, vec_slide, kSliding, kMult>(q, smem, x, dy, w, dx, stream);
    }
    return cudaErrorNotSupported;
  }
  if (q.p.stride == 1) {
    if (q.vec == kMult) return launch<T, kTaps, kMult, kUnitStride, kMult>(q, smem, x, dy, w, dx, stream);
    if (q.vec == vec_wide) return launch<T, kTaps, vec_wide, kUnitStride, kMult>(q, smem, x, dy, w, dx, stream);
    return cudaErrorNotSupported;
  }
  if (q.vec == kMult) return launch<T, kTaps, kMult, kAnyStride, kMult>(q, smem, x, dy, w, dx, stream);
  if (q.vec == vec_wide) return launch<T, kTaps, vec_wide, kAnyStride, kMult>(q, smem, x, dy, w, dx, stream);
  return cudaErrorNotSupported;
}

template <typename T, int kMult>
cudaError_t launch_taps(const FusedPlan& q, int taps, size_t smem, const T* x, const T* dy, const T* w, T* dx,
                        cudaStream_t stream) {
  return taps == 4   ? launch_vec<T, 4, kMult>(q, smem, x, dy, w, dx, stream)
         : taps == 8 ? launch_vec<T, 8, kMult>(q, smem, x, dy, w, dx, stream)
                     : launch_vec<T, 16, kMult>(q, smem, x, dy, w, dx, stream);
}

// launch_taps<T, 2>, compiled in bwd_depthwise_fused_mult2.cu.
template <typename T>
cudaError_t launch_taps_mult2(const FusedPlan& q, int taps, size_t smem, const T* x, const T* dy, const T* w, T* dx,
                              cudaStream_t stream);

}  // namespace jax_conv1d::cuda::JC_DW_FUSED_NS
