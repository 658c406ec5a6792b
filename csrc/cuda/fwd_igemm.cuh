// Forward pass as an implicit GEMM on tensor cores (mma.sync), for dense and grouped convolutions.
//
// Per group g the convolution is a matrix product  Y[o, t] = sum_{(c,k)} W[o, (c,k)] * X[(c,k), t]  with
// X[(c,k), t] = x[c, t*stride + k*dilation - pad_lo] never materialised: a block owns an (o-tile, group)
// pair and walks output tiles of BN positions. For each tile it streams the input *window* those positions
// read, (BN-1)*stride + (K-1)*dilation + 1 positions of a chunk of BC channels, into shared memory (on sm_90+
// through the copy engine: 1-D bulk copies per NCW channel row, tensor-map boxes for NWC; otherwise cp.async),
// zero-filled outside [0, L) so padding costs nothing, and reads the B operand straight out of the window at
// column t*stride + k*dilation. Every input byte therefore crosses DRAM once (halos aside, which
// neighbouring blocks read at the same time and find in L2).
//
// The block's weights stay resident in shared memory for its whole life, stored in mma fragment order (one
// 16-byte load per A fragment) and already rounded to tf32 or packed as 16-bit pairs. Blocks are persistent:
// the pipeline runs over the flat sequence (tile, channel chunk), so the next tile's loads are in flight
// while the current tile's epilogue stores. Accumulation is fp32 in registers; the epilogue adds the bias and
// writes y directly (no scratch, no atomics: results are bitwise reproducible).
//
// K order of the GEMM within a chunk: tap-major, channel-minor, in steps of the MMA's k (8 for tf32, 16 for
// 16-bit), so a B fragment's k pair is two adjacent channels at one tap: one 32-bit load in NWC.
#pragma once

#include <cuda.h>  // CUtensorMap (the type only; the encoder comes through the runtime's driver entry point)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "../conv1d_params.h"
#include "fwd_common.cuh"
#include "fwd_kernels.h"
#include "mma.cuh"

namespace jax_conv1d::cuda {

// How a float32 product is formed: one tf32 MMA (lax's DEFAULT), or three (3xTF32: float32-level accuracy).
enum class FwdMath { kTF32, k3xTF32, k16bit };

// Per element type: MMA k-step, channels per pipeline chunk, and the row pitch of an NWC window in shared
// memory (channel chunk + 16 bytes, so 8 consecutive positions fall on distinct banks for odd strides).
template <typename T>
struct IgemmElem {
  static constexpr int kStep = sizeof(T) == 4 ? 8 : 16;
  static constexpr int kChunk = sizeof(T) == 4 ? 16 : 32;
  static constexpr int kVec = vec_width<T>();
  static constexpr int kRowNWC = kChunk + kVec;
};

// Pipeline depth limit: more stages keep more bytes in flight per multiprocessor when the weights leave room.
// kMaxStages sizes the barrier array; plans stop at kDefaultMaxStages unless JAX_CONV1D_IGEMM_STAGES asks for
// more (the depths above 6 are measured only where a plan says so).
constexpr int kMaxStages = 8, kDefaultMaxStages = 6;
// Channel chunks per pipeline step, at most (NWC: 4 chunks of 16 floats are a whole 256-byte row of 64 channels).
constexpr int kMaxStepChunks = 4;

// Output staging in shared memory (bytes). NWC: per warp, one n8 column block of the warp tile as
// [8 columns][WM + 4] floats. NCW: per warp row (the WARPS_N warps sharing wm), two buffers of 8 whole tile
// rows as [8 rows][BN + 8] floats. The pads make the fragment-order writes conflict-free; the NCW pad also
// leaves room for shifting a row by its misalignment (up to 7 elements).
template <class Tile, Layout kLayout>
constexpr int igemm_scratch_bytes() {
  constexpr int WM = Tile::BM / Tile::WARPS_M;
  return kLayout == Layout::kNWC ? Tile::WARPS_M * Tile::WARPS_N * 8 * (WM + 4) * 4
                                 : Tile::WARPS_M * 2 * 8 * (Tile::BN + 8) * 4;
}

// Block tile: BM output channels x BN output positions, WARPS_M x WARPS_N warps.
template <int BM_, int BN_, int WARPS_M_, int WARPS_N_>
struct IgemmTile {
  static constexpr int BM = BM_, BN = BN_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_;
  static constexpr int kThreads = WARPS_M * WARPS_N * 32;
};
using IgemmTile128 = IgemmTile<128, 128, 2, 4>;  // warp tile 64 x 32
using IgemmTile64 = IgemmTile<64, 256, 1, 8>;    // warp tile 64 x 32
using IgemmTile32 = IgemmTile<32, 256, 1, 8>;    // warp tile 32 x 32
using IgemmTile16 = IgemmTile<16, 256, 1, 8>;    // warp tile 16 x 32
// Wide warp tiles (64 x 64), NWC only: per MMA a warp reads 128 bytes of fragments from shared memory instead
// of 192 (A is 2 KB and B 2 KB per k-step for 32 MMAs, against 2 KB + 1 KB for 16), for K = 2, where the
// fragment reads and not DRAM set the pace (WaveNet's layers).
using IgemmTile128w = IgemmTile<128, 256, 2, 4>;
using IgemmTile64w = IgemmTile<64, 512, 1, 8>;
// Short tiles (128 x 64, warp tile 32 x 32), NWC only: a window of 198 rows (stride 3, dilation 4) is small
// enough that a pipeline step can hold all 64 channels of it (whole input rows) or several steps can be in
// flight beside the 96 KB of float32 weights.
using IgemmTile128s = IgemmTile<128, 64, 4, 2>;
template <class Tile>
constexpr bool kShortTile = std::is_same_v<Tile, IgemmTile128s>;
// Its plan: channel chunks per step (whole rows of up to 64 float channels) and pipeline depth cap.
constexpr int kShortStepChunks = 4, kShortMaxStages = 8;

// Everything the kernel needs beyond the template, computed once on the host.
struct IgemmArgs {
  Conv1dParams p;
  const void* x;
  const void* w;
  const void* bias;  // null when absent
  void* y;
  int win;           // input positions one tile reads: (BN-1)*stride + (K-1)*dilation + 1
  int x_row;         // NCW: elements per channel row of a stage (window + alignment slack, bank-padded)
  int stage_elems;   // elements per pipeline stage
  int stages;        // pipeline depth, 2..kMaxStages
  int chunks;        // channel chunks per group: ceil(Cg / BC)
  int step_chunks;   // channel chunks per pipeline step (with bulk copies: 1..kMaxStepChunks; otherwise 1) ...
  int steps;         // ... so steps per tile: ceil(chunks / step_chunks)
  int sub_elems;     // elements per chunk window inside a stage (the stage holds step_chunks of them)
  int m_tiles;       // o-tiles per group: ceil(Og / BM)
  int combos;        // groups * m_tiles: the (group, o-tile) pairs, each with its own resident weights
  int w_words;       // 32-bit words of resident weights
  int w_bytes_padded;  // resident weights rounded up to 1 KiB; the stages follow
  int box_rows;      // NWC with bulk copies: window rows per tensor-map box (a multiple of 8) ...
  int boxes;         // ... and boxes per stage ...
  int box_step;      // ... whose input rows start box_step apart (box_rows; the dilation in a gapped window)
  int tap_rows;      // NWC: shared-memory rows from one tap's window to the next (the dilation, or box_rows
                     // when each tap has its own box: a gapped window)
  int64_t t_tiles;   // output tiles per sample: ceil(Lout / BN)
  int64_t tiles_per_combo;   // N * t_tiles
  int64_t blocks_per_combo;  // blocks sharing one (group, o-tile)
  int64_t step_n, step_tt;   // blocks_per_combo as (samples, tiles): / and % t_tiles
  bool vec_x;        // x rows allow 16-byte copies
  bool pair_store;   // NCW: two adjacent outputs can be stored as one aligned pair
  int scratch_off;   // byte offset of the output staging areas (0: none, outputs stored from the fragments)
  bool evict_normal; // stores with the normal L2 eviction policy instead of streaming (JAX_CONV1D_IGEMM_STORE_EVICT)
  int diag;          // timing experiments only (wrong results): kDiag* bits, from JAX_CONV1D_IGEMM_DIAG
};

// JAX_CONV1D_IGEMM_DIAG bits: drop one part of the kernel so a timing run shows what the rest costs alone.
constexpr int kDiagNoMma = 1, kDiagNoCopy = 2, kDiagNoStore = 4;

// kBulk: stages are filled by the copy engine (sm_90+): NCW rows as 1-D bulk copies, NWC windows as tensor-map
// boxes stored with the 64-byte swizzle (rows of exactly one 64-byte chunk, so B-fragment reads stay
// conflict-free for odd strides). Otherwise by per-thread cp.async.
template <typename T, typename TOut, Layout kLayout, FwdMath kMath, class Tile, bool kBulk>
__global__ void __launch_bounds__(Tile::kThreads, 1)
    conv1d_fwd_igemm_kernel(const IgemmArgs a, const __grid_constant__ CUtensorMap tmap) {
  using E = IgemmElem<T>;
  constexpr int kThreads = Tile::kThreads, kWarps = kThreads / 32;
  constexpr int BM = Tile::BM, BN = Tile::BN;
  constexpr int WM = BM / Tile::WARPS_M, WN = BN / Tile::WARPS_N;
  constexpr int MT = WM / 16, NT = WN / 8;  // m16 / n8 fragments per warp
  constexpr int kMTiles = BM / 16;          // m16 fragments per block
  constexpr int BC = E::kChunk, KS = E::kStep, QS = BC / KS, VEC = E::kVec, kRowNWC = E::kRowNWC;
  constexpr bool kNCW = kLayout == Layout::kNCW;
  constexpr bool k16 = sizeof(T) == 2;
  static_assert(MT >= 1 && NT >= 1 && WM % 16 == 0 && WN % 8 == 0, "warp tile must hold whole fragments");
  constexpr bool kWideWarp = NT >= 8;  // the 64 x 64 warp tiles

  static_assert(!kBulk || kLayout == Layout::kNCW || BC * sizeof(T) == 64, "swizzled rows are 64 bytes");
  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t stage_full[kMaxStages];
  // 1 KiB alignment: the swizzle pattern of tensor-map boxes follows absolute shared-memory address bits.
  unsigned char* smem = smem_raw + ((1024 - smem_addr(smem_raw) % 1024) % 1024);
  uint32_t* ws = reinterpret_cast<uint32_t*>(smem);
  T* xs = reinterpret_cast<T*>(smem + a.w_bytes_padded);

  const Conv1dParams& p = a.p;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ w = static_cast<const T*>(a.w);
  const T* __restrict__ bias = static_cast<const T*>(a.bias);
  TOut* __restrict__ y = static_cast<TOut*>(a.y);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp % Tile::WARPS_M, wn = warp / Tile::WARPS_M;
  const int g = lane >> 2, t = lane & 3;
  const int combo = int(blockIdx.x % unsigned(a.combos));
  const int64_t bi = blockIdx.x / unsigned(a.combos);
  const int64_t grp = combo / a.m_tiles;
  const int mtile = combo % a.m_tiles;
  const int64_t cg = p.in_per_group(), og = p.out_per_group();
  const int K = int(p.kernel_size), s = int(p.stride), d = int(p.dilation);
  const int x_row = a.x_row;
  const int64_t my_tiles = bi < a.tiles_per_combo ? (a.tiles_per_combo - 1 - bi) / a.blocks_per_combo + 1 : 0;
  const uint32_t stage_bytes = uint32_t(a.stage_elems) * sizeof(T);

  // Where a pipeline step is: (sample, output tile) and step within the tile (chunk = step when step_chunks
  // is 1; otherwise chunks step*step_chunks + 0, 1). The loads and the computation each walk
  // the block's steps in order with their own cursor; a tile advances by blocks_per_combo tiles, i.e.
  // step_n samples and step_tt tiles with one carry, so no step pays for a 64-bit division.
  struct Cursor {
    int64_t n, tt;
    int chunk;
  };
  auto advance = [&](Cursor& c) {
    if (++c.chunk == a.steps) {
      c.chunk = 0;
      c.tt += a.step_tt;
      c.n += a.step_n;
      if (c.tt >= a.t_tiles) c.tt -= a.t_tiles, ++c.n;
    }
  };
  const Cursor first{bi / a.t_tiles, bi % a.t_tiles, 0};
  Cursor at_load = first, at_compute = first;

  auto load = [&](int stage) {
    const Cursor c = at_load;
    advance(at_load);
    const int64_t n = c.n, tt = c.tt;
    const int chunk = c.chunk;
    const int64_t l0 = tt * BN * s - p.pad_lo;
    T* dst = xs + size_t(stage) * a.stage_elems;
    const int c_valid = int(std::min<int64_t>(BC, cg - int64_t(chunk) * BC));
    const T* xg = x + n * p.x_n + (grp * cg + int64_t(chunk) * BC) * p.x_c;
    if constexpr (kNCW) {
      const int64_t la = floor_div(l0, VEC) * VEC;
      const int need = int(l0 - la) + a.win;  // elements of each row the tile reads
      for (int r = warp; r < BC; r += kWarps) {
        const T* src = xg + r * p.x_c;
        T* row = dst + r * x_row;
        if (a.vec_x) {
          for (int v = lane; v * VEC < need; v += 32) {
            const int64_t l = la + v * VEC;
            const bool ok = r < c_valid && l >= 0 && l < p.in_length;
            cp_async_16(row + v * VEC, ok ? src + l : x, ok);
          }
        } else {
          for (int i = lane; i < need; i += 32) {
            const int64_t l = la + i;
            const bool ok = r < c_valid && l >= 0 && l < p.in_length;
            copy_elem(row + i, ok ? src + l : x, ok);
          }
        }
      }
    } else {
      if (a.vec_x) {
        constexpr int VPR = BC / VEC;
        for (int i = tid; i < a.win * VPR; i += kThreads) {
          const int r = i / VPR, v = i % VPR;
          const int64_t l = l0 + r;
          const bool ok = v * VEC < c_valid && l >= 0 && l < p.in_length;
          cp_async_16(dst + r * kRowNWC + v * VEC, ok ? xg + l * p.x_l + v * VEC : x, ok);
        }
      } else {
        for (int i = tid; i < a.win * BC; i += kThreads) {
          const int r = i / BC, c = i % BC;
          const int64_t l = l0 + r;
          const bool ok = c < c_valid && l >= 0 && l < p.in_length;
          copy_elem(dst + r * kRowNWC + c, ok ? xg + l * p.x_l + c : x, ok);
        }
      }
    }
  };

  // Copy-engine version of load(): one warp (NCW rows) or one thread (NWC boxes) issues the copies.
  auto issue = [&](int stage, uint64_t* bar) {
    const Cursor c = at_load;
    advance(at_load);
    if constexpr (kNCW) {
      if (warp != 0) return;
    } else {
      if (tid != 0) return;
    }
    const int64_t n = c.n, tt = c.tt;
    const int chunk = c.chunk;
    const int64_t l0 = tt * BN * s - p.pad_lo;
    T* dst = xs + size_t(stage) * a.stage_elems;
    if constexpr (kNCW) {
      const int64_t la = floor_div(l0, VEC) * VEC;
      const int span = int(ceil_div(int64_t(l0 - la) + a.win, VEC) * VEC);  // elements of each row read
      // In-range part [lo, hi) of [la, la + span); L and la are multiples of VEC, so it is whole vectors.
      const int64_t lo = std::max<int64_t>(la, 0), hi = std::min<int64_t>(la + span, p.in_length);
      if (a.diag & kDiagNoCopy) {
        if (lane == 0) mbar_arrive_expect_tx(bar, 0);
        return;
      }
      const uint32_t row_bytes = hi > lo ? uint32_t((hi - lo) * sizeof(T)) : 0u;
      // The step's chunk windows (step_chunks of them, sub_elems apart in the stage), BC channel rows each.
      const int chunk0 = chunk * a.step_chunks, nsub = std::min(a.step_chunks, a.chunks - chunk0);
      int rows_valid = 0;
      for (int sub = 0; sub < nsub; ++sub)
        rows_valid += int(std::min<int64_t>(BC, cg - int64_t(chunk0 + sub) * BC));
      if (lane == 0) mbar_arrive_expect_tx(bar, row_bytes * uint32_t(rows_valid));
      __syncwarp();
      const int z0 = row_bytes > 0 ? int(lo - la) : span, z1 = row_bytes > 0 ? int(hi - la) : span;
      bool zeros = false;
      for (int sub = 0; sub < nsub; ++sub) {
        const int64_t ch = chunk0 + sub;
        const int c_valid = int(std::min<int64_t>(BC, cg - ch * BC));
        const T* xg = x + n * p.x_n + (grp * cg + ch * BC) * p.x_c;
        T* sdst = dst + size_t(sub) * a.sub_elems;
        for (int r = lane; r < c_valid && row_bytes > 0; r += 32)
          bulk_copy_g2s(sdst + r * x_row + (lo - la), xg + r * p.x_c + lo, row_bytes, bar);
        // Zeros, written by the whole warp, for padding (left of 0, right of L) and channels past the group.
        // Only tiles at the ends of a sequence, or groups narrower than a chunk, have any.
        if (z0 > 0 || z1 < span || c_valid < BC) {
          zeros = true;
          for (int r = 0; r < BC; ++r) {
            T* row = sdst + r * x_row;
            const int a0 = r < c_valid ? z0 : span, a1 = r < c_valid ? z1 : span;
            for (int i = lane; i < a0; i += 32) row[i] = T(0.f);
            for (int i = a1 + lane; i < span; i += 32) row[i] = T(0.f);
          }
        }
      }
      if (zeros) fence_proxy_async();
    } else {
      const uint32_t box_bytes = uint32_t(a.box_rows) * BC * sizeof(T);
      if (a.diag & kDiagNoCopy) {
        mbar_arrive_expect_tx(bar, 0);
        return;
      }
      const int chunk0 = chunk * a.step_chunks, nsub = std::min(a.step_chunks, a.chunks - chunk0);
      mbar_arrive_expect_tx(bar, box_bytes * uint32_t(a.boxes * nsub));
      for (int sub = 0; sub < nsub; ++sub) {
        const int c0 = int(grp * cg + int64_t(chunk0 + sub) * BC);
        for (int b = 0; b < a.boxes; ++b)
          tma_load_3d(dst + size_t(sub) * a.sub_elems + size_t(b) * a.box_rows * BC, &tmap, c0,
                      int(l0 + int64_t(b) * a.box_step), int(n), bar);
      }
    }
  };

  // Resident weights, in fragment order: word ((((chunk*K + k)*QS + q)*kMTiles + m16)*32 + lane)*4 + reg.
  // Rows past Og and channels past Cg are zero, so partial tiles need no masking in the main loop (the
  // matching x rows are zero-filled too: 0 * garbage could be NaN).
  // Unrolled so several weight loads (L2 hits: every block reads the same few KB) are in flight at once.
#pragma unroll 4
  for (int wi = tid; wi < a.w_words; wi += kThreads) {
    const int r = wi & 3, ln = (wi >> 2) & 31;
    int rest = wi >> 7;
    const int m16 = rest % kMTiles;
    rest /= kMTiles;
    const int q = rest % QS;
    rest /= QS;
    const int k = rest % K, chunk = rest / K;
    const int64_t o_local = int64_t(mtile) * BM + m16 * 16 + (ln >> 2) + 8 * (r & 1);
    const bool m_ok = o_local < og;
    const T* wo = w + (grp * og + o_local) * p.w_o + k * p.w_k;
    uint32_t word;
    if constexpr (!k16) {
      const int64_t c = int64_t(chunk) * BC + q * 8 + (ln & 3) + 4 * (r >> 1);
      const float v = (m_ok && c < cg) ? wo[c * p.w_c] : 0.f;
      word = kMath == FwdMath::kTF32 ? tf32_round_fast(v) : __float_as_uint(v);
    } else {
      const int64_t c = int64_t(chunk) * BC + q * 16 + 2 * (ln & 3) + 8 * (r >> 1);
      const uint16_t* wb = reinterpret_cast<const uint16_t*>(wo);
      const uint16_t lo = (m_ok && c < cg) ? wb[c * p.w_c] : uint16_t(0);
      const uint16_t hi = (m_ok && c + 1 < cg) ? wb[(c + 1) * p.w_c] : uint16_t(0);
      word = pack_16x2(lo, hi);
    }
    ws[wi] = word;
  }

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

  // Per-(mt, h) row and per-nt column offsets of this lane's outputs from its first one; fixed for the block.
  // (Not kept for the wide warp tiles: their accumulators leave no registers for them.)
  constexpr int kRowOffs = kWideWarp ? 1 : MT, kColOffs = kWideWarp ? 1 : NT;
  int64_t y_row_off[kRowOffs][2], y_col_off[kColOffs];
#pragma unroll
  for (int mt = 0; mt < kRowOffs; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) y_row_off[mt][h] = int64_t(mt * 16 + 8 * h) * p.y_o;
#pragma unroll
  for (int nt = 0; nt < kColOffs; ++nt) y_col_off[nt] = int64_t(nt * 8) * p.y_t;
  auto row_off = [&](int mt, int h) {
    if constexpr (kWideWarp) return int64_t(mt * 16 + 8 * h) * p.y_o;
    else return y_row_off[mt][h];
  };
  auto col_off = [&](int nt) {
    if constexpr (kWideWarp) return int64_t(nt * 8) * p.y_t;
    else return y_col_off[nt];
  };
  const int64_t o_lane = int64_t(mtile) * BM + wm * WM + g;  // this lane's first output channel in the group

  auto epilogue_with = [&](int64_t n, int64_t tt, auto streaming) {
    constexpr bool kStream = decltype(streaming)::value;
    // Interior tiles (all rows inside the group, all columns inside the output): no per-element checks and
    // one 64-bit add per store.
    const int64_t tc_lane = tt * BN + wn * WN + 2 * t;
    const bool interior = int64_t(mtile + 1) * BM <= og && (tt + 1) * BN <= p.out_length;
    if (interior && a.scratch_off != 0) {
      // Through shared memory, so global stores are 16-byte vectors covering contiguous runs (NWC: a warp's 8
      // positions x WM channels; NCW: whole tile rows of BN positions) instead of 4-8 scattered 32-byte
      // pieces per instruction.
      constexpr int V = 16 / int(sizeof(TOut));  // outputs per 16-byte store
      float bv[MT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) bv[mt][h] = bias ? to_acc(bias[grp * og + o_lane + mt * 16 + 8 * h]) : 0.f;
      if constexpr (!kNCW) {
        constexpr int P = WM + 4, VPC = WM / V;  // row pitch; vectors per column
        float* const scr = reinterpret_cast<float*>(smem + a.scratch_off) + warp * (8 * P);
        TOut* const yw =
            y + n * p.y_n + (grp * og + int64_t(mtile) * BM + wm * WM) * p.y_o + (tt * BN + wn * WN) * p.y_t;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          __syncwarp();
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
              for (int j = 0; j < 2; ++j) scr[(2 * t + j) * P + mt * 16 + g + 8 * h] = acc[mt][nt][2 * h + j] + bv[mt][h];
          __syncwarp();
#pragma unroll
          for (int i = lane; i < 8 * VPC; i += 32) {
            const int c = i / VPC, v = i % VPC;
            float vals[V];
#pragma unroll
            for (int e = 0; e < V; e += 4) {
              const float4 f = *reinterpret_cast<const float4*>(scr + c * P + v * V + e);
              vals[e] = f.x, vals[e + 1] = f.y, vals[e + 2] = f.z, vals[e + 3] = f.w;
            }
            store_out_vec<TOut, V, kStream>(yw + (nt * 8 + c) * p.y_t + v * V, vals);
          }
        }
      } else {
        // The WARPS_N warps of one warp row stage whole tile rows together, 8 rows per round, so a row's BN
        // outputs (contiguous in y) leave as 16-byte vectors of one run. Each row is staged shifted by its
        // misalignment (its first output's place in a 16-byte vector of y), so the vectors of y are 16-byte
        // vectors of the staging row too: only a row's first and last vector are partial. Two buffers
        // alternate, so one barrier per round orders both the writes before the reads and the reads before
        // the next writes to the same buffer (rounds per tile, 2 * MT, are even).
        constexpr int P = BN + 8, NV = BN / V, kGroup = Tile::WARPS_N * 32;
        static_assert(P % 32 == 8 && V <= 8, "pitch 8 mod 32 words; shifts up to 7 elements fit the pad");
        float* const gscr = reinterpret_cast<float*>(smem + a.scratch_off) + wm * (2 * 8 * P);
        const int gtid = wn * 32 + lane;
        TOut* const yg = y + n * p.y_n + (grp * og + int64_t(mtile) * BM + wm * WM) * p.y_o + tt * BN;
        auto shift_of = [](const TOut* row) { return int(reinterpret_cast<uintptr_t>(row) % 16 / sizeof(TOut)); };
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float* const buf = gscr + ((mt * 2 + h) & 1) * (8 * P);
            const int sh_w = shift_of(yg + int64_t(mt * 16 + 8 * h + g) * p.y_o);
            float* const dst = buf + g * P + sh_w + wn * WN + 2 * t;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              const float v0 = acc[mt][nt][2 * h] + bv[mt][h], v1 = acc[mt][nt][2 * h + 1] + bv[mt][h];
              if ((sh_w & 1) == 0) {
                *reinterpret_cast<float2*>(dst + nt * 8) = make_float2(v0, v1);
              } else {
                dst[nt * 8] = v0, dst[nt * 8 + 1] = v1;
              }
            }
            named_barrier_sync(1 + wm, kGroup);
#pragma unroll
            for (int i = gtid; i < 8 * NV; i += kGroup) {
              const int r = i / NV, v = i % NV;
              TOut* const row = yg + int64_t(mt * 16 + 8 * h + r) * p.y_o;
              const int sh = shift_of(row);
              TOut* const gv = row - sh + v * V;  // the aligned vector of y holding staged floats [v*V, v*V + V)
              const float* const sv = buf + r * P + v * V;
              float vals[V];
#pragma unroll
              for (int e = 0; e < V; e += 4) {
                const float4 f = *reinterpret_cast<const float4*>(sv + e);
                vals[e] = f.x, vals[e + 1] = f.y, vals[e + 2] = f.z, vals[e + 3] = f.w;
              }
              if (sh == 0 || v != 0) {
                store_out_vec<TOut, V, kStream>(gv, vals);
              } else {
                store_out_part<TOut, V, kStream, true>(gv, vals, sh);
                // and the row's last, partial vector (staged floats [BN, BN + V), of which sh are outputs)
#pragma unroll
                for (int e = 0; e < V; e += 4) {
                  const float4 f = *reinterpret_cast<const float4*>(sv + BN + e);
                  vals[e] = f.x, vals[e + 1] = f.y, vals[e + 2] = f.z, vals[e + 3] = f.w;
                }
                store_out_part<TOut, V, kStream, false>(gv + BN, vals, sh);
              }
            }
          }
        }
      }
      return;
    }
    if (interior) {
      TOut* yl = y + n * p.y_n + (grp * og + o_lane) * p.y_o + tc_lane * p.y_t;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float bv = bias ? to_acc(bias[grp * og + o_lane + mt * 16 + 8 * h]) : 0.f;
          TOut* yo = yl + row_off(mt, h);
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const float v0 = acc[mt][nt][2 * h] + bv, v1 = acc[mt][nt][2 * h + 1] + bv;
            if (kNCW && a.pair_store) {
              store_out2<TOut, kStream>(yo + col_off(nt), v0, v1);
            } else {
              store_out<TOut, kStream>(yo + col_off(nt), v0);
              store_out<TOut, kStream>(yo + col_off(nt) + p.y_t, v1);
            }
          }
        }
      }
      return;
    }
    TOut* yn = y + n * p.y_n;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t o_local = int64_t(mtile) * BM + wm * WM + mt * 16 + g + 8 * h;
        if (o_local >= og) continue;
        const int64_t o = grp * og + o_local;
        const float bv = bias ? to_acc(bias[o]) : 0.f;
        TOut* yo = yn + o * p.y_o;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const int64_t tc = tt * BN + wn * WN + nt * 8 + 2 * t;
          const float v0 = acc[mt][nt][2 * h] + bv, v1 = acc[mt][nt][2 * h + 1] + bv;
          if (tc + 1 < p.out_length) {
            if (kNCW && a.pair_store) {
              store_out2<TOut, kStream>(yo + tc, v0, v1);
            } else {
              store_out<TOut, kStream>(yo + tc * p.y_t, v0);
              store_out<TOut, kStream>(yo + (tc + 1) * p.y_t, v1);
            }
          } else if (tc < p.out_length) {
            store_out<TOut, kStream>(yo + tc * p.y_t, v0);
          }
        }
      }
    }
  };
  auto epilogue = [&](int64_t n, int64_t tt) {
    if (a.evict_normal) {
      epilogue_with(n, tt, std::false_type{});
    } else {
      epilogue_with(n, tt, std::true_type{});
    }
  };

  // ---- the MMA loop -------------------------------------------------------------------------------------
  // One tap's operands: A for both k-steps of the chunk (QS == 2) from the resident weights, B from the
  // window. Fragments of tap k+1 are loaded before tap k's MMAs are issued (two register sets), so the
  // shared-memory latency hides behind the previous tap's MMAs even with two warps per scheduler.
  static_assert(QS == 2, "one 64-byte chunk row = two k-steps per tap");
  struct Frags {
    uint32_t a[QS][MT][4];
    uint32_t b[QS][NT][2];
  };
  static_assert(!kWideWarp || (!kNCW && kMath != FwdMath::k3xTF32), "wide warp tiles: NWC, one MMA per product");
  struct QFrags {  // one k-step's fragments (wide warp tiles)
    uint32_t a[MT][4];
    uint32_t b[NT][2];
  };
  const unsigned char* xsb = smem + a.w_bytes_padded;  // the window stages, as bytes
  const uint32_t xs_sh = smem_addr(xsb);
  // NWC: B fragments by ldmatrix. Lane L gives the row address of matrix L/8 (16-byte chunk L/8 of the
  // chunk row = k-step L/16, lo/hi half) for column L%8 of the n8 fragment; columns nt*8 apart are 8*s rows
  // apart, which leaves the 64-byte swizzle phase ((row >> 1) & 3) unchanged.
  constexpr uint32_t kRowBytes = kBulk ? BC * sizeof(T) : kRowNWC * sizeof(T);
  const int nwc_col0 = (wn * WN + (lane & 7)) * s;
  const uint32_t nwc_nt_bytes = uint32_t(8 * s) * kRowBytes;
  const int wide_col0 = (wn * WN + (lane & 7) + 8 * (lane >> 4)) * s;
  // NCW: byte offsets of each (k-step, half, n8 fragment) B element relative to this lane's first one; they do
  // not depend on the tile, chunk or tap, so they are computed once.
  constexpr int kElemRows = k16 ? 16 : 8;  // channel rows per k-step
  uint32_t ncw_off[QS][2][NT];
#pragma unroll
  for (int q = 0; q < QS; ++q)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        ncw_off[q][h][nt] = uint32_t(((q * kElemRows + h * (kElemRows / 2)) * x_row + nt * 8 * s) * int(sizeof(T)));
  const uint32_t ncw_lane =
      uint32_t(((k16 ? 2 * t : t) * x_row + (wn * WN + g) * s) * int(sizeof(T)));  // + e per tile
  const uint32_t ncw_row_bytes = uint32_t(x_row * int(sizeof(T)));

  auto compute = [&](int stage) {
    const Cursor c = at_compute;
    advance(at_compute);
    const uint32_t stage_off = uint32_t(stage) * stage_bytes;
    uint32_t ncw_base = 0;  // this lane's B element at tap 0, as a byte offset into the window stages
    if constexpr (kNCW) {
      const int64_t l0 = c.tt * BN * s - p.pad_lo;
      const int e = int(l0 & (VEC - 1));  // window start inside the 16-byte aligned row (VEC is a power of 2)
      ncw_base = stage_off + ncw_lane + uint32_t(e * int(sizeof(T)));
    }
    // The step's (chunk, tap) pairs in one sequence j = sub * K + k; the resident weights are chunk-major,
    // tap-minor, so j also indexes the A fragments from the step's first chunk on.
    const int chunk0 = c.chunk * a.step_chunks;
    const int J = K * std::min(a.step_chunks, a.chunks - chunk0);
    const uint32_t* wck = ws + (size_t(chunk0) * K * QS * kMTiles + wm * MT) * 128 + lane * 4;
    const uint32_t sub_bytes = uint32_t(a.sub_elems) * sizeof(T);
    // Pair j = sub * K + k: the chunk of the step it reads (up to kMaxStepChunks of them), by comparisons.
    static_assert(kMaxStepChunks == 4, "step_sub covers four chunks");
    auto step_sub = [K](int j) { return j < K ? 0 : j < 2 * K ? 1 : j < 3 * K ? 2 : 3; };

    auto load_frags = [&](int j, Frags& fr) {
      const uint32_t* wk = wck + j * (QS * kMTiles * 128);
#pragma unroll
      for (int q = 0; q < QS; ++q)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const uint4 v = *reinterpret_cast<const uint4*>(wk + (q * kMTiles + mt) * 128);
          fr.a[q][mt][0] = v.x, fr.a[q][mt][1] = v.y, fr.a[q][mt][2] = v.z, fr.a[q][mt][3] = v.w;
        }
      if constexpr (!kNCW) {
        const int sub = step_sub(j), k = j - sub * K;
        const int row = nwc_col0 + k * a.tap_rows;
        const int chunk16 = kBulk ? ((lane >> 3) ^ ((row >> 1) & 3)) : (lane >> 3);
        const uint32_t addr =
            xs_sh + stage_off + sub * sub_bytes + uint32_t(row) * kRowBytes + uint32_t(chunk16 << 4);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          uint32_t r4[4];
          ldmatrix_x4(addr + nt * nwc_nt_bytes, r4);
          fr.b[0][nt][0] = r4[0], fr.b[0][nt][1] = r4[1], fr.b[1][nt][0] = r4[2], fr.b[1][nt][1] = r4[3];
        }
      } else {
        const int sub = j >= K ? 1 : 0, k = j - sub * K;  // NCW plans keep step_chunks <= 2
        const unsigned char* base = xsb + ncw_base + sub * sub_bytes + uint32_t(k * d * int(sizeof(T)));
#pragma unroll
        for (int q = 0; q < QS; ++q)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              const unsigned char* e0 = base + ncw_off[q][h][nt];
              if constexpr (!k16) {
                fr.b[q][nt][h] = *reinterpret_cast<const uint32_t*>(e0);
              } else {
                fr.b[q][nt][h] = pack_16x2(*reinterpret_cast<const uint16_t*>(e0),
                                           *reinterpret_cast<const uint16_t*>(e0 + ncw_row_bytes));
              }
            }
      }
    };

    auto mma_frags = [&](Frags& fr) {
#pragma unroll
      for (int q = 0; q < QS; ++q) {
        if constexpr (kMath == FwdMath::kTF32) {
          uint32_t bb[NT][2];
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) bb[nt][r] = tf32_round_fast(__uint_as_float(fr.b[q][nt][r]));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) mma_tf32_16x8x8(acc[mt][nt], fr.a[q][mt], bb[nt]);
        } else if constexpr (kMath == FwdMath::k3xTF32) {
          uint32_t bb[NT][2], bs[NT][2];
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) tf32_split_fast(__uint_as_float(fr.b[q][nt][r]), bb[nt][r], bs[nt][r]);
          // Each k-step's three products go into a fresh sum (small cross terms first), added to the
          // accumulator with one rounded add: the MMA's own accumulation truncates, and three truncations
          // per k-step into the running sum made the error grow with the reduction length (5.6e-6 at
          // Cg*K = 1152 against float64); a rounded add per k-step does not drift. A is split one m16 block
          // at a time to keep the live registers within 255.
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            uint32_t ab[4], as[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) tf32_split_fast(__uint_as_float(fr.a[q][mt][r]), ab[r], as[r]);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              float part[4] = {0.f, 0.f, 0.f, 0.f};
              mma_tf32_16x8x8(part, as, bb[nt]);
              mma_tf32_16x8x8(part, ab, bs[nt]);
              mma_tf32_16x8x8(part, ab, bb[nt]);
#pragma unroll
              for (int r = 0; r < 4; ++r) acc[mt][nt][r] += part[r];
            }
          }
        } else {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) mma_16bit_16x8x16<T>(acc[mt][nt], fr.a[q][mt], fr.b[q][nt]);
        }
      }
    };

    // One k-step (q) of pair j, for the wide warp tiles (NWC only). B: each ldmatrix.x4 gives two n8 blocks'
    // fragments of k-step q: lane L addresses column L%8 of n8 block 2*np + L/16, 16-byte chunk 2q + (L/8)%2.
    auto load_q = [&](int jj, int q, QFrags& fr) {
      const uint32_t* wk = wck + jj * (QS * kMTiles * 128) + q * (kMTiles * 128);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint4 v = *reinterpret_cast<const uint4*>(wk + mt * 128);
        fr.a[mt][0] = v.x, fr.a[mt][1] = v.y, fr.a[mt][2] = v.z, fr.a[mt][3] = v.w;
      }
      const int sub = step_sub(jj), k = jj - sub * K;
      const int row = wide_col0 + k * a.tap_rows;
      const int logical = 2 * q + ((lane >> 3) & 1);
      const int chunk16 = kBulk ? (logical ^ ((row >> 1) & 3)) : logical;
      const uint32_t addr =
          xs_sh + stage_off + sub * sub_bytes + uint32_t(row) * kRowBytes + uint32_t(chunk16 << 4);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t r4[4];
        ldmatrix_x4(addr + np * 2 * nwc_nt_bytes, r4);
        fr.b[2 * np][0] = r4[0], fr.b[2 * np][1] = r4[1], fr.b[2 * np + 1][0] = r4[2], fr.b[2 * np + 1][1] = r4[3];
      }
    };
    auto mma_q = [&](QFrags& fr) {
      if constexpr (kMath == FwdMath::kTF32) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int r = 0; r < 2; ++r) fr.b[nt][r] = tf32_round_fast(__uint_as_float(fr.b[nt][r]));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) mma_tf32_16x8x8(acc[mt][nt], fr.a[mt], fr.b[nt]);
      } else if constexpr (kMath == FwdMath::k16bit) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) mma_16bit_16x8x16<T>(acc[mt][nt], fr.a[mt], fr.b[nt]);
      }
    };

    int j = 0;
    if (a.diag & kDiagNoMma) j = J;
    if constexpr (kWideWarp) {
      // 64 x 64 warp tiles: 128 accumulators leave room for one k-step's fragments in each of two register
      // sets (A 16 + B 16 words), so the pipelining runs per k-step: the next k-step's fragments load while
      // this one's 32 MMAs issue.
      QFrags f0, f1;
      load_q(0, 0, f0);
      for (; j < J; ++j) {
        load_q(j, 1, f1);
        mma_q(f0);
        if (j + 1 < J) load_q(j + 1, 0, f0);
        mma_q(f1);
      }
    } else if constexpr (kMath == FwdMath::k3xTF32) {
      // One register set: the fresh per-k-step sums of the 3xTF32 MMAs need the second set's registers (with
      // both, ptxas spilled in the 64- and 128-row tiles), and three MMAs per product leave the fragment
      // loads less exposed.
      for (; j < J; ++j) {
        Frags f;
        load_frags(j, f);
        mma_frags(f);
      }
    } else {
      Frags f0, f1;
      load_frags(0, f0);
      for (; j + 2 <= J; j += 2) {
        load_frags(j + 1, f1);
        mma_frags(f0);
        if (j + 2 < J) load_frags(j + 2, f0);
        mma_frags(f1);
      }
      if (j < J) mma_frags(f0);
    }

    if (c.chunk == a.steps - 1) {
      if (!(a.diag & kDiagNoStore)) epilogue(c.n, c.tt);
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;
    }
  };

  if constexpr (kBulk) {
#ifdef JC_BULK_COPY_AVAILABLE
    run_pipeline_bulk_staged(my_tiles * a.steps, a.stages, stage_full, issue, compute);
#else
    (void)stage_full;
    (void)issue;
    __trap();  // never launched: the host picks bulk copies only on sm_90+
#endif
  } else {
    run_pipeline_staged(my_tiles * a.steps, a.stages, load, compute);
  }
}

// ---- host side -------------------------------------------------------------------------------------------

// JAX_CONV1D_IGEMM_STAGED_STORES=0 stores outputs straight from the fragments (for comparisons); read per call.
inline bool igemm_staged_stores_enabled() {
  const char* v = std::getenv("JAX_CONV1D_IGEMM_STAGED_STORES");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// JAX_CONV1D_IGEMM_STORE_EVICT=normal|first: outputs stored with the normal L2 eviction policy or streaming
// (st.global.cs); read per call, for comparisons. Default: normal for NCW, streaming for NWC.
inline bool igemm_store_evict_normal(bool fallback) {
  const char* v = std::getenv("JAX_CONV1D_IGEMM_STORE_EVICT");
  if (v == nullptr || *v == '\0') return fallback;
  return std::strcmp(v, "normal") == 0;
}

// Timing experiments (results are wrong while set): JAX_CONV1D_IGEMM_DIAG, a kDiag* bit mask, and
// JAX_CONV1D_IGEMM_STAGES, a cap on the pipeline depth (2..kMaxStages). Read per call.
inline int igemm_env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == '\0' ? fallback : std::atoi(v);
}

// Fills the tile-dependent fields of `a` and the shared-memory size; false when the shape does not fit this
// tile (window or resident weights too large for shared memory, or sizes past the kernel's int ranges).
template <typename T, class Tile>
bool igemm_plan(const Conv1dParams& p, const DeviceLimits& dev, bool bulk, IgemmArgs& a, int& smem_bytes) {
  using E = IgemmElem<T>;
  constexpr int BC = E::kChunk, VEC = E::kVec, QS = BC / E::kStep;
  const int64_t cg = p.in_per_group(), og = p.out_per_group();
  if (cg < 1 || og < 1) return false;
  const int64_t span = (p.kernel_size - 1) * p.dilation;
  if (p.stride > (1 << 16) || span > (1 << 20)) return false;
  const int64_t win = (Tile::BN - 1) * p.stride + span + 1;
  if (win > 16384) return false;
  const int64_t chunks = ceil_div(cg, BC);
  const int64_t w_words = chunks * p.kernel_size * QS * (Tile::BM / 16) * 128;
  if (w_words * 4 > dev.smem_optin) return false;

  a.win = int(win);
  a.chunks = int(chunks);
  a.m_tiles = int(ceil_div(og, Tile::BM));
  a.w_words = int(w_words);
  a.w_bytes_padded = int(ceil_div(w_words * 4, 1024) * 1024);
  a.box_rows = a.boxes = a.box_step = 0;
  a.tap_rows = int(p.dilation);
  if (p.layout == Layout::kNCW) {
    // Room for the window plus up to VEC-1 elements of alignment slack; the row pitch in 32-bit words is
    // 8 mod 32 so the 4 k-rows x 8 columns of a B fragment hit 32 distinct banks for odd strides.
    const int64_t elems_per_word = 4 / sizeof(T);
    int64_t row = ceil_div(win + VEC - 1, VEC) * VEC;
    int64_t words = row / elems_per_word;
    words += (8 - words % 32 + 32) % 32;
    a.x_row = int(words * elems_per_word);
    a.stage_elems = BC * a.x_row;
  } else if (bulk) {
    // Tensor-map boxes hold at most 256 rows; rows per box a multiple of 8 keeps every box on a 512-byte
    // swizzle period. When the taps are further apart than a tile is long (WaveNet's dilations 256 and 512
    // against 128 outputs), the contiguous window is mostly rows no tap reads: each tap then gets a box of
    // its own, box_step = dilation apart in the input (a gapped window; with the contiguous one WaveNet's layer
    // ran 2x slower at dilation 512 than at 64).
    const int64_t tap_seg = ceil_div((Tile::BN - 1) * p.stride + 1, 8) * 8;
    if (p.kernel_size > 1 && tap_seg <= 256 && p.kernel_size * tap_seg < win) {
      a.boxes = int(p.kernel_size);
      a.box_rows = a.tap_rows = int(tap_seg);
      a.box_step = int(p.dilation);
    } else {
      a.boxes = int(ceil_div(win, 256));
      a.box_rows = a.box_step = int(ceil_div(ceil_div(win, a.boxes), 8) * 8);
    }
    a.x_row = 0;
    a.stage_elems = a.boxes * a.box_rows * BC;
  } else {
    a.x_row = 0;
    a.stage_elems = int(win * E::kRowNWC);
  }
  // Windows through the copy engine: two channel chunks share a pipeline step, which halves the stage waits
  // and block barriers per tile (about 650 ns per step on the H100). Measured faster for WaveNet (NWC, K = 2,
  // 64 MMAs per warp per chunk: 1.42 -> 1.31 ms), the f32 TF32 NWC headline (K = 3: 5.97 -> 5.74 ms) and every
  // NCW headline (f32 7.27-7.42 -> 6.83 ms, bf16 5.84-5.97 -> 5.45, 3xTF32 13.33 -> 12.70; session 3); and
  // the NWC 16-bit headline, where the two chunks are whole 128-byte rows of 64 channels (3.03 -> 2.88 and
  // 2.90 -> 2.78 ms in two rounds, 2.80 both in another call; session 7), so 16-bit NWC at stride >= 3 with
  // two chunks per group takes them. Other NWC 16-bit and 3xTF32 shapes at K > 2 keep one chunk per step.
  // The short tile takes whole rows of up to four chunks (igemm_short_preferred).
  // JAX_CONV1D_IGEMM_STEP_CHUNKS=1..4 overrides (NCW: at most 2; more only as far as two stages fit).
  const int64_t sub_bytes = ceil_div(int64_t(a.stage_elems) * sizeof(T), 1024) * 1024;
  a.sub_elems = int(sub_bytes / sizeof(T));
  const int64_t budget = dev.smem_optin - 1024 - int64_t(sizeof(uint64_t)) * 4;  // alignment slack, barriers
  a.step_chunks = 1;
  if (bulk && chunks >= 2 && a.w_bytes_padded + 4 * sub_bytes <= budget) {
    const bool measured = p.layout == Layout::kNCW || p.kernel_size <= 2 ||
                          (sizeof(T) == 4 && p.precision != Precision::kAccurate) ||
                          (sizeof(T) == 2 && p.stride >= 3 && chunks == 2);
    const int fallback = kShortTile<Tile> ? kShortStepChunks : measured ? 2 : 1;
    const int want = igemm_env_int("JAX_CONV1D_IGEMM_STEP_CHUNKS", fallback);
    // More than two chunks only as many as two stages of them leave room for.
    const int most = p.layout == Layout::kNCW ? 2 : kMaxStepChunks;  // the NCW fragment loads take two
    int sc = std::clamp(want, 1, int(std::min<int64_t>(most, chunks)));
    while (sc > 2 && a.w_bytes_padded + 2 * sc * sub_bytes > budget) --sc;
    a.step_chunks = sc;
  }
  a.steps = int(ceil_div(chunks, a.step_chunks));
  const int64_t stage_bytes = sub_bytes * a.step_chunks;
  a.stage_elems = int(stage_bytes / sizeof(T));
  a.stages = 0;
  const int max_stages = std::clamp(
      igemm_env_int("JAX_CONV1D_IGEMM_STAGES", kShortTile<Tile> ? kShortMaxStages : kDefaultMaxStages), 2, kMaxStages);
  for (int st = max_stages; st >= 2; --st) {
    if (a.w_bytes_padded + st * stage_bytes <= budget) {
      a.stages = st;
      break;
    }
  }
  if (a.stages == 0) return false;
  // Output staging, when it fits: take it from a fifth or sixth chunk window if needed, never below four.
  const int min_stages = std::max(2, 4 / a.step_chunks);
  const int64_t scratch_bytes = p.layout == Layout::kNWC ? igemm_scratch_bytes<Tile, Layout::kNWC>()
                                                         : igemm_scratch_bytes<Tile, Layout::kNCW>();
  while (a.stages > min_stages && a.w_bytes_padded + a.stages * stage_bytes + scratch_bytes > budget) --a.stages;
  const int64_t stages_end = a.w_bytes_padded + a.stages * stage_bytes;
  a.scratch_off = stages_end + scratch_bytes <= budget ? int(stages_end) : 0;
  smem_bytes = int(1024 + stages_end + (a.scratch_off ? scratch_bytes : 0));
  a.t_tiles = ceil_div(p.out_length, Tile::BN);
  a.tiles_per_combo = p.batch * a.t_tiles;
  const int64_t combos = p.groups * int64_t(a.m_tiles);
  if (combos > (int64_t(1) << 30)) return false;
  a.combos = int(combos);
  return true;
}

template <typename T, typename TOut, Layout kLayout, FwdMath kMath, class Tile, bool kBulk>
bool igemm_launch_variant(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y,
                          cudaStream_t stream, cudaError_t* err, const DeviceLimits& dev) {
  IgemmArgs a{};
  int smem = 0;
  if (!igemm_plan<T, Tile>(p, dev, kBulk, a, smem)) return false;
  a.p = p;
  a.x = x, a.w = w, a.bias = bias, a.y = y;
  a.diag = igemm_env_int("JAX_CONV1D_IGEMM_DIAG", 0);
  constexpr int VEC = IgemmElem<T>::kVec;
  const bool x_aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  a.vec_x = x_aligned && (kLayout == Layout::kNCW ? p.in_length % VEC == 0
                                                  : p.in_channels % VEC == 0 && p.in_per_group() % VEC == 0);
  a.pair_store = p.out_length % 2 == 0 && reinterpret_cast<uintptr_t>(y) % (2 * sizeof(TOut)) == 0;
  // Staged 16-byte stores need unit stride along the staged run. NWC: 16-byte aligned runs. NCW: any
  // alignment (each tile row is staged shifted by its own misalignment; the headline's rows of 174758 floats
  // start 8 bytes off the 16-byte grid for odd channels).
  {
    const bool y16 = reinterpret_cast<uintptr_t>(y) % 16 == 0;
    const int64_t es = sizeof(TOut);
    const bool ok = kLayout == Layout::kNWC
                        ? y16 && p.y_o == 1 && (p.y_t * es) % 16 == 0 && (p.y_n * es) % 16 == 0 && (p.out_per_group() * es) % 16 == 0
                        : p.y_t == 1;
    if (!ok || !igemm_staged_stores_enabled()) a.scratch_off = 0;
  }
  // NCW with normal eviction: the partial sectors at both ends of a tile row are completed by the neighbouring
  // tiles' blocks (working on the next tiles at the same time) while they still sit in L2. Headline NCW f32
  // 7.11 -> 6.72 ms, bf16 5.95 -> 5.47 ms (H100, one process; docs/notes/fwd_session3.md). NWC (whole 64 KB
  // runs per tile) measured 5.68 streaming vs 5.79 ms normal, so it keeps streaming stores.
  // The short NWC tile measured faster with normal eviction too (headline f32 5.20-5.27 vs 5.37-5.45 ms).
  a.evict_normal = igemm_store_evict_normal(kLayout == Layout::kNCW || kShortTile<Tile>);
  CUtensorMap tmap{};
  if constexpr (kBulk) {
    if (!a.vec_x) return false;
    if (kLayout == Layout::kNWC) {
      // A box must not run into the next group's channels (NaN there times a zero weight is still NaN).
      if (p.in_per_group() % IgemmElem<T>::kChunk != 0) return false;
      if (p.in_length >= (int64_t(1) << 31) || p.in_channels >= (int64_t(1) << 31)) return false;
      if (!encode_nwc_window_map(&tmap, x, sizeof(T), p.batch, p.in_length, p.in_channels,
                                 IgemmElem<T>::kChunk, a.box_rows, true))
        return false;
    }
  }

  auto kernel = conv1d_fwd_igemm_kernel<T, TOut, kLayout, kMath, Tile, kBulk>;
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      e != cudaSuccess) {
    *err = e;
    return true;
  }
  int per_sm = 0;
  if (cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, Tile::kThreads, smem);
      e != cudaSuccess) {
    *err = e;
    return true;
  }
  if (per_sm < 1) return false;
  a.blocks_per_combo = blocks_per_combo(a.combos, a.tiles_per_combo, int64_t(per_sm) * dev.sms);
  a.step_n = a.blocks_per_combo / a.t_tiles;
  a.step_tt = a.blocks_per_combo % a.t_tiles;
  const int64_t grid = a.blocks_per_combo * a.combos;
  if (grid > 0x7fffffff) return false;
  kernel<<<unsigned(grid), Tile::kThreads, smem, stream>>>(a, tmap);
  *err = cudaGetLastError();
  return true;
}

template <typename T, typename TOut, Layout kLayout, FwdMath kMath, class Tile>
bool igemm_try_tile(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y, cudaStream_t stream,
                    cudaError_t* err) {
  const DeviceLimits dev = device_limits();
  // Channels-first grids with fewer tiles than multiprocessors fill their stages by per-thread cp.async:
  // sweep/030 (44 tiles of 32 x 256 on 132 SMs, bf16, Cg * K = 1792) ran 0.055 ms that way against 0.105 ms
  // through the copy engine, where one warp per block issues every row's copy (H100, one process).
  const int64_t grid_tiles =
      p.groups * ceil_div(p.out_per_group(), int64_t(Tile::BM)) * p.batch * ceil_div(p.out_length, int64_t(Tile::BN));
  const bool underfilled_ncw = kLayout == Layout::kNCW && grid_tiles < dev.sms && !bulk_copies_forced();
  if (dev.cc_major >= 9 && bulk_copies_enabled() && !underfilled_ncw &&
      igemm_launch_variant<T, TOut, kLayout, kMath, Tile, true>(p, x, w, bias, y, stream, err, dev))
    return true;
  return igemm_launch_variant<T, TOut, kLayout, kMath, Tile, false>(p, x, w, bias, y, stream, err, dev);
}

// JAX_CONV1D_IGEMM_TILE=BMxBN pins one tile (128x128, 64x256, 32x256, 16x256; NWC: also 128x256 and 64x512,
// the 64 x 64 warp tiles), for comparisons; read per
// call. A pinned tile that does not fit the shape declines it (the direct kernel runs).
inline bool igemm_pinned_tile(int& bm, int& bn) {
  const char* v = std::getenv("JAX_CONV1D_IGEMM_TILE");
  bm = bn = 0;
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return false;
  char* end = nullptr;
  bm = int(std::strtol(v, &end, 10));
  if (end != nullptr && *end == 'x') bn = int(std::strtol(end + 1, nullptr, 10));
  return true;
}

// The wide warp tiles exist for NWC with one MMA per product (3xTF32 needs the registers they take).
template <Layout kLayout, FwdMath kMath>
constexpr bool kWideWarpTiles = kLayout == Layout::kNWC && kMath != FwdMath::k3xTF32;

// WaveNet's dilated layers (dense NWC float32, stride 1, K = 2) run the 128 x 256 block of 64 x 64 warp tiles
// first, where its plan keeps two channel chunks per pipeline step and staged stores beside the 128 KB of
// weights (windows up to 320 rows: dilation <= 64 at C = 128). H100, one process: WaveNet's forward 1.19 ->
// 1.02 ms (N16, d64), the N8 layer 0.605 -> 0.540 (d64) and 0.568 -> 0.540 (d1); with one chunk per step it
// was no faster (d64: 0.605) and at dilation 512 (gapped window: one chunk per step, unstaged) slower, 0.599 ->
// 0.667. Their input gradients (C 256 -> 128: only the 64-row tiles fit) keep 64 x 256: 64 x 512 measured the
// same (0.562 vs 0.565 ms). Other shapes keep their measured tiles. JAX_CONV1D_IGEMM_WIDE=0 turns it off (read
// per call, for comparisons).
inline bool igemm_wide_preferred(const Conv1dParams& p, int elem_bytes) {
  const char* v = std::getenv("JAX_CONV1D_IGEMM_WIDE");
  if (v != nullptr && std::strcmp(v, "0") == 0) return false;
  return elem_bytes == 4 && p.precision == Precision::kDefault && p.groups == 1 && p.stride == 1 &&
         p.kernel_size == 2 && p.out_per_group() > 64;
}

template <typename T>
bool igemm_wide_plan_full(const Conv1dParams& p) {
  const DeviceLimits dev = device_limits();
  if (dev.cc_major < 9 || !bulk_copies_enabled()) return false;
  IgemmArgs a{};
  int smem = 0;
  return igemm_plan<T, IgemmTile128w>(p, dev, true, a, smem) && a.step_chunks == 2 && a.scratch_off != 0;
}

// The short tile (128 x 64) for NWC float32 (TF32) with 64 < Og <= 128 at stride >= 3, when only it can take
// whole input rows per pipeline step: the 128 x 128 tile's window (390 rows at stride 3, dilation 4) leaves
// room beside its 96 KB of weights for two stages of two 64-byte chunks, half of each 256-byte row of 64
// channels, while the 64-position tile's 198-row window fits two stages of all four. H100, one process
// (docs/notes/nwcfwd7_session7.md): the headline reads its x alone in 3.08 ms instead of 3.24 and runs
// 5.20-5.27 ms against 5.55-5.57 (XLA/cuDNN 5.17-5.26; ncu: the same DRAM bytes as cuDNN's kernel, 84 % of
// peak DRAM throughput against 79 %, cuDNN 88 %). Its MMAs cost more per output (32 x 32 warp tiles: without
// stores it runs 4.21 ms against 3.57), so where the copies are not what the tile waits on it can be slower,
// hence the narrow rule. bfloat16 measured slower with it (3.05-3.06 vs 2.80 ms: whole 128-byte rows already
// come two chunks per 128 x 128 step). JAX_CONV1D_IGEMM_SHORT=0 turns it off (read per call).
template <typename T>
bool igemm_short_preferred(const Conv1dParams& p) {
  const char* v = std::getenv("JAX_CONV1D_IGEMM_SHORT");
  if (v != nullptr && std::strcmp(v, "0") == 0) return false;
  if (sizeof(T) != 4 || p.precision != Precision::kDefault || p.layout != Layout::kNWC || p.stride < 3) return false;
  const int64_t og = p.out_per_group();
  if (og <= 64 || og > 128) return false;
  const DeviceLimits dev = device_limits();
  if (dev.cc_major < 9 || !bulk_copies_enabled()) return false;
  IgemmArgs full{}, shrt{};
  int smem = 0;
  if (!igemm_plan<T, IgemmTile128s>(p, dev, true, shrt, smem) || shrt.step_chunks != shrt.chunks) return false;
  return !igemm_plan<T, IgemmTile128>(p, dev, true, full, smem) || full.step_chunks < full.chunks;
}

// Smallest tile covering a group's output channels first (little wasted MMA work on padding rows), then
// smaller tiles when the resident weights or the window do not fit shared memory.
template <typename T, typename TOut, Layout kLayout, FwdMath kMath>
bool igemm_launch(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y, cudaStream_t stream,
                  cudaError_t* err) {
  int pin_bm = 0, pin_bn = 0;
  if (igemm_pinned_tile(pin_bm, pin_bn)) {
    if (pin_bm == 128 && pin_bn == 128) return igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile128>(p, x, w, bias, y, stream, err);
    if (pin_bm == 64 && pin_bn == 256) return igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile64>(p, x, w, bias, y, stream, err);
    if (pin_bm == 32 && pin_bn == 256) return igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile32>(p, x, w, bias, y, stream, err);
    if (pin_bm == 16 && pin_bn == 256) return igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile16>(p, x, w, bias, y, stream, err);
    if constexpr (kWideWarpTiles<kLayout, kMath>) {
      if (pin_bm == 128 && pin_bn == 256) return igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile128w>(p, x, w, bias, y, stream, err);
      if (pin_bm == 64 && pin_bn == 512) return igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile64w>(p, x, w, bias, y, stream, err);
      if (pin_bm == 128 && pin_bn == 64) return igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile128s>(p, x, w, bias, y, stream, err);
    }
    return false;
  }
  const int64_t og = p.out_per_group();
  if constexpr (kWideWarpTiles<kLayout, kMath>) {
    if (igemm_wide_preferred(p, sizeof(T)) && igemm_wide_plan_full<T>(p) &&
        igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile128w>(p, x, w, bias, y, stream, err))
      return true;
  }
  if constexpr (kWideWarpTiles<kLayout, kMath>) {
    if (igemm_short_preferred<T>(p) && igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile128s>(p, x, w, bias, y, stream, err))
      return true;
  }
  // JAX_CONV1D_IGEMM_MAX_BM=64|32|16 skips the larger tiles (read per call, for comparisons: the 64-row tiles
  // are 256 positions wide).
  const int max_bm = igemm_env_int("JAX_CONV1D_IGEMM_MAX_BM", 128);
  if (og > 64 && max_bm >= 128 && igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile128>(p, x, w, bias, y, stream, err)) return true;
  if (og > 32 && max_bm >= 64 && igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile64>(p, x, w, bias, y, stream, err)) return true;
  if (og > 16 && max_bm >= 32 && igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile32>(p, x, w, bias, y, stream, err)) return true;
  return igemm_try_tile<T, TOut, kLayout, kMath, IgemmTile16>(p, x, w, bias, y, stream, err);
}

template <typename T, typename TOut>
bool igemm_dispatch(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y, cudaStream_t stream,
                    cudaError_t* err) {
  const bool ncw = p.layout == Layout::kNCW;
  if (!ncw && conv1d_fwd_wgmma<T, TOut>(p, x, w, bias, y, stream, err)) return true;  // JAX_CONV1D_WGMMA=1
  if constexpr (std::is_same_v<T, float>) {
    if (p.precision == Precision::kAccurate) {
      return ncw ? igemm_launch<T, TOut, Layout::kNCW, FwdMath::k3xTF32>(p, x, w, bias, y, stream, err)
                 : igemm_launch<T, TOut, Layout::kNWC, FwdMath::k3xTF32>(p, x, w, bias, y, stream, err);
    }
    return ncw ? igemm_launch<T, TOut, Layout::kNCW, FwdMath::kTF32>(p, x, w, bias, y, stream, err)
               : igemm_launch<T, TOut, Layout::kNWC, FwdMath::kTF32>(p, x, w, bias, y, stream, err);
  } else {
    return ncw ? igemm_launch<T, TOut, Layout::kNCW, FwdMath::k16bit>(p, x, w, bias, y, stream, err)
               : igemm_launch<T, TOut, Layout::kNWC, FwdMath::k16bit>(p, x, w, bias, y, stream, err);
  }
}

}  // namespace jax_conv1d::cuda
