// Host-side planning shared by the backward kernels: device limits (device_limits.h), and row pitches for
// shared-memory tiles chosen so that a warp's fragment loads hit distinct banks.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>

#include "device_limits.h"

namespace jax_conv1d::cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The worst bank conflict (distinct 4-byte words on one bank) of one warp-wide load where lane (g, tq) =
// (lane / 4, lane % 4) reads element elem(g, tq, pitch) of `elem_bytes` bytes.
inline int bank_conflict(const std::function<int64_t(int, int, int64_t)>& elem, int64_t pitch, int elem_bytes) {
  int64_t words[32];
  for (int lane = 0; lane < 32; ++lane) words[lane] = elem(lane / 4, lane % 4, pitch) * elem_bytes / 4;
  int worst = 1;
  for (int bank = 0; bank < 32; ++bank) {
    int64_t seen[32];
    int n = 0;
    for (int lane = 0; lane < 32; ++lane) {
      if (((words[lane] % 32) + 32) % 32 != bank) continue;
      if (std::find(seen, seen + n, words[lane]) == seen + n) seen[n++] = words[lane];
    }
    worst = std::max(worst, n);
  }
  return worst;
}

// The smallest pitch >= min_pitch, a multiple of `multiple`, with the fewest bank conflicts for `elem`.
inline int64_t pick_pitch(int64_t min_pitch, int64_t multiple,
                          const std::function<int64_t(int, int, int64_t)>& elem, int elem_bytes) {
  int64_t best = round_up(min_pitch, multiple);
  int best_conflict = bank_conflict(elem, best, elem_bytes);
  for (int64_t p = best + multiple; p < best + 64 && best_conflict > 1; p += multiple) {
    const int c = bank_conflict(elem, p, elem_bytes);
    if (c < best_conflict) best = p, best_conflict = c;
  }
  return best;
}

// The widest copy (in elements, at most 16 bytes) that divides every given stride and offset, so a window's
// chunks stay aligned.
inline int widest_vec(int elem_bytes, std::initializer_list<int64_t> multiples_of) {
  for (int vec = 16 / elem_bytes; vec > 1; vec /= 2) {
    bool ok = true;
    for (int64_t m : multiples_of) ok &= (m % vec) == 0;
    if (ok) return vec;
  }
  return 1;
}

// Windows [starts[j], starts[j] + win) of the taps a tile needs (starts non-decreasing), merged into segments
// where they overlap or nearly touch, so overlapping taps share one copy and distant taps (large dilation)
// skip the positions between them.
struct TapSegments {
  static constexpr int kMax = 16;
  int count = 0;
  int64_t start[kMax] = {}, length[kMax] = {};  // segment j covers [start, start + length)
  int seg_of[kMax] = {};                        // tap j lives in segment seg_of[j] ...
  int64_t offset[kMax] = {};                    // ... at starts[j] - start[seg_of[j]]
};

inline bool merge_tap_windows(const int64_t* starts, int taps, int64_t win, TapSegments* out, int64_t gap = 8) {
  if (taps < 1 || taps > TapSegments::kMax) return false;
  TapSegments& s = *out;
  s.count = 0;
  int64_t end = 0;
  for (int j = 0; j < taps; ++j) {
    if (s.count == 0 || starts[j] > end + gap) {
      s.start[s.count++] = starts[j];
      end = starts[j] + win;
    } else {
      end = std::max(end, starts[j] + win);
    }
    s.length[s.count - 1] = end - s.start[s.count - 1];
    s.seg_of[j] = s.count - 1;
    s.offset[j] = starts[j] - s.start[s.count - 1];
  }
  for (int j = 0; j < s.count; ++j)
    if (s.length[j] > (int64_t(1) << 20)) return false;
  return true;
}

template <typename Kernel>
cudaError_t allow_dynamic_smem(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

}  // namespace jax_conv1d::cuda
