// The combined backward on the CPU: dx, dw and db from one call. dgrad and wgrad run as they do alone
// (each parallel inside); the bias gradient is a separate, cheap pass over dy.
//
// Bias gradient: db[o] = sum over (n, t) of dy[n, o, t]. Each output channel's sum has one fixed order: runs
// of at most kRun positions are summed in the accumulation type (lane by lane, then the lanes in order) and
// each run is added into a float64 total. Tasks own whole channels, so no sum depends on the thread count.
#include <algorithm>

#include "conv1d_cpu.h"
#include "gemm_tile.h"
#include "pack.h"
#include "parallel.h"

namespace jax_conv1d::cpu {

namespace {

constexpr int64_t kRun = 256;  // positions summed in the accumulation type before joining the float64 total

// As the weight gradient stores its float64 totals: through float for the 16/32-bit types.
template <typename T>
T from_total(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return from_float<T>(static_cast<float>(v));
}

// NCW: a channel's positions are contiguous rows of dy; a task sums whole channels.
template <typename T>
void bias_grad_ncw(const Conv1dParams& p, const T* dy, T* db) {
  using F = acc_t<T>;
  constexpr int64_t kLaneCount = 16;  // independent partial sums, so the compiler can vectorise the run
  parallel_for(p.out_channels, static_cast<double>(p.batch * p.out_length), [&](int64_t o) {
    double total = 0.0;
    for (int64_t n = 0; n < p.batch; ++n) {
      const T* row = dy + n * p.y_n + o * p.y_o;
      for (int64_t t0 = 0; t0 < p.out_length; t0 += kRun) {
        const int64_t len = std::min(kRun, p.out_length - t0);
        F lanes[kLaneCount] = {};
        int64_t t = 0;
        for (; t + kLaneCount <= len; t += kLaneCount)
          for (int64_t j = 0; j < kLaneCount; ++j) lanes[j] += widen<F>(row[(t0 + t + j) * p.y_t]);
        for (int64_t j = 0; t + j < len; ++j) lanes[j] += widen<F>(row[(t0 + t + j) * p.y_t]);
        F run = F(0);
        for (int64_t j = 0; j < kLaneCount; ++j) run += lanes[j];
        total += static_cast<double>(run);
      }
    }
    db[o] = from_total<T>(total);
  });
}

// NWC: channels are contiguous within a position; a task sums a block of channels over every position.
template <typename T>
void bias_grad_nwc(const Conv1dParams& p, const T* dy, T* db) {
  using F = acc_t<T>;
  constexpr int64_t kChannels = 64;
  const int64_t blocks = ceil_div(p.out_channels, kChannels);
  parallel_for(blocks, static_cast<double>(kChannels * p.batch * p.out_length), [&](int64_t b) {
    const int64_t o0 = b * kChannels, width = std::min(kChannels, p.out_channels - o0);
    double total[kChannels] = {};
    F run[kChannels];
    int64_t in_run = 0;
    std::fill(run, run + kChannels, F(0));
    for (int64_t n = 0; n < p.batch; ++n)
      for (int64_t t = 0; t < p.out_length; ++t) {
        const T* row = dy + n * p.y_n + t * p.y_t + o0 * p.y_o;
        for (int64_t j = 0; j < width; ++j) run[j] += widen<F>(row[j * p.y_o]);
        if (++in_run == kRun) {
          for (int64_t j = 0; j < width; ++j) total[j] += static_cast<double>(run[j]), run[j] = F(0);
          in_run = 0;
        }
      }
    for (int64_t j = 0; j < width; ++j) db[o0 + j] = from_total<T>(total[j] + static_cast<double>(run[j]));
  });
}

}  // namespace

template <typename T>
void conv1d_bias_grad_cpu(const Conv1dParams& p, const T* dy, T* db) {
  if (p.out_channels == 0) return;
  if (p.layout == Layout::kNCW) return bias_grad_ncw(p, dy, db);
  return bias_grad_nwc(p, dy, db);
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
