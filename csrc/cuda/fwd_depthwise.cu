// Forward pass for depthwise convolutions (groups == in_channels; output channel o reads input channel
// o / multiplier). Two FMAs per input byte at most: the work is moving bytes, so the kernels are built around
// the copy. Blocks are persistent; each tile's input window streams into a pipeline of shared-memory stages
// while the previous tile computes and stores. On sm_90+ the copy engine fills the stages (tensor-map boxes for
// NWC, 1-D bulk rows for NCW), which is what brought depthwise_tcn from 39% to 74% of the memory floor: with
// per-thread cp.async the 8 warps of a block could not keep enough bytes in flight. Padding is zero fill, and
// every other access to device memory is a 16-byte vector where alignment allows.
//   NWC: a tile is 16 vectors of output channels x BT positions; a thread owns one channel vector and BT/16
//        positions, with that vector's K weights re-read per tap from L1. With multiplier 1, stride 1, a
//        dilation dividing 16 and K <= 8 (depthwise_tcn, mamba) the sliding-window kernel replaces it: a
//        thread's positions are spaced by the dilation so each window row is read once for all the taps
//        it feeds, and on sm_90+ finished tiles leave through a shared-memory tile and tensor-map stores.
//   NCW: a tile is 8 output channels (one per warp) x 256 positions; lane i owns positions i, i+32, ...,
//        so shared-memory reads and global stores are consecutive across the warp.
#include <cuda.h>

#include <algorithm>
#include <cstdlib>

#include "fwd_common.cuh"
#include "fwd_kernels.h"

namespace jax_conv1d::cuda {

namespace {

struct DwArgs {
  Conv1dParams p;
  const void* x;
  const void* w;
  const void* bias;
  void* y;
  int win;          // input positions a tile reads: (BT-1)*stride + (K-1)*dilation + 1
  int row;          // elements per shared-memory row: NWC, input channels a tile reads; NCW, aligned window
  int stage_elems;  // elements per pipeline stage
  int stages;
  int64_t c_tiles, t_tiles, tiles;
  bool vec_x;       // 16-byte input copies
  bool vec_y;       // 16-byte output stores (NWC)
  bool vec_w;       // 16-byte weight and bias loads (NWC: w is (K, 1, O), contiguous along o)
  int box_rows;     // NWC with bulk copies: window rows per tensor-map box (a multiple of 8) ...
  int boxes;        // ... and boxes per stage
  bool tma_store;   // sliding-window kernel: tiles leave through a shared-memory buffer and tensor-map stores
  int out_offset;   // ... which starts this many bytes after the aligned stage buffers
  int diag;         // timing only (wrong results), sliding-window kernel: 1 skips the taps, 4 the stores
  int out_bufs;     // sliding-window kernel with tensor-map stores: output tiles in shared memory (1 or 2)
  bool coords32;    // tile coordinates in 32-bit arithmetic (tiles < 2^31)
  bool streams;     // NWC tile order: false cyclic (tile j on block j % grid, channel blocks fastest), true a
                    // contiguous range of tiles per block, positions fastest
};

// Stage buffers start on 1 KiB boundaries (bulk copies need 128-byte aligned destinations).
__device__ __forceinline__ unsigned char* align_smem(unsigned char* p) {
  return p + ((1024 - smem_addr(p) % 1024) % 1024);
}

// Shared -> global tensor-map store of one box, tracked in this thread's bulk group; out-of-range elements
// (positions past the output's end, channels past the last) are not written. (An L2 evict-first policy on these
// stores measured the same as none, session 7.)
__device__ __forceinline__ void tma_store_3d(const void* tensor_map, const void* src, int c0, int c1, int c2) {
#ifdef JC_BULK_COPY_AVAILABLE
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];\n" ::"l"(tensor_map),
               "r"(smem_addr(src)), "r"(c0), "r"(c1), "r"(c2)
               : "memory");
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}

// Waits until all but this thread's latest bulk store have read their shared-memory source.
__device__ __forceinline__ void bulk_store_wait_read_one() {
#ifdef JC_BULK_COPY_AVAILABLE
  asm volatile("cp.async.bulk.wait_group.read 1;\n" ::: "memory");
#endif
}

// Waits until this thread's bulk stores have read their shared-memory source (kWrites: until they are done).
template <bool kWrites>
__device__ __forceinline__ void bulk_store_wait() {
#ifdef JC_BULK_COPY_AVAILABLE
  if constexpr (kWrites) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
  else asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}

// VEC outputs as 16-byte words (VEC * sizeof(TOut) / 16 of them) into shared memory.
template <typename TOut, int VEC>
__device__ __forceinline__ void store_smem_vec(TOut* p, const float (&v)[VEC]) {
  constexpr int kPer = 16 / int(sizeof(TOut));
#pragma unroll
  for (int i = 0; i < VEC; i += kPer) {
    uint32_t w[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if constexpr (sizeof(TOut) == 4) {
        w[j] = __float_as_uint(v[i + j]);
      } else {
        const TOut lo = from_acc<TOut>(v[i + 2 * j]), hi = from_acc<TOut>(v[i + 2 * j + 1]);
        w[j] = uint32_t(*reinterpret_cast<const uint16_t*>(&lo)) |
               (uint32_t(*reinterpret_cast<const uint16_t*>(&hi)) << 16);
      }
    }
    *reinterpret_cast<uint4*>(p + i) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

constexpr int kDwThreads = 256;
constexpr int kNwcVectors = 16;  // channel vectors per NWC tile
constexpr int kNwcBT = 128;      // positions per NWC tile
constexpr int kNcwChannels = kDwThreads / 32;
constexpr int kNcwBT = 256;
constexpr int kStreamTilesPerSm = 128;  // NWC sliding-window kernel: tiles per multiprocessor from which blocks
                                        // walk streams of tiles instead of the cyclic order

// Tile f of this block (persistent grid). Cyclic order: tile j runs on block j % grid, channel blocks vary
// fastest, so the blocks working at one time cover adjacent position tiles and find each other's halos in L2.
// Streams (a.streams): block b takes the contiguous tiles [b * tiles / grid, (b + 1) * tiles / grid), positions
// fastest, so each multiprocessor walks one (batch, channel block) row after another along the positions and a
// tile's halo is its own previous window, read a tile earlier (depthwise_tcn forward -4.5 %, session 8).
struct DwTile {
  int64_t n, tt, cb;
};
__device__ __forceinline__ int64_t dw_first_tile(const DwArgs& a) {
  return a.streams ? int64_t(blockIdx.x) * a.tiles / gridDim.x : int64_t(blockIdx.x);
}
// Tiles this block runs.
__device__ __forceinline__ int64_t dw_tile_count(const DwArgs& a) {
  if (a.streams) return (int64_t(blockIdx.x) + 1) * a.tiles / gridDim.x - dw_first_tile(a);
  return blockIdx.x < a.tiles ? (a.tiles - 1 - blockIdx.x) / gridDim.x + 1 : 0;
}
// coords32 (fewer than 2^31 tiles): 32-bit divisions, a fraction of the 64-bit ones' instructions.
__device__ __forceinline__ DwTile dw_tile(const DwArgs& a, int64_t f) {
  const int64_t j = a.streams ? dw_first_tile(a) + f : blockIdx.x + f * gridDim.x;
  if (a.streams) {  // the host sets streams only with fewer than 2^31 tiles
    const uint32_t j32 = uint32_t(j), ct = uint32_t(a.c_tiles), tt = uint32_t(a.t_tiles);
    const uint32_t r = j32 / tt;
    return {int64_t(r / ct), int64_t(j32 - r * tt), int64_t(r % ct)};
  }
  if (a.coords32) {
    const uint32_t j32 = uint32_t(j), ct = uint32_t(a.c_tiles), tt = uint32_t(a.t_tiles);
    const uint32_t r = j32 / ct;
    return {int64_t(r / tt), int64_t(r % tt), int64_t(j32 - r * ct)};
  }
  const int64_t r = j / a.c_tiles;
  return {r / a.t_tiles, r % a.t_tiles, j % a.c_tiles};
}

// One NWC stage by per-thread copies: window rows l0 .. l0+win-1 of `vpr` channel vectors from c0 (elements
// when x is not 16-byte aligned), zero outside the input.
template <typename T, int VEC>
__device__ __forceinline__ void copy_nwc_window(T* dst, const T* x, const DwArgs& a, int64_t n, int64_t l0,
                                                int64_t c0, int vpr, int tid) {
  const Conv1dParams& p = a.p;
  const T* xg = x + n * p.x_n + c0 * p.x_c;
  if (a.vec_x) {
    for (int i = tid; i < a.win * vpr; i += kDwThreads) {
      const int r = i / vpr, v = i - r * vpr;
      const int64_t l = l0 + r;
      const bool ok = l >= 0 && l < p.in_length && c0 + v * VEC < p.in_channels;
      cp_async_16(dst + r * a.row + v * VEC, ok ? xg + l * p.x_l + v * VEC : x, ok);
    }
  } else {
    for (int i = tid; i < a.win * a.row; i += kDwThreads) {
      const int r = i / a.row, c = i - r * a.row;
      const int64_t l = l0 + r;
      const bool ok = l >= 0 && l < p.in_length && c0 + c < p.in_channels;
      copy_elem(dst + r * a.row + c, ok ? xg + l * p.x_l + c * p.x_c : x, ok);
    }
  }
}

// One NWC stage by the copy engine (one thread): a.boxes tensor-map boxes of BO channels x box_rows positions.
template <typename T, int BO>
__device__ __forceinline__ void issue_nwc_window(T* dst, const CUtensorMap* tmap, const DwArgs& a, int64_t n,
                                                 int64_t l0, int64_t c0, uint64_t* bar) {
  mbar_arrive_expect_tx(bar, uint32_t(a.boxes) * a.box_rows * BO * sizeof(T));
  for (int b = 0; b < a.boxes; ++b)
    tma_load_3d(dst + size_t(b) * a.box_rows * BO, tmap, int(c0), int(l0 + int64_t(b) * a.box_rows), int(n), bar);
}

// One position's VEC outputs from registers: acc + bias as a 16-byte vector where allowed, else element-wise
// up to the last output channel.
template <typename TOut, int VEC>
__device__ __forceinline__ void store_nwc_outputs(TOut* yp, const float (&acc)[VEC], const float (&bv)[VEC],
                                                  bool vec_store, int64_t ob, const Conv1dParams& p) {
  float v[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) v[e] = acc[e] + bv[e];
  if (vec_store) {
    store_out_vec<TOut, VEC>(yp, v);
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e)
      if (ob + e < p.out_channels) store_out(yp + e * p.y_o, v[e]);
  }
}

// The stage pipeline of a depthwise kernel: copy-engine stages (issue) on sm_90+, per-thread copies (load)
// otherwise.
template <bool kBulk, class Load, class Issue, class Compute>
__device__ __forceinline__ void run_dw_pipeline(int64_t tiles, int stages, uint64_t* stage_full, Load&& load,
                                                Issue&& issue, Compute&& compute) {
  if constexpr (kBulk) {
#ifdef JC_BULK_COPY_AVAILABLE
    run_pipeline_bulk(tiles, stages, stage_full, issue, compute);
#else
    (void)stage_full;
    __trap();  // never launched: the host picks bulk copies only on sm_90+
#endif
  } else {
    run_pipeline(tiles, stages, load, compute);
  }
}

// kBulk (sm_90+, multiplier 1): each stage is tensor-map boxes of BO channels x box_rows positions, padding
// zero-filled by the copy engine.
template <typename T, typename TOut, bool kMult1, bool kBulk>
__global__ void __launch_bounds__(kDwThreads)
    conv1d_fwd_depthwise_nwc(const DwArgs a, const __grid_constant__ CUtensorMap tmap) {
  constexpr int VEC = vec_width<T>(), BO = kNwcVectors * VEC;
  constexpr int TPR = kDwThreads / kNwcVectors, R = kNwcBT / TPR;  // position lanes; positions per thread
  static_assert(!kBulk || kMult1, "bulk copies read whole channel vectors");
  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t stage_full[4];
  T* xs = reinterpret_cast<T*>(align_smem(smem_raw));
  const Conv1dParams& p = a.p;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ w = static_cast<const T*>(a.w);
  const T* __restrict__ bias = static_cast<const T*>(a.bias);
  TOut* __restrict__ y = static_cast<TOut*>(a.y);
  const int64_t mult = p.out_per_group();
  const int tid = threadIdx.x, cv = tid % kNwcVectors, pr = tid / kNwcVectors;
  const int K = int(p.kernel_size), s = int(p.stride), d = int(p.dilation);
  const int64_t my = dw_tile_count(a);

  auto load = [&](int64_t f) {
    const DwTile t = dw_tile(a, f);
    copy_nwc_window<T, VEC>(xs + size_t(f % a.stages) * a.stage_elems, x, a, t.n, t.tt * kNwcBT * s - p.pad_lo,
                            t.cb * BO / mult, a.row / VEC, tid);
  };

  auto compute = [&](int64_t f) {
    const auto [n, tt, cb] = dw_tile(a, f);
    const int64_t ci0 = cb * BO / mult;
    const int64_t ob = cb * BO + cv * VEC;  // this thread's first output channel
    const T* xst = xs + size_t(f % a.stages) * a.stage_elems;
    float acc[R][VEC];
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[i][e] = 0.f;
    // Shared-memory column of each of this thread's channels (only the multiplier > 1 path gathers).
    int col[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const int64_t o = std::min<int64_t>(ob + e, p.out_channels - 1);
      col[e] = int(o / mult - ci0);
    }
    for (int k = 0; k < K; ++k) {
      float wv[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const int64_t o = ob + e;
        wv[e] = o < p.out_channels ? to_acc(w[o * p.w_o + k * p.w_k]) : 0.f;
      }
#pragma unroll
      for (int i = 0; i < R; ++i) {
        const T* xr = xst + ((pr + i * TPR) * s + k * d) * a.row;
        if constexpr (kMult1) {
          float xv[VEC];
          load_vec_as_float(xr + cv * VEC, xv);
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[i][e] = fmaf(wv[e], xv[e], acc[i][e]);
        } else {
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[i][e] = fmaf(wv[e], to_acc(xr[col[e]]), acc[i][e]);
        }
      }
    }
    float bv[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const int64_t o = ob + e;
      bv[e] = (bias && o < p.out_channels) ? to_acc(bias[o]) : 0.f;
    }
    const bool full = a.vec_y && ob + VEC <= p.out_channels;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int64_t tpos = tt * kNwcBT + pr + i * TPR;
      if (tpos >= p.out_length) continue;
      store_nwc_outputs<TOut, VEC>(y + n * p.y_n + tpos * p.y_t + ob * p.y_o, acc[i], bv, full, ob, p);
    }
  };

  auto issue = [&](int64_t f, uint64_t* bar) {
    if (threadIdx.x != 0) return;
    const DwTile t = dw_tile(a, f);
    issue_nwc_window<T, BO>(xs + size_t(f % a.stages) * a.stage_elems, &tmap, a, t.n,
                            t.tt * kNwcBT * s - p.pad_lo, t.cb * BO, bar);
  };

  run_dw_pipeline<kBulk>(my, a.stages, stage_full, load, issue, compute);
}

// Taps-as-a-sliding-window variant of the NWC kernel (multiplier 1, stride 1, dilation dividing the 16
// position lanes, K <= KMAX). The tile and the stage layout are the NWC kernel's; only the positions a thread
// owns change: R positions spaced by the dilation, a + d*(R*b + i), so tap k of position i reads window row
// a + d*(R*b + i + k) and the R*K taps of a thread touch only R+K-1 rows. Each row is read from shared memory
// once and feeds every output it belongs to: 14 instead of 56 16-byte reads per thread and tile for
// depthwise_tcn, 11 instead of 32 (and as many fewer bf16 widenings) for mamba. Every output still sums its
// taps in order k = 0..K-1 from zero, then adds the bias: bitwise the same result as the NWC kernel.
template <typename T, typename TOut, bool kBulk, int KMAX, int NV = kNwcVectors, int BT = kNwcBT>
__global__ void __launch_bounds__(kDwThreads, 1)
    conv1d_fwd_depthwise_nwc_chain(const DwArgs a, const __grid_constant__ CUtensorMap tmap,
                                   const __grid_constant__ CUtensorMap tmap_y) {
  constexpr int VEC = vec_width<T>(), BO = NV * VEC;
  constexpr int TPR = kDwThreads / NV, R = BT / TPR;
  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t stage_full[4];
  T* xs = reinterpret_cast<T*>(align_smem(smem_raw));
  const Conv1dParams& p = a.p;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ w = static_cast<const T*>(a.w);
  const T* __restrict__ bias = static_cast<const T*>(a.bias);
  TOut* __restrict__ y = static_cast<TOut*>(a.y);
  const int tid = threadIdx.x, cv = tid % NV, pr = tid / NV;
  const int K = int(p.kernel_size), d = int(p.dilation);
  // The host guarantees d | TPR, so the chains (a, b) tile the BT positions exactly.
  const int first = pr % d + d * R * (pr / d);  // this thread's first position in the tile
  const int row_step = d * a.row;               // elements between the window rows of consecutive positions
  const int64_t my = dw_tile_count(a);
  uint32_t out_count = 0;  // tiles stored so far through shared memory (picks the output buffer)

  auto load = [&](int64_t f) {
    const DwTile t = dw_tile(a, f);
    copy_nwc_window<T, VEC>(xs + size_t(f % a.stages) * a.stage_elems, x, a, t.n, t.tt * BT - p.pad_lo,
                            t.cb * BO, BO / VEC, tid);
  };

  auto compute = [&](int64_t f) {
    const auto [n, tt, cb] = dw_tile(a, f);
    const int64_t ob = cb * BO + cv * VEC;  // this thread's first channel
    const bool full = ob + VEC <= p.out_channels;
    float wv[KMAX][VEC], bv[VEC];
    if (a.vec_w && full) {
#pragma unroll
      for (int k = 0; k < KMAX; ++k)
        if (k < K) load_vec_as_float(w + k * p.w_k + ob, wv[k]);
      if (bias) load_vec_as_float(bias + ob, bv);
    } else {
#pragma unroll
      for (int k = 0; k < KMAX; ++k)
#pragma unroll
        for (int e = 0; e < VEC; ++e)
          wv[k][e] = k < K && ob + e < p.out_channels ? to_acc(w[(ob + e) * p.w_o + k * p.w_k]) : 0.f;
#pragma unroll
      for (int e = 0; e < VEC; ++e) bv[e] = bias && ob + e < p.out_channels ? to_acc(bias[ob + e]) : 0.f;
    }
    if (!bias) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) bv[e] = 0.f;
    }
    const T* xr = xs + size_t(f % a.stages) * a.stage_elems + first * a.row + cv * VEC;
    float acc[R][VEC];
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[i][e] = 0.f;
    // Window row m feeds position i through tap m - i; m ascending keeps every output's taps in order.
    const int rows = a.diag & 1 ? 0 : R + K - 1;
#pragma unroll
    for (int m = 0; m < R + KMAX - 1; ++m) {
      if (m >= rows) break;
      float xv[VEC];
      load_vec_as_float(xr + m * row_step, xv);
#pragma unroll
      for (int i = 0; i < R; ++i) {
        const int k = m - i;
        if (k >= 0 && k < KMAX && k < K) {
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[i][e] = fmaf(wv[k][e], xv[e], acc[i][e]);
        }
      }
    }
    if (a.tma_store) {
      // The tile goes out as one tensor-map box: the warps only write shared memory, and the copy engine
      // keeps the stores in flight while the next tile computes. One buffer: before overwriting it, the
      // previous tile's store must have read it (issued a whole tile earlier, so the wait is normally free).
      // Two buffers (out_bufs 2): thread 0 waits for the store before last right after issuing this one, and
      // the pipeline's barrier at the next step orders that wait before anyone writes the buffer again.
      const int buf = a.out_bufs == 2 ? int(out_count & 1) : 0;
      ++out_count;
      TOut* ys = reinterpret_cast<TOut*>(reinterpret_cast<unsigned char*>(xs) + a.out_offset +
                                         size_t(buf) * BT * BO * sizeof(TOut));
      if (a.out_bufs != 2) {
        if (threadIdx.x == 0) bulk_store_wait<false>();
        __syncthreads();
      }
#pragma unroll
      for (int i = 0; i < R; ++i) {
        float v[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) v[e] = acc[i][e] + bv[e];
        store_smem_vec<TOut, VEC>(ys + (first + i * d) * BO + cv * VEC, v);
      }
      fence_proxy_async();  // the generic-proxy writes above, before the copy engine reads them
      __syncthreads();
      if (threadIdx.x == 0) {
        if (!(a.diag & 4)) tma_store_3d(&tmap_y, ys, int(cb * BO), int(tt * BT), int(n));
        if (a.out_bufs == 2) bulk_store_wait_read_one();
      }
      return;
    }
    const bool vec_store = a.vec_y && full;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int64_t tpos = tt * BT + first + i * d;
      if (tpos >= p.out_length || (a.diag & 4)) continue;
      store_nwc_outputs<TOut, VEC>(y + n * p.y_n + tpos * p.y_t + ob * p.y_o, acc[i], bv, vec_store, ob, p);
    }
  };

  auto issue = [&](int64_t f, uint64_t* bar) {
    if (threadIdx.x != 0) return;
    const DwTile t = dw_tile(a, f);
    issue_nwc_window<T, BO>(xs + size_t(f % a.stages) * a.stage_elems, &tmap, a, t.n, t.tt * BT - p.pad_lo,
                            t.cb * BO, bar);
  };

  run_dw_pipeline<kBulk>(my, a.stages, stage_full, load, issue, compute);
  if (kBulk && a.tma_store && threadIdx.x == 0) bulk_store_wait<true>();  // shared memory outlives the last store
}

// kBulk (sm_90+): each channel row of a stage is one 1-D bulk copy; warp 0 issues them and writes the zeros
// of the padding.
template <typename T, typename TOut, bool kBulk>
__global__ void __launch_bounds__(kDwThreads)
    conv1d_fwd_depthwise_ncw(const DwArgs a, const __grid_constant__ CUtensorMap) {
  constexpr int VEC = vec_width<T>(), R = kNcwBT / 32;
  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t stage_full[4];
  T* xs = reinterpret_cast<T*>(align_smem(smem_raw));
  const Conv1dParams& p = a.p;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ w = static_cast<const T*>(a.w);
  const T* __restrict__ bias = static_cast<const T*>(a.bias);
  TOut* __restrict__ y = static_cast<TOut*>(a.y);
  const int64_t mult = p.out_per_group();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int K = int(p.kernel_size), s = int(p.stride), d = int(p.dilation);
  const int64_t my = blockIdx.x < a.tiles ? (a.tiles - 1 - blockIdx.x) / gridDim.x + 1 : 0;

  // Position tiles vary fastest: concurrent blocks read neighbouring windows of one row. coords32 (fewer than
  // 2^31 tiles): 32-bit divisions, as in the NWC kernels.
  auto coords = [&](int64_t f, int64_t& n, int64_t& tt, int64_t& cb) {
    const int64_t j = blockIdx.x + f * gridDim.x;
    if (a.coords32) {
      const uint32_t j32 = uint32_t(j), ct = uint32_t(a.c_tiles), nt = uint32_t(a.t_tiles);
      const uint32_t r = j32 / nt;
      tt = j32 - r * nt;
      cb = r % ct;
      n = r / ct;
      return;
    }
    tt = j % a.t_tiles;
    const int64_t r = j / a.t_tiles;
    cb = r % a.c_tiles;
    n = r / a.c_tiles;
  };

  auto load = [&](int64_t f) {
    int64_t n, tt, cb;
    coords(f, n, tt, cb);
    const int64_t o = cb * kNcwChannels + warp;
    if (o >= p.out_channels) return;
    const int64_t l0 = tt * kNcwBT * s - p.pad_lo;
    const int64_t la = floor_div(l0, VEC) * VEC;
    const int need = int(l0 - la) + a.win;
    T* row = xs + size_t(f % a.stages) * a.stage_elems + warp * a.row;
    const T* src = x + n * p.x_n + (o / mult) * p.x_c;
    if (a.vec_x) {
      for (int v = lane; v * VEC < need; v += 32) {
        const int64_t l = la + v * VEC;
        const bool ok = l >= 0 && l < p.in_length;
        cp_async_16(row + v * VEC, ok ? src + l : x, ok);
      }
    } else {
      for (int i = lane; i < need; i += 32) {
        const int64_t l = la + i;
        const bool ok = l >= 0 && l < p.in_length;
        copy_elem(row + i, ok ? src + l : x, ok);
      }
    }
  };

  auto compute = [&](int64_t f) {
    int64_t n, tt, cb;
    coords(f, n, tt, cb);
    const int64_t o = cb * kNcwChannels + warp;
    if (o >= p.out_channels) return;
    const int64_t l0 = tt * kNcwBT * s - p.pad_lo;
    const int e = int(l0 - floor_div(l0, VEC) * VEC);
    const T* row = xs + size_t(f % a.stages) * a.stage_elems + warp * a.row + e + lane * s;
    float acc[R];
#pragma unroll
    for (int i = 0; i < R; ++i) acc[i] = 0.f;
    for (int k = 0; k < K; ++k) {
      const float wk = to_acc(w[o * p.w_o + k * p.w_k]);
#pragma unroll
      for (int i = 0; i < R; ++i) acc[i] = fmaf(wk, to_acc(row[(i * 32) * s + k * d]), acc[i]);
    }
    const float bv = bias ? to_acc(bias[o]) : 0.f;
    TOut* yo = y + n * p.y_n + o * p.y_o;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int64_t tpos = tt * kNcwBT + lane + i * 32;
      if (tpos < p.out_length) store_out(yo + tpos * p.y_t, acc[i] + bv);
    }
  };

  auto issue = [&](int64_t f, uint64_t* bar) {
    if (warp != 0) return;
    int64_t n, tt, cb;
    coords(f, n, tt, cb);
    const int64_t l0 = tt * kNcwBT * s - p.pad_lo;
    const int64_t la = floor_div(l0, VEC) * VEC;
    const int span = int(ceil_div(int64_t(l0 - la) + a.win, VEC) * VEC);
    const int64_t lo = std::max<int64_t>(la, 0), hi = std::min<int64_t>(la + span, p.in_length);
    const uint32_t row_bytes = hi > lo ? uint32_t((hi - lo) * sizeof(T)) : 0u;
    const int rows = int(std::min<int64_t>(kNcwChannels, p.out_channels - cb * kNcwChannels));
    T* stage = xs + size_t(f % a.stages) * a.stage_elems;
    if (lane == 0) mbar_arrive_expect_tx(bar, row_bytes * uint32_t(rows));
    __syncwarp();
    if (lane < rows && row_bytes > 0) {
      const int64_t o = cb * kNcwChannels + lane;
      bulk_copy_g2s(stage + lane * a.row + (lo - la), x + n * p.x_n + (o / mult) * p.x_c + lo, row_bytes, bar);
    }
    const int z0 = row_bytes > 0 ? int(lo - la) : span, z1 = row_bytes > 0 ? int(hi - la) : span;
    if (z0 > 0 || z1 < span) {
      for (int r = 0; r < rows; ++r) {
        T* row = stage + r * a.row;
        for (int i = lane; i < z0; i += 32) row[i] = T(0.f);
        for (int i = std::max(z1, z0) + lane; i < span; i += 32) row[i] = T(0.f);
      }
      fence_proxy_async();
    }
  };

  run_dw_pipeline<kBulk>(my, a.stages, stage_full, load, issue, compute);
}

// Timing and testing knobs, read per call: JAX_CONV1D_DW_CHAIN=0 turns the sliding-window NWC kernel off,
// JAX_CONV1D_DW_BLOCKS=b sizes the pipeline for b resident blocks per multiprocessor (1 or 2; a second block
// only fits where registers allow), JAX_CONV1D_DW_STAGES caps the pipeline depth (2..4),
// JAX_CONV1D_DW_TMA_STORE=0 makes the sliding-window kernel store from registers, JAX_CONV1D_DW_OUT_BUFS=2
// gives its tensor-map stores two shared-memory output tiles, JAX_CONV1D_DW_TILE=64 its 32 x 64 tile,
// JAX_CONV1D_DW_COORDS32=0 brings back 64-bit tile coordinates (all kernels), JAX_CONV1D_DW_ORDER=0|2 forces
// the NWC kernels' cyclic tile order or the streams (plan_nwc), and JAX_CONV1D_DW_DIAG
// drops parts of it (1: taps, 4: stores; wrong results, for timing where the time goes).
int dw_env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == '\0' ? fallback : std::atoi(v);
}

// Deepest pipeline (up to max_stages) that fits `blocks` blocks per multiprocessor; false when even two
// stages of one block do not fit. A multiprocessor has the per-block opt-in maximum plus the 1 KiB the
// runtime reserves per block.
bool pick_stages(DwArgs& a, size_t elem_bytes, const DeviceLimits& dev, int& smem, int blocks = 1,
                 int max_stages = 4, int64_t extra_bytes = 0) {
  const int64_t stage_bytes = ceil_div(int64_t(a.stage_elems) * elem_bytes, 1024) * 1024;
  a.stage_elems = int(stage_bytes / elem_bytes);
  for (int b = std::max(blocks, 1); b >= 1; --b) {
    const int64_t per_block = (int64_t(dev.smem_optin) + 1024) / b - 1024;
    const int64_t budget = per_block - 1024 - 64 - extra_bytes;  // alignment slack, barriers
    for (int st = std::clamp(max_stages, 2, 4); st >= 2; --st) {
      if (st * stage_bytes <= budget) {
        a.stages = st;
        smem = int(1024 + st * stage_bytes + extra_bytes);
        return true;
      }
    }
  }
  return false;
}

template <typename Kernel, typename... Maps>
cudaError_t launch_persistent(Kernel kernel, DwArgs& a, int smem, const DeviceLimits& dev, cudaStream_t stream,
                              const Maps&... maps) {
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem); e != cudaSuccess)
    return e;
  int per_sm = 0;
  if (cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kDwThreads, smem); e != cudaSuccess)
    return e;
  per_sm = std::max(per_sm, 1);
  const int64_t grid = std::min<int64_t>(blocks_per_combo(1, a.tiles, int64_t(per_sm) * dev.sms), 0x7fffffff);
  kernel<<<unsigned(grid), kDwThreads, smem, stream>>>(a, maps...);
  return cudaGetLastError();
}

}  // namespace

namespace {

// Plans and launches the NWC depthwise forward with tiles of NV channel vectors x BT positions: 1 launched,
// 0 the shape does not fit (the dispatcher falls back to the direct kernel), -1 the tile does not apply here
// (a tile other than the default runs only in the sliding-window kernel with copy-engine stages and tensor-map
// stores). For such a tile the caller treats 0 like -1 and plans the default tile.
template <typename T, typename TOut, int NV, int BT>
int plan_nwc(const Conv1dParams& p, DwArgs& a, const DeviceLimits& dev, bool x_aligned, cudaStream_t stream,
             cudaError_t* err) {
  constexpr int VEC = vec_width<T>(), BO = NV * VEC;
  constexpr bool kWide = NV != kNwcVectors || BT != kNwcBT;
  const int64_t span = (p.kernel_size - 1) * p.dilation;
  const int64_t mult = p.out_per_group();
  if (kWide && mult != 1) return -1;
  const T* x = static_cast<const T*>(a.x);
  const T* w = static_cast<const T*>(a.w);
  const T* bias = static_cast<const T*>(a.bias);
  TOut* y = static_cast<TOut*>(a.y);
  int smem = 0;
  const int64_t win = (BT - 1) * p.stride + span + 1;
  // Input channels a tile of BO output channels reads, at worst: (BO-1)/mult + 2 when the block straddles
  // an input channel; whole vectors when the tile starts on a vector boundary.
  const bool mult_vec = mult == 1 || (BO % (mult * VEC) == 0);
  a.vec_x = x_aligned && p.in_channels % VEC == 0 && mult_vec;
  const int64_t span_in = mult == 1 ? BO : (BO - 1) / mult + 2;
  a.row = int(ceil_div(span_in, VEC) * VEC);
  a.win = int(win);
  if (win * a.row > (int64_t(1) << 30)) return 0;
  a.vec_y = reinterpret_cast<uintptr_t>(y) % 16 == 0 && p.out_channels % VEC == 0;
  a.c_tiles = ceil_div(p.out_channels, BO);
  a.t_tiles = ceil_div(p.out_length, BT);
  a.tiles = p.batch * a.c_tiles * a.t_tiles;
  a.coords32 = a.tiles < (int64_t(1) << 31) && dw_env_int("JAX_CONV1D_DW_COORDS32", 1) != 0;
  CUtensorMap tmap{};
  // Boxes of at most 256 rows, a multiple of 8 rows each.
  a.boxes = int(ceil_div(win, 256));
  a.box_rows = int(ceil_div(ceil_div(win, a.boxes), 8) * 8);
  const bool bulk = dev.cc_major >= 9 && bulk_copies_enabled() && mult == 1 && a.vec_x &&
                    p.in_length < (int64_t(1) << 31) && p.in_channels < (int64_t(1) << 31) &&
                    encode_nwc_window_map(&tmap, x, sizeof(T), p.batch, p.in_length, p.in_channels, BO, a.box_rows,
                                          false);
  a.stage_elems = int(bulk ? int64_t(a.boxes) * a.box_rows * a.row : win * a.row);
  a.vec_w = p.w_o == 1 && p.w_k % VEC == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
            reinterpret_cast<uintptr_t>(bias) % 16 == 0;
  const bool chain = mult == 1 && p.stride == 1 && (kDwThreads / NV) % p.dilation == 0 &&
                     p.kernel_size <= 8 && dw_env_int("JAX_CONV1D_DW_CHAIN", 1) != 0;
  const int blocks = chain ? dw_env_int("JAX_CONV1D_DW_BLOCKS", 1) : 1;
  a.diag = chain ? dw_env_int("JAX_CONV1D_DW_DIAG", 0) : 0;
  const int max_stages = dw_env_int("JAX_CONV1D_DW_STAGES", 4);
  CUtensorMap tmap_y{};
  const int64_t out_tile_bytes = int64_t(BT) * BO * int64_t(sizeof(TOut));
  a.tma_store = chain && bulk && dw_env_int("JAX_CONV1D_DW_TMA_STORE", 1) != 0 &&
                reinterpret_cast<uintptr_t>(y) % 16 == 0 && (p.out_channels * sizeof(TOut)) % 16 == 0 &&
                p.out_length < (int64_t(1) << 31) && p.out_channels < (int64_t(1) << 31) &&
                encode_nwc_window_map(&tmap_y, y, sizeof(TOut), p.batch, p.out_length, p.out_channels, BO, BT,
                                      false);
  if (kWide && !a.tma_store) return -1;
  const int stage_elems = a.stage_elems;
  a.out_bufs = 1;
  if (a.tma_store && dw_env_int("JAX_CONV1D_DW_OUT_BUFS", 1) == 2 &&
      pick_stages(a, sizeof(T), dev, smem, blocks, max_stages, 2 * out_tile_bytes)) {
    a.out_bufs = 2;
  } else if (a.tma_store && !pick_stages(a, sizeof(T), dev, smem, blocks, max_stages, out_tile_bytes)) {
    if (kWide) return -1;
    a.tma_store = false;
    a.stage_elems = stage_elems;
  }
  if (a.tma_store) a.out_offset = int(int64_t(a.stages) * a.stage_elems * int64_t(sizeof(T)));
  else if (!pick_stages(a, sizeof(T), dev, smem, blocks, max_stages)) return 0;
  // Streams where every block has many tiles, in the sliding-window kernel with tensor-map stores:
  // depthwise_tcn (496 tiles per block) 1.69 -> 1.61 ms; with few tiles per block the cyclic order measured
  // faster (mamba_dw_causal, 39: 0.136 against 0.144 ms; sweep/002, 8: 0.054 against 0.061). Session 8.
  // JAX_CONV1D_DW_ORDER=0 or 2 forces the cyclic order or the streams (any NWC kernel).
  const int order = dw_env_int("JAX_CONV1D_DW_ORDER", -1);
  const bool many_tiles = a.tiles >= int64_t(kStreamTilesPerSm) * dev.sms;
  a.streams = a.tiles < (int64_t(1) << 31) && (order == 2 || (order < 0 && chain && a.tma_store && many_tiles));
  if constexpr (kWide) {
    *err = p.kernel_size <= 4
               ? launch_persistent(conv1d_fwd_depthwise_nwc_chain<T, TOut, true, 4, NV, BT>, a, smem, dev, stream,
                                   tmap, tmap_y)
               : launch_persistent(conv1d_fwd_depthwise_nwc_chain<T, TOut, true, 8, NV, BT>, a, smem, dev, stream,
                                   tmap, tmap_y);
    return 1;
  } else {
    if (chain && p.kernel_size <= 4)
      *err = bulk ? launch_persistent(conv1d_fwd_depthwise_nwc_chain<T, TOut, true, 4>, a, smem, dev, stream, tmap,
                                      tmap_y)
                  : launch_persistent(conv1d_fwd_depthwise_nwc_chain<T, TOut, false, 4>, a, smem, dev, stream, tmap,
                                      tmap_y);
    else if (chain)
      *err = bulk ? launch_persistent(conv1d_fwd_depthwise_nwc_chain<T, TOut, true, 8>, a, smem, dev, stream, tmap,
                                      tmap_y)
                  : launch_persistent(conv1d_fwd_depthwise_nwc_chain<T, TOut, false, 8>, a, smem, dev, stream, tmap,
                                      tmap_y);
    else if (bulk)
      *err = launch_persistent(conv1d_fwd_depthwise_nwc<T, TOut, true, true>, a, smem, dev, stream, tmap);
    else if (mult == 1)
      *err = launch_persistent(conv1d_fwd_depthwise_nwc<T, TOut, true, false>, a, smem, dev, stream, tmap);
    else
      *err = launch_persistent(conv1d_fwd_depthwise_nwc<T, TOut, false, false>, a, smem, dev, stream, tmap);
    return 1;
  }
}

}  // namespace

template <typename T, typename TOut>
bool conv1d_fwd_depthwise(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y,
                          cudaStream_t stream, cudaError_t* err) {
  if (p.groups != p.in_channels || p.in_per_group() != 1) return false;
  const int64_t span = (p.kernel_size - 1) * p.dilation;
  if (p.stride > (1 << 12) || span > (1 << 20)) return false;
  constexpr int VEC = vec_width<T>();
  const DeviceLimits dev = device_limits();
  const int64_t mult = p.out_per_group();
  const bool x_aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  DwArgs a{};
  a.p = p;
  a.x = x, a.w = w, a.bias = bias, a.y = y;
  int smem = 0;
  if (p.layout == Layout::kNWC) {
    // JAX_CONV1D_DW_TILE=64, for timing: the sliding-window kernel with copy-engine stages on tiles of 32
    // channel vectors x 64 positions (512-byte rows; measured within the spread of the default 16 x 128, see
    // docs/notes/dwfwd7_session7.md; 8 x 256 with 128-byte rows measured 10 % slower on mamba and was dropped).
    // The default tile is also the fallback where this one does not apply.
    if (dw_env_int("JAX_CONV1D_DW_TILE", 128) == 64) {
      if (plan_nwc<T, TOut, 32, 64>(p, a, dev, x_aligned, stream, err) == 1) return true;
      a = DwArgs{};
      a.p = p;
      a.x = x, a.w = w, a.bias = bias, a.y = y;
    }
    return plan_nwc<T, TOut, kNwcVectors, kNwcBT>(p, a, dev, x_aligned, stream, err) == 1;
  } else {
    const int64_t win = (kNcwBT - 1) * p.stride + span + 1;
    a.win = int(win);
    a.row = int(ceil_div(win + VEC - 1, VEC) * VEC);
    if (int64_t(a.row) * kNcwChannels > (int64_t(1) << 30)) return false;
    a.stage_elems = a.row * kNcwChannels;
    a.vec_x = x_aligned && p.in_length % VEC == 0;
    a.vec_y = false;
    a.c_tiles = ceil_div(p.out_channels, kNcwChannels);
    a.t_tiles = ceil_div(p.out_length, kNcwBT);
    a.tiles = p.batch * a.c_tiles * a.t_tiles;
    a.coords32 = a.tiles < (int64_t(1) << 31) && dw_env_int("JAX_CONV1D_DW_COORDS32", 1) != 0;
    if (!pick_stages(a, sizeof(T), dev, smem)) return false;
    const CUtensorMap unused{};
    if (dev.cc_major >= 9 && bulk_copies_enabled() && a.vec_x)
      *err = launch_persistent(conv1d_fwd_depthwise_ncw<T, TOut, true>, a, smem, dev, stream, unused);
    else
      *err = launch_persistent(conv1d_fwd_depthwise_ncw<T, TOut, false>, a, smem, dev, stream, unused);
  }
  return true;
}

#define JC_INSTANTIATE(T, TOUT)                                                                            \
  template bool conv1d_fwd_depthwise<T, TOUT>(const Conv1dParams&, const T*, const T*, const T*, TOUT*, \
                                               cudaStream_t, cudaError_t*);
JC_INSTANTIATE(float, float)
JC_INSTANTIATE(__nv_bfloat16, __nv_bfloat16)
JC_INSTANTIATE(__nv_bfloat16, float)
JC_INSTANTIATE(__half, __half)
JC_INSTANTIATE(__half, float)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cuda
