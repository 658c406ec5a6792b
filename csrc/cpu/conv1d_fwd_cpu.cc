// Forward pass on the CPU: for each (batch, group, tile of outputs) the tile's accumulators stay in cache
// while every (input channel, tap) row of x is gathered once and applied to all output channels of the group.
#include <algorithm>
#include <vector>

#include "conv1d_cpu.h"
#include "parallel.h"

namespace jax_conv1d::cpu {

namespace {
constexpr int64_t kTile = 64;  // output positions per task: Og * kTile accumulators fit in L1/L2
}

template <typename T, typename TOut>
void conv1d_fwd_cpu(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y) {
  using Acc = acc_t<T>;
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size;
  const int64_t tiles = (p.out_length + kTile - 1) / kTile;
  const int64_t tasks = p.batch * p.groups * tiles;
  parallel_for(tasks, static_cast<double>(og * cg * K * kTile), [&](int64_t task) {
    const int64_t tile = task % tiles;
    const int64_t g = (task / tiles) % p.groups;
    const int64_t n = task / (tiles * p.groups);
    const int64_t t0 = tile * kTile;
    const int64_t tn = std::min(kTile, p.out_length - t0);
    std::vector<Acc> acc(og * kTile, Acc(0));
    std::vector<Acc> row(kTile);
    std::vector<Acc> wcol(og);
    for (int64_t c = 0; c < cg; ++c) {
      const T* xc = x + n * p.x_n + (g * cg + c) * p.x_c;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t off = k * p.dilation - p.pad_lo;
        for (int64_t i = 0; i < tn; ++i) {
          const int64_t l = (t0 + i) * p.stride + off;
          row[i] = (l >= 0 && l < p.in_length) ? Acc(to_float(xc[l * p.x_l])) : Acc(0);
        }
        for (int64_t o = 0; o < og; ++o)
          wcol[o] = Acc(to_float(w[(g * og + o) * p.w_o + c * p.w_c + k * p.w_k]));
        for (int64_t o = 0; o < og; ++o) {
          const Acc wv = wcol[o];
          Acc* a = acc.data() + o * kTile;
          for (int64_t i = 0; i < tn; ++i) a[i] += wv * row[i];
        }
      }
    }
    for (int64_t o = 0; o < og; ++o) {
      const int64_t oo = g * og + o;
      const Acc b = bias ? Acc(to_float(bias[oo])) : Acc(0);
      TOut* yo = y + n * p.y_n + oo * p.y_o;
      for (int64_t i = 0; i < tn; ++i) {
        const Acc v = acc[o * kTile + i] + b;
        if constexpr (std::is_same_v<Acc, double>) yo[(t0 + i) * p.y_t] = from_double<TOut>(v);
        else yo[(t0 + i) * p.y_t] = from_float<TOut>(v);
      }
    }
  });
}

template void conv1d_fwd_cpu<float, float>(const Conv1dParams&, const float*, const float*, const float*, float*);
template void conv1d_fwd_cpu<double, double>(const Conv1dParams&, const double*, const double*, const double*,
                                             double*);
template void conv1d_fwd_cpu<bf16, bf16>(const Conv1dParams&, const bf16*, const bf16*, const bf16*, bf16*);
template void conv1d_fwd_cpu<bf16, float>(const Conv1dParams&, const bf16*, const bf16*, const bf16*, float*);
template void conv1d_fwd_cpu<f16, f16>(const Conv1dParams&, const f16*, const f16*, const f16*, f16*);
template void conv1d_fwd_cpu<f16, float>(const Conv1dParams&, const f16*, const f16*, const f16*, float*);

}  // namespace jax_conv1d::cpu
