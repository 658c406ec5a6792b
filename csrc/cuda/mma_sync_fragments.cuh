// Warp-level tensor-core products (mma.sync, sm_80+) for the backward kernels, with operands gathered from
// shared memory through per-thread offsets and a stride along the reduction axis. That one addressing form
// covers every tile the backward passes use: rows or columns may be strided (NWC tiles, stride-s gathers of x)
// without a copy into a canonical layout first.
//
// Operand policies (the `Op` template parameter):
//   MmaTf32     float inputs rounded to TF32 (lax's DEFAULT precision on GPU), m16n8k8
//   Mma3xTf32   float inputs split into big + small TF32 parts, three products (float32-level accuracy)
//   MmaBf16     bfloat16 inputs, m16n8k16
//   MmaF16      float16 inputs, m16n8k16
// All accumulate in float32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "mma.cuh"

namespace jax_conv1d::cuda {

__device__ __forceinline__ void mma_tf32_16x8x8(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two 16-bit elements as one 32-bit register, the lower reduction index in the low half (the fragment order).
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(T lo, T hi) {
  const uint32_t l = *reinterpret_cast<const uint16_t*>(&lo), h = *reinterpret_cast<const uint16_t*>(&hi);
  return l | (h << 16);
}

// One k-step of a warp tile of (kMT*16) x (kNT*8) accumulators.
//   A (m x k): element (m, k) at sa[a_row[mt][h] + k*a_k] for m = mt*16 + lane/4 + 8h.
//   B (k x n): element (k, n) at sb[b_col[nt] + k*b_k] for n = nt*8 + lane/4.
// `k0` is the first reduction index of the step. When kAContig, A's reduction axis is contiguous and 32-bit
// aligned (a_k == 1, even offsets), so 16-bit pairs load as one word; likewise kBContig for B.
struct MmaTf32 {
  using T = float;
  static constexpr int kK = 8;
};
struct Mma3xTf32 {
  using T = float;
  static constexpr int kK = 8;
};
struct MmaBf16 {
  using T = __nv_bfloat16;
  static constexpr int kK = 16;
};
struct MmaF16 {
  using T = __half;
  static constexpr int kK = 16;
};

template <class Op, int kMT, int kNT, bool kAContig, bool kBContig>
__device__ __forceinline__ void warp_mma_step(float (&acc)[kMT][kNT][4], const typename Op::T* __restrict__ sa,
                                              const int (&a_row)[kMT][2], int a_k,
                                              const typename Op::T* __restrict__ sb, const int (&b_col)[kNT],
                                              int b_k, int k0, int lane) {
  const int tq = lane & 3;
  if constexpr (Op::kK == 8) {
    const int ka = (k0 + tq) * a_k, ka4 = ka + 4 * a_k;
    const int kb = (k0 + tq) * b_k, kb4 = kb + 4 * b_k;
    if constexpr (std::is_same_v<Op, MmaTf32>) {
      uint32_t a[kMT][4], b[kNT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        a[mt][0] = tf32_round(sa[a_row[mt][0] + ka]);
        a[mt][1] = tf32_round(sa[a_row[mt][1] + ka]);
        a[mt][2] = tf32_round(sa[a_row[mt][0] + ka4]);
        a[mt][3] = tf32_round(sa[a_row[mt][1] + ka4]);
      }
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        b[nt][0] = tf32_round(sb[b_col[nt] + kb]);
        b[nt][1] = tf32_round(sb[b_col[nt] + kb4]);
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          mma_tf32_16x8x8(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1]);
    } else {
      // 3xTF32: x = big + small with both parts TF32; big*big + big*small + small*big recovers ~float32
      // accuracy (the dropped small*small term is below float32 rounding). Small terms go first so the large
      // one is added last.
      uint32_t ab[kMT][4], as[kMT][4], bb[kNT][2], bs[kNT][2];
      auto split = [](float v, uint32_t& big, uint32_t& small) {
        big = tf32_round(v);
        small = tf32_round(v - __uint_as_float(big));
      };
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        split(sa[a_row[mt][0] + ka], ab[mt][0], as[mt][0]);
        split(sa[a_row[mt][1] + ka], ab[mt][1], as[mt][1]);
        split(sa[a_row[mt][0] + ka4], ab[mt][2], as[mt][2]);
        split(sa[a_row[mt][1] + ka4], ab[mt][3], as[mt][3]);
      }
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        split(sb[b_col[nt] + kb], bb[nt][0], bs[nt][0]);
        split(sb[b_col[nt] + kb4], bb[nt][1], bs[nt][1]);
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          mma_tf32_16x8x8(acc[mt][nt], as[mt][0], as[mt][1], as[mt][2], as[mt][3], bb[nt][0], bb[nt][1]);
          mma_tf32_16x8x8(acc[mt][nt], ab[mt][0], ab[mt][1], ab[mt][2], ab[mt][3], bs[nt][0], bs[nt][1]);
          mma_tf32_16x8x8(acc[mt][nt], ab[mt][0], ab[mt][1], ab[mt][2], ab[mt][3], bb[nt][0], bb[nt][1]);
        }
    }
  } else {
    using T = typename Op::T;
    const int k = k0 + 2 * tq;
    uint32_t a[kMT][4], b[kNT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const T* r = sa + a_row[mt][h];
        if constexpr (kAContig) {
          a[mt][h] = *reinterpret_cast<const uint32_t*>(r + k);
          a[mt][2 + h] = *reinterpret_cast<const uint32_t*>(r + k + 8);
        } else {
          a[mt][h] = pack_pair(r[k * a_k], r[(k + 1) * a_k]);
          a[mt][2 + h] = pack_pair(r[(k + 8) * a_k], r[(k + 9) * a_k]);
        }
      }
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const T* c = sb + b_col[nt];
      if constexpr (kBContig) {
        b[nt][0] = *reinterpret_cast<const uint32_t*>(c + k);
        b[nt][1] = *reinterpret_cast<const uint32_t*>(c + k + 8);
      } else {
        b[nt][0] = pack_pair(c[k * b_k], c[(k + 1) * b_k]);
        b[nt][1] = pack_pair(c[(k + 8) * b_k], c[(k + 9) * b_k]);
      }
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        if constexpr (std::is_same_v<Op, MmaBf16>)
          mma_bf16_16x8x16(acc[mt][nt], a[mt], b[nt]);
        else
          mma_f16_16x8x16(acc[mt][nt], a[mt], b[nt]);
      }
  }
}

// Mma3xTf32 for long reductions (the weight gradient sums millions of terms): the tensor cores add into their
// float32 accumulator with truncation, so a chain of thousands of steps drifts by ~1e-4 relative. Here each
// k-step's three products go into a fresh register (a chain of three), and that is added to `acc` with Kahan
// compensation in `comp`; the sum is acc - comp.
template <int kMT, int kNT>
__device__ __forceinline__ void warp_mma_step_3xtf32_compensated(float (&acc)[kMT][kNT][4], float (&comp)[kMT][kNT][4],
                                                                 const float* __restrict__ sa,
                                                                 const int (&a_row)[kMT][2], int a_k,
                                                                 const float* __restrict__ sb, const int (&b_col)[kNT],
                                                                 int b_k, int k0, int lane) {
  const int tq = lane & 3;
  const int ka = (k0 + tq) * a_k, ka4 = ka + 4 * a_k;
  const int kb = (k0 + tq) * b_k, kb4 = kb + 4 * b_k;
  uint32_t ab[kMT][4], as[kMT][4], bb[kNT][2], bs[kNT][2];
  auto split = [](float v, uint32_t& big, uint32_t& small) {
    big = tf32_round(v);
    small = tf32_round(v - __uint_as_float(big));
  };
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    split(sa[a_row[mt][0] + ka], ab[mt][0], as[mt][0]);
    split(sa[a_row[mt][1] + ka], ab[mt][1], as[mt][1]);
    split(sa[a_row[mt][0] + ka4], ab[mt][2], as[mt][2]);
    split(sa[a_row[mt][1] + ka4], ab[mt][3], as[mt][3]);
  }
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    split(sb[b_col[nt] + kb], bb[nt][0], bs[nt][0]);
    split(sb[b_col[nt] + kb4], bb[nt][1], bs[nt][1]);
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      mma_tf32_16x8x8(d, as[mt][0], as[mt][1], as[mt][2], as[mt][3], bb[nt][0], bb[nt][1]);
      mma_tf32_16x8x8(d, ab[mt][0], ab[mt][1], ab[mt][2], ab[mt][3], bs[nt][0], bs[nt][1]);
      mma_tf32_16x8x8(d, ab[mt][0], ab[mt][1], ab[mt][2], ab[mt][3], bb[nt][0], bb[nt][1]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float y = d[e] - comp[mt][nt][e];
        const float t = acc[mt][nt][e] + y;
        comp[mt][nt][e] = (t - acc[mt][nt][e]) - y;
        acc[mt][nt][e] = t;
      }
    }
}

}  // namespace jax_conv1d::cuda

// ---- Fragments by ldmatrix, and products on raw fragments (appended for the input-gradient kernel) --------
//
// ldmatrix.x4 hands lane (g, tq) word tq of row g of each of four 8 x 16-byte matrices; lanes 8j..8j+7 name
// the rows of matrix j. With the reduction axis contiguous in shared memory (rows 16-byte aligned), that is
// exactly the m16n8k8 TF32 A fragment (matrices: rows 0-7 / 8-15 x k 0-3 / 4-7) and, for 16-bit types, the
// m16n8k16 A fragment (k 0-7 / 8-15), so one instruction replaces four (TF32) or four word loads per m16 tile.
// The same holds for B when its reduction axis is contiguous (NWC dy rows): one ldmatrix.x4 covers two n8 tiles.

namespace jax_conv1d::cuda {

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}

// The row this lane names for an A tile: rows 0-15 in two halves, the second 16 bytes of k for lanes 16-31.
__device__ __forceinline__ int ldsm_a_row(int lane) { return (lane & 7) + 8 * ((lane >> 3) & 1); }
__device__ __forceinline__ int ldsm_a_col_bytes(int lane) { return 16 * (lane >> 4); }
// ... and for a pair of B n8 tiles stored n-major (rows = n): rows 0-15 by lanes 0-7 / 16-23, k halves by bit 3.
__device__ __forceinline__ int ldsm_b_row(int lane) { return (lane & 7) + 8 * (lane >> 4); }
__device__ __forceinline__ int ldsm_b_col_bytes(int lane) { return 16 * ((lane >> 3) & 1); }

// A fragments of kMT m16 tiles; a_addr[mt] is this lane's ldmatrix row address (bytes, shared window) at
// reduction index 0, `kbytes` the step's offset along the reduction axis.
template <int kMT>
__device__ __forceinline__ void load_a_ldsm(uint32_t (&a)[kMT][4], const uint32_t (&a_addr)[kMT], int kbytes) {
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) ldsm_x4(a[mt], a_addr[mt] + kbytes);
}

// B fragments of kNT n8 tiles (kNT even) stored n-major: b_addr[p] is this lane's row address for tiles 2p, 2p+1.
template <int kNT>
__device__ __forceinline__ void load_b_ldsm(uint32_t (&b)[kNT][2], const uint32_t (&b_addr)[kNT / 2], int kbytes) {
#pragma unroll
  for (int p = 0; p < kNT / 2; ++p) {
    uint32_t r[4];
    ldsm_x4(r, b_addr[p] + kbytes);
    b[2 * p][0] = r[0], b[2 * p][1] = r[1], b[2 * p + 1][0] = r[2], b[2 * p + 1][1] = r[3];
  }
}

// B fragments gathered element by element: (k, n) at sb[b_col[nt] + k*b_k], raw bits (float) or packed pairs.
template <class Op, int kNT>
__device__ __forceinline__ void load_b_strided(uint32_t (&b)[kNT][2], const typename Op::T* __restrict__ sb,
                                               const int (&b_col)[kNT], int b_k, int k0, int lane) {
  const int tq = lane & 3;
  if constexpr (Op::kK == 8) {
    const int kb = (k0 + tq) * b_k, kb4 = kb + 4 * b_k;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      b[nt][0] = __float_as_uint(sb[b_col[nt] + kb]);
      b[nt][1] = __float_as_uint(sb[b_col[nt] + kb4]);
    }
  } else {
    const int k = k0 + 2 * tq;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const typename Op::T* c = sb + b_col[nt];
      b[nt][0] = pack_pair(c[k * b_k], c[(k + 1) * b_k]);
      b[nt][1] = pack_pair(c[(k + 8) * b_k], c[(k + 9) * b_k]);
    }
  }
}

// The products of one k-step from raw fragments (float bits for the TF32 policies). kARounded / kBRounded: the
// operand already holds TF32 values (rounded once in shared memory), so it is not rounded again here; the
// inputs to the tensor cores, and so the results, are the same bits as rounding at use.
template <class Op, int kMT, int kNT, bool kARounded, bool kBRounded = false>
__device__ __forceinline__ void mma_raw_fragments(float (&acc)[kMT][kNT][4], uint32_t (&a)[kMT][4],
                                                  uint32_t (&b)[kNT][2]) {
  if constexpr (std::is_same_v<Op, MmaTf32>) {
    if constexpr (!kARounded) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int j = 0; j < 4; ++j) a[mt][j] = tf32_round(__uint_as_float(a[mt][j]));
    }
    if constexpr (!kBRounded) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int j = 0; j < 2; ++j) b[nt][j] = tf32_round(__uint_as_float(b[nt][j]));
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
        mma_tf32_16x8x8(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1]);
  } else if constexpr (std::is_same_v<Op, Mma3xTf32>) {
    static_assert(!kARounded && !kBRounded, "3xTF32 splits the unrounded values");
    uint32_t as[kMT][4], bs[kNT][2];
    auto split = [](uint32_t& v, uint32_t& small) {
      const float f = __uint_as_float(v);
      v = tf32_round(f);
      small = tf32_round(f - __uint_as_float(v));
    };
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int j = 0; j < 4; ++j) split(a[mt][j], as[mt][j]);
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) split(b[nt][j], bs[nt][j]);
    // Small terms first, big * big last, into a fresh register: the tensor cores truncate when they add into
    // their float32 accumulator, so adding into the long-running sum would let that error grow with the
    // reduction (dx of 1000 output channels missed 2e-6 by 10x); one rounded FADD per k-step does not.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        float step[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma_tf32_16x8x8(step, as[mt][0], as[mt][1], as[mt][2], as[mt][3], b[nt][0], b[nt][1]);
        mma_tf32_16x8x8(step, a[mt][0], a[mt][1], a[mt][2], a[mt][3], bs[nt][0], bs[nt][1]);
        mma_tf32_16x8x8(step, a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1]);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][nt][e] += step[e];
      }
  } else {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        if constexpr (std::is_same_v<Op, MmaBf16>)
          mma_bf16_16x8x16(acc[mt][nt], a[mt], b[nt]);
        else
          mma_f16_16x8x16(acc[mt][nt], a[mt], b[nt]);
      }
  }
}


// ldmatrix.trans: four 8x8 matrices of 16-bit elements; lanes 8i..8i+7 give the shared addresses of matrix i's
// rows (16 bytes each). Lane (g, tq) receives, per matrix, stored rows 2tq and 2tq+1 of column g as one pair
// (the lower row in the low half).
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// One k-step (16) of a 16-bit warp tile whose operands are both stored reduction-major (rows = reduction
// index, the 8 M or N indices of a fragment contiguous), as NWC tiles are: each operand fragment is one
// ldmatrix.trans instead of eight 16-bit loads and four pair packs.
//   a_lane: byte address of this lane's A row for mt = 0: row (lane%8 + 8*(lane/16)) of the k-step, columns
//           from 8*((lane/8)%2); tile mt adds 32*mt bytes.
//   b_lane[p]: byte address of this lane's B row for column tiles 2p, 2p+1: tile 2p + lane/16, reduction row
//              lane%8 + 8*((lane/8)%2).
template <class Op, int kMT, int kNT>
__device__ __forceinline__ void warp_mma_step_16bit_ldsm(float (&acc)[kMT][kNT][4], uint32_t a_lane,
                                                         const uint32_t (&b_lane)[kNT / 2]) {
  static_assert(kNT % 2 == 0, "B fragments load in pairs of column tiles");
  uint32_t a[kMT][4], b[kNT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) ldsm_x4_trans(a[mt], a_lane + 32 * mt);
#pragma unroll
  for (int q = 0; q < kNT / 2; ++q) {
    uint32_t r[4];
    ldsm_x4_trans(r, b_lane[q]);
    b[2 * q][0] = r[0], b[2 * q][1] = r[1], b[2 * q + 1][0] = r[2], b[2 * q + 1][1] = r[3];
  }
  mma_raw_fragments<Op, kMT, kNT, false>(acc, a, b);
}

}  // namespace jax_conv1d::cuda
