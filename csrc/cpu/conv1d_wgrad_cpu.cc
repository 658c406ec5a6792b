// Weight gradient on the CPU: dw[o, c, k] = sum over (n, t) of dy[n, o, t] * x[n, c, t*stride + k*dilation
// - pad_lo]. Each task owns a block of output channels of one group, so every dw element is reduced by one
// thread in a fixed order (deterministic). Each tile's dot product runs in the accumulation type and is
// added into a float64 total, which keeps long reductions (millions of terms) accurate.
#include <algorithm>
#include <vector>

#include "conv1d_cpu.h"
#include "parallel.h"

namespace jax_conv1d::cpu {

namespace {
constexpr int64_t kTile = 256;       // output positions per reduction tile
constexpr int64_t kOutBlock = 16;    // output channels per task
}  // namespace

template <typename T>
void conv1d_wgrad_cpu(const Conv1dParams& p, const T* x, const T* dy, T* dw) {
  using Acc = acc_t<T>;
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size;
  const int64_t oblocks = (og + kOutBlock - 1) / kOutBlock;
  const int64_t tasks = p.groups * oblocks;
  const double work = static_cast<double>(kOutBlock * cg * K) * p.batch * p.out_length;
  parallel_for(tasks, work, [&](int64_t task) {
    const int64_t g = task / oblocks;
    const int64_t o0 = (task % oblocks) * kOutBlock;
    const int64_t on = std::min(kOutBlock, og - o0);
    std::vector<double> total(on * cg * K, 0.0);
    std::vector<Acc> xcol(cg * K * kTile);  // x gathered per (c, k) for the tile
    std::vector<Acc> dyt(on * kTile);
    for (int64_t n = 0; n < p.batch; ++n) {
      for (int64_t t0 = 0; t0 < p.out_length; t0 += kTile) {
        const int64_t tn = std::min(kTile, p.out_length - t0);
        for (int64_t c = 0; c < cg; ++c) {
          const T* xc = x + n * p.x_n + (g * cg + c) * p.x_c;
          for (int64_t k = 0; k < K; ++k) {
            const int64_t off = k * p.dilation - p.pad_lo;
            Acc* col = xcol.data() + (c * K + k) * kTile;
            for (int64_t i = 0; i < tn; ++i) {
              const int64_t l = (t0 + i) * p.stride + off;
              col[i] = (l >= 0 && l < p.in_length) ? Acc(to_float(xc[l * p.x_l])) : Acc(0);
            }
          }
        }
        for (int64_t o = 0; o < on; ++o) {
          const T* dyo = dy + n * p.y_n + (g * og + o0 + o) * p.y_o;
          for (int64_t i = 0; i < tn; ++i) dyt[o * kTile + i] = Acc(to_float(dyo[(t0 + i) * p.y_t]));
        }
        for (int64_t o = 0; o < on; ++o) {
          const Acc* d = dyt.data() + o * kTile;
          for (int64_t ck = 0; ck < cg * K; ++ck) {
            const Acc* col = xcol.data() + ck * kTile;
            Acc s = 0;
            for (int64_t i = 0; i < tn; ++i) s += d[i] * col[i];
            total[o * cg * K + ck] += s;
          }
        }
      }
    }
    for (int64_t o = 0; o < on; ++o)
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t k = 0; k < K; ++k) {
          const double v = total[(o * cg + c) * K + k];
          T* dst = dw + (g * og + o0 + o) * p.w_o + c * p.w_c + k * p.w_k;
          if constexpr (std::is_same_v<Acc, double>) *dst = v;
          else *dst = from_float<T>(static_cast<float>(v));
        }
  });
}

template void conv1d_wgrad_cpu<float>(const Conv1dParams&, const float*, const float*, float*);
template void conv1d_wgrad_cpu<double>(const Conv1dParams&, const double*, const double*, double*);
template void conv1d_wgrad_cpu<bf16>(const Conv1dParams&, const bf16*, const bf16*, bf16*);
template void conv1d_wgrad_cpu<f16>(const Conv1dParams&, const f16*, const f16*, f16*);

}  // namespace jax_conv1d::cpu
