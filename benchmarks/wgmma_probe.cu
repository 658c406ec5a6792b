// Layout probe for csrc/cuda/wgmma.cuh (sm_90a): one warp group, one wgmma m64n128k8 (tf32) and one
// m64n128k16 (bf16, f16), A from registers loaded with ldmatrix exactly as the forward kernel loads it
// (64 rows of 32 bytes), B written into shared memory in the kernel's canonical K-major layout (core matrices of
// 8 n x 16 bytes, K-adjacent ones 128 bytes apart, N-adjacent ones 256 bytes apart). Compared with a host
// reference on random small integers (exact in every format, so any mismatch is a layout error, not rounding).
// Each form runs with the descriptor's two offsets as documented and swapped, so a wrong descriptor is told
// apart from a wrong fragment map. Build: nvcc -std=c++17 -arch=sm_90a -I csrc benchmarks/wgmma_probe.cu
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "cuda/mma.cuh"
#include "cuda/wgmma.cuh"

using namespace jax_conv1d::cuda;

template <typename T>
__device__ uint32_t elem_bits(float v);
template <>
__device__ uint32_t elem_bits<float>(float v) { return __float_as_uint(v); }
template <>
__device__ uint32_t elem_bits<__nv_bfloat16>(float v) { return __bfloat16_as_ushort(__float2bfloat16(v)); }
template <>
__device__ uint32_t elem_bits<__half>(float v) { return __half_as_ushort(__float2half(v)); }

// A: 64 x KE row-major floats, B: KE x 128 (k-major rows), D: 64 x 128. KE = 32 bytes of elements.
template <typename T>
__global__ void probe_kernel(const float* A, const float* B, float* D, int swap) {
  constexpr int KE = 32 / sizeof(T);
  __shared__ __align__(1024) unsigned char a_s[64 * 32];
  __shared__ __align__(1024) unsigned char b_s[128 * 32];
  const int tid = threadIdx.x, lane = tid & 31, wq = tid >> 5, g = lane >> 2, t = lane & 3;
  for (int i = tid; i < 64 * KE; i += 128) {
    const int m = i / KE, e = i % KE;
    const uint32_t bits = elem_bits<T>(A[m * KE + e]);
    if (sizeof(T) == 4) reinterpret_cast<uint32_t*>(a_s)[m * 8 + e] = bits;
    else reinterpret_cast<uint16_t*>(a_s)[m * 16 + e] = uint16_t(bits);
  }
  for (int i = tid; i < 128 * KE; i += 128) {
    const int n = i / KE, e = i % KE;
    const int kb = e * int(sizeof(T));
    const int byte = (n / 8) * 256 + (kb / 16) * 128 + (n % 8) * 16 + kb % 16;
    const uint32_t bits = elem_bits<T>(B[e * 128 + n]);
    if (sizeof(T) == 4) *reinterpret_cast<uint32_t*>(b_s + byte) = bits;
    else *reinterpret_cast<uint16_t*>(b_s + byte) = uint16_t(bits);
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  uint32_t a[4];
  const int row = wq * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
  ldmatrix_x4(uint32_t(__cvta_generic_to_shared(a_s)) + row * 32 + (lane >> 4) * 16, a);
  float d[64];
  for (int i = 0; i < 64; ++i) d[i] = -1.f;  // scale_d = 0 must ignore these
  const uint32_t lbo = swap ? 256 : 128, sbo = swap ? 128 : 256;
  const uint64_t desc = wgmma_desc_noswizzle(uint32_t(__cvta_generic_to_shared(b_s)), lbo, sbo);
  wgmma_fence();
  wgmma_pin(d);
  if constexpr (sizeof(T) == 4) wgmma_m64n128k8_tf32_rs(d, a, desc, 0);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) wgmma_m64n128k16_bf16_rs(d, a, desc, 0);
  else wgmma_m64n128k16_f16_rs(d, a, desc, 0);
  wgmma_commit();
  wgmma_wait<0>();
  wgmma_pin(d);
  for (int i = 0; i < 16; ++i) {
    const int r0 = wq * 16 + g, c = 8 * i + 2 * t;
    D[r0 * 128 + c] = d[4 * i], D[r0 * 128 + c + 1] = d[4 * i + 1];
    D[(r0 + 8) * 128 + c] = d[4 * i + 2], D[(r0 + 8) * 128 + c + 1] = d[4 * i + 3];
  }
}

template <typename T>
int run(const char* name) {
  constexpr int KE = 32 / sizeof(T);
  std::vector<float> A(64 * KE), B(KE * 128), D(64 * 128), R(64 * 128, 0.f);
  srand(1234);
  for (auto& v : A) v = float(rand() % 9 - 4);
  for (auto& v : B) v = float(rand() % 9 - 4) * 0.5f;
  for (int m = 0; m < 64; ++m)
    for (int n = 0; n < 128; ++n) {
      double s = 0;
      for (int k = 0; k < KE; ++k) s += double(A[m * KE + k]) * B[k * 128 + n];
      R[m * 128 + n] = float(s);
    }
  float *dA, *dB, *dD;
  cudaMalloc(&dA, A.size() * 4), cudaMalloc(&dB, B.size() * 4), cudaMalloc(&dD, D.size() * 4);
  cudaMemcpy(dA, A.data(), A.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dB, B.data(), B.size() * 4, cudaMemcpyHostToDevice);
  int bad_total = 0;
  for (int swap = 0; swap < 2; ++swap) {
    cudaMemset(dD, 0xff, D.size() * 4);
    probe_kernel<T><<<1, 128>>>(dA, dB, dD, swap);
    const cudaError_t e = cudaDeviceSynchronize();
    cudaMemcpy(D.data(), dD, D.size() * 4, cudaMemcpyDeviceToHost);
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < 64 * 128; ++i) {
      const double err = std::fabs(double(D[i]) - R[i]);
      if (!(err == 0)) ++bad;
      if (err > worst || std::isnan(err)) worst = err;
    }
    std::printf("wgmma probe %s %s: %s, %d of 8192 wrong, max |err| %g\n", name,
                swap ? "offsets swapped" : "offsets as documented", e == cudaSuccess ? (bad ? "FAIL" : "PASS") : cudaGetErrorString(e),
                bad, worst);
    if (swap == 0 && (bad || e != cudaSuccess)) bad_total = 1;
  }
  cudaFree(dA), cudaFree(dB), cudaFree(dD);
  return bad_total;
}

int main() {
  int fails = run<float>("m64n128k8 tf32") + run<__nv_bfloat16>("m64n128k16 bf16") + run<__half>("m64n128k16 f16");
  std::printf("wgmma probe: %s\n", fails ? "FAIL" : "PASS");
  return fails;
}
