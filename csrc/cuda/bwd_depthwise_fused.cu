// Both gradients of a depthwise convolution (groups == C, O = m*C, m = 1 or 2) in one pass: the plan (tile
// length, pipeline depth, channel blocks, splits), the entry points and the second kernel that adds the
// splits. The kernel and how it works: bwd_depthwise_fused.cuh.
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "bwd_depthwise.h"
#include "bwd_depthwise_fused.cuh"
#include "dgrad_phases.cuh"

namespace jax_conv1d::cuda {

namespace {

using namespace JC_DW_FUSED_NS;

constexpr size_t kScratchCap = size_t(64) << 20;

// One thread per (k, c): adds the splits in order in float64, then rounds once.
template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_depthwise_sum_kernel(const float* __restrict__ partials, int splits,
                                                                     Conv1dParams p, T* __restrict__ dw,
                                                                     T* __restrict__ db) {
  const int64_t C = p.out_channels, K = p.kernel_size, total = (K + 1) * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0.0;
    for (int sp = 0; sp < splits; ++sp) sum += partials[sp * total + e];
    const int64_t k = e / C, c = e - k * C;
    const T v = from_acc<T>(static_cast<float>(sum));
    if (k < K) {
      if (dw) dw[c * p.w_o + k * p.w_k] = v;
    } else if (db) {
      db[c] = v;
    }
  }
}

// The channel multiplier m = O / C the kernel covers (1 or 2), else 0.
inline int channel_multiplier(const Conv1dParams& p) {
  const int64_t m = depthwise_channel_multiplier(p);
  return m == 1 || m == 2 ? static_cast<int>(m) : 0;
}

// A/B switches, read on every call (so that one process can time both sides): JAX_CONV1D_DWBWD_ROWS=0 sends
// every tile through the general window loader, JAX_CONV1D_DWBWD_EXACT=0 keeps the run-time tap count,
// JAX_CONV1D_DWBWD_RUN=8 makes the merged walk's runs 8 positions long, JAX_CONV1D_DWBWD_FILL=<units> sets
// the per-block fill cost the split choice charges; JAX_CONV1D_DWBWD_SMEM and _BT (make_plan) move the tiles;
// JAX_CONV1D_DWBWD_ORDER=0|1 picks the launch order (make_plan), JAX_CONV1D_DWBWD_DEEP=0 the two-stage plan.
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::atoi(v) : fallback;
}

// log2 of the 16-byte chunks in a shared row of `row_elems` elements when copy_rows_16 can copy it (whole
// chunks, a power of two of them, at most one per thread), else -1.
inline int rows_log2(int row_elems, int vec_elems, int elem_bytes) {
  const int bytes = row_elems * elem_bytes;
  if (vec_elems * elem_bytes != 16 || bytes % 16 != 0) return -1;
  const int chunks = bytes / 16;
  if ((chunks & (chunks - 1)) != 0 || chunks > kThreads) return -1;
  int l = 0;
  while ((1 << l) < chunks) ++l;
  return l;
}

inline int next_pow2(int64_t v) {
  int r = 1;
  while (r < v) r *= 2;
  return r;
}

// Everything but the split count. Fails for shapes outside the kernel's range.
template <typename T>
bool make_plan(const Conv1dParams& p, bool want_dx, bool want_dwdb, FusedPlan* out, size_t* smem_bytes) {
  constexpr int sz = sizeof(T);
  const int mult = channel_multiplier(p);
  if (mult == 0) return false;
  if (p.batch < 1 || p.in_channels < 1 || p.in_length < 1 || p.out_length < 1) return false;
  if (!want_dx && !want_dwdb) return false;
  StridePhases ph;
  if (!make_stride_phases(p, &ph)) return false;
  const int K = static_cast<int>(p.kernel_size);
  const int64_t s = p.stride, d = p.dilation;
  if (d < 1 || (K - 1) * d > (int64_t(1) << 20)) return false;
  const bool ncw = p.layout == Layout::kNCW;
  const Variant var = pick_variant<T>(p, mult);
  FusedPlan& q = *out;
  q = FusedPlan{};
  q.p = p;
  q.mult = mult;
  q.want_dx = want_dx;
  q.want_dwdb = want_dwdb;
  if (ncw) {
    q.cb = 8;
  } else {
    q.cb = std::max<int>(var.vec, std::min<int>(128 / sz, next_pow2(p.out_channels)));
  }
  const int x_lines = q.cb / mult;  // input channels behind a block's cb virtual channels
  q.vec_dy = ncw ? widest_vec(sz, {p.out_length}) : widest_vec(sz, {p.out_channels, q.cb});
  q.vec_x = ncw ? widest_vec(sz, {p.in_length}) : widest_vec(sz, {p.in_channels, x_lines});
  q.halo = static_cast<int>((K - 1) * d / s);
  for (int k = 0; k < K; ++k) {
    q.tap_x[k] = static_cast<int>(k * d);
    q.tap_dy[k] = q.halo - static_cast<int>(k * d / s);
    q.tap_r[k] = static_cast<int>((k * d) % s);
  }
  const int kt = var.taps;
  // Two blocks per SM where the windows allow, else one block with all the shared memory (long dilations).
  // JAX_CONV1D_DWBWD_SMEM=<KB> replaces the two-blocks budget and JAX_CONV1D_DWBWD_BT=<bt> caps the tile
  // length (plan A/B only).
  const size_t two_blocks = static_cast<size_t>(env_int("JAX_CONV1D_DWBWD_SMEM", 110)) * 1024;
  const int bt_cap = env_int("JAX_CONV1D_DWBWD_BT", 1024);
  const size_t budgets[2] = {std::min<size_t>(device_limits().smem_optin, two_blocks),
                             static_cast<size_t>(device_limits().smem_optin)};
  size_t stage_bytes = 0;
  q.nstage = 0;
  for (int attempt = 0; attempt < 2 * 6 && q.nstage < 2; ++attempt) {
    const size_t budget = budgets[attempt / 6];
    const int bt = (ncw ? 1024 : 256) >> (attempt % 6);
    if (bt < 32 || (bt > bt_cap && bt > 32)) continue;
    // No point in tiles much longer than a batch row.
    if (bt > 32 && bt / 2 >= p.out_length + q.halo) continue;
    q.bt = bt;
    q.dy_rows = bt + q.halo;
    q.x_rows = want_dwdb ? static_cast<int>((bt - 1) * s + (K - 1) * d + 1) : 0;
    if (ncw) {
      q.dy_pitch = static_cast<int>(round_up(q.dy_rows + q.vec_dy - 1, q.vec_dy));
      q.x_pitch = static_cast<int>(round_up(q.x_rows + q.vec_x - 1, q.vec_x));
      q.dy_elems = q.cb * q.dy_pitch;
      q.x_elems = want_dwdb ? x_lines * q.x_pitch : 0;
    } else {
      q.dy_pitch = q.cb;
      q.x_pitch = x_lines;
      q.dy_elems = q.dy_rows * q.cb;
      q.x_elems = q.x_rows * x_lines;
    }
    q.dy_elems = static_cast<int>(round_up(q.dy_elems, 16 / sz));
    q.x_elems = static_cast<int>(round_up(q.x_elems, 16 / sz));
    stage_bytes = size_t(q.dy_elems + q.x_elems) * sz;
    const int stages = static_cast<int>(std::min<size_t>(3, budget / stage_bytes));
    if (stages >= 2) {
      q.nstage = stages;
      break;
    }
  }
  if (q.nstage < 2) return false;
  // NWC, where two blocks per SM leave only two stages: one block with three stages of the same tile (same
  // tiles; the split count may change with the block slots): depthwise_tcn's kernel 2.45 -> 2.39 ms alone,
  // 2.33 with the launch order below (session 8; session 7's JAX_CONV1D_DWBWD_SMEM=227 _BT=128).
  // JAX_CONV1D_DWBWD_DEEP=0 keeps two. NCW is not measured and keeps two.
  if (!ncw && q.nstage == 2 && stage_bytes * 2 <= budgets[0] && stage_bytes * 3 <= budgets[1] &&
      env_int("JAX_CONV1D_DWBWD_DEEP", 1) != 0)
    q.nstage = 3;
  q.slide_runs = (!ncw && s == 1 && q.bt % (4 * d) == 0) ? static_cast<int>(q.bt / (4 * d)) : 0;
#ifdef JC_DW_FUSED_NO_SLIDE  // benchmark-only build of the per-tap variant, for A/B timing
  q.slide_runs = 0;
#endif
  // The sliding kernel holds a third register array (the window): taps x vec must stay at 16 or below, so
  // with 16 taps it takes one channel per thread, which a multiplier (m channels per thread) rules out.
  if (kt * mult > 16) q.slide_runs = 0;
  q.exact_taps = K == kt && env_int("JAX_CONV1D_DWBWD_EXACT", 1) != 0;
  // NWC: the channel blocks of a split launch together, so each wave reads and writes whole rows (session 8:
  // depthwise_tcn's kernel 2.45 -> 2.39 ms, mamba_dw_causal's 0.199 -> 0.189). NCW keeps split-fastest
  // (not measured).
  q.cb_fastest = env_int("JAX_CONV1D_DWBWD_ORDER", ncw ? 0 : 1) == 1;
  const bool rows = !ncw && env_int("JAX_CONV1D_DWBWD_ROWS", 1) != 0;
  q.rows_dy_log2 = rows ? rows_log2(q.cb, q.vec_dy, sz) : -1;
  q.rows_x_log2 = rows ? rows_log2(x_lines, q.vec_x, sz) : -1;
  q.vec = (q.slide_runs > 0 && var.vec > mult) ? std::max(mult, std::min(var.vec, 16 / kt)) : var.vec;
  const int cgroups = q.cb / q.vec, pgroups = kThreads / cgroups;
  // Runs of 8 halve the window preloads per position where the tile still gives every position group a run.
  const bool run8 = env_int("JAX_CONV1D_DWBWD_RUN", 4) == 8 && q.bt % (8 * d) == 0 && q.bt / 8 >= pgroups;
  q.run_len = run8 ? 8 : 4;
  q.merged_runs = q.slide_runs > 0 ? static_cast<int>(q.bt / (q.run_len * d)) : 0;
  for (int m = 0; m < kt; ++m) {
    const int kx = m - (kt - K), kdy = kt - 1 - m;  // the taps slot m holds in the x and dy windows
    q.slide_x[m] = kx >= 0 ? static_cast<int>(kx * d) : 0;
    q.slide_dy[m] = kdy < K ? q.halo - static_cast<int>(kdy * d) : 0;
  }
  // 32-bit offsets inside a tile's dx positions.
  if (int64_t(q.bt) * s * std::abs(p.x_l) >= (int64_t(1) << 30)) return false;
  const size_t reduce_bytes = want_dwdb ? size_t(pgroups) * q.cb * (K + 1) * sizeof(float) : 0;
  *smem_bytes = std::max(stage_bytes * q.nstage, reduce_bytes);
  if (*smem_bytes > static_cast<size_t>(device_limits().smem_optin)) return false;
  q.c_blocks = static_cast<int>(ceil_div(p.out_channels, q.cb));
  if (q.c_blocks > 65535) return false;
  // u covers the t range [0, Lout) for dw/db and the q range of dx.
  int64_t u_lo = want_dwdb ? 0 : ph.q_lo, u_hi = want_dwdb ? p.out_length : ph.q_lo + ph.q_count;
  if (want_dx) u_lo = std::min(u_lo, ph.q_lo), u_hi = std::max(u_hi, ph.q_lo + ph.q_count);
  q.u_lo = u_lo;
  const int64_t t_units = ceil_div(u_hi - u_lo, q.bt);
  if (t_units > 0x7fffffff) return false;
  q.t_units = static_cast<int>(t_units);
  q.units = p.batch * q.t_units;
  return q.units < (int64_t(1) << 31);
}

// Splits of the (n, tile) range: the fewest that keep every block slot busy, judged by the busiest slot's
// units (rounds of blocks times units per block, each block charged `fill` extra units for its pipeline fill
// and final reduction); at most `max_splits`.
inline int choose_splits(const FusedPlan& q, size_t smem, int64_t max_splits) {
  const int64_t fill = std::max(0, env_int("JAX_CONV1D_DWBWD_FILL", 0));
  const int per_sm = std::max<int>(1, std::min<int>(2, static_cast<int>((228 * 1024) / (smem + 1024))));
  const int64_t slots = int64_t(device_limits().sms) * per_sm;
  const int64_t limit = std::min<int64_t>({max_splits, q.units, 65535, std::max<int64_t>(1, 8 * slots / q.c_blocks)});
  int best = 1;
  int64_t best_cost = INT64_MAX;
  for (int64_t sp = 1; sp <= limit; ++sp) {
    const int64_t rounds = ceil_div(sp * q.c_blocks, slots);
    const int64_t cost = rounds * (ceil_div(q.units, sp) + fill);
    if (cost < best_cost) best_cost = cost, best = static_cast<int>(sp);
  }
  return best;
}

}  // namespace

template <typename T>
cudaError_t conv1d_bwd_depthwise_cuda(const Conv1dParams& p, const T* x, const T* dy, const T* w, T* dx, T* dw,
                                      T* db, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  const bool want_dx = dx != nullptr, want_dwdb = dw != nullptr || db != nullptr;
  FusedPlan q;
  size_t smem = 0;
  if (!make_plan<T>(p, want_dx, want_dwdb, &q, &smem)) return cudaErrorNotSupported;
  const int64_t per_split = (p.kernel_size + 1) * p.out_channels * int64_t(sizeof(float));
  int64_t max_splits = 65535;
  if (want_dwdb) {
    max_splits = static_cast<int64_t>(std::min(scratch_bytes, kScratchCap)) / per_split;
    if (scratch == nullptr || max_splits < 1) return cudaErrorNotSupported;
  }
  q.splits = choose_splits(q, smem, max_splits);
  q.partials = static_cast<float*>(scratch);
  const int taps = pick_variant<T>(p, q.mult).taps;
  cudaError_t err = q.mult == 1 ? launch_taps<T, 1>(q, taps, smem, x, dy, w, dx, stream)
                                : launch_taps_mult2<T>(q, taps, smem, x, dy, w, dx, stream);
  if (err != cudaSuccess || !want_dwdb) return err;
  const int64_t total = (p.kernel_size + 1) * p.out_channels;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(total, kThreads), 4096));
  bwd_depthwise_sum_kernel<T><<<blocks, kThreads, 0, stream>>>(q.partials, q.splits, p, dw, db);
  return cudaGetLastError();
}

template <typename T>
size_t conv1d_bwd_depthwise_scratch_bytes(const Conv1dParams& p) {
  FusedPlan q;
  size_t smem = 0;
  if (!make_plan<T>(p, true, true, &q, &smem)) return 0;
  const size_t per_split = size_t(p.kernel_size + 1) * p.out_channels * sizeof(float);
  const int64_t max_splits = static_cast<int64_t>(kScratchCap / per_split);
  if (max_splits < 1) return 0;
  return size_t(choose_splits(q, smem, max_splits)) * per_split;
}

#define JC_INSTANTIATE(T)                                                                                       \
  template cudaError_t conv1d_bwd_depthwise_cuda<T>(const Conv1dParams&, const T*, const T*, const T*, T*, T*, \
                                                    T*, void*, size_t, cudaStream_t);                          \
  template size_t conv1d_bwd_depthwise_scratch_bytes<T>(const Conv1dParams&);
JC_INSTANTIATE(float)
JC_INSTANTIATE(__nv_bfloat16)
JC_INSTANTIATE(__half)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cuda