// Input gradient on the CPU, as a gather: dx[n, c, l] = sum over (o, k, t) with t*stride + k*dilation -
// pad_lo == l of w[o, c, k] * dy[n, o, t]. Splitting l by its phase mod stride makes the set of taps fixed:
// for l = phi + j*stride, tap k contributes iff (phi + pad_lo - k*dilation) is a multiple of the stride, and
// then reads dy at t = j + q_k with q_k = (phi + pad_lo - k*dilation) / stride. Within a phase the pass is a
// matrix product over r = (k, o), with no wasted multiply-adds for stride > 1:
//   NCW: rows = input channels (weights, packed once per call), vectors along j (rows of dy, per tile);
//   NWC: rows = positions j (rows of dy, per tile), vectors along input channels (weights, packed once).
// Each task owns a tile of input positions, all phases of it (a stretch of one batch row, or several whole
// rows when rows are short), so every dx element is written exactly once by one thread: zero where no tap
// reaches it.
#include <algorithm>
#include <vector>

#include "conv1d_cpu.h"
#include "gemm_tile.h"
#include "pack.h"
#include "parallel.h"

namespace jax_conv1d::cpu {

namespace {

constexpr int64_t kMaxKc = 192;  // reduction steps per kernel call (the B panel stays in L1)

struct Tap {
  int64_t k;  // tap index
  int64_t q;  // dy position offset: t = j + q
};

// taps[phi] lists the taps that reach input positions l = phi (mod stride).
std::vector<std::vector<Tap>> phase_taps(const Conv1dParams& p) {
  std::vector<std::vector<Tap>> taps(static_cast<size_t>(p.stride));
  for (int64_t phi = 0; phi < p.stride; ++phi)
    for (int64_t k = 0; k < p.kernel_size; ++k) {
      const int64_t a = phi + p.pad_lo - k * p.dilation;
      if (a - floor_div(a, p.stride) * p.stride == 0) taps[phi].push_back({k, floor_div(a, p.stride)});
    }
  return taps;
}

// Number of input positions l = phi + j*stride inside [0, L).
inline int64_t phase_count(const Conv1dParams& p, int64_t phi) {
  return phi < p.in_length ? ceil_div(p.in_length - phi, p.stride) : 0;
}

// Points `pf` at the dy rows that input tile [j0, j0 + jt) (per phase) of (n, g) reads.
template <typename T>
void prefetch_dy(const Conv1dParams& p, const T* dy, int64_t n, int64_t g, int64_t j0, int64_t jt, int64_t q_lo,
                 int64_t q_hi, int64_t steps, RegionPrefetcher* pf) {
  const int64_t lo = std::max<int64_t>(0, j0 + q_lo), hi = std::min(p.out_length, j0 + jt + q_hi);
  const int64_t og = p.out_per_group(), sz = static_cast<int64_t>(sizeof(T));
  if (hi > lo) {
    const T* base = dy + n * p.y_n + g * og * p.y_o + lo * p.y_t;
    if (p.layout == Layout::kNCW) pf->add(base, og, (hi - lo) * sz, p.y_o * sz);
    else if (og == p.out_channels) pf->add(base, 1, (hi - lo) * og * sz, 0);
    else pf->add(base, hi - lo, og * sz, p.y_t * sz);
  }
  pf->finish(steps);
}

// How input positions are dealt out to tasks. Long rows: a task owns a tile of `jt` positions of every
// phase of one batch row. Short rows: a task owns whole batch rows [n0, n0 + rows), their positions of
// each phase laid end to end, so the tile still fills its panels.
struct DgradTiles {
  int64_t jt, rows, jtiles, nblocks;
  DgradTiles(const Conv1dParams& p, int64_t tile) {
    const int64_t jmax = ceil_div(p.in_length, p.stride);  // positions of phase 0, the longest
    if (2 * jmax >= tile) {
      jt = tile, rows = 1, jtiles = ceil_div(jmax, tile);
    } else {
      jt = std::max<int64_t>(jmax, 1), rows = tile / jt, jtiles = 1;
    }
    nblocks = ceil_div(p.batch, rows);
  }
  int64_t tasks(int64_t groups) const { return groups * nblocks * jtiles; }
};

// One task's share: batch rows [n0, n0 + nrows), phase positions [j0, j0 + jt) of each.
struct DgradTask {
  int64_t g, n0, nrows, j0;
  DgradTask(const Conv1dParams& p, const DgradTiles& t, int64_t task) {
    const int64_t jtile = task % t.jtiles, nb = (task / t.jtiles) % t.nblocks;
    g = task / (t.jtiles * t.nblocks);
    n0 = nb * t.rows, nrows = std::min(t.rows, p.batch - n0), j0 = jtile * t.jt;
  }
  // Positions of phase phi per row (0 if none); v = row * len + (j - j0) indexes the tile's positions.
  int64_t len(const Conv1dParams& p, const DgradTiles& t, int64_t phi) const {
    return std::max<int64_t>(0, std::min(t.jt, phase_count(p, phi) - j0));
  }
};

// ---- NCW: rows = input channels, vectors along the tile's positions ----------------------------------

template <typename T>
void dgrad_ncw(const Conv1dParams& p, const T* dy, const T* w, T* dx) {
  using F = acc_t<T>;
  using B = Blocking<F>;
  constexpr int64_t MR = B::MR, NR = B::NR;
  constexpr int64_t kJTile = 8 * NR;  // positions of one phase per task
  constexpr int64_t nq_max = kJTile / NR;
  constexpr bool kDirect = std::is_same_v<T, F>;  // dy rows can serve as B panels in place
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size, s = p.stride;
  const int64_t mp = ceil_div(cg, MR);
  const auto taps = phase_taps(p);
  std::vector<TapBlocks> blocks;
  int64_t max_pieces = 1, max_steps = 1, q_lo = 0, q_hi = 0;
  for (const auto& list : taps) {
    blocks.emplace_back(static_cast<int64_t>(list.size()), og, kMaxKc);
    max_pieces = std::max(max_pieces, blocks.back().max_pieces());
    max_steps = std::max(max_steps, blocks.back().max_steps());
    for (const Tap& t : list) q_lo = std::min(q_lo, t.q), q_hi = std::max(q_hi, t.q);
  }

  // W^T as A panels, per (group, tap): wa[g][k][panel][o][MR], zero rows past Cg.
  const int64_t a_tap = mp * og * MR;
  std::vector<F> wa(static_cast<size_t>(p.groups * K * a_tap), F(0));
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t o = 0; o < og; ++o)
          wa[(g * K + k) * a_tap + ((c / MR) * og + o) * MR + c % MR] =
              widen<F>(w[(g * og + o) * p.w_o + c * p.w_c + k * p.w_k]);

  const DgradTiles tiles(p, kJTile);
  const int64_t lt = tiles.jt * s;  // input positions per row of a task, all phases
  const double work = static_cast<double>(cg * og * K) * kJTile;
  const int64_t tasks = tiles.tasks(p.groups);
  parallel_for(tasks, work, [&](int64_t task) {
    const DgradTask tk(p, tiles, task);
    const int64_t g = tk.g, ldc = kJTile;
    F* c_tiles = scratch<F, 0>(s * mp * MR * ldc);  // one per phase
    F* b_pack = scratch<F, 1>(max_steps * ldc);
    F* x_row = scratch<F, 2>(lt);  // one dx row of the tile: the phases interleaved back
    const F** phase_rows = scratch<const F*, 7>(s);
    PanelA<F>* ap = scratch<PanelA<F>, 3>(max_pieces * mp);
    PanelB<F>* bp = scratch<PanelB<F>, 4>(max_pieces * nq_max);
    TapPiece* pieces = scratch<TapPiece, 5>(max_pieces);
    Segment<F>* segs = scratch<Segment<F>, 6>(max_pieces);
    RegionPrefetcher pf;
    if (task + 1 < tasks) {
      const DgradTask nx(p, tiles, task + 1);
      int64_t steps = 0;
      for (int64_t phi = 0; phi < s; ++phi) steps += blocks[phi].count() * mp * nq_max;
      prefetch_dy(p, dy, nx.n0, nx.g, nx.j0, tiles.jt, q_lo, q_hi, steps, &pf);
    }
    for (int64_t phi = 0; phi < s; ++phi) {
      const int64_t jl = tk.len(p, tiles, phi), vn = jl * tk.nrows;
      if (vn <= 0) continue;
      const int64_t nq = ceil_div(vn, NR);
      F* c_tile = c_tiles + phi * mp * MR * ldc;
      for (int64_t blk = 0; blk < blocks[phi].count(); ++blk) {
        const int64_t np = blocks[phi].pieces(blk, pieces);
        F* packed = b_pack;
        for (int64_t sg = 0; sg < np; ++sg) {
          const Tap tap = taps[phi][pieces[sg].u];
          const int64_t o0 = pieces[sg].i0, kc = pieces[sg].kc;
          PanelB<F>* b = bp + sg * nq_max;
          for (int64_t q = 0; q < nq; ++q) {
            const int64_t va = q * NR, row = va / jl, ta = tk.j0 + va % jl + tap.q;  // dy position of column va
            const T* dyn = dy + (tk.n0 + row) * p.y_n + (g * og + o0) * p.y_o;
            if (kDirect && va % jl + NR <= jl && ta >= 0 && ta + NR <= p.out_length) {  // NCW: y_t == 1
              b[q] = {reinterpret_cast<const F*>(dyn + ta), p.y_o};
              continue;
            }
            // dy rows of this panel, [o][NR]: runs within one batch row, zero outside [0, Lout).
            b[q] = {packed, NR};
            for (int64_t o = 0; o < kc; ++o, packed += NR) {
              for (int64_t j = 0; j < NR;) {
                const int64_t v = va + j;
                if (v >= vn) {
                  fill_zero(packed + j, NR - j);
                  break;
                }
                const int64_t r = v / jl, t = tk.j0 + v % jl + tap.q, run = std::min(NR - j, jl - v % jl);
                const int64_t lo = std::clamp<int64_t>(0, t, t + run), hi = std::clamp(p.out_length, lo, t + run);
                const T* src = dy + (tk.n0 + r) * p.y_n + (g * og + o0 + o) * p.y_o;
                fill_zero(packed + j, lo - t);
                gather(packed + j + (lo - t), src + lo, hi - lo, 1);
                fill_zero(packed + j + (hi - t), t + run - hi);
                j += run;
              }
            }
          }
          PanelA<F>* a = ap + sg * mp;
          for (int64_t i = 0; i < mp; ++i) a[i] = {wa.data() + (g * K + tap.k) * a_tap + (i * og + o0) * MR, MR, 1};
          segs[sg] = {kc, a, b};
        }
        gemm_segments(segs, np, mp, nq, c_tile, ldc, &pf, {blk == 0, nullptr, nullptr});
      }
      if (blocks[phi].count() == 0) gemm_segments<F>(nullptr, 0, mp, nq, c_tile, ldc, nullptr, {true});
    }
    // Positions l0 + [0, ln) of each row; phases whose positions all lie past L were skipped and are never
    // read below (l = l0 + i < L implies phase i % s has a position there).
    const int64_t l0 = tk.j0 * s, ln = std::min(lt, p.in_length - l0);
    for (int64_t r = 0; r < tk.nrows; ++r)
      for (int64_t c = 0; c < cg; ++c) {  // NCW: x_l == 1
        for (int64_t phi = 0; phi < s; ++phi)
          phase_rows[phi] = c_tiles + (phi * mp * MR + c) * ldc + r * tk.len(p, tiles, phi);
        interleave(x_row, phase_rows, s, ln);
        store_row(dx + (tk.n0 + r) * p.x_n + (g * cg + c) * p.x_c + l0, x_row, ln);
      }
  });
}

// ---- NWC: rows = the tile's positions, vectors along input channels -----------------------------------

template <typename T>
void dgrad_nwc(const Conv1dParams& p, const T* dy, const T* w, T* dx) {
  using F = acc_t<T>;
  using B = Blocking<F>;
  constexpr int64_t MR = B::MR, NR = B::NR;
  constexpr int64_t kJTile = 8 * MR;  // positions of one phase per task
  constexpr int64_t mp_max = kJTile / MR;
  constexpr bool kDirect = std::is_same_v<T, F>;  // dy rows can serve as A panels in place
  const int64_t cg = p.in_per_group(), og = p.out_per_group(), K = p.kernel_size, s = p.stride;
  const int64_t nq = ceil_div(cg, NR), ldc = nq * NR;
  const auto taps = phase_taps(p);
  std::vector<TapBlocks> blocks;
  int64_t max_pieces = 1, max_steps = 1, q_lo = 0, q_hi = 0;
  for (const auto& list : taps) {
    blocks.emplace_back(static_cast<int64_t>(list.size()), og, kMaxKc);
    max_pieces = std::max(max_pieces, blocks.back().max_pieces());
    max_steps = std::max(max_steps, blocks.back().max_steps());
    for (const Tap& t : list) q_lo = std::min(q_lo, t.q), q_hi = std::max(q_hi, t.q);
  }

  // W^T as B panels, per (group, tap): wb[g][k][panel][o][NR], zero columns past Cg.
  const int64_t b_tap = nq * og * NR;
  std::vector<F> wb(static_cast<size_t>(p.groups * K * b_tap), F(0));
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t o = 0; o < og; ++o)
          wb[(g * K + k) * b_tap + ((c / NR) * og + o) * NR + c % NR] =
              widen<F>(w[(g * og + o) * p.w_o + c * p.w_c + k * p.w_k]);

  const DgradTiles tiles(p, kJTile);
  const double work = static_cast<double>(cg * og * K) * kJTile;
  const int64_t tasks = tiles.tasks(p.groups);
  parallel_for(tasks, work, [&](int64_t task) {
    const DgradTask tk(p, tiles, task);
    const int64_t g = tk.g;
    F* c_tile = scratch<F, 0>(kJTile * ldc);
    F* a_pack = scratch<F, 1>(kJTile * max_steps);
    PanelA<F>* ap = scratch<PanelA<F>, 2>(max_pieces * mp_max);
    PanelB<F>* bp = scratch<PanelB<F>, 3>(max_pieces * nq);
    TapPiece* pieces = scratch<TapPiece, 4>(max_pieces);
    Segment<F>* segs = scratch<Segment<F>, 5>(max_pieces);
    RegionPrefetcher pf;
    if (task + 1 < tasks) {
      const DgradTask nx(p, tiles, task + 1);
      int64_t steps = 0;
      for (int64_t phi = 0; phi < s; ++phi) steps += blocks[phi].count() * mp_max * nq;
      prefetch_dy(p, dy, nx.n0, nx.g, nx.j0, tiles.jt, q_lo, q_hi, steps, &pf);
    }
    const T* rows[MR];
    for (int64_t phi = 0; phi < s; ++phi) {
      const int64_t jl = tk.len(p, tiles, phi), vn = jl * tk.nrows;
      if (vn <= 0) continue;
      const int64_t mp = ceil_div(vn, MR);
      for (int64_t blk = 0; blk < blocks[phi].count(); ++blk) {
        const int64_t np = blocks[phi].pieces(blk, pieces);
        F* packed = a_pack;
        for (int64_t sg = 0; sg < np; ++sg) {
          const Tap tap = taps[phi][pieces[sg].u];
          const int64_t o0 = pieces[sg].i0, kc = pieces[sg].kc;
          PanelA<F>* a = ap + sg * mp_max;
          for (int64_t i = 0; i < mp; ++i) {
            const int64_t va = i * MR, row = va / jl, ta = tk.j0 + va % jl + tap.q;  // dy position of row va
            if (kDirect && va + MR <= vn && va % jl + MR <= jl && ta >= 0 && ta + MR <= p.out_length) {
              a[i] = {reinterpret_cast<const F*>(dy + (tk.n0 + row) * p.y_n + ta * p.y_t + g * og + o0), 1, p.y_t};
              continue;  // NWC: y_o == 1
            }
            for (int64_t r = 0; r < MR; ++r) {
              const int64_t v = va + r, t = tk.j0 + v % jl + tap.q;
              rows[r] = (v < vn && t >= 0 && t < p.out_length)
                            ? dy + (tk.n0 + v / jl) * p.y_n + t * p.y_t + g * og + o0
                            : nullptr;
            }
            a[i] = pack_panel_rows<F>(packed, rows, kc, 1);
            packed += MR * kc;
          }
          PanelB<F>* b = bp + sg * nq;
          for (int64_t q = 0; q < nq; ++q) b[q] = {wb.data() + (g * K + tap.k) * b_tap + (q * og + o0) * NR, NR};
          segs[sg] = {kc, a, b};
        }
        gemm_segments(segs, np, mp, nq, c_tile, ldc, &pf, {blk == 0, nullptr, nullptr});
      }
      if (blocks[phi].count() == 0) gemm_segments<F>(nullptr, 0, mp, nq, c_tile, ldc, nullptr, {true});
      for (int64_t v = 0; v < vn; ++v) {  // NWC: x_c == 1
        const int64_t n = tk.n0 + v / jl, l = phi + (tk.j0 + v % jl) * s;
        store_row(dx + n * p.x_n + l * p.x_l + g * cg, c_tile + v * ldc, cg);
      }
    }
  });
}

// ---- depthwise: one input and one output channel per group ------------------------------------------

template <typename T>
void dgrad_depthwise(const Conv1dParams& p, const T* dy, const T* w, T* dx) {
  using F = acc_t<T>;
  const int64_t C = p.in_channels, K = p.kernel_size, s = p.stride;
  std::vector<F> wt(static_cast<size_t>(K * C));  // [k][c]
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) wt[k * C + c] = widen<F>(w[c * p.w_o + k * p.w_k]);
  const auto taps = phase_taps(p);

  if (p.layout == Layout::kNWC) {
    // Vectors along channels: each dx row is a sum of scaled dy rows.
    constexpr int64_t kTile = 64;
    const int64_t tiles = ceil_div(p.in_length, kTile);
    parallel_for(p.batch * tiles, static_cast<double>(kTile * K * C) / s, [&](int64_t task) {
      const int64_t tile = task % tiles, n = task / tiles;
      const int64_t l0 = tile * kTile, l1 = std::min(p.in_length, l0 + kTile);
      F* acc = scratch<F, 0>(C);
      F* row = scratch<F, 1>(C);
      for (int64_t l = l0; l < l1; ++l) {
        fill_zero(acc, C);
        const int64_t phi = l % s, j = l / s;
        for (const Tap& tap : taps[phi]) {
          const int64_t t = j + tap.q;
          if (t < 0 || t >= p.out_length) continue;
          const T* src = dy + n * p.y_n + t * p.y_t;
          const F* wk = wt.data() + tap.k * C;
          if constexpr (std::is_same_v<T, F>) {
            for (int64_t c = 0; c < C; ++c) acc[c] += wk[c] * src[c];
          } else {
            for (int64_t c = 0; c < C; ++c) row[c] = widen<F>(src[c]);
            for (int64_t c = 0; c < C; ++c) acc[c] += wk[c] * row[c];
          }
        }
        store_row(dx + n * p.x_n + l * p.x_l, acc, C);
      }
    });
    return;
  }
  // NCW: vectors along the positions of one phase of one channel.
  constexpr int64_t kTile = 1024;
  const int64_t lt = kTile * s;
  const int64_t tiles = ceil_div(p.in_length, lt);
  parallel_for(p.batch * C * tiles, static_cast<double>(kTile * K), [&](int64_t task) {
    const int64_t tile = task % tiles, c = (task / tiles) % C, n = task / (tiles * C);
    const int64_t j0 = tile * kTile, l0 = tile * lt, ln = std::min(lt, p.in_length - l0);
    F* acc = scratch<F, 0>(kTile);
    F* row = scratch<F, 1>(kTile);
    F* out = scratch<F, 2>(lt);  // the phases interleaved back
    const T* dyc = dy + n * p.y_n + c * p.y_o;
    for (int64_t phi = 0; phi < s; ++phi) {
      const int64_t jn = std::min(kTile, phase_count(p, phi) - j0);
      if (jn <= 0) continue;
      fill_zero(acc, jn);
      for (const Tap& tap : taps[phi]) {
        const int64_t ta = j0 + tap.q;
        const int64_t tb = std::max<int64_t>(ta, 0), te = std::min(ta + jn, p.out_length);
        if (te <= tb) continue;
        gather(row, dyc + tb * p.y_t, te - tb, p.y_t);
        const F wv = wt[tap.k * C + c];
        F* a = acc + (tb - ta);
        for (int64_t i = 0; i < te - tb; ++i) a[i] += wv * row[i];
      }
      for (int64_t j = 0; j < jn; ++j) out[phi + j * s] = acc[j];
    }
    store_row(dx + n * p.x_n + c * p.x_c + l0, out, ln);  // NCW: x_l == 1
  });
}

}  // namespace

template <typename T>
void conv1d_dgrad_cpu(const Conv1dParams& p, const T* dy, const T* w, T* dx) {
  if (p.x_size() == 0) return;
  if (p.in_per_group() == 1 && p.out_per_group() == 1) return dgrad_depthwise(p, dy, w, dx);
  if (p.layout == Layout::kNCW) return dgrad_ncw(p, dy, w, dx);
  return dgrad_nwc(p, dy, w, dx);
}

template void conv1d_dgrad_cpu<float>(const Conv1dParams&, const float*, const float*, float*);
template void conv1d_dgrad_cpu<double>(const Conv1dParams&, const double*, const double*, double*);
template void conv1d_dgrad_cpu<bf16>(const Conv1dParams&, const bf16*, const bf16*, bf16*);
template void conv1d_dgrad_cpu<f16>(const Conv1dParams&, const f16*, const f16*, f16*);

}  // namespace jax_conv1d::cpu
