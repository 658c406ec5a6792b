// Bias gradient: db[o] = sum over (n, t) of dy[n, o, t], deterministic and without atomics.
//
// The (n, t) range is cut into `splits` equal pieces, a number that depends only on the shape. A block sums
// one piece for its channels: every thread adds a fixed strided subset in the accumulation type (float32 for
// 16/32-bit types, float64 for float64), and the block combines its threads in a fixed tree. With one split
// the block stores db; otherwise it stores a partial and a second kernel adds the splits in order (float64).
// Layouts differ only in which threads read along the contiguous axis:
//   NCW: one block per (channel, split), 256 threads along t.
//   NWC: one block per (32 channels, split), 32 lanes along o times 8 rows of (n, t).
#include <algorithm>
#include <type_traits>

#include "bwd_kernels.h"
#include "conv1d_cuda.h"
#include "cuda_types.cuh"

namespace jax_conv1d::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kLanes = 32, kRows = kThreads / kLanes;  // NWC block shape
constexpr int64_t kTargetBlocks = 1024;                // enough to fill an H100 several times over
constexpr int64_t kTermsPerThread = 2048;              // past this, more splits (accuracy and parallelism)
constexpr size_t kMaxScratch = size_t(16) << 20;
constexpr int64_t kMaxSplits = 4096;                   // also keeps gridDim.y in range

int64_t channel_tiles(const Conv1dParams& p) {
  return p.layout == Layout::kNCW ? p.out_channels : (p.out_channels + kLanes - 1) / kLanes;
}

int64_t row_threads(const Conv1dParams& p) { return p.layout == Layout::kNCW ? kThreads : kRows; }

template <typename T>
int64_t preferred_splits(const Conv1dParams& p) {
  const int64_t rows = p.batch * p.out_length, tiles = channel_tiles(p);
  if (rows == 0 || tiles == 0) return 1;
  const int64_t for_blocks = (kTargetBlocks + tiles - 1) / tiles;
  const int64_t for_accuracy = (rows + row_threads(p) * kTermsPerThread - 1) / (row_threads(p) * kTermsPerThread);
  const int64_t most_rows = (rows + row_threads(p) - 1) / row_threads(p);  // every thread gets a term
  const int64_t most_scratch = static_cast<int64_t>(kMaxScratch / (sizeof(acc_t<T>) * p.out_channels));
  return std::max<int64_t>(1, std::min({std::max(for_blocks, for_accuracy), most_rows, most_scratch, kMaxSplits}));
}

template <typename Acc, typename T>
__device__ __forceinline__ void store_sum(Acc sum, int64_t o, int64_t split, int64_t splits, int64_t channels,
                                          T* db, Acc* partials) {
  if (splits == 1) db[o] = from_acc<T>(sum);
  else partials[split * channels + o] = sum;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bias_grad_ncw(Conv1dParams p, const T* __restrict__ dy, int64_t splits,
                                                          T* __restrict__ db, acc_t<T>* __restrict__ partials) {
  using Acc = acc_t<T>;
  __shared__ Acc part[kThreads];
  const int64_t o = blockIdx.x, split = blockIdx.y, rows = p.batch * p.out_length;
  const int64_t r0 = rows * split / splits, r1 = rows * (split + 1) / splits;
  Acc acc = Acc(0);
  // Walk the piece one batch row at a time, so positions need no division.
  for (int64_t n = r0 / p.out_length; n * p.out_length < r1; ++n) {
    const int64_t t0 = std::max<int64_t>(r0 - n * p.out_length, 0), t1 = std::min(r1 - n * p.out_length, p.out_length);
    const T* row = dy + n * p.y_n + o * p.y_o;
    for (int64_t t = t0 + threadIdx.x; t < t1; t += kThreads) acc += to_acc(row[t * p.y_t]);
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) store_sum(part[0], o, split, splits, p.out_channels, db, partials);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bias_grad_nwc(Conv1dParams p, const T* __restrict__ dy, int64_t splits,
                                                          T* __restrict__ db, acc_t<T>* __restrict__ partials) {
  using Acc = acc_t<T>;
  __shared__ Acc part[kRows][kLanes];
  const int lane = threadIdx.x % kLanes, row_lane = threadIdx.x / kLanes;
  const int64_t o = blockIdx.x * int64_t(kLanes) + lane, split = blockIdx.y, rows = p.batch * p.out_length;
  const int64_t r0 = rows * split / splits, r1 = rows * (split + 1) / splits;
  Acc acc = Acc(0);
  if (o < p.out_channels) {
    int64_t r = r0 + row_lane, n = r / p.out_length, t = r % p.out_length;
    for (; r < r1; r += kRows) {
      acc += to_acc(dy[n * p.y_n + t * p.y_t + o * p.y_o]);
      for (t += kRows; t >= p.out_length; t -= p.out_length) ++n;
    }
  }
  part[row_lane][lane] = acc;
  __syncthreads();
  if (row_lane == 0 && o < p.out_channels) {
    Acc sum = part[0][lane];
    for (int i = 1; i < kRows; ++i) sum += part[i][lane];
    store_sum(sum, o, split, splits, p.out_channels, db, partials);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bias_grad_sum_splits(const acc_t<T>* __restrict__ partials,
                                                                 int64_t splits, int64_t channels,
                                                                 T* __restrict__ db) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < channels; o += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0.0;
    for (int64_t s = 0; s < splits; ++s) sum += static_cast<double>(partials[s * channels + o]);
    db[o] = from_acc<T>(static_cast<acc_t<T>>(sum));
  }
}

}  // namespace

template <typename T>
size_t conv1d_bias_grad_scratch_bytes(const Conv1dParams& p) {
  const int64_t splits = preferred_splits<T>(p);
  return splits > 1 ? static_cast<size_t>(splits * p.out_channels) * sizeof(acc_t<T>) : 0;
}

template <typename T>
cudaError_t conv1d_bias_grad_cuda(const Conv1dParams& p, const T* dy, T* db, void* scratch, size_t scratch_bytes,
                                  cudaStream_t stream) {
  if (p.out_channels == 0) return cudaSuccess;
  if (p.batch == 0 || p.out_length == 0) return cudaMemsetAsync(db, 0, p.out_channels * sizeof(T), stream);
  // Fewer scratch bytes than asked for: one split (the same sums in a different order, still deterministic).
  const bool split = scratch != nullptr && scratch_bytes >= conv1d_bias_grad_scratch_bytes<T>(p);
  const int64_t splits = split ? preferred_splits<T>(p) : 1;
  auto* partials = static_cast<acc_t<T>*>(scratch);
  const dim3 grid(static_cast<unsigned>(channel_tiles(p)), static_cast<unsigned>(splits));
  if (p.layout == Layout::kNCW) bias_grad_ncw<T><<<grid, kThreads, 0, stream>>>(p, dy, splits, db, partials);
  else bias_grad_nwc<T><<<grid, kThreads, 0, stream>>>(p, dy, splits, db, partials);
  if (splits == 1) return cudaGetLastError();
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  bias_grad_sum_splits<T><<<grid_for(p.out_channels, kThreads), kThreads, 0, stream>>>(partials, splits,
                                                                                      p.out_channels, db);
  return cudaGetLastError();
}

#define JC_INSTANTIATE(T)                                                                                   \
  template size_t conv1d_bias_grad_scratch_bytes<T>(const Conv1dParams&);                                  \
  template cudaError_t conv1d_bias_grad_cuda<T>(const Conv1dParams&, const T*, T*, void*, size_t, cudaStream_t);
JC_INSTANTIATE(float)
JC_INSTANTIATE(double)
JC_INSTANTIATE(__nv_bfloat16)
JC_INSTANTIATE(__half)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cuda
