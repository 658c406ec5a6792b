// Weight gradient of depthwise convolutions (groups == C == O) on CUDA cores.
//
//   dw[c, k] = sum over (n, t) of dy[n, c, t] * x[n, c, t*stride + k*dilation - pad_lo]
//
// A weight of C*K elements against a reduction over N*Lout terms per element: the reduction is split over
// grid.x (contiguous ranges of (n, t-tile) units), channel blocks over grid.y. Tiles of dy and of the x
// positions the taps read stream through a cp.async pipeline; each thread keeps the K accumulators of one
// channel for its share of the positions. Threads sharing a channel are summed in a fixed order, and the
// splits' partials by wgrad_sum_splits in split order: deterministic, no atomics.
//
// Fusion: the dy tile staged here is the one the depthwise dgrad kernel reads (same segments, same layout),
// so a combined pass can compute dx from it before it is overwritten.
#include <algorithm>

#include "bwd_depthwise.h"
#include "conv1d_cuda.h"
#include "cp_async_tiles.cuh"
#include "cuda_types.cuh"
#include "smem_plan.cuh"
#include "wgrad_kernels.cuh"

namespace jax_conv1d::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxTaps = 16;

struct DwWgradParams {
  Conv1dParams p;
  int cb;               // channels per block: 64 (NWC, one per thread column) or 8 (NCW, one per warp)
  int bt;               // output positions per unit
  int64_t t_units, units;
  int splits, c_blocks, nstage;
  int nseg;
  int seg_src[kMaxTaps], seg_len[kMaxTaps], seg_base[kMaxTaps];  // x segments, as in the GEMM kernel
  int tap_pos[kMaxTaps];  // position of tap k's window in the x tile (segment start + offset)
  int tap_seg[kMaxTaps];
  int vec_x, vec_dy;
  int x_pitch, dy_pitch, x_elems, dy_elems;
  float* partials;
};

// kTaps >= K: the per-thread tap arrays stay in registers with fully unrolled, predicated loops.
template <typename T, int kTaps>
__global__ void __launch_bounds__(kThreads, 2) wgrad_depthwise_kernel(const DwWgradParams prm, const T* __restrict__ x,
                                                                   const T* __restrict__ dy, T* __restrict__ dw) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const smem = reinterpret_cast<T*>(smem_raw);
  const Conv1dParams& p = prm.p;
  const bool ncw = p.layout == Layout::kNCW;
  const int tid = threadIdx.x;
  const int K = static_cast<int>(p.kernel_size);
  const int s = static_cast<int>(p.stride);

  const int64_t c_first = int64_t(blockIdx.y) * prm.cb;
  const int c_valid = static_cast<int>(std::min<int64_t>(prm.cb, p.in_channels - c_first));
  // NWC: threads along channels (coalesced rows); NCW: one warp per channel, lanes along positions.
  const int groups_per_channel = ncw ? 32 : kThreads / prm.cb;
  const int c = ncw ? tid / 32 : tid % prm.cb;
  const int tg = ncw ? tid % 32 : tid / prm.cb;

  const int64_t u_begin = blockIdx.x * prm.units / prm.splits;
  const int64_t u_end = (blockIdx.x + 1) * prm.units / prm.splits;
  const int64_t count = u_end - u_begin;
  const int stage_elems = prm.dy_elems + prm.x_elems;

  auto load_unit = [&](int64_t u, int stage) {
    const uint32_t nn = static_cast<uint32_t>(u) / static_cast<uint32_t>(prm.t_units);  // units < 2^31
    const int64_t n = nn, t0 = int64_t(static_cast<uint32_t>(u) - nn * static_cast<uint32_t>(prm.t_units)) * prm.bt;
    T* dy_s = smem + stage * stage_elems;
    T* x_s = dy_s + prm.dy_elems;
    TileWindow wd;
    wd.offset = n * p.y_n + c_first * p.y_o + t0 * p.y_t;
    wd.line_stride = p.y_o;
    wd.pos_stride = p.y_t;
    wd.lines = prm.cb;
    wd.positions = prm.bt;
    wd.line_valid = c_valid;
    wd.pos_lo = 0;
    wd.pos_hi = p.out_length - t0;
    load_window(dy, wd, dy_s, prm.dy_pitch, prm.vec_dy, ncw, tid, kThreads);
    const int64_t l_base = t0 * p.stride - p.pad_lo;
    for (int j = 0; j < prm.nseg; ++j) {
      const int64_t ls = l_base + prm.seg_src[j];
      TileWindow wx;
      wx.offset = n * p.x_n + c_first * p.x_c + ls * p.x_l;
      wx.line_stride = p.x_c;
      wx.pos_stride = p.x_l;
      wx.lines = prm.cb;
      wx.positions = prm.seg_len[j];
      wx.line_valid = c_valid;
      wx.pos_lo = -ls;
      wx.pos_hi = p.in_length - ls;
      load_window(x, wx, x_s + prm.seg_base[j], prm.x_pitch, prm.vec_x, ncw, tid, kThreads);
    }
  };

  // Element strides inside the tiles: NCW rows are channels, NWC rows are positions.
  const int dy_c = ncw ? prm.dy_pitch : 1, dy_t = ncw ? 1 : prm.dy_pitch;
  const int x_c = ncw ? prm.x_pitch : 1, x_l = ncw ? 1 : prm.x_pitch;
  int tap_at[kTaps];
#pragma unroll
  for (int k = 0; k < kTaps; ++k) tap_at[k] = k < K ? prm.seg_base[prm.tap_seg[k]] + prm.tap_pos[k] * x_l + c * x_c : 0;

  float acc[kTaps];
#pragma unroll
  for (int k = 0; k < kTaps; ++k) acc[k] = 0.0f;

  auto compute_unit = [&](int64_t u, int stage) {
    const uint32_t nn = static_cast<uint32_t>(u) / static_cast<uint32_t>(prm.t_units);  // units < 2^31
    const int64_t n = nn, t0 = int64_t(static_cast<uint32_t>(u) - nn * static_cast<uint32_t>(prm.t_units)) * prm.bt;
    const T* dy_s = smem + stage * stage_elems;
    const T* x_s = dy_s + prm.dy_elems;
    int dy_at = c * dy_c, shift_dy = 0;
    int at[kTaps];
    if (ncw) {
      // Rows were copied from aligned-down starts; the loader's shift locates position 0.
      shift_dy = low_bits(n * p.y_n + (c_first)*p.y_o + t0, prm.vec_dy);
      const int64_t l_base = t0 * p.stride - p.pad_lo;
#pragma unroll
      for (int k = 0; k < kTaps; ++k)
        at[k] = k < K ? tap_at[k] + low_bits(n * p.x_n + c_first * p.x_c + l_base + prm.seg_src[prm.tap_seg[k]],
                                              prm.vec_x)
                      : 0;
    } else {
#pragma unroll
      for (int k = 0; k < kTaps; ++k) at[k] = tap_at[k];
    }
    dy_at += shift_dy;
    for (int t = tg; t < prm.bt; t += groups_per_channel) {
      const float g = to_acc(dy_s[dy_at + t * dy_t]);
      const int xt = t * s * x_l;
#pragma unroll
      for (int k = 0; k < kTaps; ++k)
        if (k < K) acc[k] = fmaf(g, to_acc(x_s[at[k] + xt]), acc[k]);
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
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory is reused below

  // Sum the threads that share a channel, in order of their position group.
  float* red = reinterpret_cast<float*>(smem_raw);  // [tg][c][k]
  const int cb = prm.cb;
#pragma unroll
  for (int k = 0; k < kTaps; ++k)
    if (k < K) red[(tg * cb + c) * K + k] = acc[k];
  __syncthreads();
  for (int e = tid; e < cb * K; e += kThreads) {
    const int cc = e / K, k = e - cc * K;
    if (cc >= c_valid) continue;
    float sum = 0.0f;
    for (int t = 0; t < groups_per_channel; ++t) sum += red[(t * cb + cc) * K + k];
    const int64_t idx = (c_first + cc) * p.w_o + k * p.w_k;
    if (prm.partials)
      prm.partials[blockIdx.x * p.w_size() + idx] = sum;
    else
      dw[idx] = from_acc<T>(sum);
  }
}

template <typename T>
bool make_plan(const Conv1dParams& p, DwWgradParams* out, size_t* smem_bytes) {
  constexpr int sz = sizeof(T);
  const int K = static_cast<int>(p.kernel_size);
  if (K > kMaxTaps || K < 1) return false;
  const bool ncw = p.layout == Layout::kNCW;
  DwWgradParams& q = *out;
  q = DwWgradParams{};
  q.p = p;
  q.cb = ncw ? kThreads / 32 : 64;
  q.vec_dy = ncw ? widest_vec(sz, {p.out_length}) : widest_vec(sz, {p.out_channels, q.cb});
  q.vec_x = ncw ? widest_vec(sz, {p.in_length}) : widest_vec(sz, {p.in_channels, q.cb});
  const int64_t s = p.stride, d = p.dilation;
  const size_t budget = std::min<size_t>(device_limits().smem_optin, 100 * 1024);  // two blocks per SM
  size_t stage_bytes = 0;
  q.nstage = 0;
  for (int bt : {256, 128, 64, 32}) {
    q.bt = bt;
    int64_t starts[kMaxTaps];
    for (int k = 0; k < K; ++k) starts[k] = k * d;
    TapSegments segs;
    if (!merge_tap_windows(starts, K, (bt - 1) * s + 1, &segs)) continue;
    q.nseg = segs.count;
    int64_t extent = 0;  // NCW: columns per channel row; NWC: position rows
    for (int j = 0; j < segs.count; ++j) {
      q.seg_src[j] = static_cast<int>(segs.start[j]);
      q.seg_len[j] = static_cast<int>(segs.length[j]);
      q.seg_base[j] = static_cast<int>(extent);
      extent += ncw ? round_up(segs.length[j] + q.vec_x - 1, q.vec_x) : segs.length[j];
    }
    for (int k = 0; k < K; ++k) {
      q.tap_seg[k] = segs.seg_of[k];
      q.tap_pos[k] = static_cast<int>(segs.offset[k]);
    }
    if (ncw) {
      // A warp reads one channel row at consecutive positions (x: stride s apart): no conflicts to avoid.
      q.dy_pitch = static_cast<int>(round_up(bt + q.vec_dy - 1, q.vec_dy));
      q.x_pitch = static_cast<int>(round_up(extent, q.vec_x));
      q.dy_elems = q.cb * q.dy_pitch;
      q.x_elems = q.cb * q.x_pitch;
    } else {
      // Lanes read consecutive channels of one row.
      q.dy_pitch = static_cast<int>(round_up(q.cb, q.vec_dy));
      q.x_pitch = static_cast<int>(round_up(q.cb, q.vec_x));
      q.dy_elems = bt * q.dy_pitch;
      q.x_elems = static_cast<int>(extent * q.x_pitch);
      for (int j = 0; j < segs.count; ++j) q.seg_base[j] *= q.x_pitch;
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
  const int groups_per_channel = ncw ? 32 : kThreads / q.cb;
  const size_t reduce_bytes = size_t(groups_per_channel) * q.cb * K * sizeof(float);
  *smem_bytes = std::max(stage_bytes * q.nstage, reduce_bytes);
  q.c_blocks = static_cast<int>(ceil_div(p.in_channels, q.cb));
  if (q.c_blocks > 65535) return false;
  q.t_units = ceil_div(p.out_length, q.bt);
  q.units = p.batch * q.t_units;
  return q.units < (int64_t(1) << 31);
}

// Enough blocks for a few per SM, no more than the workspace holds.
inline int choose_splits(const Conv1dParams& p, const DwWgradParams& q, size_t smem, size_t ws_bytes) {
  const int blocks_per_sm = std::max<int>(1, static_cast<int>(std::min<size_t>(8, 220 * 1024 / smem)));
  int64_t splits = std::max<int64_t>(1, int64_t(device_limits().sms) * blocks_per_sm / q.c_blocks);
  splits = std::min<int64_t>({splits, q.units, 65535});
  const size_t fit = ws_bytes / (sizeof(float) * p.w_size());
  if (static_cast<size_t>(splits) > fit) splits = static_cast<int64_t>(fit);
  return static_cast<int>(splits < 2 ? 1 : splits);
}

template <typename T>
cudaError_t wgrad_depthwise_impl(const Conv1dParams& p, const T* x, const T* dy, T* dw, WgradWorkspace ws,
                                 cudaStream_t stream) {
  DwWgradParams q;
  size_t smem = 0;
  if (!make_plan<T>(p, &q, &smem)) return cudaErrorNotSupported;
  q.splits = choose_splits(p, q, smem, ws.bytes);
  q.partials = q.splits > 1 ? static_cast<float*>(ws.ptr) : nullptr;
  const int K = static_cast<int>(p.kernel_size);
  auto kernel = K <= 4 ? wgrad_depthwise_kernel<T, 4>
                       : (K <= 8 ? wgrad_depthwise_kernel<T, 8> : wgrad_depthwise_kernel<T, kMaxTaps>);
  if (cudaError_t err = allow_dynamic_smem(kernel, smem); err != cudaSuccess) return err;
  kernel<<<dim3(q.splits, q.c_blocks), kThreads, smem, stream>>>(q, x, dy, dw);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess || q.splits == 1) return err;
  return wgrad_sum_splits<T>(q.partials, q.splits, p.w_size(), dw, stream);
}

}  // namespace

// The fused backward pass (bwd_depthwise_fused.cu) asked for dw alone is faster on every shape measured
// (docs/notes/dwbwd_session2.md); it needs scratch for its partials, so without any this kernel runs.
template <typename T>
cudaError_t wgrad_depthwise(const Conv1dParams& p, const T* x, const T* dy, T* dw, WgradWorkspace ws,
                            cudaStream_t stream) {
  const cudaError_t err =
      conv1d_bwd_depthwise_cuda<T>(p, x, dy, nullptr, nullptr, dw, nullptr, ws.ptr, ws.bytes, stream);
  if (err != cudaErrorNotSupported) return err;
  return wgrad_depthwise_impl<T>(p, x, dy, dw, ws, stream);
}

template <typename T>
size_t wgrad_depthwise_workspace(const Conv1dParams& p) {
  const size_t fused = conv1d_bwd_depthwise_scratch_bytes<T>(p);
  DwWgradParams q;
  size_t smem = 0;
  if (!make_plan<T>(p, &q, &smem)) return fused;
  const int splits = choose_splits(p, q, smem, SIZE_MAX);
  return std::max(fused, splits > 1 ? size_t(splits) * p.w_size() * sizeof(float) : 0);
}

template size_t wgrad_depthwise_workspace<float>(const Conv1dParams&);
template size_t wgrad_depthwise_workspace<__nv_bfloat16>(const Conv1dParams&);
template size_t wgrad_depthwise_workspace<__half>(const Conv1dParams&);
template cudaError_t wgrad_depthwise<float>(const Conv1dParams&, const float*, const float*, float*, WgradWorkspace,
                                            cudaStream_t);
template cudaError_t wgrad_depthwise<__nv_bfloat16>(const Conv1dParams&, const __nv_bfloat16*,
                                                    const __nv_bfloat16*, __nv_bfloat16*, WgradWorkspace,
                                                    cudaStream_t);
template cudaError_t wgrad_depthwise<__half>(const Conv1dParams&, const __half*, const __half*, __half*,
                                             WgradWorkspace, cudaStream_t);

}  // namespace jax_conv1d::cuda
