// The matrix-product core every pass is phrased in. A pass describes each tile's product as segments of
// the reduction (a tap and a range of channels, say), each with the panels of A and B that cover it; a panel
// is either rows of a tensor read in place (when no conversion or padding is needed) or a packed copy.
// Packing is where layouts, strides, dilation and padding differ; the arithmetic is shared.
//
//   A: m rows as MR-row panels: A(i, r) = ptr[r*step + i*row].
//   B: n columns as NR-column panels: B(r, j) = ptr[r*ld + j].
//   C: row-major, rows padded to a multiple of MR and ldc to a multiple of NR; accumulated into.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

#include "scalar_types.h"
#include "simd.h"

namespace jax_conv1d::cpu {

// Register blocking per accumulation type. Targets with 32 vector registers (AVX-512, AArch64) hold a
// 14 x 2-vector tile of accumulators (28 registers); others (AVX2, SSE) a 6 x 2 tile in their 16.
template <typename F>
struct Blocking {
#if defined(__AVX512F__) || defined(__aarch64__)
  static constexpr int MR = 14;
  static constexpr int DOT_MR = 4, DOT_ND = 6;
#else
  static constexpr int MR = 6;
  static constexpr int DOT_MR = 3, DOT_ND = 3;
#endif
  static constexpr int NV = 2;
  static constexpr int NR = NV * kLanes<F>;
  static constexpr int L = kLanes<F>;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Floor division for a possibly negative numerator (b > 0).
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Brings up to two rectangular regions of memory (rows of row_bytes, row_stride bytes apart) towards the
// core a few cache lines per step. A task points it at the next task's inputs and steps it between kernel
// calls, so memory traffic overlaps arithmetic instead of stalling the packing loops.
class RegionPrefetcher {
 public:
  void clear() { count_ = 0, cur_ = 0, row_ = 0, off_ = 0, per_step_ = 0; }
  void add(const void* base, int64_t rows, int64_t row_bytes, int64_t row_stride) {
    if (count_ < 2 && rows > 0 && row_bytes > 0)
      regions_[count_++] = {static_cast<const char*>(base), rows, row_bytes, row_stride};
  }
  // Spreads the lines of the regions added so far over `steps` calls of step().
  void finish(int64_t steps) {
    int64_t lines = 0;
    for (int i = 0; i < count_; ++i) lines += regions_[i].rows * ceil_div(regions_[i].row_bytes, 64);
    per_step_ = steps > 0 ? ceil_div(lines, steps) : lines;
  }
  void step() {
    for (int64_t i = 0; i < per_step_ && cur_ < count_; ++i) {
      const Region& r = regions_[cur_];
#if defined(__GNUC__) || defined(__clang__)
      __builtin_prefetch(r.base + row_ * r.row_stride + off_, 0, 2);
#endif
      off_ += 64;
      if (off_ >= r.row_bytes) {
        off_ = 0;
        if (++row_ == r.rows) row_ = 0, ++cur_;
      }
    }
  }

 private:
  struct Region {
    const char* base;
    int64_t rows, row_bytes, row_stride;
  };
  Region regions_[2];
  int count_ = 0, cur_ = 0;
  int64_t row_ = 0, off_ = 0, per_step_ = 0;
};

// One MR-row panel of A: A(i, r) = ptr[r*step + i*row]. Packed panels have step = MR, row = 1; a view of
// tensor rows read in place has the tensor's strides.
template <typename F>
struct PanelA {
  const F* ptr;
  int64_t step, row;
};

// One NR-column panel of B: B(r, j) = ptr[r*ld + j].
template <typename F>
struct PanelB {
  const F* ptr;
  int64_t ld;
};

// One stretch of the reduction (typically one tap and a range of channels): kc steps, with the panels of A
// (m_panels of them) and B (n_panels) that cover it.
template <typename F>
struct Segment {
  int64_t kc;
  const PanelA<F>* a;
  const PanelB<F>* b;
};

// How a product meets C: added to what is there, or C started afresh from it (the first block of a
// reduction), optionally plus a per-row and/or per-column term (a bias), indexed by C's row and column.
template <typename F>
struct CStart {
  bool fresh = false;
  const F* row_add = nullptr;
  const F* col_add = nullptr;
};

// C (rows padded to MR, ldc to NR) (+)= A * B summed over the segments; each (row panel, column panel) pair
// keeps its accumulators in registers across all segments and touches C once. With no segments a fresh C
// is just its start terms (or zero).
template <typename F>
inline void gemm_segments(const Segment<F>* seg, int64_t nseg, int64_t m_panels, int64_t n_panels, F* c, int64_t ldc,
                          RegionPrefetcher* pf = nullptr, CStart<F> start = {}) {
  using B = Blocking<F>;
  for (int64_t q = 0; q < n_panels; ++q)
    for (int64_t p = 0; p < m_panels; ++p) {
      OuterTile<F, B::MR, B::NV> tile;
      tile.zero();
      for (int64_t s = 0; s < nseg; ++s) {
        const PanelA<F>& a = seg[s].a[p];
        const PanelB<F>& b = seg[s].b[q];
        tile.add(seg[s].kc, a.ptr, a.step, a.row, b.ptr, b.ld);
      }
      F* cp = c + p * B::MR * ldc + q * B::NR;
      if (start.fresh)
        tile.store_init(cp, ldc, start.row_add ? start.row_add + p * B::MR : nullptr,
                        start.col_add ? start.col_add + q * B::NR : nullptr);
      else
        tile.store_add(cp, ldc);
      if (pf) pf->step();
    }
}

// The same with a single segment.
template <typename F>
inline void gemm_panels(int64_t kc, const PanelA<F>* a, int64_t m_panels, const PanelB<F>* b, int64_t n_panels, F* c,
                        int64_t ldc, RegionPrefetcher* pf = nullptr, CStart<F> start = {}) {
  const Segment<F> seg{kc, a, b};
  gemm_segments(&seg, kc > 0 ? 1 : 0, m_panels, n_panels, c, ldc, pf, start);
}

// Packs an MR-row panel whose row i reads rows[i][r * col] for r < kc (a null row reads zeros):
// dst[r*MR + i]. Rows are read contiguously (col == 1 is the common case) and written MR apart.
template <typename F, typename T>
inline PanelA<F> pack_panel_rows(F* dst, const T* const* rows, int64_t kc, int64_t col) {
  constexpr int64_t MR = Blocking<F>::MR;
  for (int64_t i = 0; i < MR; ++i) {
    const T* src = rows[i];
    if (src == nullptr) {
      for (int64_t r = 0; r < kc; ++r) dst[r * MR + i] = F(0);
    } else {
      for (int64_t r = 0; r < kc; ++r) dst[r * MR + i] = static_cast<F>(to_float(src[r * col]));
    }
  }
  return {dst, MR, 1};
}

// A reduction over r = (tap position u, inner index i), u-major, with `inner` steps per tap (channels),
// cut into blocks of at most max_kc steps. Each block is a list of pieces that stay within one tap, so a
// piece can read a tensor in place with a fixed offset; the pieces of a block share one pass over C.
struct TapPiece {
  int64_t u;   // position in the tap list
  int64_t i0;  // first inner index
  int64_t kc;  // steps
};

class TapBlocks {
 public:
  TapBlocks(int64_t taps, int64_t inner, int64_t max_kc) : inner_(inner), total_(taps * inner) {
    count_ = total_ > 0 ? ceil_div(total_, max_kc) : 0;
    size_ = count_ > 0 ? ceil_div(total_, count_) : 0;
  }
  int64_t count() const { return count_; }
  int64_t max_steps() const { return size_; }
  int64_t max_pieces() const { return inner_ > 0 ? ceil_div(size_, inner_) + 1 : 0; }
  // Writes block b's pieces to out and returns how many there are.
  int64_t pieces(int64_t b, TapPiece* out) const {
    int64_t n = 0;
    const int64_t end = std::min(total_, (b + 1) * size_);
    for (int64_t r = b * size_; r < end;) {
      const int64_t u = r / inner_, i0 = r % inner_, kc = std::min(inner_ - i0, end - r);
      out[n++] = {u, i0, kc};
      r += kc;
    }
    return n;
  }

 private:
  int64_t inner_, total_, count_ = 0, size_ = 0;
};

// A per-thread scratch buffer, 64-byte aligned, that only grows. Threads are short-lived (one fork-join
// per call), so this is one allocation per thread per call at most.
template <typename F, int Slot>
F* scratch(int64_t count) {
  struct Free {
    void operator()(F* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<F, Free> buf;
  thread_local int64_t cap = 0;
  if (count > cap) {
    const int64_t bytes = round_up(count * static_cast<int64_t>(sizeof(F)), 64);
    F* p = static_cast<F*>(std::aligned_alloc(64, static_cast<size_t>(bytes)));
    if (!p) throw std::bad_alloc();
    buf.reset(p);
    cap = count;
  }
  return buf.get();
}

}  // namespace jax_conv1d::cpu
