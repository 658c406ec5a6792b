// Weight gradient on the CPU: dw[o, c, k] = sum over (n, t) of dy[n, o, t] * x[n, c, t*stride + k*dilation
// - pad_lo], a matrix product per group whose reduction runs over every (n, t) -- often millions of terms.
//
// Accuracy: the reduction is cut into blocks of at most a few hundred positions (gathered across batch rows
// when rows are short); each block's sum is formed in the accumulation type and added into a float64 total.
// Determinism: the flattened (n, t) range is split into chunks whose number depends only on the shapes;
// each chunk has its own float64 partial, and the partials are added in chunk order at the end. Tasks may
// further split the output channels, which changes no sum. No result depends on which thread ran what.
//   NWC: rows = output channels (dy rows), vectors along (tap, input channel) (x rows): outer products,
//        both operands read in place.
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

// A split of the flattened (n, t) reduction, t in [0, Lout), into contiguous chunks.
struct Chunks {
  int64_t total, count;
  // work_per_position: multiply-adds per reduction position; partial_size: float64s in one chunk's partial.
  Chunks(const Conv1dParams& p, int64_t work_per_position, int64_t partial_size) : total(p.batch * p.out_length) {
    // Enough chunks for the threads on big reductions (>= ~16M multiply-adds and >= 2048 positions each),
    // few enough that the partials stay within ~32 MB. Output blocks provide the rest of the parallelism.
    const double work = static_cast<double>(total) * static_cast<double>(work_per_position);
    const int64_t by_work = std::max<int64_t>(1, static_cast<int64_t>(std::min(work / 1.6e7, 1.0e6)));
    const int64_t by_length = std::max<int64_t>(1, total / 2048);
    const int64_t by_memory = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, partial_size));
    count = std::min<int64_t>({by_work, by_length, by_memory, 32});
  }
  int64_t begin(int64_t i) const { return total * i / count; }
  int64_t end(int64_t i) const { return total * (i + 1) / count; }
};

// A run of positions within one batch row.
struct Piece {
  int64_t n, t0, len;
};

// The block of at most `block` positions starting at flattened index u (within [u, u1)), as pieces that
// each stay within one batch row. Returns the number of pieces; *next is where the following block starts.
inline int64_t block_pieces(const Conv1dParams& p, int64_t u, int64_t u1, int64_t block, Piece* out, int64_t* next) {
  int64_t np = 0;
  const int64_t end = std::min(u1, u + block);
  while (u < end) {
    const int64_t n = u / p.out_length, t = u % p.out_length, len = std::min(p.out_length - t, end - u);
    out[np++] = {n, t, len};
    u += len;
  }
  *next = u;
  return np;
}

// Points `pf` at what the block starting at flattened index u reads from dy (output channels [o0, o1) of
// group g) and x (group g), spread over `steps` kernel calls.
template <typename T>
void prefetch_block(const Conv1dParams& p, const T* x, const T* dy, int64_t g, int64_t o0, int64_t o1, int64_t u,
                    int64_t u1, int64_t block, int64_t steps, RegionPrefetcher* pf) {
  pf->clear();
  if (u < u1) {
    const int64_t n = u / p.out_length, t0 = u % p.out_length;
    const int64_t len = std::min({block, p.out_length - t0, u1 - u});
    const int64_t cg = p.in_per_group(), og = p.out_per_group(), sz = static_cast<int64_t>(sizeof(T));
    const int64_t lo = std::max<int64_t>(0, t0 * p.stride - p.pad_lo);
    const int64_t hi = std::min(p.in_length, (t0 + len - 1) * p.stride + (p.kernel_size - 1) * p.dilation - p.pad_lo + 1);
    const T* dyb = dy + n * p.y_n + (g * og + o0) * p.y_o + t0 * p.y_t;
    const T* xb = x + n * p.x_n + g * cg * p.x_c + lo * p.x_l;
    if (p.layout == Layout::kNCW) {
      pf->add(dyb, o1 - o0, len * sz, p.y_o * sz);
      if (hi > lo) pf->add(xb, cg, (hi - lo) * sz, p.x_c * sz);
    } else {
      pf->add(dyb, len, (o1 - o0) * sz, p.y_t * sz);
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

// A split of [0, size) into near-equal blocks of whole `unit`s, each at most `cap` (a multiple of unit).
struct Blocks {
  int64_t size, block, count;
  Blocks(int64_t size_, int64_t unit, int64_t cap) : size(size_) {
    count = std::max<int64_t>(1, ceil_div(size, cap));
    block = std::max(unit, round_up(ceil_div(size, count), unit));
    count = std::max<int64_t>(1, ceil_div(size, block));
  }
  int64_t begin(int64_t i) const { return i * block; }
  int64_t end(int64_t i) const { return std::min(size, (i + 1) * block); }
};

// Adds the chunk partials in chunk order and stores dw. Each chunk's partial is laid out [g][o][k][c]; dw
// is written along its contiguous axis: output channels for NWC (16 at a time, reading 16 partial rows),
// (c, k) for NCW. Rows are independent, so they are reduced in parallel.
template <typename T>
void reduce_partials(const Conv1dParams& p, const std::vector<double>& partials, int64_t chunks, T* dw) {
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size, row = K * cg;
  const int64_t rows = p.groups * og, stride = rows * row;
  auto sum = [&](int64_t r, int64_t k, int64_t c) {
    double v = 0;
    for (int64_t q = 0; q < chunks; ++q) v += partials[q * stride + r * row + k * cg + c];
    return v;
  };
  auto put = [](T* dst, double v) {
    if constexpr (std::is_same_v<T, double>) *dst = v;
    else *dst = from_float<T>(static_cast<float>(v));
  };
  if (p.w_o == 1) {
    constexpr int64_t kRun = 16;
    const int64_t runs = ceil_div(og, kRun);
    parallel_for(p.groups * runs, static_cast<double>(kRun * row * chunks), [&](int64_t task) {
      const int64_t g = task / runs, o0 = (task % runs) * kRun, o1 = std::min(og, o0 + kRun);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < cg; ++c) {
          T* dst = dw + c * p.w_c + k * p.w_k + g * og;
          for (int64_t o = o0; o < o1; ++o) put(dst + o, sum(g * og + o, k, c));
        }
    });
    return;
  }
  parallel_for(rows, static_cast<double>(row * chunks), [&](int64_t r) {
    T* dst = dw + r * p.w_o;  // r = g*Og + o
    for (int64_t c = 0; c < cg; ++c)
      for (int64_t k = 0; k < K; ++k) put(dst + c * p.w_c + k * p.w_k, sum(r, k, c));
  });
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
  // Columns are (tap, channel) with each tap's channels padded to whole panels, so no panel spans two taps.
  // With fewer channels than a panel is wide, per-tap padding would waste most columns: then the
  // (tap, channel) columns are packed densely instead, k*Cg + c, panels spanning taps.
  const bool dense = cg < NR;
  const int64_t cgp = round_up(cg, NR), nqk = dense ? 0 : cgp / NR;
  const int64_t col_panels = dense ? ceil_div(K * cg, NR) : K * nqk;
  const int64_t per_group = og * K * cg;
  const Chunks chunks(p, p.groups * per_group, p.groups * per_group);
  // Output tiles of at most ~140 x 192 keep the float block sums in L2.
  const Blocks orows(og, MR, 10 * MR), ocols(col_panels, 1, 6);  // ocols counts column panels
  const int64_t mp_max = orows.block / MR, ldc = ocols.block * NR;
  // A task takes one chunk of one group and a run of output row blocks; within each block of positions it
  // visits all its output tiles, so the block's dy and x come from memory once. Row blocks are split over
  // tasks only as far as the threads need (that split changes no sum).
  const int64_t splits = std::clamp<int64_t>(ceil_div(2 * worker_count(), chunks.count * p.groups), 1, orows.count);
  std::vector<double> partials(static_cast<size_t>(chunks.count * p.groups * per_group), 0.0);

  const double work = static_cast<double>(per_group) * chunks.total / (chunks.count * splits);
  parallel_for(chunks.count * p.groups * splits, work, [&](int64_t task) {
    const int64_t sp = task % splits, g = (task / splits) % p.groups, q = task / (splits * p.groups);
    const int64_t rb0 = orows.count * sp / splits, rb1 = orows.count * (sp + 1) / splits;
    if (rb0 >= rb1) return;
    double* total = partials.data() + (q * p.groups + g) * per_group;
    F* c_tile = scratch<F, 0>(mp_max * MR * ldc);
    F* a_pack = scratch<F, 1>(mp_max * MR * kBlock);         // [panel][position in block][MR]
    F* b_pack = scratch<F, 2>(ocols.block * NR * kBlock);    // [column panel][position in block][NR]
    PanelA<F>* a_all = scratch<PanelA<F>, 3>(kBlock * mp_max);  // per piece: its panels from the piece start
    PanelA<F>* a_tap = scratch<PanelA<F>, 4>(kBlock * mp_max);  // per piece: shifted to a tap's first position
    PanelB<F>* b_tap = scratch<PanelB<F>, 5>(kBlock * ocols.block);
    Segment<F>* segs = scratch<Segment<F>, 6>(kBlock);
    Piece* pieces = scratch<Piece, 7>(kBlock);
    RegionPrefetcher pf;
    const T* rows[MR];

    // dy as A panels over the block for output rows [o0, o1): A(o, t) = dy[n, t, o], in place or packed.
    auto set_a_panels = [&](int64_t np, int64_t o0, int64_t o1) {
      const int64_t mp = ceil_div(o1 - o0, MR);
      for (int64_t pc = 0, pos = 0; pc < np; pos += pieces[pc].len, ++pc) {
        const auto [n, t0, len] = pieces[pc];
        const T* dyb = dy + n * p.y_n + t0 * p.y_t + g * og + o0;  // NWC: y_o == 1
        for (int64_t i = 0; i < mp; ++i) {
          if (kDirect && o0 + i * MR + MR <= o1) {
            a_all[pc * mp_max + i] = {reinterpret_cast<const F*>(dyb + i * MR), p.y_t, 1};
            continue;
          }
          for (int64_t r = 0; r < MR; ++r) rows[r] = o0 + i * MR + r < o1 ? dyb + i * MR + r : nullptr;
          a_all[pc * mp_max + i] = pack_panel_rows<F>(a_pack + (i * kBlock + pos) * MR, rows, len, p.y_t);
        }
      }
    };

    // Dense columns: x packed per piece as [column panel][position][NR], column k*Cg + c, zero where the
    // tap misses the input; the pieces are the segments of one product.
    auto dense_tile = [&](int64_t np, int64_t mp, int64_t cp0, int64_t cp1) {
      for (int64_t pc = 0, pos = 0; pc < np; pos += pieces[pc].len, ++pc) {
        const auto [n, t0, len] = pieces[pc];
        PanelB<F>* b = b_tap + pc * ocols.block;
        for (int64_t qc = cp0; qc < cp1; ++qc) {
          F* dst = b_pack + ((qc - cp0) * kBlock + pos) * NR;
          b[qc - cp0] = {dst, NR};
          const int64_t j0 = qc * NR, j1 = std::min(K * cg, j0 + NR), k0 = j0 / cg, c0 = j0 % cg;
          const T* xn = x + n * p.x_n + g * cg;  // NWC: x_c == 1
          for (int64_t t = t0; t < t0 + len; ++t, dst += NR) {
            int64_t j = j0;
            for (int64_t k = k0, c = c0; j < j1; ++k, c = 0) {
              const int64_t cn = std::min(cg - c, j1 - j);
              const int64_t l = t * p.stride + k * p.dilation - p.pad_lo;
              F* d = dst + (j - j0);
              if (l >= 0 && l < p.in_length) {
                const T* src = xn + l * p.x_l + c;
                for (int64_t e = 0; e < cn; ++e) d[e] = widen<F>(src[e]);
              } else {
                for (int64_t e = 0; e < cn; ++e) d[e] = F(0);
              }
              j += cn;
            }
            for (; j < j0 + NR; ++j) dst[j - j0] = F(0);
          }
        }
        segs[pc] = {len, a_all + pc * mp_max, b};
      }
      gemm_segments(segs, np, mp, cp1 - cp0, c_tile, ldc, &pf, {true});
    };

    // Per-tap columns, tap by tap: x rows read in place (or packed for a partial panel); each piece is a
    // segment over the positions where the tap lands inside the input.
    auto tap_tile = [&](int64_t np, int64_t mp, int64_t cp0, int64_t cp1) {
      for (int64_t cp = cp0; cp < cp1;) {
        const int64_t k = cp / nqk, cp_end = std::min(cp1, (k + 1) * nqk);
        int64_t nseg = 0;
        for (int64_t pc = 0, pos = 0; pc < np; pos += pieces[pc].len, ++pc) {
          const auto [n, t0, len] = pieces[pc];
          int64_t tb, te;
          tap_range(p, k, t0, len, &tb, &te);
          if (te <= tb) continue;
          const int64_t kc = te - tb, shift = tb - t0;
          PanelA<F>* a = a_tap + nseg * mp_max;
          for (int64_t i = 0; i < mp; ++i) {
            const PanelA<F>& src = a_all[pc * mp_max + i];
            a[i] = {src.ptr + shift * src.step, src.step, src.row};
          }
          const T* xk = x + n * p.x_n + g * cg + (tb * p.stride + k * p.dilation - p.pad_lo) * p.x_l;
          PanelB<F>* b = b_tap + nseg * ocols.block;
          for (int64_t qc = cp; qc < cp_end; ++qc) {
            const int64_t c0 = (qc - k * nqk) * NR, cn = std::min(NR, cg - c0);
            if (kDirect && cn == NR) {
              b[qc - cp] = {reinterpret_cast<const F*>(xk + c0), p.stride * p.x_l};
              continue;
            }
            F* dst = b_pack + ((qc - cp0) * kBlock + pos + shift) * NR;
            for (int64_t r = 0; r < kc; ++r) {
              const T* src = xk + r * p.stride * p.x_l + c0;
              for (int64_t j = 0; j < cn; ++j) dst[r * NR + j] = widen<F>(src[j]);
              fill_zero(dst + r * NR + cn, NR - cn);
            }
            b[qc - cp] = {dst, NR};
          }
          segs[nseg++] = {kc, a, b};
        }
        gemm_segments(segs, nseg, mp, cp_end - cp, c_tile + (cp - cp0) * NR, ldc, &pf, {true});
        cp = cp_end;
      }
    };

    const int64_t u_end = chunks.end(q);
    for (int64_t u = chunks.begin(q), next; u < u_end; u = next) {
      const int64_t np = block_pieces(p, u, u_end, kBlock, pieces, &next);
      prefetch_block(p, x, dy, g, orows.begin(rb0), orows.end(rb1 - 1), next, u_end, kBlock,
                     (rb1 - rb0) * mp_max * col_panels, &pf);
      for (int64_t rb = rb0; rb < rb1; ++rb) {
        const int64_t o0 = orows.begin(rb), o1 = orows.end(rb), mp = ceil_div(o1 - o0, MR);
        set_a_panels(np, o0, o1);
        for (int64_t cb = 0; cb < ocols.count; ++cb) {
          const int64_t cp0 = ocols.begin(cb), cp1 = ocols.end(cb);
          // Each column panel is written once per block (fresh), by one product.
          if (dense) dense_tile(np, mp, cp0, cp1);
          else tap_tile(np, mp, cp0, cp1);
          // Fold the block's float sums into the float64 partial.
          for (int64_t cp = cp0; cp < cp1; ++cp) {
            const int64_t k = dense ? 0 : cp / nqk, j0 = dense ? cp * NR : (cp - k * nqk) * NR;
            const int64_t cn = std::min(NR, (dense ? K * cg : cg) - j0);
            for (int64_t o = o0; o < o1; ++o) {
              const F* src = c_tile + (o - o0) * ldc + (cp - cp0) * NR;
              double* dst = total + (o * K + k) * cg + j0;  // dense: column j0 + c is k*Cg + c already
              for (int64_t c = 0; c < cn; ++c) dst[c] += static_cast<double>(src[c]);
            }
          }
        }
      }
    }
  });
  reduce_partials(p, partials, chunks.count, dw);
}

// ---- NCW: dot products along t ------------------------------------------------------------------------

template <typename T>
void wgrad_ncw(const Conv1dParams& p, const T* x, const T* dy, T* dw) {
  using F = acc_t<T>;
  using B = Blocking<F>;
  constexpr int64_t MR = B::DOT_MR, ND = B::DOT_ND, L = B::L;
  constexpr int64_t kBlock = 1024;  // positions per float block (as lanes: kBlock / L terms per lane)
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size, N = K * cg;
  const int64_t per_group = og * N;
  const Chunks chunks(p, p.groups * per_group, p.groups * per_group);
  // Output tiles of at most 128 dy rows x 192 im2col rows: one block's packed rows of a tile (~1.3 MB of
  // float32) stay in L2.
  const Blocks orows(og, MR, 32 * MR), ocols(N, ND, 32 * ND);
  // As in wgrad_nwc: a task takes a chunk, a group and a run of row blocks, and visits its tiles per block.
  const int64_t splits = std::clamp<int64_t>(ceil_div(2 * worker_count(), chunks.count * p.groups), 1, orows.count);
  std::vector<double> partials(static_cast<size_t>(chunks.count * p.groups * per_group), 0.0);

  const double work = static_cast<double>(per_group) * chunks.total / (chunks.count * splits);
  parallel_for(chunks.count * p.groups * splits, work, [&](int64_t task) {
    const int64_t sp = task % splits, g = (task / splits) % p.groups, q = task / (splits * p.groups);
    const int64_t rb0 = orows.count * sp / splits, rb1 = orows.count * (sp + 1) / splits;
    if (rb0 >= rb1) return;
    double* total = partials.data() + (q * p.groups + g) * per_group;
    const int64_t ld = kBlock;
    F* a_rows = scratch<F, 0>(orows.block * ld);  // dy rows of the block, zero past its end
    F* b_rows = scratch<F, 1>(ocols.block * ld);  // im2col rows of x, row j = k*Cg + c (minus the tile's first)
    Piece* pieces = scratch<Piece, 2>(kBlock);
    F out[MR * ND];
    RegionPrefetcher pf;
    const int64_t u_end = chunks.end(q);
    for (int64_t u = chunks.begin(q), next; u < u_end; u = next) {
      const int64_t npc = block_pieces(p, u, u_end, kBlock, pieces, &next);
      prefetch_block(p, x, dy, g, orows.begin(rb0), orows.end(rb1 - 1), next, u_end, kBlock,
                     (rb1 - rb0) * (orows.block / MR) * ceil_div(N, ND), &pf);
      const int64_t len = next - u, kc = round_up(len, L);
      for (int64_t rb = rb0; rb < rb1; ++rb) {
        const int64_t o0 = orows.begin(rb), o1 = orows.end(rb), mp = ceil_div(o1 - o0, MR);
        for (int64_t o = 0; o < mp * MR; ++o) {
          F* dst = a_rows + o * ld;
          if (o0 + o >= o1) {
            fill_zero(dst, kc);
            continue;
          }
          for (int64_t pc = 0; pc < npc; ++pc) {
            const auto [n, t0, plen] = pieces[pc];
            gather(dst, dy + n * p.y_n + (g * og + o0 + o) * p.y_o + t0 * p.y_t, plen, p.y_t);
            dst += plen;
          }
          fill_zero(dst, kc - len);
        }
        for (int64_t cb = 0; cb < ocols.count; ++cb) {
          const int64_t j0 = ocols.begin(cb), j1 = ocols.end(cb), np = ceil_div(j1 - j0, ND);
          for (int64_t j = j0; j < j0 + np * ND; ++j) {
            F* dst = b_rows + (j - j0) * ld;
            if (j >= j1) {
              fill_zero(dst, kc);
              continue;
            }
            const int64_t k = j / cg, c = j % cg, off = k * p.dilation - p.pad_lo;
            for (int64_t pc = 0; pc < npc; ++pc) {
              const auto [n, t0, plen] = pieces[pc];
              int64_t tb, te;
              tap_range(p, k, t0, plen, &tb, &te);
              fill_zero(dst, tb - t0);
              gather(dst + (tb - t0), x + n * p.x_n + (g * cg + c) * p.x_c + (tb * p.stride + off) * p.x_l,
                     te - tb, p.stride * p.x_l);
              fill_zero(dst + (te - t0), plen - (te - t0));
              dst += plen;
            }
            fill_zero(dst, kc - len);
          }
          // B rows (ND x kc) stay in L1 while the dy rows stream past them.
          for (int64_t jp = 0; jp < np; ++jp)
            for (int64_t ip = 0; ip < mp; ++ip) {
              dot_kernel<F, MR, ND>(kc, a_rows + ip * MR * ld, ld, b_rows + jp * ND * ld, ld, out);
              pf.step();
              for (int64_t i = 0; i < MR && o0 + ip * MR + i < o1; ++i) {
                double* dst = total + (o0 + ip * MR + i) * N + j0 + jp * ND;
                for (int64_t jj = 0; jj < ND && j0 + jp * ND + jj < j1; ++jj)
                  dst[jj] += static_cast<double>(out[i * ND + jj]);
              }
            }
        }
      }
    }
  });
  reduce_partials(p, partials, chunks.count, dw);
}

// ---- depthwise --------------------------------------------------------------------------------------

template <typename T>
void wgrad_depthwise(const Conv1dParams& p, const T* x, const T* dy, T* dw) {
  using F = acc_t<T>;
  const int64_t C = p.in_channels, K = p.kernel_size;
  const int64_t per_chunk = K * C;  // one partial per chunk: [c][k], as reduce_partials reads it
  const Chunks chunks(p, per_chunk, per_chunk);
  std::vector<double> partials(static_cast<size_t>(chunks.count * per_chunk), 0.0);

  if (p.layout == Layout::kNWC) {
    // Vectors along channels; a block's float sums are folded into the float64 partial.
    constexpr int64_t kBlock = 256;
    parallel_for(chunks.count, static_cast<double>(per_chunk) * chunks.total / chunks.count, [&](int64_t q) {
      double* total = partials.data() + q * per_chunk;
      F* acc = scratch<F, 0>(per_chunk);
      F* row = scratch<F, 1>(2 * C);
      Piece* pieces = scratch<Piece, 2>(kBlock);
      const int64_t u_end = chunks.end(q);
      for (int64_t u = chunks.begin(q), next; u < u_end; u = next) {
        const int64_t np = block_pieces(p, u, u_end, kBlock, pieces, &next);
        fill_zero(acc, per_chunk);
        for (int64_t pc = 0; pc < np; ++pc) {
          const auto [n, t0, len] = pieces[pc];
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
        }
        for (int64_t k = 0; k < K; ++k)
          for (int64_t c = 0; c < C; ++c) total[c * K + k] += static_cast<double>(acc[k * C + c]);
      }
    });
  } else {
    // One channel's rows are contiguous in t: per (chunk, channel) dot products over gathered blocks.
    constexpr int64_t kBlock = 1024;  // as lanes: kBlock / L terms per lane
    constexpr int64_t L = kLanes<F>;
    parallel_for(chunks.count * C, static_cast<double>(K) * chunks.total / chunks.count, [&](int64_t task) {
      const int64_t c = task % C, q = task / C;
      double* total = partials.data() + q * per_chunk;
      F* d = scratch<F, 0>(kBlock);
      F* xr = scratch<F, 1>(kBlock);
      Piece* pieces = scratch<Piece, 2>(kBlock);
      const int64_t u_end = chunks.end(q);
      for (int64_t u = chunks.begin(q), next; u < u_end; u = next) {
        const int64_t np = block_pieces(p, u, u_end, kBlock, pieces, &next);
        const int64_t len = next - u, kc = round_up(len, L);
        F* dd = d;
        for (int64_t pc = 0; pc < np; ++pc) {
          gather(dd, dy + pieces[pc].n * p.y_n + c * p.y_o + pieces[pc].t0 * p.y_t, pieces[pc].len, p.y_t);
          dd += pieces[pc].len;
        }
        fill_zero(dd, kc - len);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t off = k * p.dilation - p.pad_lo;
          F* xx = xr;
          for (int64_t pc = 0; pc < np; ++pc) {
            const auto [n, t0, plen] = pieces[pc];
            int64_t tb, te;
            tap_range(p, k, t0, plen, &tb, &te);
            fill_zero(xx, tb - t0);
            gather(xx + (tb - t0), x + n * p.x_n + c * p.x_c + (tb * p.stride + off) * p.x_l, te - tb,
                   p.stride * p.x_l);
            fill_zero(xx + (te - t0), plen - (te - t0));
            xx += plen;
          }
          fill_zero(xx, kc - len);
          F s;
          dot_kernel<F, 1, 1>(kc, d, kc, xr, kc, &s);
          total[c * K + k] += static_cast<double>(s);
        }
      }
    });
  }
  reduce_partials(p, partials, chunks.count, dw);
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
