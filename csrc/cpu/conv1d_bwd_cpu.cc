// The combined backward on the CPU: dx, dw and db from one call. dgrad and wgrad run as they do alone
// (each parallel inside); the bias gradient is a separate, cheap pass over dy.
//
// Bias gradient: db[o] = sum over (n, t) of dy[n, o, t]. The flattened (n, t) range is cut into chunks whose
// number depends only on the shape; within a chunk, runs of at most kRun positions are summed in the
// accumulation type and each run is added into the chunk's float64 total; the chunk totals are added in
// chunk order. Tasks own whole (chunk, channel block) pairs, so no sum depends on the thread count.
#include <algorithm>
#include <vector>

#include "conv1d_cpu.h"
#include "gemm_tile.h"
#include "pack.h"
#include "parallel.h"

namespace jax_conv1d::cpu {

namespace {

constexpr int64_t kRun = 256;       // positions summed in the accumulation type before joining the float64 total
constexpr int64_t kChannels = 2048;  // NWC: most channels one task sums (whole rows of dy stream past it)
constexpr int64_t kLaneCount = 16;  // NCW: independent partial sums along t, so the compiler can vectorise

// As the weight gradient stores its float64 totals: through float for the 16/32-bit types.
template <typename T>
T from_total(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return from_float<T>(static_cast<float>(v));
}

// Enough chunks for the threads on big reductions (>= ~2M elements each), at most 32.
int64_t chunk_count(const Conv1dParams& p) {
  const int64_t rows = p.batch * p.out_length;
  return std::clamp<int64_t>(rows * p.out_channels / (int64_t{1} << 21), 1, std::min<int64_t>(32, rows));
}

// NCW: a channel's positions are contiguous within a batch row; a task sums one channel over one chunk.
template <typename T>
double channel_chunk_sum(const Conv1dParams& p, const T* dy, int64_t o, int64_t r0, int64_t r1) {
  using F = acc_t<T>;
  double total = 0.0;
  for (int64_t n = r0 / p.out_length; n * p.out_length < r1; ++n) {
    const int64_t t_begin = std::max<int64_t>(r0 - n * p.out_length, 0);
    const int64_t t_end = std::min(r1 - n * p.out_length, p.out_length);
    const T* row = dy + n * p.y_n + o * p.y_o;  // NCW: y_t == 1
    for (int64_t t0 = t_begin; t0 < t_end; t0 += kRun) {
      const int64_t len = std::min(kRun, t_end - t0);
      const T* src = row + t0;
      F lanes[kLaneCount] = {};
      int64_t t = 0;
      for (; t + kLaneCount <= len; t += kLaneCount)
        for (int64_t j = 0; j < kLaneCount; ++j) lanes[j] += widen<F>(src[t + j]);
      for (int64_t j = 0; t + j < len; ++j) lanes[j] += widen<F>(src[t + j]);
      F run = F(0);
      for (int64_t j = 0; j < kLaneCount; ++j) run += lanes[j];
      total += static_cast<double>(run);
    }
  }
  return total;
}

// NWC: position r's channels are contiguous at dy + r*O; a task sums `width` channels over one chunk, so for
// up to kChannels channels it reads whole rows, one stream.
template <typename T>
void channel_block_sums(const T* dy, int64_t channels, int64_t o0, int64_t width, int64_t r0, int64_t r1,
                        double* totals) {
  using F = acc_t<T>;
  F* run = scratch<F, 0>(width);
  for (int64_t r = r0; r < r1; r += kRun) {
    std::fill(run, run + width, F(0));
    for (int64_t q = r, q1 = std::min(r1, r + kRun); q < q1; ++q) {
      const T* src = dy + q * channels + o0;
      for (int64_t j = 0; j < width; ++j) run[j] += widen<F>(src[j]);
    }
    for (int64_t j = 0; j < width; ++j) totals[j] += static_cast<double>(run[j]);
  }
}

}  // namespace

template <typename T>
void conv1d_bias_grad_cpu(const Conv1dParams& p, const T* dy, T* db) {
  const int64_t channels = p.out_channels, rows = p.batch * p.out_length;
  if (channels == 0) return;
  if (rows == 0) {  // no positions (and positions per row may be 0): the sums are empty
    for (int64_t o = 0; o < channels; ++o) db[o] = from_total<T>(0.0);
    return;
  }
  const int64_t chunks = chunk_count(p);
  std::vector<double> partials(static_cast<size_t>(chunks * channels), 0.0);  // [chunk][channel]
  auto chunk_begin = [&](int64_t q) { return rows * q / chunks; };
  if (p.layout == Layout::kNCW) {
    parallel_for(chunks * channels, static_cast<double>(rows / chunks), [&](int64_t task) {
      const int64_t q = task / channels, o = task % channels;
      partials[task] = channel_chunk_sum(p, dy, o, chunk_begin(q), chunk_begin(q + 1));
    });
  } else {
    const int64_t blocks = ceil_div(channels, kChannels);
    parallel_for(chunks * blocks, static_cast<double>(kChannels * rows / chunks), [&](int64_t task) {
      const int64_t q = task / blocks, o0 = (task % blocks) * kChannels, width = std::min(kChannels, channels - o0);
      double* totals = partials.data() + q * channels + o0;
      channel_block_sums(dy, channels, o0, width, chunk_begin(q), chunk_begin(q + 1), totals);
    });
  }
  for (int64_t o = 0; o < channels; ++o) {
    double sum = 0.0;
    for (int64_t q = 0; q < chunks; ++q) sum += partials[q * channels + o];
    db[o] = from_total<T>(sum);
  }
}

template <typename T>
void conv1d_bwd_cpu(const Conv1dParams& p, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db) {
  if (dx != nullptr) conv1d_dgrad_cpu<T>(p, dy, w, dx);
  if (dw != nullptr) conv1d_wgrad_cpu<T>(p, x, dy, dw);
  if (db != nullptr) conv1d_bias_grad_cpu<T>(p, dy, db);
}

#define JC_INSTANTIATE(T)                                                                         \
  template void conv1d_bias_grad_cpu<T>(const Conv1dParams&, const T*, T*);                       \
  template void conv1d_bwd_cpu<T>(const Conv1dParams&, const T*, const T*, const T*, T*, T*, T*);
JC_INSTANTIATE(float)
JC_INSTANTIATE(double)
JC_INSTANTIATE(bf16)
JC_INSTANTIATE(f16)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cpu
