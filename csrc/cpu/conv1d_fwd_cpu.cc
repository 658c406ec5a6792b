// Forward pass on the CPU. Per group the convolution is a matrix product over the reduction index
// r = k*Cg + c (tap-major):
//   Y[o, t] = sum_r W[o, r] * X[r, t],   X[(k, c), t] = x[n, g*Cg + c, t*stride + k*dilation - pad_lo]
// (im2col, with zeros outside the input). The operand whose index runs along y's contiguous axis becomes
// the vector side of the micro-kernel, so y is written with contiguous stores in either layout:
//   NCW: rows = output channels (weights, packed once per call), vectors along t (im2col of x, per tile);
//   NWC: rows = positions (im2col of x, per tile), vectors along output channels (weights, packed once).
// Depthwise convolutions (one input and one output channel per group) have no product to block and run a
// direct loop instead. Tasks own disjoint output tiles, so the result does not depend on the thread count.
#include <algorithm>
#include <vector>

#include "conv1d_cpu.h"
#include "gemm_tile.h"
#include "pack.h"
#include "parallel.h"

namespace jax_conv1d::cpu {

namespace {

// Reduction steps (input channels of one tap) per kernel call: the B panel (kc x NR) then fits in L1.
constexpr int64_t kMaxKc = 192;

// Output positions [tb, te) of tap k whose input index lies inside [0, L), clipped to [lo, hi).
inline void tap_range(const Conv1dParams& p, int64_t k, int64_t lo, int64_t hi, int64_t* tb, int64_t* te) {
  *tb = std::max(lo, first_valid_t(p, k));
  *te = std::min(hi, end_valid_t(p, k));
  if (*te < *tb) *te = *tb;
}

// Points `pf` at the input that output tile [t0, t0 + tn) of (n, g) reads: Cg channel rows of the window
// of positions its taps reach. `steps` is the number of kernel calls it is spread over.
template <typename T>
void prefetch_input(const Conv1dParams& p, const T* x, int64_t n, int64_t g, int64_t t0, int64_t tn, int64_t steps,
                    RegionPrefetcher* pf) {
  const int64_t lo = std::max<int64_t>(0, t0 * p.stride - p.pad_lo);
  const int64_t hi = std::min(p.in_length, (t0 + tn - 1) * p.stride + (p.kernel_size - 1) * p.dilation - p.pad_lo + 1);
  const int64_t cg = p.in_per_group(), sz = static_cast<int64_t>(sizeof(T));
  if (tn > 0 && hi > lo) {
    const T* base = x + n * p.x_n + g * cg * p.x_c + lo * p.x_l;
    if (p.layout == Layout::kNCW) pf->add(base, cg, (hi - lo) * sz, p.x_c * sz);
    else if (cg == p.in_channels) pf->add(base, 1, (hi - lo) * p.in_channels * sz, 0);
    else pf->add(base, hi - lo, cg * sz, p.x_l * sz);
  }
  pf->finish(steps);
}

// ---- NCW: rows = output channels, vectors along t -------------------------------------------------------

template <typename T, typename TOut>
void fwd_ncw(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y) {
  using F = acc_t<T>;
  using B = Blocking<F>;
  constexpr int64_t MR = B::MR, NR = B::NR;
  constexpr int64_t kTile = 8 * NR;  // output positions per task
  // With stride 1 and no conversion, im2col rows are just shifted rows of x: read them in place.
  const bool direct = std::is_same_v<T, F> && p.stride == 1;
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size, R = K * cg;
  const int64_t mp = ceil_div(og, MR);
  constexpr int64_t nq_max = kTile / NR;
  const TapBlocks blocks(K, cg, kMaxKc);
  const int64_t max_pieces = blocks.max_pieces();

  // W as A panels, per group: wa[g][panel][r][MR] with r = k*Cg + c, zero rows past Og.
  std::vector<F> wa(static_cast<size_t>(p.groups * mp * R * MR), F(0));
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t o = 0; o < og; ++o) {
      F* dst = wa.data() + ((g * mp + o / MR) * R) * MR + o % MR;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < cg; ++c)
          dst[(k * cg + c) * MR] = widen<F>(w[(g * og + o) * p.w_o + c * p.w_c + k * p.w_k]);
    }

  // Bias per output row, padded like the row panels (null without bias).
  std::vector<F> bias_rows(bias ? static_cast<size_t>(p.groups * mp * MR) : 0, F(0));
  for (int64_t g = 0; bias && g < p.groups; ++g)
    for (int64_t o = 0; o < og; ++o) bias_rows[g * mp * MR + o] = widen<F>(bias[g * og + o]);

  // Tiles run over the flattened (n, t) positions, so short sequences still fill whole vector panels.
  const int64_t U = p.batch * p.out_length, Lo = p.out_length;
  const int64_t tiles = ceil_div(U, kTile);
  const double work = static_cast<double>(og * R * kTile);
  const int64_t tasks = p.groups * tiles;
  parallel_for(tasks, work, [&](int64_t task) {
    const int64_t tile = task % tiles, g = task / tiles;
    const int64_t u0 = tile * kTile, un = std::min(kTile, U - u0);
    const int64_t nq = ceil_div(un, NR), ldc = nq * NR;
    const F* bias_g = bias ? bias_rows.data() + g * mp * MR : nullptr;
    F* c_tile = scratch<F, 0>(mp * MR * ldc);
    F* b_pack = scratch<F, 1>(blocks.max_steps() * ldc);
    PanelA<F>* ap = scratch<PanelA<F>, 2>(max_pieces * mp);
    PanelB<F>* bp = scratch<PanelB<F>, 3>(max_pieces * nq_max);
    TapPiece* pieces = scratch<TapPiece, 4>(max_pieces);
    Segment<F>* segs = scratch<Segment<F>, 5>(max_pieces);
    RegionPrefetcher pf;
    if (task + 1 < tasks) {
      const int64_t nu = ((task + 1) % tiles) * kTile, nt = nu % Lo;
      prefetch_input(p, x, nu / Lo, (task + 1) / tiles, nt, std::min(kTile, Lo - nt), blocks.count() * mp * nq, &pf);
    }
    for (int64_t blk = 0; blk < blocks.count(); ++blk) {
      const int64_t np = blocks.pieces(blk, pieces);
      F* packed = b_pack;
      for (int64_t sg = 0; sg < np; ++sg) {
        const int64_t k = pieces[sg].u, c0 = pieces[sg].i0, kc = pieces[sg].kc;
        const int64_t off = k * p.dilation - p.pad_lo;
        const int64_t tb = first_valid_t(p, k), te = std::max(tb, end_valid_t(p, k));
        PanelB<F>* b = bp + sg * nq_max;
        for (int64_t q = 0; q < nq; ++q) {
          const int64_t ua = u0 + q * NR, n = ua / Lo, ta = ua % Lo;
          if (direct && ta + NR <= Lo && ta >= tb && ta + NR <= te) {  // one batch row; NCW: x_l == 1
            b[q] = {reinterpret_cast<const F*>(x + n * p.x_n + (g * cg + c0) * p.x_c + ta + off), p.x_c};
            continue;
          }
          // im2col rows of this panel, [c][NR]: runs of positions within one batch row, zero outside the input.
          b[q] = {packed, NR};
          for (int64_t c = 0; c < kc; ++c, packed += NR) {
            int64_t j = 0;
            for (int64_t u = ua; j < NR; u = ua + j) {
              const int64_t un_row = u / Lo, t = u % Lo, run = std::min(NR - j, Lo - t);
              if (u >= U) {
                fill_zero(packed + j, NR - j);
                break;
              }
              const int64_t va = std::clamp(tb, t, t + run), vb = std::clamp(te, va, t + run);
              fill_zero(packed + j, va - t);
              gather(packed + j + (va - t), x + un_row * p.x_n + (g * cg + c0 + c) * p.x_c + va * p.stride + off,
                     vb - va, p.stride);
              fill_zero(packed + j + (vb - t), t + run - vb);
              j += run;
            }
          }
        }
        PanelA<F>* a = ap + sg * mp;
        for (int64_t i = 0; i < mp; ++i) a[i] = {wa.data() + ((g * mp + i) * R + k * cg + c0) * MR, MR, 1};
        segs[sg] = {kc, a, b};
      }
      // The first block starts C from the bias.
      gemm_segments(segs, np, mp, nq, c_tile, ldc, &pf, {blk == 0, bias_g, nullptr});
    }
    if (blocks.count() == 0) gemm_segments<F>(nullptr, 0, mp, nq, c_tile, ldc, nullptr, {true, bias_g, nullptr});
    for (int64_t u = u0; u < u0 + un;) {  // NCW: y_t == 1
      const int64_t n = u / Lo, t = u % Lo, run = std::min(u0 + un - u, Lo - t);
      for (int64_t o = 0; o < og; ++o)
        store_row(y + n * p.y_n + (g * og + o) * p.y_o + t, c_tile + o * ldc + (u - u0), run);
      u += run;
    }
  });
}

// ---- NWC: rows = positions, vectors along output channels ---------------------------------------------

template <typename T, typename TOut>
void fwd_nwc(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y) {
  using F = acc_t<T>;
  using B = Blocking<F>;
  constexpr int64_t MR = B::MR, NR = B::NR;
  constexpr int64_t kTile = 8 * MR;  // output positions per task
  constexpr int64_t mp_max = kTile / MR;
  constexpr bool kDirect = std::is_same_v<T, F>;  // x rows can serve as A panels in place
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size, R = K * cg;
  const int64_t nq = ceil_div(og, NR), ldc = nq * NR;
  const TapBlocks blocks(K, cg, kMaxKc);
  const int64_t max_pieces = blocks.max_pieces();

  // W as B panels, per group: wb[g][panel][r][NR] with r = k*Cg + c, zero columns past Og.
  std::vector<F> wb(static_cast<size_t>(p.groups * nq * R * NR), F(0));
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t o = 0; o < og; ++o)
          wb[((g * nq + o / NR) * R + k * cg + c) * NR + o % NR] =
              widen<F>(w[(g * og + o) * p.w_o + c * p.w_c + k * p.w_k]);
  // Bias per output column, per group, padded like a C row.
  std::vector<F> bias_g(static_cast<size_t>(p.groups * ldc), F(0));
  if (bias)
    for (int64_t g = 0; g < p.groups; ++g)
      for (int64_t o = 0; o < og; ++o) bias_g[g * ldc + o] = widen<F>(bias[g * og + o]);

  // Tiles run over the flattened (n, t) positions, so short sequences still fill whole row panels.
  const int64_t U = p.batch * p.out_length, Lo = p.out_length;
  const int64_t tiles = ceil_div(U, kTile);
  const double work = static_cast<double>(og * R * kTile);
  const int64_t tasks = p.groups * tiles;
  parallel_for(tasks, work, [&](int64_t task) {
    const int64_t tile = task % tiles, g = task / tiles;
    const int64_t u0 = tile * kTile, un = std::min(kTile, U - u0);
    const int64_t mp = ceil_div(un, MR);
    F* c_tile = scratch<F, 0>(mp * MR * ldc);
    F* a_pack = scratch<F, 1>(mp * MR * blocks.max_steps());
    PanelA<F>* ap = scratch<PanelA<F>, 2>(max_pieces * mp_max);
    PanelB<F>* bp = scratch<PanelB<F>, 3>(max_pieces * nq);
    TapPiece* pieces = scratch<TapPiece, 4>(max_pieces);
    Segment<F>* segs = scratch<Segment<F>, 5>(max_pieces);
    const F* bias_cols = bias ? bias_g.data() + g * ldc : nullptr;
    RegionPrefetcher pf;
    if (task + 1 < tasks) {
      const int64_t nu = ((task + 1) % tiles) * kTile, nt = nu % Lo;
      prefetch_input(p, x, nu / Lo, (task + 1) / tiles, nt, std::min(kTile, Lo - nt), blocks.count() * mp * nq, &pf);
    }
    const T* rows[MR];
    for (int64_t blk = 0; blk < blocks.count(); ++blk) {
      const int64_t np = blocks.pieces(blk, pieces);
      F* packed = a_pack;
      for (int64_t sg = 0; sg < np; ++sg) {
        const int64_t k = pieces[sg].u, c0 = pieces[sg].i0, kc = pieces[sg].kc;
        const int64_t off = k * p.dilation - p.pad_lo;
        PanelA<F>* a = ap + sg * mp_max;
        for (int64_t i = 0; i < mp; ++i) {
          // Rows u = u0 + i*MR + [0, MR) read x[n, t*stride + off] with (n, t) = divmod(u, Lout).
          const int64_t ua = u0 + i * MR, n = ua / Lo, ta = ua % Lo;
          const int64_t la = ta * p.stride + off, lz = la + (MR - 1) * p.stride;
          if (kDirect && i * MR + MR <= un && ta + MR <= Lo && la >= 0 && lz < p.in_length) {  // NWC: x_c == 1
            a[i] = {reinterpret_cast<const F*>(x + n * p.x_n + g * cg + la * p.x_l + c0), 1, p.stride * p.x_l};
            continue;
          }
          for (int64_t r = 0; r < MR; ++r) {
            const int64_t u = ua + r, nr = u / Lo, l = (u % Lo) * p.stride + off;
            rows[r] = (i * MR + r < un && l >= 0 && l < p.in_length) ? x + nr * p.x_n + g * cg + l * p.x_l + c0 : nullptr;
          }
          a[i] = pack_panel_rows<F>(packed, rows, kc, 1);
          packed += MR * kc;
        }
        PanelB<F>* b = bp + sg * nq;
        for (int64_t q = 0; q < nq; ++q) b[q] = {wb.data() + ((g * nq + q) * R + k * cg + c0) * NR, NR};
        segs[sg] = {kc, a, b};
      }
      // The first block starts C from the bias.
      gemm_segments(segs, np, mp, nq, c_tile, ldc, &pf, {blk == 0, nullptr, bias_cols});
    }
    if (blocks.count() == 0) gemm_segments<F>(nullptr, 0, mp, nq, c_tile, ldc, nullptr, {true, nullptr, bias_cols});
    for (int64_t i = 0; i < un; ++i) {  // NWC: y_o == 1
      const int64_t u = u0 + i;
      store_row(y + (u / Lo) * p.y_n + (u % Lo) * p.y_t + g * og, c_tile + i * ldc, og);
    }
  });
}

// ---- depthwise: one input and one output channel per group ------------------------------------------

template <typename T, typename TOut>
void fwd_depthwise(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y) {
  using F = acc_t<T>;
  const int64_t C = p.in_channels, K = p.kernel_size;
  std::vector<F> wt(static_cast<size_t>(K * C));  // [k][c]
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) wt[k * C + c] = widen<F>(w[c * p.w_o + k * p.w_k]);
  std::vector<F> bv(static_cast<size_t>(C), F(0));
  if (bias)
    for (int64_t c = 0; c < C; ++c) bv[c] = widen<F>(bias[c]);

  if (p.layout == Layout::kNWC) {
    // Vectors along channels: each output row is K scaled input rows.
    constexpr int64_t kTile = 64;
    const int64_t tiles = ceil_div(p.out_length, kTile);
    parallel_for(p.batch * tiles, static_cast<double>(kTile * K * C), [&](int64_t task) {
      const int64_t tile = task % tiles, n = task / tiles;
      const int64_t t0 = tile * kTile, t1 = std::min(p.out_length, t0 + kTile);
      F* acc = scratch<F, 0>(C);
      F* row = scratch<F, 1>(C);
      for (int64_t t = t0; t < t1; ++t) {
        std::copy(bv.begin(), bv.end(), acc);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t l = t * p.stride + k * p.dilation - p.pad_lo;
          if (l < 0 || l >= p.in_length) continue;
          const T* src = x + n * p.x_n + l * p.x_l;
          const F* wk = wt.data() + k * C;
          if constexpr (std::is_same_v<T, F>) {
            for (int64_t c = 0; c < C; ++c) acc[c] += wk[c] * src[c];
          } else {
            for (int64_t c = 0; c < C; ++c) row[c] = widen<F>(src[c]);
            for (int64_t c = 0; c < C; ++c) acc[c] += wk[c] * row[c];
          }
        }
        store_row(y + n * p.y_n + t * p.y_t, acc, C);
      }
    });
    return;
  }
  // NCW: vectors along positions of one channel.
  constexpr int64_t kTile = 1024;
  const int64_t tiles = ceil_div(p.out_length, kTile);
  parallel_for(p.batch * C * tiles, static_cast<double>(kTile * K), [&](int64_t task) {
    const int64_t tile = task % tiles, c = (task / tiles) % C, n = task / (tiles * C);
    const int64_t t0 = tile * kTile, tn = std::min(kTile, p.out_length - t0);
    F* acc = scratch<F, 0>(kTile);
    F* row = scratch<F, 1>(kTile);
    for (int64_t i = 0; i < tn; ++i) acc[i] = bv[c];
    const T* xc = x + n * p.x_n + c * p.x_c;
    for (int64_t k = 0; k < K; ++k) {
      int64_t tb, te;
      tap_range(p, k, t0, t0 + tn, &tb, &te);
      const int64_t off = k * p.dilation - p.pad_lo;
      gather(row, xc + (tb * p.stride + off) * p.x_l, te - tb, p.stride * p.x_l);
      const F wv = wt[k * C + c];
      F* a = acc + (tb - t0);
      for (int64_t i = 0; i < te - tb; ++i) a[i] += wv * row[i];
    }
    store_row(y + n * p.y_n + c * p.y_o + t0, acc, tn);  // NCW: y_t == 1
  });
}

}  // namespace

template <typename T, typename TOut>
void conv1d_fwd_cpu(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y) {
  if (p.y_size() == 0) return;
  if (p.in_per_group() == 1 && p.out_per_group() == 1) return fwd_depthwise(p, x, w, bias, y);
  if (p.layout == Layout::kNCW) return fwd_ncw(p, x, w, bias, y);
  return fwd_nwc(p, x, w, bias, y);
}

template void conv1d_fwd_cpu<float, float>(const Conv1dParams&, const float*, const float*, const float*, float*);
template void conv1d_fwd_cpu<double, double>(const Conv1dParams&, const double*, const double*, const double*,
                                             double*);
template void conv1d_fwd_cpu<bf16, bf16>(const Conv1dParams&, const bf16*, const bf16*, const bf16*, bf16*);
template void conv1d_fwd_cpu<bf16, float>(const Conv1dParams&, const bf16*, const bf16*, const bf16*, float*);
template void conv1d_fwd_cpu<f16, f16>(const Conv1dParams&, const f16*, const f16*, const f16*, f16*);
template void conv1d_fwd_cpu<f16, float>(const Conv1dParams&, const f16*, const f16*, const f16*, float*);

}  // namespace jax_conv1d::cpu
