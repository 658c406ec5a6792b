// Weight gradient on the CPU: dw[o, c, k] = sum over (n, t) of dy[n, o, t] * x[n, c, t*stride + k*dilation
// - pad_lo], a matrix product per group whose reduction runs over every (n, t) -- often millions of terms.
//
// Accuracy: the reduction is cut into blocks of at most a few hundred positions; each block's sum is formed
// in the accumulation type and added into a float64 total.
// Determinism and parallelism: the (n, t) range is split into a number of chunks that depends only on the
// shapes; each task reduces one chunk of one group into its own float64 partial, and the partials are
// added in chunk order at the end. No result depends on which thread ran what.
//   NWC: rows = (k, c) from x, vectors along output channels (dy rows are contiguous in o): outer products.
//   NCW: both operands are contiguous along t, so the kernel takes dot products along t instead.
// Depthwise convolutions take a direct loop with vectors along channels (NWC) or positions (NCW).
#include <algorithm>
#include <vector>

#include "conv1d_cpu.h"
#include "gemm_tile.h"
#include "pack.h"
#include "parallel.h"

namespace jax_conv1d::cpu {

namespace {

// A contiguous range of the flattened (n, t) reduction, t in [0, Lout).
struct Chunks {
  int64_t total, count;
  Chunks(const Conv1dParams& p, int64_t partial_size) : total(p.batch * p.out_length) {
    // Enough chunks to keep threads busy on big reductions, few enough that the float64 partials stay small.
    const int64_t by_work = std::max<int64_t>(1, total / 4096);
    const int64_t by_memory = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, partial_size));
    count = std::min<int64_t>({by_work, by_memory, 32});
  }
  int64_t begin(int64_t i) const { return total * i / count; }
  int64_t end(int64_t i) const { return total * (i + 1) / count; }
};

// Calls fn(n, t0, len, next) for consecutive pieces of [u0, u1) that stay within one batch row and hold at
// most `block` positions; `next` is the flattened start of the following piece (u1 if none).
template <typename Fn>
void for_blocks(const Conv1dParams& p, int64_t u0, int64_t u1, int64_t block, Fn&& fn) {
  for (int64_t u = u0; u < u1;) {
    const int64_t n = u / p.out_length, t = u % p.out_length;
    const int64_t len = std::min({block, p.out_length - t, u1 - u});
    fn(n, t, len, u + len);
    u += len;
  }
}

// Points `pf` at what the block of positions starting at flattened index u (at most `block` of them,
// within [u, u1)) reads from dy and x, for group g, spread over `steps` kernel calls.
template <typename T>
void prefetch_block(const Conv1dParams& p, const T* x, const T* dy, int64_t g, int64_t u, int64_t u1, int64_t block,
                    int64_t steps, RegionPrefetcher* pf) {
  pf->clear();
  if (u < u1) {
    const int64_t n = u / p.out_length, t0 = u % p.out_length;
    const int64_t len = std::min({block, p.out_length - t0, u1 - u});
    const int64_t cg = p.in_per_group(), og = p.out_per_group(), sz = static_cast<int64_t>(sizeof(T));
    const int64_t lo = std::max<int64_t>(0, t0 * p.stride - p.pad_lo);
    const int64_t hi = std::min(p.in_length, (t0 + len - 1) * p.stride + (p.kernel_size - 1) * p.dilation - p.pad_lo + 1);
    const T* dyb = dy + n * p.y_n + g * og * p.y_o + t0 * p.y_t;
    const T* xb = x + n * p.x_n + g * cg * p.x_c + lo * p.x_l;
    if (p.layout == Layout::kNCW) {
      pf->add(dyb, og, len * sz, p.y_o * sz);
      if (hi > lo) pf->add(xb, cg, (hi - lo) * sz, p.x_c * sz);
    } else {
      pf->add(dyb, len, og * sz, p.y_t * sz);
      if (hi > lo) pf->add(xb, hi - lo, cg * sz, p.x_l * sz);
    }
  }
  pf->finish(steps);
}

// Valid positions [tb, te) of tap k within [t0, t0 + len): those reading inside the input.
inline void tap_range(const Conv1dParams& p, int64_t k, int64_t t0, int64_t len, int64_t* tb, int64_t* te) {
  *tb = std::max(t0, first_valid_t(p, k));
  *te = std::max(*tb, std::min(t0 + len, end_valid_t(p, k)));
}

// Adds the chunk partials in chunk order and stores dw; `index(g, e)` maps element e of group g's
// partial to its offset in dw.
template <typename T, typename Index>
void reduce_partials(const std::vector<double>& partials, int64_t groups, int64_t chunks, int64_t per_group,
                     Index index, T* dw) {
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t e = 0; e < per_group; ++e) {
      double v = 0;
      for (int64_t q = 0; q < chunks; ++q) v += partials[(q * groups + g) * per_group + e];
      if constexpr (std::is_same_v<T, double>) dw[index(g, e)] = v;
      else dw[index(g, e)] = from_float<T>(static_cast<float>(v));
    }
}

// ---- NWC: rows = output channels, vectors along (tap, input channel) ------------------------------------

template <typename T>
void wgrad_nwc(const Conv1dParams& p, const T* x, const T* dy, T* dw) {
  using F = acc_t<T>;
  using B = Blocking<F>;
  constexpr int64_t MR = B::MR, NR = B::NR;
  constexpr int64_t kBlock = 128;  // positions per float block (a B panel of it stays in L1)
  constexpr bool kDirect = std::is_same_v<T, F>;  // dy and x rows serve as panels in place
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size;
  const int64_t mp = ceil_div(og, MR);
  // Columns are (tap, channel) with each tap's channels padded to whole panels, so no panel spans two taps.
  const int64_t cgp = round_up(cg, NR), nqk = cgp / NR, ldc = K * cgp;
  const int64_t per_group = og * K * cg;
  const Chunks chunks(p, p.groups * per_group);
  std::vector<double> partials(static_cast<size_t>(chunks.count * p.groups * per_group), 0.0);

  const double work = static_cast<double>(per_group) * chunks.total / chunks.count;
  parallel_for(chunks.count * p.groups, work, [&](int64_t task) {
    const int64_t g = task % p.groups, q = task / p.groups;
    double* total = partials.data() + (q * p.groups + g) * per_group;
    F* c_tile = scratch<F, 0>(mp * MR * ldc);
    F* a_pack = scratch<F, 1>(mp * MR * kBlock);
    F* b_pack = scratch<F, 2>(nqk * NR * kBlock);
    PanelA<F>* ap = scratch<PanelA<F>, 3>(2 * mp);
    PanelB<F>* bp = scratch<PanelB<F>, 4>(nqk);
    RegionPrefetcher pf;
    const T* rows[MR];
    for_blocks(p, chunks.begin(q), chunks.end(q), kBlock, [&](int64_t n, int64_t t0, int64_t len, int64_t next) {
      prefetch_block(p, x, dy, g, next, chunks.end(q), kBlock, K * mp * nqk, &pf);
      const T* dyb = dy + n * p.y_n + t0 * p.y_t + g * og;  // NWC: y_o == 1, x_c == 1
      const T* xg = x + n * p.x_n + g * cg;
      // dy as A panels over the whole block: A(o, t) = dy[t0 + t, o].
      PanelA<F>* a_block = ap + mp;
      for (int64_t i = 0; i < mp; ++i) {
        if (kDirect && i * MR + MR <= og) {
          a_block[i] = {reinterpret_cast<const F*>(dyb + i * MR), p.y_t, 1};
          continue;
        }
        for (int64_t r = 0; r < MR; ++r) rows[r] = i * MR + r < og ? dyb + i * MR + r : nullptr;
        a_block[i] = pack_panel_rows<F>(a_pack + i * MR * kBlock, rows, len, p.y_t);
      }
      fill_zero(c_tile, mp * MR * ldc);
      for (int64_t k = 0; k < K; ++k) {
        int64_t tb, te;
        tap_range(p, k, t0, len, &tb, &te);
        if (te <= tb) continue;
        const int64_t kc = te - tb, shift = tb - t0;
        for (int64_t i = 0; i < mp; ++i)
          ap[i] = {a_block[i].ptr + shift * a_block[i].step, a_block[i].step, a_block[i].row};
        const T* xk = xg + (tb * p.stride + k * p.dilation - p.pad_lo) * p.x_l;  // x row of position tb
        for (int64_t qc = 0; qc < nqk; ++qc) {
          const int64_t c0 = qc * NR, cn = std::min(NR, cg - c0);
          if (kDirect && cn == NR) {
            bp[qc] = {reinterpret_cast<const F*>(xk + c0), p.stride * p.x_l};
            continue;
          }
          F* dst = b_pack + qc * NR * kBlock;
          for (int64_t r = 0; r < kc; ++r) {
            const T* src = xk + r * p.stride * p.x_l + c0;
            for (int64_t j = 0; j < cn; ++j) dst[r * NR + j] = widen<F>(src[j]);
            fill_zero(dst + r * NR + cn, NR - cn);
          }
          bp[qc] = {dst, NR};
        }
        gemm_panels(kc, ap, mp, bp, nqk, c_tile + k * cgp, ldc, &pf);
      }
      for (int64_t o = 0; o < og; ++o)
        for (int64_t k = 0; k < K; ++k) {
          const F* src = c_tile + o * ldc + k * cgp;
          double* dst = total + (o * K + k) * cg;
          for (int64_t c = 0; c < cg; ++c) dst[c] += static_cast<double>(src[c]);
        }
    });
  });
  reduce_partials(partials, p.groups, chunks.count, per_group,
                  [&](int64_t g, int64_t e) {
                    const int64_t o = e / (K * cg), k = (e / cg) % K, c = e % cg;
                    return (g * og + o) * p.w_o + c * p.w_c + k * p.w_k;
                  },
                  dw);
}

// ---- NCW: dot products along t ------------------------------------------------------------------------

template <typename T>
void wgrad_ncw(const Conv1dParams& p, const T* x, const T* dy, T* dw) {
  using F = acc_t<T>;
  using B = Blocking<F>;
  constexpr int64_t MR = B::DOT_MR, ND = B::DOT_ND, L = B::L;
  constexpr int64_t kBlock = 1024;  // positions per float block (as lanes: kBlock / L terms per lane)
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size, N = K * cg;
  const int64_t mp = ceil_div(og, MR), np = ceil_div(N, ND);
  const int64_t per_group = og * N;
  const Chunks chunks(p, p.groups * per_group);
  std::vector<double> partials(static_cast<size_t>(chunks.count * p.groups * per_group), 0.0);

  const double work = static_cast<double>(per_group) * chunks.total / chunks.count;
  parallel_for(chunks.count * p.groups, work, [&](int64_t task) {
    const int64_t g = task % p.groups, q = task / p.groups;
    double* total = partials.data() + (q * p.groups + g) * per_group;
    const int64_t ld = kBlock;
    F* a_rows = scratch<F, 0>(mp * MR * ld);  // dy rows, zero past the block
    F* b_rows = scratch<F, 1>(np * ND * ld);  // im2col rows of x, row = k*Cg + c
    F out[MR * ND];
    RegionPrefetcher pf;
    for_blocks(p, chunks.begin(q), chunks.end(q), kBlock, [&](int64_t n, int64_t t0, int64_t len, int64_t next) {
      prefetch_block(p, x, dy, g, next, chunks.end(q), kBlock, np * mp, &pf);
      const int64_t kc = round_up(len, L);
      for (int64_t o = 0; o < mp * MR; ++o) {
        F* dst = a_rows + o * ld;
        if (o < og) {
          gather(dst, dy + n * p.y_n + (g * og + o) * p.y_o + t0 * p.y_t, len, p.y_t);
          fill_zero(dst + len, kc - len);
        } else {
          fill_zero(dst, kc);
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        int64_t tb, te;
        tap_range(p, k, t0, len, &tb, &te);
        const int64_t off = k * p.dilation - p.pad_lo;
        for (int64_t c = 0; c < cg; ++c) {
          F* dst = b_rows + (k * cg + c) * ld;
          fill_zero(dst, tb - t0);
          gather(dst + (tb - t0), x + n * p.x_n + (g * cg + c) * p.x_c + (tb * p.stride + off) * p.x_l, te - tb,
                 p.stride * p.x_l);
          fill_zero(dst + (te - t0), kc - (te - t0));
        }
      }
      for (int64_t j = N; j < np * ND; ++j) fill_zero(b_rows + j * ld, kc);
      // B rows (ND x kc) stay in L1 while the dy rows stream past them.
      for (int64_t jp = 0; jp < np; ++jp)
        for (int64_t ip = 0; ip < mp; ++ip) {
          dot_kernel<F, MR, ND>(kc, a_rows + ip * MR * ld, ld, b_rows + jp * ND * ld, ld, out);
          pf.step();
          for (int64_t i = 0; i < MR; ++i) {
            const int64_t o = ip * MR + i;
            if (o >= og) break;
            for (int64_t j = 0; j < ND; ++j) {
              const int64_t col = jp * ND + j;
              if (col < N) total[o * N + col] += static_cast<double>(out[i * ND + j]);
            }
          }
        }
    });
  });
  reduce_partials(partials, p.groups, chunks.count, per_group,
                  [&](int64_t g, int64_t e) {
                    const int64_t o = e / N, col = e % N, k = col / cg, c = col % cg;
                    return (g * og + o) * p.w_o + c * p.w_c + k * p.w_k;
                  },
                  dw);
}

// ---- depthwise --------------------------------------------------------------------------------------

template <typename T>
void wgrad_depthwise(const Conv1dParams& p, const T* x, const T* dy, T* dw) {
  using F = acc_t<T>;
  const int64_t C = p.in_channels, K = p.kernel_size;
  const int64_t per_chunk = K * C;  // one partial per chunk: [k][c]
  const Chunks chunks(p, per_chunk);
  std::vector<double> partials(static_cast<size_t>(chunks.count * per_chunk), 0.0);

  if (p.layout == Layout::kNWC) {
    constexpr int64_t kBlock = 256;
    parallel_for(chunks.count, static_cast<double>(per_chunk) * chunks.total / chunks.count, [&](int64_t q) {
      double* total = partials.data() + q * per_chunk;
      F* acc = scratch<F, 0>(per_chunk);
      F* row = scratch<F, 1>(2 * C);
      for_blocks(p, chunks.begin(q), chunks.end(q), kBlock, [&](int64_t n, int64_t t0, int64_t len, int64_t) {
        fill_zero(acc, per_chunk);
        for (int64_t t = t0; t < t0 + len; ++t) {
          const T* dyt = dy + n * p.y_n + t * p.y_t;
          F* d = row + C;
          for (int64_t c = 0; c < C; ++c) d[c] = widen<F>(dyt[c]);
          for (int64_t k = 0; k < K; ++k) {
            const int64_t l = t * p.stride + k * p.dilation - p.pad_lo;
            if (l < 0 || l >= p.in_length) continue;
            const T* xl = x + n * p.x_n + l * p.x_l;
            F* a = acc + k * C;
            if constexpr (std::is_same_v<T, F>) {
              for (int64_t c = 0; c < C; ++c) a[c] += d[c] * xl[c];
            } else {
              for (int64_t c = 0; c < C; ++c) row[c] = widen<F>(xl[c]);
              for (int64_t c = 0; c < C; ++c) a[c] += d[c] * row[c];
            }
          }
        }
        for (int64_t e = 0; e < per_chunk; ++e) total[e] += static_cast<double>(acc[e]);
      });
    });
  } else {
    // One channel's rows are contiguous in t: per (chunk, channel) dot products.
    constexpr int64_t kBlock = 1024;  // as lanes: kBlock / L terms per lane
    constexpr int64_t L = kLanes<F>;
    parallel_for(chunks.count * C, static_cast<double>(K) * chunks.total / chunks.count, [&](int64_t task) {
      const int64_t c = task % C, q = task / C;
      double* total = partials.data() + q * per_chunk;
      F* d = scratch<F, 0>(kBlock);
      F* xr = scratch<F, 1>(kBlock);
      for_blocks(p, chunks.begin(q), chunks.end(q), kBlock, [&](int64_t n, int64_t t0, int64_t len, int64_t) {
        const int64_t kc = round_up(len, L);
        gather(d, dy + n * p.y_n + c * p.y_o + t0 * p.y_t, len, p.y_t);
        fill_zero(d + len, kc - len);
        for (int64_t k = 0; k < K; ++k) {
          int64_t tb, te;
          tap_range(p, k, t0, len, &tb, &te);
          if (te <= tb) continue;
          fill_zero(xr, tb - t0);
          gather(xr + (tb - t0), x + n * p.x_n + c * p.x_c + (tb * p.stride + k * p.dilation - p.pad_lo) * p.x_l,
                 te - tb, p.stride * p.x_l);
          fill_zero(xr + (te - t0), kc - (te - t0));
          F s;
          dot_kernel<F, 1, 1>(kc, d, kc, xr, kc, &s);
          total[k * C + c] += static_cast<double>(s);
        }
      });
    });
  }
  reduce_partials(partials, 1, chunks.count, per_chunk,
                  [&](int64_t, int64_t e) { return (e % C) * p.w_o + (e / C) * p.w_k; }, dw);
}

}  // namespace

template <typename T>
void conv1d_wgrad_cpu(const Conv1dParams& p, const T* x, const T* dy, T* dw) {
  if (p.w_size() == 0) return;
  if (p.in_per_group() == 1 && p.out_per_group() == 1) return wgrad_depthwise(p, x, dy, dw);
  if (p.layout == Layout::kNCW) return wgrad_ncw(p, x, dy, dw);
  return wgrad_nwc(p, x, dy, dw);
}

template void conv1d_wgrad_cpu<float>(const Conv1dParams&, const float*, const float*, float*);
template void conv1d_wgrad_cpu<double>(const Conv1dParams&, const double*, const double*, double*);
template void conv1d_wgrad_cpu<bf16>(const Conv1dParams&, const bf16*, const bf16*, bf16*);
template void conv1d_wgrad_cpu<f16>(const Conv1dParams&, const f16*, const f16*, f16*);

}  // namespace jax_conv1d::cpu
