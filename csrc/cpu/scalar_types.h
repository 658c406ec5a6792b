// Storage types the CPU handlers read and write. bfloat16 and float16 arrive as 16-bit patterns; they are
// widened to float for arithmetic (the op accumulates in float32) and rounded to nearest-even on store.
#pragma once

#include <cstdint>
#include <cstring>

namespace jax_conv1d::cpu {

struct bf16 { uint16_t bits; };
struct f16 { uint16_t bits; };

inline float to_float(float v) { return v; }
inline double to_float(double v) { return v; }

inline float to_float(bf16 v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Targets with half-precision conversion instructions (x86 F16C, AArch64) convert through _Float16, which
// the compiler vectorises; the bit-level versions below are the portable fallback and round identically
// (to nearest even, overflow to infinity).
#if defined(__FLT16_MAX__) && (defined(__F16C__) || defined(__aarch64__))
#define JC_HARDWARE_F16 1
#endif

inline float to_float(f16 v) {
#if defined(JC_HARDWARE_F16)
  _Float16 h;
  std::memcpy(&h, &v.bits, 2);
  return static_cast<float>(h);
#endif
  const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
  uint32_t exp = (v.bits >> 10) & 0x1f;
  uint32_t man = v.bits & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal half: normalise into a float
    exp = 113;
    while ((man & 0x400u) == 0) man <<= 1, --exp;
    u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T> inline T from_float(float v);
template <typename T> inline T from_double(double v) { return static_cast<T>(v); }

template <> inline float from_float<float>(float v) { return v; }
template <> inline double from_float<double>(float v) { return v; }

template <> inline bf16 from_float<bf16>(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};  // quiet nan
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

template <> inline f16 from_float<f16>(float v) {
#if defined(JC_HARDWARE_F16)
  const _Float16 h = static_cast<_Float16>(v);
  f16 out;
  std::memcpy(&out.bits, &h, 2);
  return out;
#endif
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{static_cast<uint16_t>(sign | 0x7e00u)};
  if (a >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // rounds past 65504: inf
  if (a < 0x38800000u) {  // below the smallest normal half: round into a subnormal (or zero)
    if (a < 0x33000000u) return f16{sign};
    const uint32_t exp = a >> 23;
    const uint32_t man = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // 14 + (113 - exp) - 1 ... places man's point at 2^-24
    uint32_t half = man >> (shift);
    const uint32_t rem = man & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return f16{static_cast<uint16_t>(sign | half)};
  }
  uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return f16{static_cast<uint16_t>(sign | (r >> 13))};
}

}  // namespace jax_conv1d::cpu
