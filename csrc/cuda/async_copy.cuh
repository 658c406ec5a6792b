// Asynchronous global->shared copies (cp.async, sm_80+) and the multi-stage pipeline loop built on them.
//
// Every copy takes a `valid` flag: an invalid copy reads nothing and writes zeros, which is how the kernels
// apply padding (and mask channels past the end of a group) without a padded copy of the input.
#pragma once

#include <cstdint>

namespace jax_conv1d::cuda {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes, cached in L2 only (each input byte is used by one block, except the halo).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0)
               : "memory");
}

// 4 bytes, for rows whose length or channel count breaks 16-byte alignment.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 4 : 0)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// wait_group takes an immediate; the stage count is chosen at launch time.
__device__ __forceinline__ void cp_async_wait_pending(int n) {
  if (n >= 3) cp_async_wait<3>();
  else if (n == 2) cp_async_wait<2>();
  else if (n == 1) cp_async_wait<1>();
  else cp_async_wait<0>();
}

// Runs `count` steps through `stages` shared-memory buffers: step f's data is requested stages-1 steps ahead,
// so loads stream while earlier steps compute. load(f) fills buffer f % stages (cp.async or plain stores);
// compute(f) reads it. One barrier per step both publishes step f's buffer and guarantees that every thread is
// done with step f-1's buffer before the load issued in this step overwrites it. Called by the whole block.
template <class Load, class Compute>
__device__ __forceinline__ void run_pipeline(int64_t count, int stages, Load&& load, Compute&& compute) {
  for (int s = 0; s < stages - 1; ++s) {
    if (s < count) load(int64_t(s));
    cp_async_commit();  // empty groups keep the group count uniform
  }
  for (int64_t f = 0; f < count; ++f) {
    cp_async_wait_pending(stages - 2);
    __syncthreads();
    const int64_t next = f + stages - 1;
    if (next < count) load(next);
    cp_async_commit();
    compute(f);
  }
  cp_async_wait<0>();
}

}  // namespace jax_conv1d::cuda
