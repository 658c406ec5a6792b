// Host-side stride-phase decomposition of the input gradient, shared by the dgrad kernels.
//
// Write l = q*s + r - pad_lo with 0 <= r < s. Tap k lands on such an l iff k*d = r (mod s), reading
// dy[q - e_k] with e_k = (k*d - r) / s >= 0. Grouping the taps by r turns the strided transposed
// convolution into s independent stride-1 correlations ("phases"), some of them empty.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>

#include "../conv1d_params.h"
#include "smem_plan.cuh"

namespace jax_conv1d::cuda {

struct StridePhases {
  static constexpr int kMaxStride = 32, kMaxTaps = 16;
  int stride = 1, taps = 0;
  int nphase = 0;                      // phases with at least one tap
  int residue[kMaxStride] = {};        // r of phase i
  int first[kMaxStride] = {};          // the taps of phase i are tap_k[first[i] .. first[i] + count[i])
  int count[kMaxStride] = {};
  int tap_k[kMaxTaps] = {};
  int64_t tap_e[kMaxTaps] = {};        // e of tap_k[j]
  int phase_of_residue[kMaxStride] = {};  // -1 where no tap lands
  int64_t q_lo = 0, q_count = 0;       // q range whose positions cover [0, L)
};

inline bool make_stride_phases(const Conv1dParams& p, StridePhases* ph) {
  const int64_t s = p.stride, d = p.dilation, K = p.kernel_size;
  if (s > StridePhases::kMaxStride || K > StridePhases::kMaxTaps || K < 1) return false;
  ph->stride = static_cast<int>(s);
  ph->taps = static_cast<int>(K);
  ph->nphase = 0;
  int j = 0;
  for (int r = 0; r < s; ++r) {
    ph->phase_of_residue[r] = -1;
    const int start = j;
    for (int64_t k = 0; k < K; ++k) {
      if ((k * d) % s != r) continue;
      ph->tap_k[j] = static_cast<int>(k);
      ph->tap_e[j] = (k * d - r) / s;
      ++j;
    }
    if (j == start) continue;
    ph->phase_of_residue[r] = ph->nphase;
    ph->residue[ph->nphase] = r;
    ph->first[ph->nphase] = start;
    ph->count[ph->nphase] = j - start;
    ++ph->nphase;
  }
  // l = q*s + r - pad covers l = 0 at q = floor(pad / s) and l = L - 1 at q = floor((L - 1 + pad) / s).
  ph->q_lo = floor_div(p.pad_lo, s);
  ph->q_count = floor_div(p.in_length - 1 + p.pad_lo, s) - ph->q_lo + 1;
  return true;
}

// The dy windows of a tile of `bq` consecutive q: tap j reads t in [q0 - e_j, q0 - e_j + bq). Returns the
// merged segments (starts relative to q0) and, per tap (in tap_k order), its segment and offset.
inline bool dy_segments(const StridePhases& ph, int64_t bq, TapSegments* segs, int* seg_of_tap,
                        int64_t* offset_of_tap) {
  int order[StridePhases::kMaxTaps];
  std::iota(order, order + ph.taps, 0);
  std::sort(order, order + ph.taps, [&](int a, int b) { return ph.tap_e[a] > ph.tap_e[b]; });
  int64_t starts[StridePhases::kMaxTaps];
  for (int i = 0; i < ph.taps; ++i) starts[i] = -ph.tap_e[order[i]];
  if (!merge_tap_windows(starts, ph.taps, bq, segs)) return false;
  for (int i = 0; i < ph.taps; ++i) {
    seg_of_tap[order[i]] = segs->seg_of[i];
    offset_of_tap[order[i]] = segs->offset[i];
  }
  return true;
}

}  // namespace jax_conv1d::cuda
