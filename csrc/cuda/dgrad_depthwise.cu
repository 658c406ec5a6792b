// Input gradient of depthwise convolutions (groups == C == O) on CUDA cores, by stride phase.
//
// One block per (batch row, channel block, tile of bq values of q): the dy positions its taps read (merged
// segments, see dgrad_phases.cuh) are copied into shared memory once, then each thread produces the dx
// positions q*s + r - pad of its channel for every residue r, summing only the taps of that residue. Each dx
// element is written once; residues no tap reaches get zeros.
#include <algorithm>

#include "bwd_depthwise.h"
#include "conv1d_cuda.h"
#include "cp_async_tiles.cuh"
#include "cuda_types.cuh"
#include "dgrad_kernels.cuh"
#include "dgrad_phases.cuh"
#include "smem_plan.cuh"

namespace jax_conv1d::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxTaps = StridePhases::kMaxTaps;

struct DwDgradParams {
  Conv1dParams p;
  int cb, bq;  // channels and q values per block
  int c_blocks;
  int64_t q_lo, q_tiles, units;
  int nseg;
  int seg_start[kMaxTaps], seg_len[kMaxTaps], seg_base[kMaxTaps];  // starts relative to the tile's q0
  int tap_seg[kMaxTaps], tap_pos[kMaxTaps], tap_r[kMaxTaps];       // indexed by tap k
  int vec_dy, dy_pitch;
};

// kTaps >= K: the per-thread tap arrays stay in registers with fully unrolled, predicated loops.
template <typename T, int kTaps>
__global__ void __launch_bounds__(kThreads, 2) dgrad_depthwise_kernel(const DwDgradParams prm, const T* __restrict__ dy,
                                                                   const T* __restrict__ w, T* __restrict__ dx) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const dy_s = reinterpret_cast<T*>(smem_raw);
  const Conv1dParams& p = prm.p;
  const bool ncw = p.layout == Layout::kNCW;
  const int tid = threadIdx.x;
  const int K = static_cast<int>(p.kernel_size), s = static_cast<int>(p.stride);

  int64_t u = blockIdx.x;
  const int64_t qt = u % prm.q_tiles;
  u /= prm.q_tiles;
  const int cblk = static_cast<int>(u % prm.c_blocks);
  const int64_t n = u / prm.c_blocks;
  const int64_t q0 = prm.q_lo + qt * prm.bq;
  const int64_t c_first = int64_t(cblk) * prm.cb;
  const int c_valid = static_cast<int>(std::min<int64_t>(prm.cb, p.in_channels - c_first));

  for (int j = 0; j < prm.nseg; ++j) {
    const int64_t t_start = q0 + prm.seg_start[j];
    TileWindow wd;
    wd.offset = n * p.y_n + c_first * p.y_o + t_start * p.y_t;
    wd.line_stride = p.y_o;
    wd.pos_stride = p.y_t;
    wd.lines = prm.cb;
    wd.positions = prm.seg_len[j];
    wd.line_valid = c_valid;
    wd.pos_lo = -t_start;
    wd.pos_hi = p.out_length - t_start;
    load_window(dy, wd, dy_s + (ncw ? prm.seg_base[j] : prm.seg_base[j] * prm.dy_pitch), prm.dy_pitch, prm.vec_dy,
                ncw, tid, kThreads);
  }
  cp_async_commit();

  // NWC: threads along channels; NCW: each channel row is shared by kThreads / cb threads along q.
  const int threads_per_c = kThreads / prm.cb;
  const int c = ncw ? tid / threads_per_c : tid % prm.cb;
  const int qg = ncw ? tid % threads_per_c : tid / prm.cb;
  const bool c_ok = c < c_valid;
  const int64_t cc = c_first + (c_ok ? c : 0);

  float wk[kTaps];
  int at[kTaps], tr[kTaps];
  const int b_q = ncw ? 1 : prm.dy_pitch;
#pragma unroll
  for (int k = 0; k < kTaps; ++k) {
    wk[k] = k < K ? to_acc(w[cc * p.w_o + k * p.w_k]) : 0.0f;
    tr[k] = k < K ? prm.tap_r[k] : -1;
    if (k < K) {
      const int j = prm.tap_seg[k];
      if (ncw) {
        const int shift = low_bits(n * p.y_n + c_first * p.y_o + q0 + prm.seg_start[j], prm.vec_dy);
        at[k] = c * prm.dy_pitch + prm.seg_base[j] + shift + prm.tap_pos[k];
      } else {
        at[k] = (prm.seg_base[j] + prm.tap_pos[k]) * prm.dy_pitch + c;
      }
    } else {
      at[k] = 0;
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  if (!c_ok) return;

  T* const dx_c = dx + n * p.x_n + cc * p.x_c;
  for (int ql = qg; ql < prm.bq; ql += threads_per_c) {
    const int64_t l_first = (q0 + ql) * s - p.pad_lo;
    const int off = ql * b_q;
    for (int r = 0; r < s; ++r) {
      const int64_t l = l_first + r;
      if (l < 0 || l >= p.in_length) continue;
      float acc = 0.0f;
#pragma unroll
      for (int k = 0; k < kTaps; ++k)
        if (tr[k] == r) acc = fmaf(wk[k], to_acc(dy_s[at[k] + off]), acc);
      dx_c[l * p.x_l] = from_acc<T>(acc);
    }
  }
}

template <typename T>
cudaError_t dgrad_depthwise_impl(const Conv1dParams& p, const T* dy, const T* w, T* dx, cudaStream_t stream) {
  constexpr int sz = sizeof(T);
  StridePhases ph;
  if (!make_stride_phases(p, &ph)) return cudaErrorNotSupported;
  const bool ncw = p.layout == Layout::kNCW;
  DwDgradParams q{};
  q.p = p;
  q.cb = ncw ? 4 : 64;
  q.vec_dy = ncw ? widest_vec(sz, {p.out_length}) : widest_vec(sz, {p.out_channels, q.cb});
  for (int j = 0; j < ph.taps; ++j) q.tap_r[ph.tap_k[j]] = static_cast<int>((ph.tap_k[j] * p.dilation) % p.stride);
  const size_t budget = std::min<size_t>(device_limits().smem_optin, 64 * 1024);
  size_t smem = 0;
  for (int bq : {ncw ? 256 : 128, 64, 32}) {
    TapSegments segs;
    int seg_of[kMaxTaps];
    int64_t off[kMaxTaps];
    if (!dy_segments(ph, bq, &segs, seg_of, off)) continue;
    q.bq = bq;
    q.nseg = segs.count;
    int64_t extent = 0;
    for (int j = 0; j < segs.count; ++j) {
      q.seg_start[j] = static_cast<int>(segs.start[j]);
      q.seg_len[j] = static_cast<int>(segs.length[j]);
      q.seg_base[j] = static_cast<int>(extent);
      extent += ncw ? round_up(segs.length[j] + q.vec_dy - 1, q.vec_dy) : segs.length[j];
    }
    for (int j = 0; j < ph.taps; ++j) {
      q.tap_seg[ph.tap_k[j]] = seg_of[j];
      q.tap_pos[ph.tap_k[j]] = static_cast<int>(off[j]);
    }
    q.dy_pitch = static_cast<int>(ncw ? round_up(extent, q.vec_dy) : round_up(q.cb, q.vec_dy));
    smem = size_t(ncw ? q.cb * q.dy_pitch : extent * q.dy_pitch) * sz;
    if (smem <= budget) break;
    smem = 0;
  }
  if (smem == 0) return cudaErrorNotSupported;
  q.c_blocks = static_cast<int>(ceil_div(p.in_channels, q.cb));
  q.q_lo = ph.q_lo;
  q.q_tiles = ceil_div(ph.q_count, q.bq);
  q.units = p.batch * q.c_blocks * q.q_tiles;
  if (q.units > 0x7fffffff) return cudaErrorNotSupported;
  const int K = static_cast<int>(p.kernel_size);
  auto kernel = K <= 4 ? dgrad_depthwise_kernel<T, 4>
                       : (K <= 8 ? dgrad_depthwise_kernel<T, 8> : dgrad_depthwise_kernel<T, kMaxTaps>);
  if (cudaError_t err = allow_dynamic_smem(kernel, smem); err != cudaSuccess) return err;
  kernel<<<static_cast<unsigned>(q.units), kThreads, smem, stream>>>(q, dy, w, dx);
  return cudaGetLastError();
}

}  // namespace

// The fused backward pass (bwd_depthwise_fused.cu) asked for dx alone is faster on every shape measured
// (docs/notes/dwbwd_session2.md); this kernel remains for the shapes it does not cover.
template <typename T>
cudaError_t dgrad_depthwise(const Conv1dParams& p, const T* dy, const T* w, T* dx, cudaStream_t stream) {
  const cudaError_t err =
      conv1d_bwd_depthwise_cuda<T>(p, nullptr, dy, w, dx, nullptr, nullptr, nullptr, 0, stream);
  if (err != cudaErrorNotSupported) return err;
  return dgrad_depthwise_impl<T>(p, dy, w, dx, stream);
}

template cudaError_t dgrad_depthwise<float>(const Conv1dParams&, const float*, const float*, float*, cudaStream_t);
template cudaError_t dgrad_depthwise<__nv_bfloat16>(const Conv1dParams&, const __nv_bfloat16*, const __nv_bfloat16*,
                                                    __nv_bfloat16*, cudaStream_t);
template cudaError_t dgrad_depthwise<__half>(const Conv1dParams&, const __half*, const __half*, __half*, cudaStream_t);

}  // namespace jax_conv1d::cuda
