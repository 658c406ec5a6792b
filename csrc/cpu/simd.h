// Register-blocked micro-kernels shared by the three passes, written with GCC/Clang vector extensions so the
// compiler emits the widest vectors the target allows (AVX-512, AVX2, NEON, SSE) from one source; other
// compilers get plain loops. The order of every sum is fixed by the build (vector width, blocking), so a
// given build is bitwise reproducible; builds for different instruction sets may round differently.
#pragma once

#include <cstdint>
#include <cstring>

namespace jax_conv1d::cpu {

#if defined(__AVX512F__)
inline constexpr int kVecBytes = 64;
#elif defined(__AVX__)
inline constexpr int kVecBytes = 32;
#else
inline constexpr int kVecBytes = 16;
#endif

// Number of F lanes in one vector.
template <typename F>
inline constexpr int kLanes = kVecBytes / static_cast<int>(sizeof(F));

// JC_NO_VECTOR_EXT forces the plain-loop versions (used to test them with GCC).
#if (defined(__GNUC__) || defined(__clang__)) && !defined(JC_NO_VECTOR_EXT)
#define JC_VECTOR_EXT 1
template <typename F, int N>
struct VecN {
  typedef F type __attribute__((vector_size(N * sizeof(F))));
};
template <typename F>
using Vec = typename VecN<F, kLanes<F>>::type;

template <typename F>
inline Vec<F> load(const F* p) {
  Vec<F> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename F>
inline void store(F* p, Vec<F> v) {
  std::memcpy(p, &v, sizeof(v));
}
#endif

// Outer-product tile: MR x (NV*lanes) accumulators held in registers while add() runs over one or more
// reduction segments; store_add() then adds them into c once, or store_init() starts c with them.
//   add:       acc[i][j] += sum_{r < kc} A(i, r) * b[r*ldb + j],  A(i, r) = a[r*a_step + i*a_row]
// A packed panel has a_step = MR, a_row = 1; rows of a tensor read in place have a_row = their stride and
// a_step = 1, or the transpose. b rows are NV vectors wide, ldb apart.
template <typename F, int MR, int NV>
struct OuterTile {
  static constexpr int L = kLanes<F>;
#if defined(JC_VECTOR_EXT)
  Vec<F> acc[MR][NV];

  inline void zero() {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = Vec<F>{};
  }
  inline void add(int64_t kc, const F* __restrict a, int64_t a_step, int64_t a_row, const F* __restrict b,
                  int64_t ldb) {
    for (int64_t r = 0; r < kc; ++r) {
      Vec<F> bv[NV];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) bv[j] = load(b + r * ldb + j * L);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const F av = a[r * a_step + i * a_row];
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[i][j] += bv[j] * av;
      }
    }
  }
  inline void store_add(F* __restrict c, int64_t ldc) const {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) store(c + i * ldc + j * L, load(c + i * ldc + j * L) + acc[i][j]);
  }
  // c = acc + row_add[i] (if given) + col_add[j] (if given): starts C without reading it.
  inline void store_init(F* __restrict c, int64_t ldc, const F* row_add, const F* col_add) const {
    Vec<F> col[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) col[j] = col_add ? load(col_add + j * L) : Vec<F>{};
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const F r = row_add ? row_add[i] : F(0);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) store(c + i * ldc + j * L, acc[i][j] + col[j] + r);
    }
  }
#else
  F acc[MR][NV * L];

  void zero() {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV * L; ++j) acc[i][j] = F(0);
  }
  void add(int64_t kc, const F* a, int64_t a_step, int64_t a_row, const F* b, int64_t ldb) {
    for (int64_t r = 0; r < kc; ++r)
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV * L; ++j) acc[i][j] += a[r * a_step + i * a_row] * b[r * ldb + j];
  }
  void store_add(F* c, int64_t ldc) const {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV * L; ++j) c[i * ldc + j] += acc[i][j];
  }
  void store_init(F* c, int64_t ldc, const F* row_add, const F* col_add) const {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV * L; ++j)
        c[i * ldc + j] = acc[i][j] + (col_add ? col_add[j] : F(0)) + (row_add ? row_add[i] : F(0));
  }
#endif
};

#if defined(JC_VECTOR_EXT)
// Sum of N lanes stored at p, by repeated halving (upper half added onto the lower); the order is fixed by
// the vector width alone. It works from memory so the caller's accumulators never have their address taken
// (which would keep them out of registers).
template <typename F, int N>
inline F fold_sum(const F* p) {
  if constexpr (N == 2) {
    return p[0] + p[1];
  } else {
    using H = typename VecN<F, N / 2>::type;
    H lo, hi;
    std::memcpy(&lo, p, sizeof(H));
    std::memcpy(&hi, p + N / 2, sizeof(H));
    alignas(sizeof(H)) F half[N / 2];
    lo += hi;
    std::memcpy(half, &lo, sizeof(H));
    return fold_sum<F, N / 2>(half);
  }
}
#endif

// Dot-product kernel for reductions that run along contiguous memory in both operands:
// out[i*ND + j] = sum_{r < kc} a[i*lda + r] * b[j*ldb + r], for i < MR, j < ND, with kc a multiple of the
// lane count. Each lane sums every L-th term; the lanes are then folded by halves.
template <typename F, int MR, int ND>
inline void dot_kernel(int64_t kc, const F* __restrict a, int64_t lda, const F* __restrict b, int64_t ldb,
                       F* __restrict out) {
  constexpr int L = kLanes<F>;
#if defined(JC_VECTOR_EXT)
  Vec<F> acc[MR][ND];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < ND; ++j) acc[i][j] = Vec<F>{};
  for (int64_t r = 0; r < kc; r += L) {
    Vec<F> av[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) av[i] = load(a + i * lda + r);
#pragma GCC unroll 16
    for (int j = 0; j < ND; ++j) {
      const Vec<F> bv = load(b + j * ldb + r);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) acc[i][j] += av[i] * bv;
    }
  }
  alignas(kVecBytes) F lanes[MR][ND][L];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < ND; ++j) store(lanes[i][j], acc[i][j]);
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < ND; ++j) out[i * ND + j] = fold_sum<F, L>(lanes[i][j]);
#else
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < ND; ++j) {
      F lanes[L] = {};
      for (int64_t r = 0; r < kc; r += L)
        for (int l = 0; l < L; ++l) lanes[l] += a[i * lda + r + l] * b[j * ldb + r + l];
      for (int w = L / 2; w > 0; w /= 2)
        for (int l = 0; l < w; ++l) lanes[l] += lanes[l + w];
      out[i * ND + j] = lanes[0];
    }
#endif
}

}  // namespace jax_conv1d::cpu
