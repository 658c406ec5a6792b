// Forward pass (NWC, dense) as an implicit GEMM on Hopper warp-group MMAs (wgmma, sm_90a).
//
// Same data movement as fwd_igemm.cuh's NWC path, whose plan (igemm_plan), tensor-map windows and pipeline it
// reuses: a persistent block owns a 128-channel o-tile, keeps its weights resident in shared memory, and streams
// the input window of each tile of output positions through the copy engine (64-byte rows of one channel chunk,
// 64-byte swizzle). What changes is the product. The GEMM is oriented the other way round from fwd_igemm:
// M = output positions, N = the 128 output channels, K = (channel chunk, tap, channel). Each warp group owns 64
// output positions and multiplies them into a 64 x 128 float accumulator (64 registers per thread):
//   A (positions x channels) comes from registers: a position's channels are one 64-byte row of the window at
//     row t*stride + k*dilation, so A is not in any layout wgmma could read from shared memory itself (rows
//     s*64 bytes apart), but it is exactly what ldmatrix gives as the mma.sync m16 A fragment of each warp,
//     which is wgmma's register-A fragment for the warp group's 64 rows.
//   B (channels x outputs) is the resident weights, written once per block in wgmma's canonical K-major layout
//     (for each output channel, the channels of one k-step contiguous; no swizzle) and read by descriptor.
// So each warp reads only its A fragments from shared memory (2 KB per warp group per k-step, once), instead of
// A and B fragments per 16 x 8 MMA; the tensor cores read B themselves.
//
// The MMAs are asynchronous: the fragments of the next (chunk, tap) pair load while the current pair's two
// wgmmas run. The window stage is only read by ldmatrix (synchronous), so the pipeline's stage release is
// unchanged; the accumulators are waited for once per pipeline step and at the tile's end, where the epilogue
// adds the bias and stores through a per-warp staging area as 16-byte vectors (edge tiles: from the registers).
// Results are deterministic (fixed summation order, no atomics). They came out bitwise equal to fwd_igemm's in
// the three cases compared (the headline in f32 and bf16, WaveNet's layer: the same k-steps of 8 or 16 in the
// same order on the same tensor cores), but nothing guarantees that.
//
// Measured on the H100 (docs/notes/wgmma8_session8.md): correct, and its MMA loop alone is faster than the
// mma.sync one (headline f32 without stores 2.9-3.6 ms against 4.0), but whole kernels are not faster (f32
// 5.15 against 5.11 ms, bf16 2.72 against 2.58, WaveNet's K = 2 layer 0.99 against 0.98): off by default.
//
// JAX_CONV1D_WGMMA=1 enables it for dense NWC (float32 at DEFAULT precision as TF32, bfloat16, float16);
// JAX_CONV1D_WGMMA_TILE=128x128|128x64|128x64s picks the block (output channels x positions: two warp groups
// of 64 positions, one, or two on the same 64 positions with 64 channels each); read per call.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "fwd_igemm.cuh"
#include "wgmma.cuh"

namespace jax_conv1d::cuda {

// Block tile: 128 output channels x BN output positions. Either one warp group per 64 positions, each taking
// all 128 channels (wgmma N = 128, 64 accumulators per thread), or (kSplitN, BN = 64) two warp groups on the
// same 64 positions, each taking 64 of the channels (N = 64, 32 accumulators; both load the same A fragments).
template <int BN_, bool kSplitN_ = false>
struct WgmmaTile {
  static constexpr bool kSplitN = kSplitN_;
  static constexpr int BM = 128, BN = BN_, kGroups = kSplitN ? 2 : BN / 64, kThreads = kGroups * 128;
  static constexpr int kN = kSplitN ? 64 : 128;  // wgmma N: output channels per warp group
  static_assert(!kSplitN || BN == 64, "the split block is 64 positions");
  // The fwd_igemm tile with the same block shape, whose window plan this kernel uses unchanged.
  using PlanTile = std::conditional_t<BN == 64, IgemmTile128s, IgemmTile128>;
};

struct WgmmaArgs {
  IgemmArgs ig;        // plan, pointers and cursors exactly as fwd_igemm's NWC bulk path fills them
  uint32_t desc_lbo;   // descriptor byte offsets of the resident weights: K-adjacent core matrices ...
  uint32_t desc_sbo;   // ... and N-adjacent ones (JAX_CONV1D_WGMMA_SWAP_LBO=1 swaps them: a probe knob)
  bool pair_store;     // two adjacent output channels are one aligned store
  int scratch_off;     // byte offset of the per-warp output staging (0: stores straight from the accumulators)
};

template <typename T>
__device__ __forceinline__ void wgmma_step(float (&acc)[64], const uint32_t (&a)[4], uint64_t desc) {
  if constexpr (std::is_same_v<T, float>) wgmma_m64n128k8_tf32_rs(acc, a, desc, 1);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) wgmma_m64n128k16_bf16_rs(acc, a, desc, 1);
  else wgmma_m64n128k16_f16_rs(acc, a, desc, 1);
}
template <typename T>
__device__ __forceinline__ void wgmma_step(float (&acc)[32], const uint32_t (&a)[4], uint64_t desc) {
  if constexpr (std::is_same_v<T, float>) wgmma_m64n64k8_tf32_rs(acc, a, desc, 1);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) wgmma_m64n64k16_bf16_rs(acc, a, desc, 1);
  else wgmma_m64n64k16_f16_rs(acc, a, desc, 1);
}

template <typename T, typename TOut, class Tile>
__global__ void __launch_bounds__(Tile::kThreads, 1)
    conv1d_fwd_wgmma_kernel(const WgmmaArgs wa, const __grid_constant__ CUtensorMap tmap) {
#if defined(JC_WGMMA_AVAILABLE) && defined(JC_BULK_COPY_AVAILABLE)
  using E = IgemmElem<T>;
  const IgemmArgs& a = wa.ig;
  constexpr int kThreads = Tile::kThreads, BM = Tile::BM, BN = Tile::BN;
  constexpr int BC = E::kChunk, KS = E::kStep, QS = BC / KS;
  constexpr bool k16 = sizeof(T) == 2;
  static_assert(QS == 2 && BC * sizeof(T) == 64, "one 64-byte chunk row = two k-steps");
  constexpr uint32_t kRowBytes = 64;
  constexpr uint32_t kStepBytes = BM * 32;  // resident weights per k-step: 128 outputs x 32 bytes

  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t stage_full[kMaxStages];
  unsigned char* smem = smem_raw + ((1024 - smem_addr(smem_raw) % 1024) % 1024);
  uint32_t* ws = reinterpret_cast<uint32_t*>(smem);
  T* xs = reinterpret_cast<T*>(smem + a.w_bytes_padded);

  const Conv1dParams& p = a.p;
  const T* __restrict__ w = static_cast<const T*>(a.w);
  const T* __restrict__ bias = static_cast<const T*>(a.bias);
  TOut* __restrict__ y = static_cast<TOut*>(a.y);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2, wq = warp & 3;  // warp group (64 positions) and warp in it (16 positions)
  const int g = lane >> 2, t = lane & 3;
  const int combo = int(blockIdx.x % unsigned(a.combos));
  const int64_t bi = blockIdx.x / unsigned(a.combos);
  const int mtile = combo;  // dense: groups == 1, combos == o-tiles
  const int64_t cg = p.in_per_group(), og = p.out_per_group();
  const int K = int(p.kernel_size), s = int(p.stride);
  const int64_t my_tiles = bi < a.tiles_per_combo ? (a.tiles_per_combo - 1 - bi) / a.blocks_per_combo + 1 : 0;

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

  // The window of one pipeline step: tensor-map boxes of 64-byte rows, as fwd_igemm's NWC bulk path.
  auto issue = [&](int stage, uint64_t* bar) {
    const Cursor c = at_load;
    advance(at_load);
    if (tid != 0) return;
    const int64_t l0 = c.tt * BN * s - p.pad_lo;
    T* dst = xs + size_t(stage) * a.stage_elems;
    const uint32_t box_bytes = uint32_t(a.box_rows) * BC * sizeof(T);
    const int chunk0 = c.chunk * a.step_chunks, nsub = std::min(a.step_chunks, a.chunks - chunk0);
    mbar_arrive_expect_tx(bar, box_bytes * uint32_t(a.boxes * nsub));
    for (int sub = 0; sub < nsub; ++sub) {
      const int c0 = (chunk0 + sub) * BC;
      for (int b = 0; b < a.boxes; ++b)
        tma_load_3d(dst + size_t(sub) * a.sub_elems + size_t(b) * a.box_rows * BC, &tmap, c0,
                    int(l0 + int64_t(b) * a.box_step), int(c.n), bar);
    }
  };

  // Resident weights in wgmma's K-major canonical layout. k-step kk = (chunk*K + k)*QS + q covers channels
  // chunk*BC + q*KS + [0, KS) at tap k; its 4 KB hold, for output o of the tile, 32 bytes of channels as two
  // core-matrix rows: byte kk*4096 + (o/8)*256 + (half)*128 + (o%8)*16 + [0, 16). Word index bits: 2 word in
  // row | 3 o%8 | 1 half | 4 o/8 | rest kk. Outputs past Og and channels past Cg are zero (the window's rows
  // past Cg are never read: Cg is a whole number of chunks).
#pragma unroll 4
  for (int wi = tid; wi < a.w_words; wi += kThreads) {
    const int r = wi & 3, o8 = (wi >> 2) & 7, half = (wi >> 5) & 1, ot = (wi >> 6) & 15, kk = wi >> 10;
    const int q = kk % QS, k = (kk / QS) % K, chunk = kk / QS / K;
    const int64_t o_local = int64_t(mtile) * BM + ot * 8 + o8;
    const bool m_ok = o_local < og;
    const T* wo = w + o_local * p.w_o + k * p.w_k;
    uint32_t word;
    if constexpr (!k16) {
      const int64_t c = int64_t(chunk) * BC + q * KS + half * 4 + r;
      word = tf32_round_fast((m_ok && c < cg) ? wo[c * p.w_c] : 0.f);
    } else {
      const int64_t c = int64_t(chunk) * BC + q * KS + half * 8 + 2 * r;
      const uint16_t* wb = reinterpret_cast<const uint16_t*>(wo);
      const uint16_t lo = (m_ok && c < cg) ? wb[c * p.w_c] : uint16_t(0);
      const uint16_t hi = (m_ok && c + 1 < cg) ? wb[(c + 1) * p.w_c] : uint16_t(0);
      word = pack_16x2(lo, hi);
    }
    ws[wi] = word;
  }
  // The tensor cores read the weights through the async proxy: order these ordinary stores before them (the
  // pipeline's first block barrier follows).
  fence_proxy_async();

  constexpr int kN = Tile::kN, kAcc = kN / 2;
  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;
  // This warp group's first position in the tile and first output channel in the o-tile.
  const int wg_pos = Tile::kSplitN ? 0 : wg * 64, wg_o = Tile::kSplitN ? wg * 64 : 0;

  const uint32_t ws_sh = smem_addr(ws), xs_sh = smem_addr(xs);
  const uint32_t stage_bytes = uint32_t(a.stage_elems) * sizeof(T), sub_bytes = uint32_t(a.sub_elems) * sizeof(T);
  // ldmatrix lane L gives the row address of matrix L/8: rows 0-7 / 8-15 of the warp's 16 positions (L/8 % 2)
  // and the 16-byte half of the k-step (L/16) — the m16 A fragment (a0..a3) of mma.sync.
  const int pos_row0 = (wg_pos + wq * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * s;
  const int half16 = lane >> 4;

  // Pair j = (chunk sub of the step, tap k); its two k-steps' A fragments.
  auto load_pair = [&](uint32_t stage_off, int j, uint32_t (&fa)[2][4]) {
    const int sub = j < K ? 0 : j < 2 * K ? 1 : j < 3 * K ? 2 : 3, k = j - sub * K;
    const int row = pos_row0 + k * a.tap_rows;
    const uint32_t base = xs_sh + stage_off + sub * sub_bytes + uint32_t(row) * kRowBytes;
    const int phase = (row >> 1) & 3;  // the 64-byte swizzle: 16-byte unit u of row r sits at u ^ ((r >> 1) & 3)
#pragma unroll
    for (int q = 0; q < QS; ++q) {
      ldmatrix_x4(base + uint32_t(((2 * q + half16) ^ phase) << 4), fa[q]);
      if constexpr (!k16) {
#pragma unroll
        for (int r = 0; r < 4; ++r) fa[q][r] = tf32_round_fast(__uint_as_float(fa[q][r]));
      }
    }
  };
  auto mma_pair = [&](int kk0, const uint32_t (&fa)[2][4]) {
    wgmma_fence();
#pragma unroll
    for (int q = 0; q < QS; ++q)
      wgmma_step<T>(acc, fa[q], wgmma_desc_noswizzle(ws_sh + uint32_t(kk0 + q) * kStepBytes + uint32_t(wg_o / 8) * 256, wa.desc_lbo, wa.desc_sbo));
    wgmma_commit();
  };

  // Epilogue. A warp's accumulators are 16 positions x kN channels, a thread holding pairs of adjacent
  // channels. Stored straight from them, a warp instruction writes 8 positions x 32 bytes (float32; 16 bytes
  // for 16-bit outputs): the first device call measured that epilogue at ~2.6 ms of the 5.5 ms f32 headline.
  // So interior tiles go through a per-warp staging area in rounds of 128 bytes per position (kRound n8 blocks):
  // the round's values, bias added and converted to the output type, then 16-byte vectors of which a warp
  // instruction covers four positions' whole 128-byte runs. Row pitch 144 bytes (shifts each row by 4 banks).
  constexpr int kRound = 128 / (8 * int(sizeof(TOut))), kPitch = 144;
  static_assert((kN / 8) % kRound == 0, "whole rounds");
  auto epilogue = [&](int64_t n, int64_t tt, auto streaming) {
    constexpr bool kStream = decltype(streaming)::value;
    const int64_t wpos0 = tt * BN + wg_pos + wq * 16;  // the warp's first position
    const int64_t pos0 = wpos0 + g;
    const bool rows_in = wpos0 + 16 <= p.out_length;
    TOut* yn = y + n * p.y_n;
    unsigned char* const scr = smem + wa.scratch_off + warp * (16 * kPitch);
#pragma unroll
    for (int rd = 0; rd < kN / 8 / kRound; ++rd) {
      const int64_t o_round = int64_t(mtile) * BM + wg_o + rd * kRound * 8;
      if (wa.scratch_off != 0 && rows_in && o_round + kRound * 8 <= og) {
        __syncwarp();
#pragma unroll
        for (int ii = 0; ii < kRound; ++ii) {
          const int i = rd * kRound + ii;
          const int64_t o = o_round + 8 * ii + 2 * t;
          const float b0 = bias ? to_acc(bias[o]) : 0.f, b1 = bias ? to_acc(bias[o + 1]) : 0.f;
#pragma unroll
          for (int h = 0; h < 2; ++h)
            store_out2<TOut, false>(reinterpret_cast<TOut*>(scr + (g + 8 * h) * kPitch + (8 * ii + 2 * t) * int(sizeof(TOut))),
                                    acc[4 * i + 2 * h] + b0, acc[4 * i + 2 * h + 1] + b1);
        }
        __syncwarp();
#pragma unroll
        for (int v = lane; v < 16 * 8; v += 32) {
          const int row = v >> 3, c16 = v & 7;
          const uint4 val = *reinterpret_cast<const uint4*>(scr + row * kPitch + c16 * 16);
          TOut* dst = yn + (wpos0 + row) * p.y_t + o_round + c16 * (16 / int(sizeof(TOut)));
          store_global<kStream>(reinterpret_cast<uint4*>(dst), val);
        }
        continue;
      }
#pragma unroll
      for (int ii = 0; ii < kRound; ++ii) {
        const int i = rd * kRound + ii;
        const int64_t o = o_round + 8 * ii + 2 * t;
        const float b0 = bias && o < og ? to_acc(bias[o]) : 0.f;
        const float b1 = bias && o + 1 < og ? to_acc(bias[o + 1]) : 0.f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t pos = pos0 + 8 * h;
          if (pos >= p.out_length) continue;
          const float v0 = acc[4 * i + 2 * h] + b0, v1 = acc[4 * i + 2 * h + 1] + b1;
          TOut* yp = yn + pos * p.y_t + o * p.y_o;
          if (wa.pair_store && o + 1 < og) {
            store_out2<TOut, kStream>(yp, v0, v1);
          } else {
            if (o < og) store_out<TOut, kStream>(yp, v0);
            if (o + 1 < og) store_out<TOut, kStream>(yp + p.y_o, v1);
          }
        }
      }
    }
  };

  auto compute = [&](int stage) {
    const Cursor c = at_compute;
    advance(at_compute);
    const uint32_t stage_off = uint32_t(stage) * stage_bytes;
    const int chunk0 = c.chunk * a.step_chunks;
    const int J = K * std::min(a.step_chunks, a.chunks - chunk0);
    const int kk_base = chunk0 * K * QS;  // the step's first k-step in the resident weights
    // Two fragment sets: pair j+1 loads while pair j's wgmmas run; a set is reloaded only after the wgmmas
    // that read it finished (wait<1> leaves just the newest group running).
    uint32_t f0[2][4], f1[2][4];
    load_pair(stage_off, 0, f0);
    int j = 0;
    for (; j + 2 <= J; j += 2) {
      mma_pair(kk_base + j * QS, f0);
      wgmma_wait<1>();
      load_pair(stage_off, j + 1, f1);
      mma_pair(kk_base + (j + 1) * QS, f1);
      wgmma_wait<1>();
      if (j + 2 < J) load_pair(stage_off, j + 2, f0);
    }
    if (j < J) mma_pair(kk_base + j * QS, f0);
    wgmma_wait<0>();
    wgmma_pin(acc);
    if (c.chunk == a.steps - 1) {
      if (!(a.diag & kDiagNoStore)) {
        if (a.evict_normal) epilogue(c.n, c.tt, std::false_type{});
        else epilogue(c.n, c.tt, std::true_type{});
      }
#pragma unroll
      for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;
    }
  };

  run_pipeline_bulk_staged(my_tiles * a.steps, a.stages, stage_full, issue, compute);
#else
  (void)wa;
  (void)tmap;
  __trap();  // never launched: the host takes this kernel only on sm_90 devices, built for sm_90a
#endif
}

// ---- host side -------------------------------------------------------------------------------------------

inline bool wgmma_requested() {
  const char* v = std::getenv("JAX_CONV1D_WGMMA");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// JAX_CONV1D_WGMMA_TILE=128x128|128x64|128x64s (output channels x positions; s: two warp groups splitting
// the channels); otherwise 128 x 64 (one warp group, whole input rows per pipeline step where the plan allows)
// for float32 and 128 x 128 for 16-bit types (the 128 x 128 plan already takes whole 128-byte rows of 64
// channels there). Returns 128, 64, or -64 for the split block.
inline int wgmma_positions(int elem_bytes) {
  const char* v = std::getenv("JAX_CONV1D_WGMMA_TILE");
  if (v != nullptr && std::strcmp(v, "128x128") == 0) return 128;
  if (v != nullptr && std::strcmp(v, "128x64") == 0) return 64;
  if (v != nullptr && std::strcmp(v, "128x64s") == 0) return -64;
  return elem_bytes == 4 ? 64 : 128;
}

template <typename T, typename TOut, class Tile>
bool wgmma_launch(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y, cudaStream_t stream,
                  cudaError_t* err) {
  const DeviceLimits dev = device_limits();
  WgmmaArgs wa{};
  IgemmArgs& a = wa.ig;
  int smem = 0;
  if (!igemm_plan<T, typename Tile::PlanTile>(p, dev, true, a, smem)) return false;
  // The plan's own output staging (fwd_igemm's layout) is not used; this kernel's takes 16 positions x 144
  // bytes per warp, after the stages, giving up stages beyond two if it must. JAX_CONV1D_IGEMM_STAGED_STORES=0
  // stores from the accumulators instead.
  {
    const int64_t stage_bytes = int64_t(a.stage_elems) * sizeof(T);
    const int64_t budget = dev.smem_optin - 1024 - int64_t(sizeof(uint64_t)) * 4;
    const int64_t scratch = (Tile::kThreads / 32) * 16 * 144;
    const bool y16 = reinterpret_cast<uintptr_t>(y) % 16 == 0;
    const int64_t es = sizeof(TOut);
    const bool staged = igemm_staged_stores_enabled() && y16 && p.y_o == 1 && (p.y_t * es) % 16 == 0 &&
                        (p.y_n * es) % 16 == 0;
    int stages = a.stages;
    while (staged && stages > 2 && a.w_bytes_padded + stages * stage_bytes + scratch > budget) --stages;
    const int64_t stages_end = a.w_bytes_padded + stages * stage_bytes;
    if (staged && stages_end + scratch <= budget) {
      a.stages = stages;
      wa.scratch_off = int(stages_end);
      smem = int(1024 + stages_end + scratch);
    } else {
      wa.scratch_off = 0;
      smem = int(1024 + a.w_bytes_padded + a.stages * stage_bytes);
    }
    a.scratch_off = 0;
  }
  a.p = p;
  a.x = x, a.w = w, a.bias = bias, a.y = y;
  a.diag = igemm_env_int("JAX_CONV1D_IGEMM_DIAG", 0);
  a.evict_normal = igemm_store_evict_normal(true);
  const bool swap = igemm_env_int("JAX_CONV1D_WGMMA_SWAP_LBO", 0) == 1;
  wa.desc_lbo = swap ? 256 : 128;
  wa.desc_sbo = swap ? 128 : 256;
  wa.pair_store = p.y_o == 1 && p.y_t % 2 == 0 && p.y_n % 2 == 0 &&
                  reinterpret_cast<uintptr_t>(y) % (2 * sizeof(TOut)) == 0;
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || p.in_channels % IgemmElem<T>::kChunk != 0) return false;
  if (p.in_length >= (int64_t(1) << 31) || p.in_channels >= (int64_t(1) << 31) || p.batch >= (int64_t(1) << 31))
    return false;
  CUtensorMap tmap{};
  if (!encode_nwc_window_map(&tmap, x, sizeof(T), p.batch, p.in_length, p.in_channels, IgemmElem<T>::kChunk,
                             a.box_rows, true))
    return false;

  auto kernel = conv1d_fwd_wgmma_kernel<T, TOut, Tile>;
  // Only sm_90a machine code has the wgmma instructions (a compute_90 PTX build traps instead).
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess || attr.binaryVersion != 90) {
    (void)cudaGetLastError();
    return false;
  }
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
  kernel<<<unsigned(grid), Tile::kThreads, smem, stream>>>(wa, tmap);
  *err = cudaGetLastError();
  return true;
}

// Dense NWC on an sm_90 device with bulk copies, one MMA per product (float32 3xTF32 is not done here).
template <typename T, typename TOut>
bool wgmma_dispatch(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y, cudaStream_t stream,
                    cudaError_t* err) {
  if (p.layout != Layout::kNWC || p.groups != 1) return false;
  if (std::is_same_v<T, float> && p.precision == Precision::kAccurate) return false;
  const DeviceLimits dev = device_limits();
  if (dev.cc_major != 9 || !bulk_copies_enabled()) return false;
  const int positions = wgmma_positions(sizeof(T));
  if (positions == 64) return wgmma_launch<T, TOut, WgmmaTile<64>>(p, x, w, bias, y, stream, err);
  if (positions == -64) return wgmma_launch<T, TOut, WgmmaTile<64, true>>(p, x, w, bias, y, stream, err);
  return wgmma_launch<T, TOut, WgmmaTile<128>>(p, x, w, bias, y, stream, err);
}

}  // namespace jax_conv1d::cuda
