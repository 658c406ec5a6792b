// Forward pass for grouped convolutions with few channels per group (Og <= 32 outputs per group; the default
// dispatch sends it the shapes of grouped_small_preferred below). The tensor-core implicit GEMM pads such
// groups into 64- or 128-wide tiles and wastes most of its work; here the work is a few FMAs per byte moved,
// so the kernel is built around reading x once.
//
// A block owns one batch row, `gb` consecutive groups and a tile of output positions. It copies the input
// window of those groups' channels into shared memory (16-byte cp.async where rows are aligned, zero fill
// for padding) and the groups' weights as float, then each thread computes all Og outputs of one group at P
// positions from registers: every x value read from shared memory feeds Og FMAs and every weight P FMAs.
// Sums run over c then k in a fixed order in fp32, so results are bitwise reproducible.
//   NCW: gb = 1; the 256 threads are positions (lane i owns t0+i, t0+i+256, ...), so shared-memory reads are
//        consecutive across a warp, weights are broadcasts, and each output row is stored coalesced.
//   NWC: the window keeps x's (position, channel) order; threads vary fastest over the block's groups, so a
//        warp's stores cover whole output rows (o contiguous) and its shared-memory reads spread over banks.
// Og that is not a power of two runs in the next instantiation up with zero weights in the spare slots.
#include <algorithm>
#include <cstdint>

#include "fwd_common.cuh"
#include "fwd_kernels.h"

namespace jax_conv1d::cuda {

namespace {

constexpr int kGsThreads = 256;
constexpr int kGsMaxTaps = 1024;      // Cg * K the kernel takes (weights in shared memory)
constexpr int kGsMaxSmem = 96 * 1024;  // window + weights; larger windows (huge dilations) decline

struct GsArgs {
  Conv1dParams p;
  const void* x;
  const void* w;
  const void* bias;
  void* y;
  int gb;            // groups per block (NCW: 1)
  int lanes;         // position lanes: kGsThreads / gb
  int bt;            // output positions per tile: lanes * P
  int win;           // input positions a tile reads: (bt-1)*stride + (K-1)*dilation + 1
  int xs_c, xs_l;    // shared-memory element strides of the window: channel, position
  int xs_elems;      // window elements (16-byte multiple)
  int w_pitch;       // floats per group in the shared weights
  int64_t t_tiles, g_blocks;
  bool vec_x;        // 16-byte window copies
  int y_pack;        // NWC: outputs per store (1, 2 or a 16-byte vector)
};

// The window of channels [c0, c0 + cb) and input positions [l0, l0 + win) into shared memory. NCW rows start
// at the 16-byte boundary at or before l0 (returned shift: where l0 lands in the row), so every vector is
// either wholly inside [0, L) or wholly padding.
template <typename T>
__device__ __forceinline__ int copy_window(T* xs, const T* x, const GsArgs& a, int64_t n, int64_t c0, int cb,
                                           int64_t l0) {
  constexpr int V = vec_width<T>();
  const Conv1dParams& p = a.p;
  const T* xn = x + n * p.x_n;
  const int tid = threadIdx.x;
  if (p.layout == Layout::kNCW) {
    const int64_t la = a.vec_x ? floor_div(l0, V) * V : l0;
    const int shift = int(l0 - la);
    if (a.vec_x) {
      const int nv = (shift + a.win + V - 1) / V;
      for (int i = tid; i < cb * nv; i += kGsThreads) {
        const int c = i / nv, v = i - c * nv;
        const int64_t l = la + int64_t(v) * V;
        const bool ok = l >= 0 && l < p.in_length;
        cp_async_16(xs + c * a.xs_c + v * V, ok ? xn + (c0 + c) * p.x_c + l : x, ok);
      }
    } else {
      for (int i = tid; i < cb * a.win; i += kGsThreads) {
        const int c = i / a.win, r = i - c * a.win;
        const int64_t l = l0 + r;
        const bool ok = l >= 0 && l < p.in_length;
        copy_elem(xs + c * a.xs_c + r, ok ? xn + (c0 + c) * p.x_c + l : x, ok);
      }
    }
    return shift;
  }
  if (a.vec_x) {  // NWC, channels vector-aligned: a.xs_l is cb rounded up to V, still inside the row
    const int vpr = a.xs_l / V;
    for (int i = tid; i < a.win * vpr; i += kGsThreads) {
      const int r = i / vpr, v = i - r * vpr;
      const int64_t l = l0 + r;
      // The last block's groups may end before the window's vector-rounded width.
      const bool ok = l >= 0 && l < p.in_length && c0 + v * V < p.in_channels;
      cp_async_16(xs + r * a.xs_l + v * V, ok ? xn + l * p.x_l + c0 + v * V : x, ok);
    }
  } else {
    for (int i = tid; i < a.win * cb; i += kGsThreads) {
      const int r = i / cb, c = i - r * cb;
      const int64_t l = l0 + r;
      const bool ok = l >= 0 && l < p.in_length;
      copy_elem(xs + r * a.xs_l + c, ok ? xn + l * p.x_l + c0 + c : x, ok);
    }
  }
  return 0;
}

// OG weights of one (c, k) from shared memory, in 16-, 8- or 4-byte reads.
template <int OG>
__device__ __forceinline__ void load_weights(const float* src, float (&wv)[OG]) {
  if constexpr (OG % 4 == 0) {
#pragma unroll
    for (int o = 0; o < OG; o += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + o);
      wv[o] = v.x, wv[o + 1] = v.y, wv[o + 2] = v.z, wv[o + 3] = v.w;
    }
  } else if constexpr (OG == 2) {
    const float2 v = *reinterpret_cast<const float2*>(src);
    wv[0] = v.x, wv[1] = v.y;
  } else {
    wv[0] = src[0];
  }
}

template <typename T, typename TOut, int OG, int P>
__global__ void __launch_bounds__(kGsThreads) conv1d_fwd_grouped_small(const GsArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const Conv1dParams& p = a.p;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ w = static_cast<const T*>(a.w);
  const T* __restrict__ bias = static_cast<const T*>(a.bias);
  TOut* __restrict__ y = static_cast<TOut*>(a.y);
  T* xs = reinterpret_cast<T*>(smem_raw);
  float* ws = reinterpret_cast<float*>(smem_raw + size_t(a.xs_elems) * sizeof(T));

  const int64_t tt = blockIdx.x % a.t_tiles;
  const int64_t rest = blockIdx.x / a.t_tiles;
  const int64_t gblk = rest % a.g_blocks, n = rest / a.g_blocks;
  const int cg = int(p.in_per_group()), og = int(p.out_per_group()), K = int(p.kernel_size);
  const int64_t g0 = gblk * a.gb;
  const int gcount = int(std::min<int64_t>(a.gb, p.groups - g0));
  const int64_t t0 = tt * a.bt;
  const int shift = copy_window(xs, x, a, n, g0 * cg, gcount * cg, t0 * p.stride - p.pad_lo);
  cp_async_commit();

  // Weights as float, [group][c][k][o] with OG slots per (c, k); the spare slots past og are zeros.
  const int taps = cg * K;
  for (int i = threadIdx.x; i < gcount * taps * OG; i += kGsThreads) {
    const int o = i % OG, j = i / OG;
    const int gl = j / taps, ck = j - gl * taps, c = ck / K, k = ck - c * K;
    float v = 0.f;
    if (o < og) v = to_acc(w[((g0 + gl) * og + o) * p.w_o + c * p.w_c + k * p.w_k]);
    ws[gl * a.w_pitch + ck * OG + o] = v;
  }
  cp_async_wait<0>();
  __syncthreads();

  const int gl = p.layout == Layout::kNCW ? 0 : threadIdx.x % a.gb;
  const int lane_pos = p.layout == Layout::kNCW ? threadIdx.x : threadIdx.x / a.gb;
  if (gl >= gcount || lane_pos >= a.lanes) return;

  const int s = int(p.stride), d = int(p.dilation);
  const int step = a.lanes * s * a.xs_l;  // between this thread's positions, in window elements
  const T* xg = xs + gl * cg * a.xs_c + (shift + lane_pos * s) * a.xs_l;
  const float* wg = ws + gl * a.w_pitch;
  float acc[P][OG];
#pragma unroll
  for (int i = 0; i < P; ++i)
#pragma unroll
    for (int o = 0; o < OG; ++o) acc[i][o] = 0.f;
  for (int c = 0; c < cg; ++c) {
    const T* xc = xg + c * a.xs_c;
    const float* wc = wg + c * K * OG;
    for (int k = 0; k < K; ++k) {
      float wv[OG];
      load_weights<OG>(wc + k * OG, wv);
      const T* xk = xc + k * d * a.xs_l;
#pragma unroll
      for (int i = 0; i < P; ++i) {
        const float xv = to_acc(xk[i * step]);
#pragma unroll
        for (int o = 0; o < OG; ++o) acc[i][o] = fmaf(wv[o], xv, acc[i][o]);
      }
    }
  }

  const int64_t g = g0 + gl;
  float bv[OG];
#pragma unroll
  for (int o = 0; o < OG; ++o) bv[o] = (bias != nullptr && o < og) ? to_acc(bias[g * og + o]) : 0.f;
  TOut* yg = y + n * p.y_n + g * og * p.y_o;
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int64_t t = t0 + lane_pos + int64_t(i) * a.lanes;
    if (t >= p.out_length) break;
    float v[OG];
#pragma unroll
    for (int o = 0; o < OG; ++o) v[o] = acc[i][o] + bv[o];
    TOut* yt = yg + t * p.y_t;
    constexpr int kVec = 16 / int(sizeof(TOut));
    if constexpr (OG % kVec == 0) {
      if (a.y_pack == kVec) {
        store_out_vec<TOut, OG>(yt, v);
        continue;
      }
    }
    if constexpr (OG % 2 == 0) {
      if (a.y_pack == 2) {
#pragma unroll
        for (int o = 0; o < OG; o += 2) store_out2<TOut>(yt + o, v[o], v[o + 1]);
        continue;
      }
    }
#pragma unroll
    for (int o = 0; o < OG; ++o)
      if (o < og) store_out<TOut>(yt + o * p.y_o, v[o]);
  }
}

template <typename T, typename TOut, int OG, int P>
bool launch(GsArgs a, int64_t blocks, size_t smem, cudaStream_t stream, cudaError_t* err) {
  auto kernel = conv1d_fwd_grouped_small<T, TOut, OG, P>;
  a.bt = a.lanes * P;
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) != cudaSuccess)
    return false;
  kernel<<<unsigned(blocks), kGsThreads, smem, stream>>>(a);
  *err = cudaGetLastError();
  return true;
}

int pow2_floor(int64_t v) {
  int r = 1;
  while (int64_t(r) * 2 <= v) r *= 2;
  return r;
}

int round_up(int v, int m) { return (v + m - 1) / m * m; }

// Positions per thread for OG outputs per position: about 32 accumulators a thread.
constexpr int positions_for(int og) { return og >= 32 ? 1 : og >= 16 ? 2 : og >= 8 ? 4 : 8; }

// Sizes the window and weights for gb groups per block; false if the window is far too large to consider.
template <typename T>
bool size_blocks(GsArgs& a, int gb, int positions, bool aligned, size_t* smem) {
  constexpr int V = vec_width<T>();
  const Conv1dParams& p = a.p;
  const int cg = int(p.in_per_group()), K = int(p.kernel_size);
  a.gb = gb;
  a.lanes = kGsThreads / gb;
  a.bt = a.lanes * positions;
  const int64_t span = int64_t(a.bt - 1) * p.stride + int64_t(K - 1) * p.dilation + 1;
  if (span > (1 << 20)) return false;
  a.win = int(span);
  const int cb = gb * cg;  // channels in a block's window
  int64_t elems;
  if (p.layout == Layout::kNCW) {
    a.vec_x = aligned && p.in_length % V == 0;
    const int row = a.vec_x ? round_up(a.win + V - 1, V) : a.win;
    a.xs_c = row, a.xs_l = 1;
    elems = int64_t(cb) * row;
  } else {
    a.vec_x = aligned && p.in_channels % V == 0 && cb % V == 0;
    a.xs_c = 1, a.xs_l = a.vec_x ? round_up(cb, V) : cb;
    elems = int64_t(a.win) * a.xs_l;
  }
  if (elems > (int64_t(1) << 24)) return false;  // far past any shared memory; keeps the int offsets exact
  a.xs_elems = round_up(int(elems), V);
  *smem = size_t(a.xs_elems) * sizeof(T) + size_t(gb) * a.w_pitch * sizeof(float);
  return true;
}

}  // namespace

bool grouped_small_fits(const Conv1dParams& p) {
  const int64_t cg = p.in_per_group(), og = p.out_per_group();
  return og >= 1 && og <= 32 && cg >= 1 && cg * p.kernel_size <= kGsMaxTaps;
}

// From same-process A/B timings against the implicit GEMM on an H100 (docs/notes/sweepfwd_session4.md). The
// kernel is bound by instruction issue, not bytes, so the rule bounds the FMAs per byte moved: NCW won at every
// measured point up to Cg * K = 128 and 10.7 FMAs per byte; NWC (whose shared-memory reads conflict when the
// block's rows are a multiple of 128 bytes) won up to 8.0 and lost from 9.6, and lost with Og = 32 and with
// Cg * K = 96 and 128. Outside the measured region the implicit GEMM keeps the shape.
bool grouped_small_preferred(const Conv1dParams& p, int in_bytes, int out_bytes) {
  if (!grouped_small_fits(p) || p.groups < 2 || p.in_per_group() < 2) return false;
  const bool ncw = p.layout == Layout::kNCW;
  const int64_t taps = p.in_per_group() * p.kernel_size;
  if (taps > (ncw ? 128 : 64) || p.out_per_group() > (ncw ? 32 : 16)) return false;
  const double fmas = double(p.y_size()) * double(taps);
  const double bytes = double(p.x_size()) * in_bytes + double(p.y_size()) * out_bytes;
  return fmas <= (ncw ? 11.0 : 9.0) * bytes;
}

template <typename T, typename TOut>
bool conv1d_fwd_grouped_small(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y,
                              cudaStream_t stream, cudaError_t* err) {
  if (!grouped_small_fits(p) || p.out_length <= 0) return false;
  if (p.stride > (1 << 16) || p.dilation > (1 << 20)) return false;  // window offsets are 32-bit
  const int cg = int(p.in_per_group()), og = int(p.out_per_group()), K = int(p.kernel_size);
  const int OG = og <= 1 ? 1 : og <= 2 ? 2 : og <= 4 ? 4 : og <= 8 ? 8 : og <= 16 ? 16 : 32;
  const int P = positions_for(OG);
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;

  GsArgs a{};
  a.p = p, a.x = x, a.w = w, a.bias = bias, a.y = y;
  // Groups sit an odd number of weight reads apart, so the block's groups read different banks (NWC).
  const int unit = std::min(OG, 4);
  a.w_pitch = cg * K * OG;
  if ((a.w_pitch / unit) % 2 == 0) a.w_pitch += unit;
  // NCW: one group per block. NWC: as many groups as fit, at most one per warp lane; the more groups, the
  // wider the window rows and the warp's output rows.
  const size_t smem_limit = std::min<size_t>(kGsMaxSmem, size_t(device_limits().smem_optin));
  int gb = p.layout == Layout::kNCW ? 1 : std::min(pow2_floor(p.groups), 32);
  size_t smem = 0;
  for (;; gb /= 2) {
    const bool sized = size_blocks<T>(a, gb, P, aligned, &smem);
    if (sized && smem <= smem_limit) break;
    if (gb == 1) return false;
  }

  a.y_pack = 1;
  if (p.layout == Layout::kNWC && og == OG) {
    const uintptr_t ya = reinterpret_cast<uintptr_t>(y);
    const int vec_out = 16 / int(sizeof(TOut));
    if (og % vec_out == 0 && p.out_channels % vec_out == 0 && ya % 16 == 0) a.y_pack = vec_out;
    else if (og % 2 == 0 && p.out_channels % 2 == 0 && ya % (2 * sizeof(TOut)) == 0) a.y_pack = 2;
  }

  a.t_tiles = ceil_div(p.out_length, a.bt);
  a.g_blocks = ceil_div(p.groups, a.gb);
  const int64_t blocks = p.batch * a.g_blocks * a.t_tiles;
  if (blocks > (int64_t(1) << 31) - 1) return false;
  switch (OG) {
    case 1: return launch<T, TOut, 1, positions_for(1)>(a, blocks, smem, stream, err);
    case 2: return launch<T, TOut, 2, positions_for(2)>(a, blocks, smem, stream, err);
    case 4: return launch<T, TOut, 4, positions_for(4)>(a, blocks, smem, stream, err);
    case 8: return launch<T, TOut, 8, positions_for(8)>(a, blocks, smem, stream, err);
    case 16: return launch<T, TOut, 16, positions_for(16)>(a, blocks, smem, stream, err);
    default: return launch<T, TOut, 32, positions_for(32)>(a, blocks, smem, stream, err);
  }
}

#define JC_INSTANTIATE(T, TOUT)                                                                              \
  template bool conv1d_fwd_grouped_small<T, TOUT>(const Conv1dParams&, const T*, const T*, const T*, TOUT*, \
                                                  cudaStream_t, cudaError_t*);
JC_INSTANTIATE(float, float)
JC_INSTANTIATE(__nv_bfloat16, __nv_bfloat16)
JC_INSTANTIATE(__nv_bfloat16, float)
JC_INSTANTIATE(__half, __half)
JC_INSTANTIATE(__half, float)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cuda
