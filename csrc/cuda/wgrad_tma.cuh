// Dense weight gradient, NWC float32 (TF32), with its tiles loaded by the tensor memory accelerator.
//
// The same GEMM as wgrad_gemm_kernel (128 x (32*kNT) output tile on 2 x 4 warps, 64-position units, split
// reduction into float32 partials), but one thread loads a unit with a few `cp.async.bulk.tensor` boxes of
// 32 channels x rows (128-byte rows, 128-byte swizzle: 16-byte chunk q of row r lands at q ^ (r & 7)),
// completion counted on one mbarrier per stage. Out-of-range positions and channels (padding, ragged units,
// the last channel block) arrive as zeros from the copy engine, so there is no edge path, and the other
// threads issue no load instructions at all. Session 5 measured per-row bulk copies (`cp.async.bulk`, one per
// 256-512 byte row, issued by one warp into the padded tiles) at half the speed of per-thread cp.async: the
// copy engine's cost is per operation, so the boxes must be large.
//
// Fragment mapping: the M rows of an MMA tile and the N columns of an n-tile may be any channels, as long as
// the epilogue writes each accumulator to the channel it summed. Lane (g, tq) reads channel chunk (v + 4*(g>>2))
// at row tq (+4), i.e. chunk ((v ^ tq) + 4*((g>>2) ^ hi)) after the swizzle: for the 32 lanes of a load these
// are 32 distinct banks (the XOR with tq < 4 stays inside one half of the row, g>>2 picks the half). A m-tile
// takes chunk pairs {v, v+4} for v = c0 + h (rows g and g+8), c0 in {0, 2}; an n-tile takes {q, q+4}. For B the
// rows are positions (k0 + tq)*stride + tap offset, so the four rows of a load are distinct mod 8 and never 4
// apart for odd strides (conflict-free); even strides give 2-way conflicts.
//
// Every accumulator sums the same products in the same k order as wgrad_gemm_kernel's, so dw (and db, summed
// over the same positions per thread) has the same bits.
//
// Stage release (session 7): with kProducerWarp (128 x 128 tiles) a ninth warp issues the copies, and each of
// the 8 MMA warps releases a stage on its "empty" mbarrier when it has read it, so the warps never meet at a
// block barrier: a warp waits only for its next unit to land, and the producer only for the 8 releases of
// the stage it refills. Without it (JAX_CONV1D_WGRAD_RELEASE=block, session 5's loop) thread 0 issues the
// copies and all warps pass one __syncthreads per unit. The loop order inside a warp is the same, so are the
// bits.
//
// 128 x 256 tile (kNT 8, session 8): both taps of a K = 2 layer's 128 channels in one block, 64 x 64 per warp
// (a third fewer fragment reads and TF32 conversions per MMA than 64 x 32). It needs 255 registers, so it runs
// the block-barrier loop (a ninth warp would cap it at 168). Measured -1.9 % on WaveNet's ten wgrads.
#pragma once

#include <cuda.h>  // CUtensorMap (the type only; the encoder comes through the runtime's driver entry point)
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "wgrad_tma_copy.cuh"
#include "tensor_map_encoder.h"

namespace jax_conv1d::cuda {
namespace wgrad_gemm {

constexpr int kTmaBoxCh = 32;      // channels per box: one 128-byte swizzled row
constexpr int kTmaRowBytes = 128;
constexpr int kTmaAlign = 1024;    // the 128-byte swizzle repeats every 8 rows; boxes start 1024-aligned
constexpr int kTmaMaxStages = 4;
constexpr int kTmaBarBytes = 2 * kTmaMaxStages * 8;  // a "full" and an "empty" mbarrier per stage
constexpr int kTmaMmaWarps = 8;

// Byte offset of (row r, channel c) in a swizzled box of 32-channel rows.
__host__ __device__ __forceinline__ uint32_t tma_box_off(int r, int c) {
  return uint32_t(r) * kTmaRowBytes + ((((c >> 2) ^ r) & 7) << 4) + ((c & 3) << 2);
}

template <int kNT, bool kProducerWarp>
__global__ void __launch_bounds__(kProducerWarp ? 32 * (kTmaMmaWarps + 1) : 32 * kTmaMmaWarps, 1)
    wgrad_tma_kernel(const Params prm, const __grid_constant__ CUtensorMap x_map,
                     const __grid_constant__ CUtensorMap dy_map, float* __restrict__ dw, float* __restrict__ db) {
  constexpr int kMT = 4, kBM = 128, kBT = 64;
  constexpr uint32_t kDyBox = kBT * kTmaRowBytes;  // bytes of one 32-channel dy box
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  unsigned char* const smem = smem_raw + (((raw + kTmaAlign - 1) & ~uint32_t(kTmaAlign - 1)) - raw);
  const Conv1dParams& p = prm.p;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp % 2, wn = warp / 2, g = lane >> 2, tq = lane & 3;

  int tile = blockIdx.x;
  const int kblk = tile % prm.k_blocks;
  tile /= prm.k_blocks;
  const int cblk = tile % prm.c_blocks;
  tile /= prm.c_blocks;
  const int oblk = tile % prm.o_blocks;
  const int grp = tile / prm.o_blocks;
  const int64_t og = p.out_per_group(), cg = p.in_per_group();
  const int64_t o_first = grp * og + int64_t(oblk) * kBM;
  const int o_valid = static_cast<int>(std::min<int64_t>(kBM, og - int64_t(oblk) * kBM));
  const int64_t c_in_group = int64_t(cblk) * prm.bch;
  const int64_t c_first = grp * cg + c_in_group;
  const int c_valid = static_cast<int>(std::min<int64_t>(prm.bch, cg - c_in_group));
  const int k_first = kblk * prm.kb;

  const int64_t split = blockIdx.y;
  const int64_t u_begin = split * prm.units / prm.splits;
  const int64_t u_end = (split + 1) * prm.units / prm.splits;
  const int64_t count = u_end - u_begin;

  const uint32_t x_box = uint32_t(prm.tma_rows) * kTmaRowBytes;  // bytes of one 32-channel x box
  const int x_boxes = prm.bch / kTmaBoxCh;
  const uint32_t stage_bytes = uint32_t(prm.dy_elems + prm.x_elems) * 4;
  uint64_t* const bars = reinterpret_cast<uint64_t*>(smem + size_t(prm.nstage) * stage_bytes);  // full
  uint64_t* const empty = bars + kTmaMaxStages;  // kProducerWarp: the MMA warps' releases of each stage
  if (tid < prm.nstage) wgrad_bulk::mbar_init(&bars[tid], 1);
  if (kProducerWarp && tid >= 32 && tid < 32 + prm.nstage) wgrad_bulk::mbar_init(&empty[tid - 32], kTmaMmaWarps);
  __syncthreads();

  // A: byte offsets of this lane's words for chunk pair v (m-tile rows g / g+8 of m-tiles with c0 + h = v) at
  // k = tq (hi 0) and tq + 4 (hi 1), within the warp's first dy box.
  uint32_t a_off[4][2];
#pragma unroll
  for (int v = 0; v < 4; ++v)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) a_off[v][hi] = tma_box_off(tq + 4 * hi, 4 * (v + 4 * (g >> 2)) + (g & 3));
  const uint32_t a_warp = uint32_t(wm) * 2 * kDyBox;

  // B: byte offsets of this lane's words of n-tile nt at k = tq (hi 0) and tq + 4, within the x tile at k-step 0.
  const int s = static_cast<int>(p.stride);
  uint32_t b_off[kNT][2];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    const int n0 = wn * kNT * 8 + nt * 8;
    int j = n0 / prm.bch;
    const int cst = n0 - j * prm.bch;
    if (j >= prm.kb) j = 0;  // padding columns: any in-range address, the results are dropped
    const int q = (cst & 31) >> 3;
    const uint32_t box = uint32_t(prm.seg_base[prm.tap_seg[j]]) * 4 + uint32_t(cst >> 5) * x_box;
#pragma unroll
    for (int hi = 0; hi < 2; ++hi)
      b_off[nt][hi] = box + tma_box_off((tq + 4 * hi) * s + prm.tap_off[j], 4 * (q + 4 * (g >> 2)) + (g & 3));
  }
  const uint32_t b_kstep = uint32_t(8 * s) * kTmaRowBytes;

  float acc[kMT][kNT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;

  // Bias: the rows and positions of wgrad_gemm_kernel (tile rows tid/4 + 64 i, positions tid%4 + 4 j), so db
  // has its bits.
  const bool want_bias = db != nullptr && cblk == 0 && kblk == 0;
  const int bias_row = tid >> 2, bias_pos = tid & 3;
  float bias_acc[2] = {0.0f, 0.0f}, bias_comp[2] = {0.0f, 0.0f};

  const int64_t t_end = prm.t_units * kBT;
  UnitCursor load_at;
  {
    const uint32_t uu = static_cast<uint32_t>(u_begin), tu = static_cast<uint32_t>(prm.t_units);
    const uint32_t nn = uu / tu;
    load_at.n = nn;
    load_at.t0 = int64_t(uu - nn * tu) * kBT;
  }
  const uint32_t unit_bytes = uint32_t(kBM / kTmaBoxCh) * kDyBox + uint32_t(prm.nseg * x_boxes) * x_box;

  auto load_unit = [&](int stage) {  // one thread only
    const int n = static_cast<int>(load_at.n), t0 = static_cast<int>(load_at.t0);
    load_at.advance(t_end, kBT);
    unsigned char* const dy_s = smem + size_t(stage) * stage_bytes;
    unsigned char* const x_s = dy_s + size_t(prm.dy_elems) * 4;
    uint64_t* const bar = &bars[stage];
    wgrad_bulk::mbar_arrive_expect_tx(bar, unit_bytes);
#pragma unroll
    for (int b = 0; b < kBM / kTmaBoxCh; ++b)
      wgrad_bulk::tma_load_3d(dy_s + b * kDyBox, &dy_map, static_cast<int>(o_first) + b * kTmaBoxCh, t0, n, bar);
    const int l_base = t0 * s + k_first * static_cast<int>(p.dilation) - static_cast<int>(p.pad_lo);
    for (int j = 0; j < prm.nseg; ++j)
      for (int b = 0; b < x_boxes; ++b)
        wgrad_bulk::tma_load_3d(x_s + size_t(prm.seg_base[j]) * 4 + b * x_box, &x_map,
                                static_cast<int>(c_first) + b * kTmaBoxCh, l_base + prm.seg_src[j], n, bar);
  };

  auto compute_unit = [&](int stage) {
    const unsigned char* const dy_s = smem + size_t(stage) * stage_bytes;
    const unsigned char* const x_s = dy_s + size_t(prm.dy_elems) * 4;
    const unsigned char* a[4][2];
#pragma unroll
    for (int v = 0; v < 4; ++v)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) a[v][hi] = dy_s + a_warp + a_off[v][hi];
    const unsigned char* b[kNT][2];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) b[nt][hi] = x_s + b_off[nt][hi];
#pragma unroll
    for (int k0 = 0; k0 < kBT; k0 += 8) {
      uint32_t af[kMT][4], bf[kNT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        const int v0 = (mt & 1) * 2;
        const uint32_t box = (mt >> 1) * kDyBox + k0 * kTmaRowBytes;
        af[mt][0] = tf32_round_fast(*reinterpret_cast<const float*>(a[v0][0] + box));
        af[mt][1] = tf32_round_fast(*reinterpret_cast<const float*>(a[v0 + 1][0] + box));
        af[mt][2] = tf32_round_fast(*reinterpret_cast<const float*>(a[v0][1] + box));
        af[mt][3] = tf32_round_fast(*reinterpret_cast<const float*>(a[v0 + 1][1] + box));
      }
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        bf[nt][0] = tf32_round_fast(*reinterpret_cast<const float*>(b[nt][0]));
        bf[nt][1] = tf32_round_fast(*reinterpret_cast<const float*>(b[nt][1]));
        b[nt][0] += b_kstep, b[nt][1] += b_kstep;
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          mma_tf32_16x8x8(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], bf[nt][0], bf[nt][1]);
    }
    if (want_bias) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int m = bias_row + 64 * i;
        const unsigned char* box = dy_s + (m >> 5) * kDyBox;
        float sum = 0.0f;
#pragma unroll
        for (int jj = 0; jj < kBT / 4; ++jj)
          sum += *reinterpret_cast<const float*>(box + tma_box_off(bias_pos + 4 * jj, m & 31));
        const float y = sum - bias_comp[i];
        const float tt = bias_acc[i] + y;
        bias_comp[i] = (tt - bias_acc[i]) - y;
        bias_acc[i] = tt;
      }
    }
  };

  if constexpr (kProducerWarp) {
    if (warp == kTmaMmaWarps) {  // the producer: refills each stage once all 8 MMA warps have released it
      if (lane == 0) {
        int stage = 0;
        uint32_t phase = 0;  // of the stage's release mbarrier: its first wait is for phase 0
        for (int64_t i = 0; i < count; ++i) {
          if (i >= prm.nstage) wgrad_bulk::mbar_wait(&empty[stage], phase);
          load_unit(stage);
          if (++stage == prm.nstage) {
            stage = 0;
            if (i >= prm.nstage) phase ^= 1;
          }
        }
      }
      return;  // no block barrier follows
    }
    int stage = 0;
    uint32_t phase = 0;
    for (int64_t i = 0; i < count; ++i) {
      wgrad_bulk::mbar_wait(&bars[stage], phase);
      compute_unit(stage);
      wgrad_bulk::fence_proxy_async();  // this thread's reads of the stage before the copy engine's next writes
      __syncwarp();
      if (lane == 0) wgrad_bulk::mbar_arrive(&empty[stage]);
      if (++stage == prm.nstage) stage = 0, phase ^= 1;
    }
  } else {
    if (tid == 0)
      for (int st = 0; st < prm.nstage - 1 && st < count; ++st) load_unit(st);
    int load_stage = prm.nstage - 1, compute_stage = 0;
    uint32_t phase = 0;
    for (int64_t i = 0; i < count; ++i) {
      wgrad_bulk::mbar_wait(&bars[compute_stage], phase);
      wgrad_bulk::fence_proxy_async();
      __syncthreads();  // unit i has landed, and every warp is done with the stage about to be refilled
      if (tid == 0 && i + prm.nstage - 1 < count) load_unit(load_stage);
      compute_unit(compute_stage);
      load_stage = load_stage + 1 == prm.nstage ? 0 : load_stage + 1;
      if (++compute_stage == prm.nstage) compute_stage = 0, phase ^= 1;
    }
  }

  const int64_t w_size = p.w_size();
  float* const part = prm.partials ? prm.partials + split * prm.split_stride : nullptr;
  if (want_bias) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float v = bias_acc[i] - bias_comp[i];
      v += __shfl_xor_sync(0xffffffffu, v, 1);
      v += __shfl_xor_sync(0xffffffffu, v, 2);
      const int m = bias_row + 64 * i;
      if (bias_pos == 0 && m < o_valid) {
        if (part)
          part[w_size + o_first + m] = v;
        else
          db[o_first + m] = v;
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int n0 = wn * kNT * 8 + nt * 8;
      const int j = n0 / prm.bch;
      const int cst = n0 - j * prm.bch;
      const int q = (cst & 31) >> 3;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1, slot = 2 * tq + (e & 1);
        const int m = 32 * (wm * 2 + (mt >> 1)) + 4 * ((mt & 1) * 2 + h + 4 * (g >> 2)) + (g & 3);
        const int c = (cst & ~31) + 4 * (q + 4 * (slot >> 2)) + (slot & 3);
        const int64_t k = k_first + j;
        if (m >= o_valid || j >= prm.kb || c >= c_valid || k >= p.kernel_size) continue;
        const int64_t idx = (o_first + m) * p.w_o + (c_in_group + c) * p.w_c + k * p.w_k;
        if (part)
          part[idx] = acc[mt][nt][e];
        else
          dw[idx] = acc[mt][nt][e];
      }
    }
}

// ---- host side -------------------------------------------------------------------------------------------

// A (batch, length, channels) float32 tensor as 32-channel x `rows` boxes with the 128-byte swizzle.
inline bool encode_wgrad_box_map(CUtensorMap* map, const void* base, int64_t n, int64_t length, int64_t channels,
                                 int rows) {
  const TensorMapEncodeTiled encode = tensor_map_encoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {cuuint64_t(channels), cuuint64_t(length), cuuint64_t(n)};
  const cuuint64_t strides[2] = {cuuint64_t(channels * 4), cuuint64_t(channels * length * 4)};
  const cuuint32_t box[3] = {cuuint32_t(kTmaBoxCh), cuuint32_t(rows), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, const_cast<void*>(base), dims, strides, box,
                element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The TMA layout for a padded plan (make_plan's), or false when the shape is outside this kernel: NWC float32
// TF32 with 64-position units on the 128-row tile, channel blocks of whole 32-channel boxes, 16-byte aligned
// rows, x segments of at most 256 rows, and coordinates that fit the copy engine's 32-bit ones.
inline bool make_tma_plan(const Plan& padded, Plan* out) {
  const Params& q0 = padded.prm;
  const Conv1dParams& p = q0.p;
  if (!q0.tma || padded.mt != 4 || q0.bt != 64 || !q0.tf32_rn || q0.bch % kTmaBoxCh != 0) return false;
  if (p.in_channels % 4 != 0 || p.out_channels % 4 != 0) return false;
  if (p.batch >= (int64_t(1) << 31) || p.in_length + p.pad_lo >= (int64_t(1) << 30) ||
      p.out_length * p.stride >= (int64_t(1) << 30))
    return false;
  int seg_max = 0;
  for (int j = 0; j < q0.nseg; ++j) seg_max = std::max(seg_max, q0.seg_len[j]);
  const int rows = static_cast<int>(round_up(seg_max, 8));
  if (rows > 256) return false;
  *out = padded;
  Params& q = out->prm;
  q.tma_rows = rows;
  q.dy_elems = 128 * q.bt;  // 4 boxes of 64 rows x 32 channels
  for (int j = 0; j < q.nseg; ++j) q.seg_base[j] = j * q.bch * rows;  // element offsets in the x tile
  q.x_elems = q.nseg * q.bch * rows;
  const size_t stage_bytes = size_t(q.dy_elems + q.x_elems) * 4;
  const size_t budget = std::min<size_t>(device_limits().smem_optin, kMaxSmem) - kTmaAlign - kTmaBarBytes;
  q.nstage = static_cast<int>(std::min<size_t>(kTmaMaxStages, budget / stage_bytes));
  if (q.nstage < 2) return false;
  out->smem = stage_bytes * q.nstage + kTmaAlign + kTmaBarBytes;
  return true;
}

template <int kNT, bool kProducerWarp>
cudaError_t launch_tma(const Plan& plan, const CUtensorMap& x_map, const CUtensorMap& dy_map, float* dw, float* db,
                       cudaStream_t stream) {
  auto kernel = wgrad_tma_kernel<kNT, kProducerWarp>;
  if (cudaError_t err = allow_dynamic_smem(kernel, plan.smem); err != cudaSuccess) return err;
  const int threads = 32 * (kTmaMmaWarps + (kProducerWarp ? 1 : 0));
  kernel<<<plan.grid, threads, plan.smem, stream>>>(plan.prm, x_map, dy_map, dw, db);
  return cudaGetLastError();
}

// JAX_CONV1D_WGRAD_RELEASE=block: session 5's loop (thread 0 loads, one block barrier per unit), for A/B runs
// in one process (read at every call); the default releases stages per warp to a producer warp.
inline bool wgrad_tma_producer_warp() {
  const char* env = std::getenv("JAX_CONV1D_WGRAD_RELEASE");
  return !(env && std::string(env) == "block");
}

// JAX_CONV1D_WGRAD_TILE=narrow: no 128 x 256 tile (session 7's 128 x 128 plan for WaveNet's layers), for A/B
// runs in one process (read at every call).
inline bool wgrad_tma_wide_tile() {
  const char* env = std::getenv("JAX_CONV1D_WGRAD_TILE");
  return !(env && std::string(env) == "narrow");
}

// The TMA kernel when the shape, the pointers and the device allow it; cudaErrorNotSupported otherwise (the
// caller then launches wgrad_gemm_kernel on the padded plan). A template so that only the float32 TF32
// translation unit compiles the kernels.
template <class Op>
cudaError_t try_launch_tma(const Plan& padded, const float* x, const float* dy, float* dw, float* db,
                                  cudaStream_t stream) {
  static_assert(std::is_same_v<Op, MmaTf32>, "the TMA kernel is float32 TF32");
  Plan plan;
  if (!make_tma_plan(padded, &plan)) return cudaErrorNotSupported;
  if ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(dy)) % 16 != 0) return cudaErrorNotSupported;
  int device = 0, cc_major = 0;  // the copy engine is sm_90+ (older builds compile the copies out)
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess || cc_major < 9)
    return cudaErrorNotSupported;
  const Conv1dParams& p = plan.prm.p;
  CUtensorMap x_map, dy_map;
  if (!encode_wgrad_box_map(&x_map, x, p.batch, p.in_length, p.in_channels, plan.prm.tma_rows) ||
      !encode_wgrad_box_map(&dy_map, dy, p.batch, p.out_length, p.out_channels, plan.prm.bt))
    return cudaErrorNotSupported;
  // The 128 x 192 tile keeps the block barrier: with a ninth warp ptxas caps it at 168 registers (three warps
  // on one scheduler), and its 220 would spill 152 bytes.
  const bool producer = plan.nt == 4 && wgrad_tma_producer_warp();
  static const bool trace = std::getenv("JAX_CONV1D_TRACE_BWD") != nullptr;  // names the kernel, as the dispatcher
  if (trace)
    std::fprintf(stderr, "jax_conv1d wgrad: tma kernel (128 x %d tile, %d stages, x boxes of %d rows, %d splits, %s)\n",
                 32 * plan.nt, plan.prm.nstage, plan.prm.tma_rows, plan.prm.splits,
                 producer ? "producer warp" : "block barrier");
  if (producer) return launch_tma<4, true>(plan, x_map, dy_map, dw, db, stream);
  if (plan.nt == 8) return launch_tma<8, false>(plan, x_map, dy_map, dw, db, stream);
  return plan.nt == 6 ? launch_tma<6, false>(plan, x_map, dy_map, dw, db, stream)
                      : launch_tma<4, false>(plan, x_map, dy_map, dw, db, stream);
}

}  // namespace wgrad_gemm
}  // namespace jax_conv1d::cuda
