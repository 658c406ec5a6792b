// Warp-level tensor-core products (mma.sync, sm_80+) and the operand conversions they need.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k8 / m16n8k16"), with g = lane / 4 and
// t = lane % 4:
//   A (16 x k, row-major): reg 0 = (row g, k-col lo), reg 1 = (row g+8, lo), reg 2 = (row g, hi), reg 3 = (row g+8, hi)
//     where lo/hi = t / t+4 for tf32 (one element per reg) and 2t..2t+1 / 2t+8..2t+9 for 16-bit (two per reg,
//     the lower k index in the low half).
//   B (k x 8, "col"): reg 0 = (k lo, col g), reg 1 = (k hi, col g), with lo/hi as for A.
//   C/D (16 x 8, fp32): c0, c1 = (row g, cols 2t, 2t+1); c2, c3 = (row g+8, cols 2t, 2t+1).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace jax_conv1d::cuda {

// Round-to-nearest float -> tf32 (the low 13 mantissa bits become zero). Feeding raw fp32 bits instead
// would truncate, which biases every product towards zero.
__device__ __forceinline__ uint32_t tf32_round(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return r;
}

// The same rounding in one instruction where the hardware has it: sm_90's cvt.rn.tf32.f32 (ties to even) is a
// single F2FP, while cvt.rna compiles to an FSETP (inf/NaN guard) and a predicated add per element, which in
// the forward's MMA loop is two of every ~7 instructions. Ties-to-even and ties-away differ only on exact
// ties, so the error bound is the same.
__device__ __forceinline__ uint32_t tf32_round_fast(float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t r;
  asm("cvt.rn.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return r;
#else
  return tf32_round(v);
#endif
}

// v == big + small to about 2^-22 relative: the 3xTF32 split that gives float32-level products from tf32
// tensor cores (big*big + big*small + small*big; small*small is below fp32 rounding).
__device__ __forceinline__ void tf32_split(float v, uint32_t& big, uint32_t& small) {
  big = tf32_round(v);
  small = tf32_round(v - __uint_as_float(big));
}

__device__ __forceinline__ void tf32_split_fast(float v, uint32_t& big, uint32_t& small) {
  big = tf32_round_fast(v);
  small = tf32_round_fast(v - __uint_as_float(big));
}

__device__ __forceinline__ void mma_tf32_16x8x8(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_bf16_16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_f16_16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// One m16n8k16 product for either 16-bit type.
template <typename T>
__device__ __forceinline__ void mma_16bit_16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) mma_bf16_16x8x16(d, a, b);
  else mma_f16_16x8x16(d, a, b);
}

// Two 16-bit values (raw bits) packed as one operand register, `lo` in the low half (the lower k index).
__device__ __forceinline__ uint32_t pack_16x2(uint16_t lo, uint16_t hi) {
  return uint32_t(lo) | (uint32_t(hi) << 16);
}

// Four 8x8 matrices of 16-bit elements (or 8x4 of 32-bit) from shared memory: lanes 8i..8i+7 give the row
// addresses (16 bytes each) of matrix i, and lane (g, t) receives 32-bit word t of row g of matrix i in r[i].
// With one row per B column (its 16 bytes of consecutive k), that is exactly a B fragment register.
__device__ __forceinline__ void ldmatrix_x4(uint32_t smem_byte_addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_byte_addr));
}

}  // namespace jax_conv1d::cuda
