// Weight gradient: the dispatcher, the split-sum second stage, and the direct kernel every shape can fall
// back to.
//
// Order: depthwise (groups == C == O) -> wgrad_depthwise; depthwise with a channel multiplier (groups == C,
// O = m*C) -> the fused depthwise backward asked for dw (and db) alone (bwd_depthwise_fused.cu, m <= 2);
// everything else -> wgrad_implicit_gemm (tensor
// cores). A kernel that does not cover the shape answers cudaErrorNotSupported and the direct kernel runs.
// float64 always runs the direct kernel. The bias gradient (db not null) is fused into the implicit GEMM and
// a separate deterministic reduction (bias_grad) elsewhere.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "bwd_depthwise.h"
#include "conv1d_cuda.h"
#include "cuda_types.cuh"
#include "wgrad_kernels.cuh"

namespace jax_conv1d::cuda {

namespace {

constexpr int kThreads = 256;

// Direct form: one block per dw element reduces dy[n, o, t] * x[n, c, t*stride + k*dilation - pad_lo] over all
// (n, t). Each thread sums a fixed strided subset in float64 (the reduction can run to millions of terms) and
// the block combines them in a fixed tree, so results are bitwise reproducible and no atomics are used.
template <typename T>
__global__ void __launch_bounds__(kThreads) conv1d_wgrad_direct(Conv1dParams p, const T* __restrict__ x,
                                                                const T* __restrict__ dy, T* __restrict__ dw) {
  __shared__ double partial[kThreads];
  const int64_t cg = p.in_per_group(), og = p.out_per_group();
  const int64_t reduction = p.batch * p.out_length;
  for (int64_t e = blockIdx.x; e < p.w_size(); e += gridDim.x) {
    int64_t o, c, k;  // e runs over w in memory order
    if (p.layout == Layout::kNCW) {
      k = e % p.kernel_size, c = (e / p.kernel_size) % cg, o = e / (p.kernel_size * cg);
    } else {
      o = e % p.out_channels, c = (e / p.out_channels) % cg, k = e / (p.out_channels * cg);
    }
    const int64_t g = o / og;
    const int64_t off = k * p.dilation - p.pad_lo;
    double acc = 0.0;
    for (int64_t r = threadIdx.x; r < reduction; r += kThreads) {
      const int64_t t = r % p.out_length, n = r / p.out_length;
      const int64_t l = t * p.stride + off;
      if (l < 0 || l >= p.in_length) continue;
      acc += double(to_acc(dy[n * p.y_n + o * p.y_o + t * p.y_t])) *
             double(to_acc(x[n * p.x_n + (g * cg + c) * p.x_c + l * p.x_l]));
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) dw[e] = from_acc<T>(static_cast<acc_t<T>>(partial[0]));
    __syncthreads();  // partial[] is reused by the next element
  }
}

template <typename T>
cudaError_t wgrad_direct(const Conv1dParams& p, const T* x, const T* dy, T* dw, cudaStream_t stream) {
  const int64_t total = p.w_size();
  const int blocks = static_cast<int>(total < (1 << 20) ? total : (1 << 20));
  conv1d_wgrad_direct<T><<<blocks, kThreads, 0, stream>>>(p, x, dy, dw);
  return cudaGetLastError();
}

// Second stage of the split reductions: one thread per element adds the splits in order, in float64 (a few
// hundred float32 partials; the cost is nothing next to the first stage). Elements from `count` on go to out2
// (the bias gradient, whose partials follow the weight gradient's in each split), so both take one launch: a
// separate launch for WaveNet's 256 db elements took ~10 us per layer (one block of 132-load chains) after
// the 14 us of dw. The loads are unrolled ahead of the adds, which stay in split order (the same bits).
template <typename T>
__global__ void __launch_bounds__(kThreads) wgrad_sum_splits_kernel(const float* __restrict__ partials, int splits,
                                                                    int64_t split_stride, int64_t count,
                                                                    T* __restrict__ out, int64_t count2,
                                                                    T* __restrict__ out2) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count + count2;
       e += int64_t(gridDim.x) * blockDim.x) {
    const float* src = partials + e;
    double sum = 0.0;
#pragma unroll 8
    for (int s = 0; s < splits; ++s) sum += src[s * split_stride];
    if (e < count)
      out[e] = from_acc<T>(static_cast<float>(sum));
    else
      out2[e - count] = from_acc<T>(static_cast<float>(sum));
  }
}

// Bias gradient, db[o] = sum over (n, t) of dy[n, o, t], for the families that do not fuse it. One block of
// kBiasThreads per 8 channels (NWC) or per channel (NCW); thread (channel lane, row lane) sums the (n, t) rows
// row lane, row lane + kRowLanes, ... in float64, and the block adds the row lanes in a fixed tree:
// deterministic, no atomics.
// NWC (channels contiguous): 8 channel lanes, so a warp reads 4 rows of 8 consecutive channels (whole 32-byte
// sectors for float32). NCW (positions contiguous): one channel per block, every lane on its own position.
constexpr int kBiasThreads = 1024;

template <typename T, bool kChannelsInner>
__global__ void __launch_bounds__(kBiasThreads) bias_grad_kernel(Conv1dParams p, const T* __restrict__ dy,
                                                                 T* __restrict__ db) {
  constexpr int kLanes = kChannelsInner ? 8 : 1;  // channels per block
  constexpr int kRowLanes = kBiasThreads / kLanes;
  __shared__ double partial[kBiasThreads];
  const int ch = threadIdx.x % kLanes, row = threadIdx.x / kLanes;
  const int64_t o = int64_t(blockIdx.x) * kLanes + ch;
  double acc = 0.0;
  if (o < p.out_channels) {
    if constexpr (kChannelsInner) {
      const int64_t rows = p.batch * p.out_length;  // NWC: (n, t) rows are evenly spaced, y_n = T * y_t
      for (int64_t r = row; r < rows; r += kRowLanes) acc += double(to_acc(dy[r * p.y_t + o * p.y_o]));
    } else {
      for (int64_t n = 0; n < p.batch; ++n)
        for (int64_t t = row; t < p.out_length; t += kRowLanes)
          acc += double(to_acc(dy[n * p.y_n + o * p.y_o + t * p.y_t]));
    }
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kRowLanes / 2; s > 0; s >>= 1) {
    if (row < s) partial[threadIdx.x] += partial[threadIdx.x + s * kLanes];
    __syncthreads();
  }
  if (row == 0 && o < p.out_channels) db[o] = from_acc<T>(static_cast<acc_t<T>>(partial[ch]));
}

// JAX_CONV1D_TRACE_BWD set: each call names the kernel it ran on stderr (for checking the dispatch).
bool trace_dispatch() {
  static const bool on = std::getenv("JAX_CONV1D_TRACE_BWD") != nullptr;
  return on;
}

bool is_depthwise(const Conv1dParams& p) {
  return p.groups == p.in_channels && p.groups == p.out_channels;
}

}  // namespace

template <typename T>
cudaError_t wgrad_sum_splits_strided(const float* partials, int splits, int64_t split_stride, int64_t count, T* out,
                                     cudaStream_t stream, int64_t count2, T* out2) {
  if (out2 == nullptr) count2 = 0;
  if (count + count2 == 0) return cudaSuccess;
  wgrad_sum_splits_kernel<T><<<grid_for(count + count2, kThreads), kThreads, 0, stream>>>(
      partials, splits, split_stride, count, out, count2, out2);
  return cudaGetLastError();
}

template <typename T>
cudaError_t wgrad_sum_splits(const float* partials, int splits, int64_t w_size, T* dw, cudaStream_t stream) {
  return wgrad_sum_splits_strided<T>(partials, splits, w_size, w_size, dw, stream);
}

template <typename T>
cudaError_t bias_grad(const Conv1dParams& p, const T* dy, T* db, cudaStream_t stream) {
  if (p.out_channels == 0) return cudaSuccess;
  if (p.batch == 0 || p.out_length == 0) return cudaMemsetAsync(db, 0, p.out_channels * sizeof(T), stream);
  // NWC rows are evenly spaced only when y_n == T * y_t, which set_strides guarantees.
  const bool channels_inner = p.layout == Layout::kNWC && p.y_n == p.out_length * p.y_t;
  if (channels_inner) {
    const auto blocks = static_cast<unsigned>((p.out_channels + 7) / 8);
    bias_grad_kernel<T, true><<<blocks, kBiasThreads, 0, stream>>>(p, dy, db);
  } else {
    bias_grad_kernel<T, false><<<static_cast<unsigned>(p.out_channels), kBiasThreads, 0, stream>>>(p, dy, db);
  }
  return cudaGetLastError();
}

template <typename T>
size_t conv1d_wgrad_workspace_bytes(const Conv1dParams& p) {
  if constexpr (std::is_same_v<T, double>) {
    return 0;
  } else {
    if (p.w_size() == 0 || p.batch == 0 || p.out_length == 0) return 0;
    if (is_depthwise(p)) return wgrad_depthwise_workspace<T>(p);
    // With a multiplier the implicit GEMM is the fallback when the fused pass is granted too little scratch.
    if (depthwise_channel_multiplier(p) > 1)
      return std::max(conv1d_bwd_depthwise_scratch_bytes<T>(p), wgrad_implicit_gemm_workspace<T>(p));
    return wgrad_implicit_gemm_workspace<T>(p);
  }
}

template <typename T>
cudaError_t conv1d_wgrad_cuda(const Conv1dParams& p, const T* x, const T* dy, T* dw, T* db, const WgradWorkspace& ws,
                              cudaStream_t stream) {
  if (p.w_size() == 0) return db ? bias_grad<T>(p, dy, db, stream) : cudaSuccess;
  if (p.batch == 0 || p.out_length == 0) {
    if (db)
      if (cudaError_t err = cudaMemsetAsync(db, 0, p.out_channels * sizeof(T), stream); err != cudaSuccess) return err;
    return cudaMemsetAsync(dw, 0, p.w_size() * sizeof(T), stream);
  }
  if constexpr (!std::is_same_v<T, double>) {
    const bool depthwise = is_depthwise(p);
    if (!depthwise && depthwise_channel_multiplier(p) > 1) {
      const cudaError_t err =
          conv1d_bwd_depthwise_cuda<T>(p, x, dy, nullptr, nullptr, dw, db, ws.ptr, ws.bytes, stream);
      if (err != cudaErrorNotSupported) {  // NotSupported: nothing was launched
        if (trace_dispatch())
          std::fprintf(stderr, "jax_conv1d wgrad: depthwise multiplier (workspace %zu bytes)%s\n", ws.bytes,
                       db ? " + fused bias" : "");
        return err;
      }
    }
    // The dense kernel fuses the bias gradient; depthwise does not (yet), so a separate reduction follows it.
    const cudaError_t err = depthwise ? wgrad_depthwise<T>(p, x, dy, dw, ws, stream)
                                      : wgrad_implicit_gemm<T>(p, x, dy, dw, db, ws, stream);
    if (err != cudaErrorNotSupported) {  // NotSupported: nothing was launched
      if (trace_dispatch())
        std::fprintf(stderr, "jax_conv1d wgrad: %s (workspace %zu bytes)%s\n",
                     depthwise ? "depthwise" : "implicit_gemm", ws.bytes,
                     db ? (depthwise ? " + bias_grad" : " + fused bias") : "");
      if (err != cudaSuccess || !db || !depthwise) return err;
      return bias_grad<T>(p, dy, db, stream);
    }
  }
  if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d wgrad: direct%s\n", db ? " + bias_grad" : "");
  if (cudaError_t err = wgrad_direct<T>(p, x, dy, dw, stream); err != cudaSuccess || !db) return err;
  return bias_grad<T>(p, dy, db, stream);
}

template <typename T>
cudaError_t conv1d_wgrad_cuda(const Conv1dParams& p, const T* x, const T* dy, T* dw, cudaStream_t stream) {
  return conv1d_wgrad_cuda<T>(p, x, dy, dw, nullptr, WgradWorkspace{}, stream);
}

#define JC_INSTANTIATE(T)                                                                                      \
  template cudaError_t conv1d_wgrad_cuda<T>(const Conv1dParams&, const T*, const T*, T*, cudaStream_t);       \
  template cudaError_t conv1d_wgrad_cuda<T>(const Conv1dParams&, const T*, const T*, T*, T*,                  \
                                            const WgradWorkspace&, cudaStream_t);                              \
  template size_t conv1d_wgrad_workspace_bytes<T>(const Conv1dParams&);                                         \
  template cudaError_t bias_grad<T>(const Conv1dParams&, const T*, T*, cudaStream_t);
JC_INSTANTIATE(float)
JC_INSTANTIATE(double)
JC_INSTANTIATE(__nv_bfloat16)
JC_INSTANTIATE(__half)
#undef JC_INSTANTIATE

#define JC_INSTANTIATE_SUM(T)                                                                                  \
  template cudaError_t wgrad_sum_splits<T>(const float*, int, int64_t, T*, cudaStream_t);                       \
  template cudaError_t wgrad_sum_splits_strided<T>(const float*, int, int64_t, int64_t, T*, cudaStream_t, int64_t, T*);
JC_INSTANTIATE_SUM(float)
JC_INSTANTIATE_SUM(__nv_bfloat16)
JC_INSTANTIATE_SUM(__half)
#undef JC_INSTANTIATE_SUM

}  // namespace jax_conv1d::cuda
