// Input gradient of dense and grouped convolutions as an implicit GEMM on tensor cores, by stride phase.
//
//   dx[n, c, q*s + r - pad] = sum over taps k of phase r, o in group:  w[o, c, k] * dy[n, o, q - e_k]
//
// (see dgrad_phases.cuh). M = input channels (A = w, transposed), N = q positions of one phase (B = dy), the
// reduction runs over (tap, output channel). A block owns one (group, channel block) slice and walks units of
// (batch row, q tile, phase group). Its 8 warps split the unit's phases: warps_per_phase warps per phase, as
// one or two rows along the channels (warps_m) of 32-q columns, so one unit covers s*bq consecutive dx
// positions and up to 128 channels. The weights are either resident in shared memory as w_s[k][c][o] (the
// whole slice), or, when that does not fit, streamed chunk by chunk ([k][c][o] of `bo` output channels) with
// the dy chunk they multiply, so that a block still covers all channels of a group and dy is read once.
// dy rows stream through a cp.async pipeline in chunks of `bo` output channels (the whole group at once where
// two stages fit); fragments load by ldmatrix (A always; B where dy's channels are contiguous, NWC) in
// unrolled 16-channel blocks. TF32 operands are rounded once in shared memory, not at every use. Copies of
// windows inside the tensor (and whole streamed weight chunks) skip the range checks. After the last chunk the
// warps either park their accumulators in a float32 staging tile at their interleaved positions (q*s + r) and
// the block writes the whole dx tile once, coalesced, zeros where no tap lands; or each warp stores its
// fragments straight to dx and the units of phase group 0 write the zeros of the residues no tap reaches (no
// staging tile, its shared memory goes to the pipeline). Stride 1 always stores straight; stride > 1 only where
// the staging tile would shrink the plan (make_plan says why).
//
// For stride 3, dilation 4, K 3 (the headline), every phase has exactly one tap, so each dx element costs one
// o-reduction and dy is read once per tile with a halo of two positions.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "conv1d_cuda.h"
#include "cp_async_tiles.cuh"
#include "cuda_types.cuh"
#include "dgrad_kernels.cuh"
#include "dgrad_phases.cuh"
#include "mma_sync_fragments.cuh"
#include "smem_plan.cuh"

namespace jax_conv1d::cuda {
namespace dgrad_gemm {

// Four consecutive outputs from a float4: one 16-byte store for float, 8 bytes for 16-bit types.
__device__ __forceinline__ void store4(float* d, float4 v) { *reinterpret_cast<float4*>(d) = v; }
__device__ __forceinline__ void store4(__nv_bfloat16* d, float4 v) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  *reinterpret_cast<uint2*>(d) =
      make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
}
__device__ __forceinline__ void store4(__half* d, float4 v) {
  const __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
  *reinterpret_cast<uint2*>(d) =
      make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
}

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxTaps = StridePhases::kMaxTaps;
constexpr int kMaxStride = StridePhases::kMaxStride;
constexpr int kMaxSmem = 227 * 1024;

struct Params {
  Conv1dParams p;
  int bc, bq, bo;                       // channels, q per phase, and output channels per chunk
  int warps_m;                          // warps of one phase side by side along the channels (1 or 2)
  int bc_shift;                         // bc = 1 << bc_shift
  int warps_per_phase, slots;           // slots = phases a unit computes at once
  int nphase, phase_groups;
  int phase_first[kMaxStride], phase_count[kMaxStride], phase_r[kMaxStride];
  int tap_k[kMaxTaps], tap_seg[kMaxTaps], tap_pos[kMaxTaps];  // in phase order
  int nseg;
  int seg_start[kMaxTaps], seg_len[kMaxTaps], seg_base[kMaxTaps];  // dy windows relative to q0
  int seg_chunks[kMaxTaps];             // copies per row of segment j (fixed, so walks are computed once)
  int residue_group[kMaxStride];        // the phase group that stores residue r (0 where no tap lands)
  int n_empty;                          // residues no tap reaches (direct stores zero them)
  int empty_r[kMaxStride];
  int64_t q_lo, q_tiles, units_per_slice;
  int c_blocks, o_chunks;
  int vec_dy, dy_pitch, dy_elems, nstage;
  int w_pitch, w_elems;                 // resident weights: w_s[(k*bc + c)*w_pitch + o]
  int vec_w, ws_pitch, ws_elems;        // streamed weights: per stage, [(k*bc + c)*ws_pitch + o] after dy
  int stage_elems;                      // dy chunk (+ weight chunk when streamed)
  int st_pitch, st_elems;               // float staging
  int stages_offset, staging_offset;    // byte offsets in shared memory
  bool fast_copies;                     // interior dy windows and whole weight chunks copy unchecked
  bool direct_stores;                   // fragments go straight to dx (no staging tile, no barrier)
  bool w_rows_uniform;                  // weight row (k, c) of the slice sits at (k*bc + c) * w_c (w_k == bc*w_c)
};

// The weight chunk [k][c][o] of output channels [o0, o0 + bo) of the block's channel slice, for the kernels
// that stream weights with dy (the whole slice does not fit in shared memory). Copies run along o where the
// weights are O-contiguous (WIO, the NWC layout); elements outside the slice are zeros.
template <typename T, int kBytes, int kBO>
__device__ __forceinline__ void load_weight_chunk_as(const T* __restrict__ w, const Params& prm, int64_t o0,
                                                     int o_valid, int64_t c0, int c_valid, T* dst, int tid) {
  constexpr int vec = kBytes / static_cast<int>(sizeof(T));
  constexpr int cols = kBO / vec;
  const Conv1dParams& p = prm.p;
  const int rows = static_cast<int>(p.kernel_size) * prm.bc;
  for (GridWalk it(tid, kThreads, cols); it.row < rows; it.next()) {
    const int k = it.row >> prm.bc_shift, c = it.row & (prm.bc - 1), o = it.col * vec;
    T* d = dst + it.row * prm.ws_pitch + o;
    const int64_t src = (o0 + o) * p.w_o + (c0 + c) * p.w_c + int64_t(k) * p.w_k;
    if (c < c_valid && o + vec <= o_valid) {
      copy_chunk<T, kBytes>(d, w + src);
    } else {
#pragma unroll
      for (int e = 0; e < vec; ++e) d[e] = (c < c_valid && o + e < o_valid) ? w[src + e * p.w_o] : from_acc<T>(0.0f);
    }
  }
}

template <typename T, int kBO>
__device__ __forceinline__ void load_weight_chunk(const T* __restrict__ w, const Params& prm, int64_t o0, int o_valid,
                                                  int64_t c0, int c_valid, T* dst, int tid) {
  switch (prm.vec_w * static_cast<int>(sizeof(T))) {
    case 16: load_weight_chunk_as<T, 16, kBO>(w, prm, o0, o_valid, c0, c_valid, dst, tid); break;
    case 8: load_weight_chunk_as<T, 8, kBO>(w, prm, o0, o_valid, c0, c_valid, dst, tid); break;
    case 4: load_weight_chunk_as<T, 4, kBO>(w, prm, o0, o_valid, c0, c_valid, dst, tid); break;
    default: load_weight_chunk_as<T, sizeof(T), kBO>(w, prm, o0, o_valid, c0, c_valid, dst, tid); break;
  }
}

// TF32 rounding in place of the float elements this thread copied into a (rows x cols-of-kVec) window; the
// walk is the one the copy used, so every element has one owner and needs no barrier before this. Two chunks
// per iteration: both loads are in flight before the first conversion waits on shared-memory latency.
template <int kVec>
__device__ __forceinline__ void round_tf32_vec(float* d) {
  if constexpr (kVec == 4) {
    float4 v = *reinterpret_cast<float4*>(d);
    v.x = __uint_as_float(tf32_round(v.x)), v.y = __uint_as_float(tf32_round(v.y));
    v.z = __uint_as_float(tf32_round(v.z)), v.w = __uint_as_float(tf32_round(v.w));
    *reinterpret_cast<float4*>(d) = v;
  } else if constexpr (kVec == 2) {
    float2 v = *reinterpret_cast<float2*>(d);
    v.x = __uint_as_float(tf32_round(v.x)), v.y = __uint_as_float(tf32_round(v.y));
    *reinterpret_cast<float2*>(d) = v;
  } else {
    *d = __uint_as_float(tf32_round(*d));
  }
}

template <int kVec>
__device__ __forceinline__ void round_tf32_owned_as(float* dst, int pitch, int rows, GridWalk it) {
  while (it.row < rows) {
    float* d0 = dst + it.row * pitch + it.col * kVec;
    it.next();
    if (it.row < rows) {
      float* d1 = dst + it.row * pitch + it.col * kVec;
      it.next();
      if constexpr (kVec == 4) {
        float4 v0 = *reinterpret_cast<float4*>(d0), v1 = *reinterpret_cast<float4*>(d1);
        v0.x = __uint_as_float(tf32_round(v0.x)), v0.y = __uint_as_float(tf32_round(v0.y));
        v0.z = __uint_as_float(tf32_round(v0.z)), v0.w = __uint_as_float(tf32_round(v0.w));
        v1.x = __uint_as_float(tf32_round(v1.x)), v1.y = __uint_as_float(tf32_round(v1.y));
        v1.z = __uint_as_float(tf32_round(v1.z)), v1.w = __uint_as_float(tf32_round(v1.w));
        *reinterpret_cast<float4*>(d0) = v0;
        *reinterpret_cast<float4*>(d1) = v1;
      } else {
        round_tf32_vec<kVec>(d0);
        round_tf32_vec<kVec>(d1);
      }
    } else {
      round_tf32_vec<kVec>(d0);
    }
  }
}

__device__ __forceinline__ void round_tf32_owned(float* dst, int pitch, int rows, int vec, const GridWalk& it) {
  if (vec == 4)
    round_tf32_owned_as<4>(dst, pitch, rows, it);
  else if (vec == 2)
    round_tf32_owned_as<2>(dst, pitch, rows, it);
  else
    round_tf32_owned_as<1>(dst, pitch, rows, it);
}

// ---- Unchecked copies (the common case: every window but those at a tensor edge) -----------------------
//
// The checked walks (load_window_walk, load_weight_chunk) spend ~35-45 instructions per 16-byte copy on range
// checks and 64-bit index arithmetic; WaveNet's streamed-weight kernel copies 7 chunks per thread per 64 MMAs
// per warp, so those checks were most of its instructions. These copies advance both addresses by constants
// and use the same walk as the checked ones, so every element keeps its owner (the TF32 rounding pass reads
// only this thread's own landed copies).

// cp.async of (rows x walk.cols) chunks of kBytes along `walk`: global rows `src_row` bytes apart, shared rows
// `dst_row` bytes apart.
template <int kBytes>
__device__ __forceinline__ void copy_rows_walk(const char* src, int64_t src_row, uint32_t dst, int dst_row, int rows,
                                               GridWalk it) {
  const int cols = it.cols;
  src += it.row * src_row + it.col * kBytes;
  dst += it.row * dst_row + it.col * kBytes;
  const int64_t src_step = it.drow * src_row + it.dcol * kBytes, src_wrap = src_row - cols * kBytes;
  const int dst_step = it.drow * dst_row + it.dcol * kBytes, dst_wrap = dst_row - cols * kBytes;
  int row = it.row, col = it.col;
  while (row < rows) {
    cp_async_shared<kBytes>(dst, src);
    row += it.drow, col += it.dcol;
    src += src_step, dst += dst_step;
    if (col >= cols) col -= cols, ++row, src += src_wrap, dst += dst_wrap;
  }
}

// True when every chunk of `walk.cols` columns that load_window_walk would copy lies inside the tensor (the
// same test as window_is_interior, for the walk's column count: NCW walks cover every copy shift).
__device__ __forceinline__ bool walk_is_interior(const TileWindow& w, int vec, bool pos_contiguous, int cols) {
  if (pos_contiguous) {
    const int shift = low_bits(w.offset, vec);
    return w.line_valid >= w.lines && -shift >= w.pos_lo && cols * vec - shift <= w.pos_hi;
  }
  return cols * vec <= w.line_valid && w.pos_lo <= 0 && w.positions <= w.pos_hi;
}

// load_window_walk for a window walk_is_interior accepted (same shared layout, same owners).
template <typename T>
__device__ __forceinline__ bool load_window_walk_unchecked(const T* __restrict__ g, const TileWindow& w, T* dst,
                                                           int pitch, int vec, bool pos_contiguous, GridWalk walk) {
  constexpr int64_t sz = sizeof(T);
  const int bytes = vec * static_cast<int>(sz);
  if (bytes != 16 && bytes != 8 && bytes != 4) return false;  // 16-bit elements one at a time: checked path
  const uint32_t d = smem_u32(dst);
  const int dst_row = pitch * static_cast<int>(sz);
  const T* src = pos_contiguous ? g + (w.offset - low_bits(w.offset, vec)) : g + w.offset;
  const int64_t src_row = (pos_contiguous ? w.line_stride : w.pos_stride) * sz;
  const int rows = pos_contiguous ? w.lines : w.positions;
  const char* s = reinterpret_cast<const char*>(src);
  if (bytes == 16)
    copy_rows_walk<16>(s, src_row, d, dst_row, rows, walk);
  else if (bytes == 8)
    copy_rows_walk<8>(s, src_row, d, dst_row, rows, walk);
  else
    copy_rows_walk<4>(s, src_row, d, dst_row, rows, walk);
  return true;
}

// kMT: m16 tiles per warp (warp tile kMT*16 channels x 32 q). kNWC: dy rows are positions with the output
// channels contiguous, so B fragments load by ldmatrix; NCW gathers them along the channel rows.
// kStreamW: the weight chunk travels with each dy chunk instead of the whole slice staying resident.
// kMinBlocks 2: plans that keep two blocks per SM (half the channels each) cap the registers at 128.
template <class Op, int kMT, bool kNWC, bool kStreamW, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    dgrad_gemm_kernel(const Params prm, const typename Op::T* __restrict__ dy, const typename Op::T* __restrict__ w,
                      typename Op::T* __restrict__ dx) {
  using T = typename Op::T;
  constexpr int kNT = 4;  // 32 q per warp
  constexpr int sz = static_cast<int>(sizeof(T));
  // The reduction of a chunk runs in blocks of 16 output channels whose k-steps unroll, so every fragment
  // load is a base register plus an immediate offset.
  constexpr int kOBlock = 16;
  // TF32: operands are rounded once in shared memory, not per use. Resident weights when staged; streamed
  // weights and dy by the thread that copied them, after its copies land and before the stage's barrier.
  constexpr bool kRoundInSmem = std::is_same_v<Op, MmaTf32>;
  constexpr bool kARounded = kRoundInSmem;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const w_s = reinterpret_cast<T*>(smem_raw);
  T* const stages = reinterpret_cast<T*>(smem_raw + prm.stages_offset);
  float* const staging = reinterpret_cast<float*>(smem_raw + prm.staging_offset);
  const Conv1dParams& p = prm.p;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  const int s = static_cast<int>(p.stride);

  const int grp = blockIdx.x / prm.c_blocks, cblk = blockIdx.x % prm.c_blocks;
  const int64_t og = p.out_per_group(), cg = p.in_per_group();
  const int64_t c_in_group = int64_t(cblk) * prm.bc;
  const int c_valid = static_cast<int>(cg - c_in_group < prm.bc ? cg - c_in_group : prm.bc);
  const int o_pad = prm.o_chunks * prm.bo;
  const int K = static_cast<int>(p.kernel_size);

  if constexpr (!kStreamW) {
    // The block's weight slice, transposed to w_s[k][c][o] (o contiguous: A's reduction axis).
    for (int idx = tid; idx < K * prm.bc * o_pad; idx += kThreads) {
      const int o = idx % o_pad, rest = idx / o_pad, c = rest % prm.bc, k = rest / prm.bc;
      T v = from_acc<T>(0.0f);
      if (o < og && c < c_valid) v = w[(grp * og + o) * p.w_o + (c_in_group + c) * p.w_c + int64_t(k) * p.w_k];
      if constexpr (kRoundInSmem) v = __uint_as_float(tf32_round(v));
      w_s[(k * prm.bc + c) * prm.w_pitch + o] = v;
    }
  }
  // Residues without taps are never written by the warps; they stay zero from here on.
  for (int idx = tid; idx < prm.st_elems; idx += kThreads) staging[idx] = 0.0f;

  const int slot = warp / prm.warps_per_phase;
  const int wi = warp % prm.warps_per_phase;
  const int c_off = (wi % prm.warps_m) * kMT * 16;
  const int q_off = (wi / prm.warps_m) * 32;
  const int64_t count = (prm.units_per_slice - blockIdx.y + gridDim.y - 1) / gridDim.y;
  const int64_t chunks = count * prm.o_chunks;

  struct Unit {
    int64_t n, q0;
    int pg;
  };
  // 32-bit divisions (the host checks units_per_slice < 2^31); done once per unit, not per chunk.
  auto unit_of = [&](int64_t i) {
    uint32_t u = static_cast<uint32_t>(blockIdx.y + i * gridDim.y);
    Unit un;
    const uint32_t pgs = static_cast<uint32_t>(prm.phase_groups), qts = static_cast<uint32_t>(prm.q_tiles);
    const uint32_t rest = u / pgs;
    un.pg = static_cast<int>(u - rest * pgs);
    const uint32_t n = rest / qts;
    un.q0 = prm.q_lo + int64_t(rest - n * qts) * prm.bq;
    un.n = n;
    return un;
  };
  // A position in the chunk sequence: unit i of this block, output-channel chunk oc.
  struct Cursor {
    int64_t i;
    int oc;
    Unit un;
  };
  auto advance = [&](Cursor& c) {
    if (++c.oc == prm.o_chunks) {
      c.oc = 0;
      if (++c.i < count) c.un = unit_of(c.i);
    }
  };
  auto chunk_first_o = [&](int oc) { return grp * og + int64_t(oc) * prm.bo; };
  // Copy and store walks, built once: each GridWalk construction divides. Two segments cover every tap
  // layout up to dilations of about a tile; more are walked from scratch.
  const GridWalk seg_walk0(tid, kThreads, prm.seg_chunks[0]);
  const GridWalk seg_walk1(tid, kThreads, prm.nseg > 1 ? prm.seg_chunks[1] : 1);
  const int store_cols = kNWC ? c_valid : s * prm.bq;
  const GridWalk store_walk4(tid, kThreads, store_cols >> 2 > 0 ? store_cols >> 2 : 1);
  const GridWalk store_walk1(tid, kThreads, store_cols);
  const GridWalk w_walk(tid, kThreads, kStreamW ? prm.bo / prm.vec_w : 1);  // that of load_weight_chunk_as
  // Zeros of the residues without taps (direct stores): NWC rows are positions, 4 channels per store where
  // the channels allow it; NCW rows are channels, one position per store.
  const bool zero_vec4 = kNWC && (c_valid & 3) == 0 && (p.x_l & 3) == 0 &&
                         low_bits((grp * cg + c_in_group) * p.x_c, 4) == 0 && low_bits(p.x_n, 4) == 0;
  const GridWalk zero_walk(tid, kThreads,
                           kNWC ? (zero_vec4 ? c_valid >> 2 : (c_valid > 0 ? c_valid : 1))
                                : (prm.n_empty > 0 ? prm.n_empty * prm.bq : 1));

  auto load_chunk = [&](const Cursor& cur, int stage) {
    const Unit& un = cur.un;
    const int oc = cur.oc;
    T* dst = stages + stage * prm.stage_elems;
    const int o_valid = static_cast<int>(og - int64_t(oc) * prm.bo < prm.bo ? og - int64_t(oc) * prm.bo : prm.bo);
    for (int j = 0; j < prm.nseg; ++j) {
      const int64_t t_start = un.q0 + prm.seg_start[j];
      TileWindow wd;
      wd.offset = un.n * p.y_n + chunk_first_o(oc) * p.y_o + t_start * p.y_t;
      wd.line_stride = p.y_o;
      wd.pos_stride = p.y_t;
      wd.lines = prm.bo;
      wd.positions = prm.seg_len[j];
      wd.line_valid = o_valid;
      wd.pos_lo = -t_start;
      wd.pos_hi = p.out_length - t_start;
      T* const seg_dst = dst + (kNWC ? prm.seg_base[j] * prm.dy_pitch : prm.seg_base[j]);
      GridWalk walk = seg_walk0;
      if (j == 1) walk = seg_walk1;
      if (j >= 2) walk = GridWalk(tid, kThreads, prm.seg_chunks[j]);
      if (prm.fast_copies && walk_is_interior(wd, prm.vec_dy, !kNWC, walk.cols) &&
          load_window_walk_unchecked(dy, wd, seg_dst, prm.dy_pitch, prm.vec_dy, !kNWC, walk))
        continue;
      load_window_walk(dy, wd, seg_dst, prm.dy_pitch, prm.vec_dy, !kNWC, walk);
    }
    if constexpr (kStreamW) {
      T* wdst = dst + prm.dy_elems;
      const int w_bytes = prm.vec_w * sz;
      if (prm.fast_copies && prm.w_rows_uniform && c_valid == prm.bc && o_valid == prm.bo &&
          (w_bytes == 16 || w_bytes == 8 || w_bytes == 4)) {
        // Row (k, c) of the chunk is bo contiguous weights at (k*bc + c)*w_c from the chunk's first one.
        const char* src = reinterpret_cast<const char*>(w + chunk_first_o(oc) + c_in_group * p.w_c);
        const int64_t src_row = p.w_c * sz;
        const uint32_t d = smem_u32(wdst);
        const int rows = K * prm.bc, dst_row = prm.ws_pitch * sz;
        if (w_bytes == 16)
          copy_rows_walk<16>(src, src_row, d, dst_row, rows, w_walk);
        else if (w_bytes == 8)
          copy_rows_walk<8>(src, src_row, d, dst_row, rows, w_walk);
        else
          copy_rows_walk<4>(src, src_row, d, dst_row, rows, w_walk);
      } else if (prm.bo == 32)
        load_weight_chunk<T, 32>(w, prm, chunk_first_o(oc), o_valid, c_in_group, c_valid, wdst, tid);
      else
        load_weight_chunk<T, 16>(w, prm, chunk_first_o(oc), o_valid, c_in_group, c_valid, wdst, tid);
    }
  };

  // The rounding pass of the TF32 policy over this thread's own copies of stage `stage`.
  auto round_chunk = [&](int stage) {
    if constexpr (kRoundInSmem) {
      T* const dst = stages + stage * prm.stage_elems;
      for (int j = 0; j < prm.nseg; ++j) {
        GridWalk walk = seg_walk0;
        if (j == 1) walk = seg_walk1;
        if (j >= 2) walk = GridWalk(tid, kThreads, prm.seg_chunks[j]);
        T* const seg_dst = dst + (kNWC ? prm.seg_base[j] * prm.dy_pitch : prm.seg_base[j]);
        round_tf32_owned(seg_dst, prm.dy_pitch, kNWC ? prm.seg_len[j] : prm.bo, prm.vec_dy, walk);
      }
      if constexpr (kStreamW) {
        const int rows = static_cast<int>(p.kernel_size) * prm.bc;
        round_tf32_owned(dst + prm.dy_elems, prm.ws_pitch, rows, prm.vec_w, w_walk);
      }
    }
  };

  float acc[kMT][kNT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;

  // Lane-constant parts of the ldmatrix row addresses.
  const int a_lane_row = c_off + ldsm_a_row(lane), a_lane_bytes = ldsm_a_col_bytes(lane);
  const int b_lane_row = q_off + ldsm_b_row(lane), b_lane_bytes = ldsm_b_col_bytes(lane);

  auto compute_chunk = [&](const Cursor& cur, int stage) {
    const Unit& un = cur.un;
    const int phase = un.pg * prm.slots + slot;
    if (slot >= prm.slots || phase >= prm.nphase) return;
    const int oc = cur.oc;
    const T* dy_s = stages + stage * prm.stage_elems;
    // A (m = channel, k = output channel): rows of the resident slice at column oc*bo, or the streamed chunk.
    const T* a_src = kStreamW ? dy_s + prm.dy_elems : w_s + oc * prm.bo;
    const int a_pitch = kStreamW ? prm.ws_pitch : prm.w_pitch;
    const uint32_t a_lane = smem_u32(a_src) + a_lane_row * a_pitch * sz + a_lane_bytes;
    const int first = prm.phase_first[phase], last = first + prm.phase_count[phase];
    for (int tj = first; tj < last; ++tj) {
      const int seg = prm.tap_seg[tj];
      const int pos = prm.seg_base[seg] + prm.tap_pos[tj];
      uint32_t a_addr[kMT];
      const uint32_t a_tap = a_lane + prm.tap_k[tj] * prm.bc * a_pitch * sz;
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) a_addr[mt] = a_tap + mt * 16 * a_pitch * sz;
      if constexpr (kNWC) {
        uint32_t b_addr[kNT / 2];
        const uint32_t b0 = smem_u32(dy_s) + (pos + b_lane_row) * prm.dy_pitch * sz + b_lane_bytes;
#pragma unroll
        for (int pr = 0; pr < kNT / 2; ++pr) b_addr[pr] = b0 + pr * 16 * prm.dy_pitch * sz;
        for (int ob = 0; ob < prm.bo; ob += kOBlock) {
#pragma unroll
          for (int k0 = 0; k0 < kOBlock; k0 += Op::kK) {
            uint32_t a[kMT][4], b[kNT][2];
            load_a_ldsm(a, a_addr, (ob + k0) * sz);
            load_b_ldsm(b, b_addr, (ob + k0) * sz);
            mma_raw_fragments<Op, kMT, kNT, kARounded, kRoundInSmem>(acc, a, b);
          }
        }
      } else {
        int pos0 = pos + q_off + g;
        pos0 += low_bits(un.n * p.y_n + chunk_first_o(oc) * p.y_o + un.q0 + prm.seg_start[seg], prm.vec_dy);
        int b_col[kNT];
        for (int ob = 0; ob < prm.bo; ob += kOBlock) {
          const T* dy_ob = dy_s + ob * prm.dy_pitch;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) b_col[nt] = pos0 + nt * 8;
#pragma unroll
          for (int k0 = 0; k0 < kOBlock; k0 += Op::kK) {
            uint32_t a[kMT][4], b[kNT][2];
            load_a_ldsm(a, a_addr, (ob + k0) * sz);
            load_b_strided<Op, kNT>(b, dy_ob, b_col, prm.dy_pitch, k0, lane);
            mma_raw_fragments<Op, kMT, kNT, kARounded, kRoundInSmem>(acc, a, b);
          }
        }
      }
    }
  };

  auto finish_unit = [&](const Unit& un) {
    if (prm.direct_stores) {
      // Each warp writes its own fragments at their interleaved positions l = q*s + r - pad. NWC: a store
      // instruction covers 8 consecutive channels at 4 positions, whole 32-byte sectors at any stride. NCW:
      // 8 channel rows at 4 positions s apart (whole sectors only at stride 1, with the pairs of positions per
      // lane); the staging tile's coalesced rows are why stride > 1 prefers it where the plan allows.
      const int phase = un.pg * prm.slots + slot;
      if (slot < prm.slots && phase < prm.nphase) {
        const int r = prm.phase_r[phase];
        const int64_t l0 = (un.q0 + q_off) * s + r - p.pad_lo;
        T* const dx_n = dx + un.n * p.x_n + (grp * cg + c_in_group) * p.x_c;
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int c = c_off + mt * 16 + g + 8 * (e >> 1);
              const int64_t l = l0 + int64_t(nt * 8 + 2 * tq + (e & 1)) * s;
              if (c < c_valid && l >= 0 && l < p.in_length) dx_n[c * p.x_c + l * p.x_l] = from_acc<T>(acc[mt][nt][e]);
              acc[mt][nt][e] = 0.0f;
            }
      }
      // Residues no tap reaches: zeros, written by the units of phase group 0 (no warp owns them).
      if (prm.n_empty > 0 && un.pg == 0) {
        const int64_t base = un.q0 * s - p.pad_lo;
        T* const dx_n = dx + un.n * p.x_n + (grp * cg + c_in_group) * p.x_c;
        const int positions = prm.n_empty * prm.bq;
        auto l_of = [&](int j) {
          const int qi = j / prm.n_empty;
          return base + int64_t(qi) * s + prm.empty_r[j - qi * prm.n_empty];
        };
        if constexpr (kNWC) {
          if (zero_vec4) {
            for (GridWalk it = zero_walk; it.row < positions; it.next()) {
              const int64_t l = l_of(it.row);
              if (l >= 0 && l < p.in_length) store4(dx_n + l * p.x_l + it.col * 4, make_float4(0.f, 0.f, 0.f, 0.f));
            }
          } else {
            for (GridWalk it = zero_walk; it.row < positions; it.next()) {
              const int64_t l = l_of(it.row);
              if (l >= 0 && l < p.in_length) dx_n[l * p.x_l + it.col] = from_acc<T>(0.0f);
            }
          }
        } else {
          for (GridWalk it = zero_walk; it.row < c_valid; it.next()) {
            const int64_t l = l_of(it.col);
            if (l >= 0 && l < p.in_length) dx_n[it.row * p.x_c + l] = from_acc<T>(0.0f);
          }
        }
      }
      return;
    }
    const int phase = un.pg * prm.slots + slot;
    if (slot < prm.slots && phase < prm.nphase) {
      const int r = prm.phase_r[phase];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int c = c_off + mt * 16 + g + 8 * (e >> 1);
            const int pos = (q_off + nt * 8 + 2 * tq + (e & 1)) * s + r;
            staging[kNWC ? pos * prm.st_pitch + c : c * prm.st_pitch + pos] = acc[mt][nt][e];
            acc[mt][nt][e] = 0.0f;
          }
    }
    __syncthreads();
    const int span = s * prm.bq;
    const int64_t l0 = un.q0 * s - p.pad_lo;
    const bool all_groups = prm.phase_groups == 1;
    const int64_t dx_off = un.n * p.x_n + (grp * cg + c_in_group) * p.x_c;
    T* const dx_n = dx + dx_off;
    auto keep = [&](int i) { return all_groups || prm.residue_group[i % s] == un.pg; };
    if constexpr (!kNWC) {
      if (all_groups && (span & 3) == 0 && (p.x_c & 3) == 0 && low_bits(dx_off + l0, 4) == 0) {
        // Four positions per thread: 16-byte (float) or 8-byte (16-bit) stores.
        for (GridWalk it = store_walk4; it.row < c_valid; it.next()) {
          const int c = it.row, i = it.col * 4;
          const int64_t l = l0 + i;
          const float4 v = *reinterpret_cast<const float4*>(staging + c * prm.st_pitch + i);
          T* d = dx_n + c * p.x_c + l;
          if (l >= 0 && l + 4 <= p.in_length) {
            store4(d, v);
          } else {
            const float e[4] = {v.x, v.y, v.z, v.w};
            for (int j = 0; j < 4; ++j)
              if (l + j >= 0 && l + j < p.in_length) d[j] = from_acc<T>(e[j]);
          }
        }
      } else {
        for (GridWalk it = store_walk1; it.row < c_valid; it.next()) {
          const int c = it.row, i = it.col;
          const int64_t l = l0 + i;
          if (l < 0 || l >= p.in_length || !keep(i)) continue;
          dx_n[c * p.x_c + l] = from_acc<T>(staging[c * prm.st_pitch + i]);
        }
      }
    } else {
      if (all_groups && (c_valid & 3) == 0 && (p.x_l & 3) == 0 && low_bits(dx_off, 4) == 0) {
        for (GridWalk it = store_walk4; it.row < span; it.next()) {
          const int i = it.row, c = it.col * 4;
          const int64_t l = l0 + i;
          if (l < 0 || l >= p.in_length) continue;
          store4(dx_n + l * p.x_l + c, *reinterpret_cast<const float4*>(staging + i * prm.st_pitch + c));
        }
      } else {
        for (GridWalk it = store_walk1; it.row < span; it.next()) {
          const int i = it.row, c = it.col;
          const int64_t l = l0 + i;
          if (l < 0 || l >= p.in_length || !keep(i)) continue;
          dx_n[l * p.x_l + c] = from_acc<T>(staging[i * prm.st_pitch + c]);
        }
      }
    }
    // The staging tile is rewritten only after the next chunk's barrier.
  };

  Cursor ld{0, 0, unit_of(0)};
  Cursor cur = ld;
  for (int st = 0; st < prm.nstage - 1; ++st) {
    if (st < chunks) load_chunk(ld, st);
    advance(ld);
    cp_async_commit();
  }
  // Stage indices are carried, not taken modulo the (run-time) depth: a 64-bit remainder per chunk.
  int ld_stage = prm.nstage - 1, cur_stage = 0;
  auto next_stage = [&](int st) { return st + 1 == prm.nstage ? 0 : st + 1; };
  for (int64_t f = 0; f < chunks; ++f) {
    cp_async_wait_pending(prm.nstage - 2);
    round_chunk(cur_stage);
    __syncthreads();
    if (f + prm.nstage - 1 < chunks) load_chunk(ld, ld_stage);
    ld_stage = next_stage(ld_stage);
    advance(ld);
    cp_async_commit();
    compute_chunk(cur, cur_stage);
    cur_stage = next_stage(cur_stage);
    if (cur.oc == prm.o_chunks - 1) finish_unit(cur.un);
    advance(cur);
  }
  cp_async_wait<0>();
}

// ---- host side -------------------------------------------------------------------------------------------

struct Plan {
  Params prm;
  int mt = 4;
  int blocks_per_sm = 1;
  bool stream_w = false;
  size_t smem = 0;
  dim3 grid;
};

// Shapes tried, best first:
//   1. all input channels of a group in one block (dy read once): 64 per warp tile row, a second warp row when
//      a phase has the warps for it (bc = 128), weights resident in shared memory, else streamed per chunk;
//   2. smaller channel blocks with resident weights (each block re-reads dy).
template <class Op>
bool make_plan_with_stores(const Conv1dParams& p, bool direct, Plan* plan) {
  using T = typename Op::T;
  constexpr int sz = sizeof(T);
  StridePhases ph;
  if (!make_stride_phases(p, &ph)) return false;
  Params base{};
  base.p = p;
  const int64_t og = p.out_per_group(), cg = p.in_per_group(), K = p.kernel_size, s = p.stride;
  const bool ncw = p.layout == Layout::kNCW;

  // Warps per phase: as many as the phases leave room for (8 warps, 32 q each).
  base.nphase = ph.nphase;
  int slots = 1;
  while (slots < ph.nphase && slots < kWarps) slots *= 2;
  base.slots = slots;
  base.warps_per_phase = kWarps / slots;
  base.phase_groups = static_cast<int>(ceil_div(ph.nphase, slots));
  for (int i = 0; i < ph.nphase; ++i) {
    base.phase_first[i] = ph.first[i];
    base.phase_count[i] = ph.count[i];
    base.phase_r[i] = ph.residue[i];
  }
  for (int r = 0; r < s; ++r) {
    const int phase = ph.phase_of_residue[r];
    base.residue_group[r] = phase < 0 ? 0 : phase / slots;
  }
  base.vec_dy = ncw ? widest_vec(sz, {p.out_length}) : widest_vec(sz, {p.out_channels, og, 16});
  // Streamed weight chunks copy along o where the weights are O-contiguous.
  base.vec_w = p.w_o == 1 ? widest_vec(sz, {p.w_c, p.w_k, og}) : 1;
  const int kpair = sz == 4 ? 1 : 2;  // reduction index step between lanes tq
  const int ldsm_multiple = 16 / sz;  // ldmatrix rows are 16-byte aligned
  const size_t budget = std::min<size_t>(device_limits().smem_optin, kMaxSmem);
  // Conflict patterns: lane (gg, tt) = (lane / 4, lane % 4) of each fragment load or staging store. Rows of
  // A (and NWC B) whose pitch is an odd multiple of 16 bytes modulo 128 also keep ldmatrix conflict-free.
  auto a_frag = [&](int gg, int tt, int64_t P) { return gg * P + kpair * tt; };

  base.n_empty = 0;
  for (int r = 0; r < s; ++r)
    if (ph.phase_of_residue[r] < 0) base.empty_r[base.n_empty++] = r;
  auto try_shape = [&](int warps_m, int mt, bool stream, int bo, int nstage, size_t cap) {
    Params t = base;
    t.warps_m = warps_m;
    t.bq = 32 * t.warps_per_phase / warps_m;
    t.bc = 16 * mt * warps_m;
    t.bc_shift = 0;
    while ((1 << t.bc_shift) < t.bc) ++t.bc_shift;
    t.bo = bo;
    t.o_chunks = static_cast<int>(ceil_div(og, bo));
    t.nstage = nstage;
    TapSegments segs;
    int seg_of[kMaxTaps];
    int64_t off[kMaxTaps];
    if (!dy_segments(ph, t.bq, &segs, seg_of, off)) return false;
    t.nseg = segs.count;
    for (int j = 0; j < ph.taps; ++j) {
      t.tap_k[j] = ph.tap_k[j];
      t.tap_seg[j] = seg_of[j];
      t.tap_pos[j] = static_cast<int>(off[j]);
    }
    int64_t extent = 0;  // positions of the dy tile (NCW: columns with room for the copy shift)
    for (int j = 0; j < segs.count; ++j) {
      t.seg_start[j] = static_cast<int>(segs.start[j]);
      t.seg_len[j] = static_cast<int>(segs.length[j]);
      t.seg_base[j] = static_cast<int>(extent);
      const int64_t cols = ncw ? round_up(segs.length[j] + t.vec_dy - 1, t.vec_dy) : segs.length[j];
      t.seg_chunks[j] = static_cast<int>(ncw ? cols / t.vec_dy : ceil_div(bo, t.vec_dy));
      extent += cols;
    }
    const int span = static_cast<int>(s * t.bq);
    if (stream) {
      t.w_pitch = 0;
      t.w_elems = 0;
      t.ws_pitch = static_cast<int>(pick_pitch(bo, ldsm_multiple, a_frag, sz));
      t.ws_elems = static_cast<int>(round_up(K * t.bc * t.ws_pitch, 16 / sz));
    } else {
      t.w_pitch = static_cast<int>(pick_pitch(t.o_chunks * bo, ldsm_multiple, a_frag, sz));
      t.w_elems = static_cast<int>(K * t.bc * t.w_pitch);
      t.ws_pitch = 0;
      t.ws_elems = 0;
    }
    if (direct) {
      t.st_pitch = 0;
      t.st_elems = 0;
    }
    if (ncw) {
      auto b_frag = [&](int gg, int tt, int64_t P) { return kpair * tt * P + gg; };
      auto st_frag = [&](int gg, int tt, int64_t P) { return gg * P + 2 * tt * s; };
      t.dy_pitch = static_cast<int>(pick_pitch(extent, t.vec_dy, b_frag, sz));
      t.dy_elems = bo * t.dy_pitch;
      t.st_pitch = static_cast<int>(pick_pitch(span, 4, st_frag, 4));
      if (!direct) t.st_elems = t.bc * t.st_pitch;
    } else {
      auto st_frag = [&](int gg, int tt, int64_t P) { return 2 * tt * s * P + gg; };
      t.dy_pitch = static_cast<int>(pick_pitch(bo, std::max(t.vec_dy, ldsm_multiple), a_frag, sz));
      t.dy_elems = static_cast<int>(extent * t.dy_pitch);
      t.st_pitch = static_cast<int>(pick_pitch(t.bc, 4, st_frag, 4));
      if (!direct) t.st_elems = span * t.st_pitch;
    }
    t.dy_elems = static_cast<int>(round_up(t.dy_elems, 16 / sz));
    t.stage_elems = t.dy_elems + t.ws_elems;
    t.stages_offset = static_cast<int>(round_up(int64_t(t.w_elems) * sz, 16));
    t.staging_offset = static_cast<int>(t.stages_offset + int64_t(t.stage_elems) * sz * nstage);
    const int64_t total = t.staging_offset + int64_t(t.st_elems) * 4;
    if (total > static_cast<int64_t>(cap)) return false;
    plan->prm = t;
    plan->mt = mt;
    plan->stream_w = stream;
    plan->smem = static_cast<size_t>(total);
    return true;
  };
  // Resident weights: all output channels of the group in one chunk where two stages fit (one barrier and one
  // copy pass per unit; the next unit's dy arrives while this one computes), else the deepest pipeline of
  // 32- or 16-channel chunks. JAX_CONV1D_DGRAD_CHUNKS=narrow skips the whole-group chunk (for comparisons).
  const bool wide_ok = !(std::getenv("JAX_CONV1D_DGRAD_CHUNKS") &&
                         std::string(std::getenv("JAX_CONV1D_DGRAD_CHUNKS")) == "narrow");
  const int bo_all = static_cast<int>(round_up(og, 16));
  // Streamed weights: 32-channel chunks in three stages where they fit (stride 1 has no staging tile), before
  // deeper pipelines of 16: half the barriers and per-chunk set-up per MMA. WaveNet's dx (C128 O256 K2) went
  // 3.07 -> 2.41 ms on an H100 with it. JAX_CONV1D_DGRAD_STREAM_BO=16 skips it (for A/B runs).
  const bool stream_wide = !(std::getenv("JAX_CONV1D_DGRAD_STREAM_BO") &&
                             std::string(std::getenv("JAX_CONV1D_DGRAD_STREAM_BO")) == "16");
  auto try_depths = [&](int warps_m, int mt, bool stream) {
    if (!stream && wide_ok && bo_all > 32 && bo_all <= 256)
      for (int nstage : {3, 2})
        if (try_shape(warps_m, mt, stream, bo_all, nstage, budget)) return true;
    if (stream && stream_wide && try_shape(warps_m, mt, stream, 32, 3, budget)) return true;
    for (int nstage : {4, 3, 2})
      for (int bo : {32, 16})
        if (try_shape(warps_m, mt, stream, bo, nstage, budget)) return true;
    return false;
  };
  bool ok = false;
  // Two blocks per SM, 32 channels each, weights resident: twice the warps to hide latency, at the price of
  // reading each dy tile once per 32 channels (the two blocks of a slice pair walk the same units, so the
  // second read is mostly an L2 hit). JAX_CONV1D_DGRAD_SM_BLOCKS=2 asks for it (for A/B runs).
  const char* sm_blocks = std::getenv("JAX_CONV1D_DGRAD_SM_BLOCKS");
  const bool two_per_sm = sm_blocks && std::string(sm_blocks) == "2";
  const size_t cap2 = device_limits().smem_per_sm > 0
                          ? std::min<size_t>(budget, device_limits().smem_per_sm / 2 - 1024) : 0;
  if (two_per_sm && cg > 32 && !std::is_same_v<Op, Mma3xTf32>) {
    auto try_two = [&]() {
      if (wide_ok && bo_all > 32 && bo_all <= 256)
        for (int nstage : {3, 2})
          if (try_shape(1, 2, false, bo_all, nstage, cap2)) return true;
      for (int bo : {64, 32})
        for (int nstage : {4, 3, 2})
          if (bo < bo_all && try_shape(1, 2, false, bo, nstage, cap2)) return true;
      return false;
    };
    if (try_two()) {
      ok = true;
      plan->blocks_per_sm = 2;
    }
  }
  if (!ok && cg > 64 && base.warps_per_phase >= 2) ok = try_depths(2, 4, false) || try_depths(2, 4, true);
  const int mt_max = cg > 32 ? 4 : (cg > 16 ? 2 : 1);
  if (!ok) ok = try_depths(1, mt_max, false) || (mt_max == 4 && try_depths(1, 4, true));
  for (int mt = mt_max / 2; mt >= 1 && !ok; mt /= 2) ok = try_depths(1, mt, false);
  if (!ok) return false;
  Params& q = plan->prm;
  q.c_blocks = static_cast<int>(ceil_div(cg, q.bc));
  // JAX_CONV1D_DGRAD_COPIES=checked keeps every copy on the checked walks (for A/B runs: same bits).
  const char* copies = std::getenv("JAX_CONV1D_DGRAD_COPIES");
  q.fast_copies = !(copies && std::string(copies) == "checked");
  q.direct_stores = direct;
  q.w_rows_uniform = p.w_o == 1 && p.w_k == int64_t(q.bc) * p.w_c;
  q.q_lo = ph.q_lo;
  q.q_tiles = ceil_div(ph.q_count, q.bq);
  q.units_per_slice = p.batch * q.q_tiles * q.phase_groups;
  if (q.units_per_slice >= (int64_t(1) << 31)) return false;  // the kernel decodes units in 32 bits
  const int64_t slices = p.groups * q.c_blocks;
  if (slices > 0x7fffffff) return false;
  const int64_t per_slice =
      std::min<int64_t>({std::max<int64_t>(1, device_limits().sms * plan->blocks_per_sm / slices),
                         q.units_per_slice, 65535});
  plan->grid = dim3(static_cast<unsigned>(slices), static_cast<unsigned>(per_slice), 1);
  return true;
}

// Where dx comes from. Stride 1: the fragments, straight (one phase, no interleaving). Stride > 1: the staging
// tile, whose coalesced stores of whole tile rows were faster on the headline (NWC f32 dx 7.87 ms staged against
// 10.77 ms direct, NCW 10.32 against 21.04, on an H100). JAX_CONV1D_DGRAD_STORES=auto stores straight where the
// tile's shared memory would shrink the block's channels or chunks: dx alone measured faster there (sweep/015,
// K 1 stride 4 NCW: 1.36 -> 0.37 ms; sweep/022: 0.21 -> 0.09 ms), but in the combined backward call of the
// session-5 bench sweep/018 took 1.3-1.7 ms against 0.53 staged, so it is not the default. Positions no tap
// reaches are zeroed by the units of phase group 0 when the fragments go straight. =staged / =direct force
// either (for A/B runs).
template <class Op>
bool make_plan(const Conv1dParams& p, Plan* plan) {
  const char* stores = std::getenv("JAX_CONV1D_DGRAD_STORES");
  const std::string mode = stores ? stores : "";
  if (mode == "direct" || p.stride == 1) return make_plan_with_stores<Op>(p, true, plan);
  if (mode != "auto") return make_plan_with_stores<Op>(p, false, plan);
  Plan staged, direct;
  const bool have_staged = make_plan_with_stores<Op>(p, false, &staged);
  if (!make_plan_with_stores<Op>(p, true, &direct)) {
    if (have_staged) *plan = staged;
    return have_staged;
  }
  const Params &a = staged.prm, &b = direct.prm;
  const bool same_tile = have_staged && staged.mt == direct.mt && staged.stream_w == direct.stream_w &&
                         staged.blocks_per_sm == direct.blocks_per_sm && a.warps_m == b.warps_m && a.bc == b.bc &&
                         a.bq == b.bq && a.bo == b.bo;
  *plan = same_tile ? staged : direct;
  return true;
}

template <class Op, int kMT, bool kNWC, bool kStreamW, int kMinBlocks = 1>
cudaError_t launch(const Plan& plan, const typename Op::T* dy, const typename Op::T* w, typename Op::T* dx,
                   cudaStream_t stream) {
  auto kernel = dgrad_gemm_kernel<Op, kMT, kNWC, kStreamW, kMinBlocks>;
  if (cudaError_t err = allow_dynamic_smem(kernel, plan.smem); err != cudaSuccess) return err;
  if constexpr (kMinBlocks > 1) {
    // Two blocks' shared memory only fits with the whole carveout given to shared memory.
    if (cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                               cudaSharedmemCarveoutMaxShared);
        err != cudaSuccess)
      return err;
  }
  kernel<<<plan.grid, kThreads, plan.smem, stream>>>(plan.prm, dy, w, dx);
  return cudaGetLastError();
}

template <class Op, bool kNWC>
cudaError_t launch_shape(const Plan& plan, const typename Op::T* dy, const typename Op::T* w, typename Op::T* dx,
                         cudaStream_t stream) {
  if (plan.stream_w) return launch<Op, 4, kNWC, true>(plan, dy, w, dx, stream);
  if (plan.mt == 4) return launch<Op, 4, kNWC, false>(plan, dy, w, dx, stream);
  if constexpr (!std::is_same_v<Op, Mma3xTf32>) {
    if (plan.blocks_per_sm == 2) return launch<Op, 2, kNWC, false, 2>(plan, dy, w, dx, stream);
  }
  if (plan.mt == 2) return launch<Op, 2, kNWC, false>(plan, dy, w, dx, stream);
  return launch<Op, 1, kNWC, false>(plan, dy, w, dx, stream);
}

template <class Op>
cudaError_t run(const Conv1dParams& p, const typename Op::T* dy, const typename Op::T* w, typename Op::T* dx,
                cudaStream_t stream) {
  Plan plan;
  if (!make_plan<Op>(p, &plan)) return cudaErrorNotSupported;
  return p.layout == Layout::kNWC ? launch_shape<Op, true>(plan, dy, w, dx, stream)
                                  : launch_shape<Op, false>(plan, dy, w, dx, stream);
}

}  // namespace dgrad_gemm
}  // namespace jax_conv1d::cuda
