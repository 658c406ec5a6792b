// Input gradient on the CPU, by scatter within a tile: each (output channel, tap, output position) adds
// w[o, :, k] * dy[o, t] to the one input position it read, t*stride + k*dilation - pad_lo. The tile's
// accumulators are laid out [position][channel] so that the innermost loop runs over contiguous channels.
// Positions no tap reaches keep their zero, so every dx element is written exactly once.
#include <algorithm>
#include <vector>

#include "conv1d_cpu.h"
#include "parallel.h"

namespace jax_conv1d::cpu {

namespace {
constexpr int64_t kTile = 256;  // input positions per task

inline int64_t ceil_div(int64_t a, int64_t b) {  // b > 0, any sign of a
  return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}
}  // namespace

template <typename T>
void conv1d_dgrad_cpu(const Conv1dParams& p, const T* dy, const T* w, T* dx) {
  using Acc = acc_t<T>;
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size;
  const int64_t tiles = (p.in_length + kTile - 1) / kTile;
  const int64_t tasks = p.batch * p.groups * tiles;
  const double work = static_cast<double>(og * cg * K) * kTile / static_cast<double>(p.stride);
  parallel_for(tasks, work, [&](int64_t task) {
    const int64_t tile = task % tiles;
    const int64_t g = (task / tiles) % p.groups;
    const int64_t n = task / (tiles * p.groups);
    const int64_t l0 = tile * kTile;
    const int64_t ln = std::min(kTile, p.in_length - l0);
    std::vector<Acc> acc(ln * cg, Acc(0));
    std::vector<Acc> wt(K * cg);  // w[o, :, :] of this group as [k][c]
    for (int64_t o = 0; o < og; ++o) {
      const int64_t oo = g * og + o;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < cg; ++c) wt[k * cg + c] = Acc(to_float(w[oo * p.w_o + c * p.w_c + k * p.w_k]));
      const T* dyo = dy + n * p.y_n + oo * p.y_o;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t off = k * p.dilation - p.pad_lo;
        const int64_t tb = std::max(first_valid_t(p, k), ceil_div(l0 - off, p.stride));
        const int64_t te = std::min(end_valid_t(p, k), ceil_div(l0 + ln - off, p.stride));
        const Acc* wk = wt.data() + k * cg;
        for (int64_t t = tb; t < te; ++t) {
          const Acc dv = Acc(to_float(dyo[t * p.y_t]));
          Acc* a = acc.data() + (t * p.stride + off - l0) * cg;
          for (int64_t c = 0; c < cg; ++c) a[c] += wk[c] * dv;
        }
      }
    }
    for (int64_t c = 0; c < cg; ++c) {
      T* dxc = dx + n * p.x_n + (g * cg + c) * p.x_c;
      for (int64_t i = 0; i < ln; ++i) {
        if constexpr (std::is_same_v<Acc, double>) dxc[(l0 + i) * p.x_l] = acc[i * cg + c];
        else dxc[(l0 + i) * p.x_l] = from_float<T>(acc[i * cg + c]);
      }
    }
  });
}

template void conv1d_dgrad_cpu<float>(const Conv1dParams&, const float*, const float*, float*);
template void conv1d_dgrad_cpu<double>(const Conv1dParams&, const double*, const double*, double*);
template void conv1d_dgrad_cpu<bf16>(const Conv1dParams&, const bf16*, const bf16*, bf16*);
template void conv1d_dgrad_cpu<f16>(const Conv1dParams&, const f16*, const f16*, f16*);

}  // namespace jax_conv1d::cpu
