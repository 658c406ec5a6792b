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
  if (n >= 5) cp_async_wait<5>();
  else if (n == 4) cp_async_wait<4>();
  else if (n == 3) cp_async_wait<3>();
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

// ---- Hopper bulk copies (the TMA unit), sm_90+ ---------------------------------------------------------------
// A single thread hands the copy engine whole rows or boxes; completion is counted in bytes on an mbarrier.
// Unlike per-thread cp.async, the requests in flight do not occupy the issuing warps' load slots, which is what
// lets a block with one resident copy per multiprocessor keep enough bytes in flight to saturate HBM.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define JC_BULK_COPY_AVAILABLE 1
#endif

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}

// Makes barrier initialisation visible to the copy engine.
__device__ __forceinline__ void mbar_fence_init() {
#ifdef JC_BULK_COPY_AVAILABLE
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// Arrives once and announces `bytes` more to come from bulk copies.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#ifdef JC_BULK_COPY_AVAILABLE
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
#endif
}

__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 1;
#ifdef JC_BULK_COPY_AVAILABLE
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
#endif
  return done != 0;
}

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}

// Waits for the barrier phase with the given parity. A copy that never lands (a bug) traps after ~10 s rather
// than hanging the GPU.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  if (mbar_try_wait(bar, parity)) return;
  const uint64_t start = global_timer_ns();
  while (!mbar_try_wait(bar, parity)) {
    if (global_timer_ns() - start > 10000000000ull) __trap();
  }
}

// Contiguous global -> shared copy; dst, src and bytes multiples of 16.
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
#ifdef JC_BULK_COPY_AVAILABLE
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
#endif
}

// One box of a 3-D tensor map (coordinates innermost first, in elements; out-of-range elements arrive as zero).
__device__ __forceinline__ void tma_load_3d(void* dst, const void* tensor_map, int c0, int c1, int c2,
                                            uint64_t* bar) {
#ifdef JC_BULK_COPY_AVAILABLE
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(smem_addr(dst)),
      "l"(tensor_map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
#endif
}

// Orders this thread's ordinary shared-memory writes before later copy-engine writes to the same bytes.
__device__ __forceinline__ void fence_proxy_async() {
#ifdef JC_BULK_COPY_AVAILABLE
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// The pipeline of run_pipeline with stages filled by the copy engine: issue(f, bar) starts step f's copies
// (announcing their bytes on `bar`); waiting on the stage's barrier replaces cp.async.wait_group. `bars` holds
// one mbarrier per stage, in shared memory. The barrier after the wait still guarantees that nobody reads the
// buffer the next issue overwrites.
template <class Issue, class Compute>
__device__ __forceinline__ void run_pipeline_bulk(int64_t count, int stages, uint64_t* bars, Issue&& issue,
                                                  Compute&& compute) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) mbar_init(&bars[s], 1);
    mbar_fence_init();
  }
  __syncthreads();
  for (int s = 0; s < stages - 1 && s < count; ++s) issue(int64_t(s), &bars[s]);
  for (int64_t f = 0; f < count; ++f) {
    mbar_wait(&bars[f % stages], uint32_t((f / stages) & 1));
    __syncthreads();
    const int64_t next = f + stages - 1;
    if (next < count) issue(next, &bars[next % stages]);
    compute(f);
  }
}

// The same two pipelines with the step index replaced by the stage index: issue(stage, bar) / load(stage)
// fill buffer `stage`, compute(stage) reads it. Stage and barrier phase advance as counters, so the caller's
// per-step work has no 64-bit divisions; callers that need the step's coordinates walk them with counters
// too, in the same order (every call happens in step order).
template <class Load, class Compute>
__device__ __forceinline__ void run_pipeline_staged(int64_t count, int stages, Load&& load, Compute&& compute) {
  int64_t loaded = 0;
  int load_stage = 0;
  for (int s = 0; s < stages - 1; ++s) {
    if (loaded < count) {
      load(load_stage);
      ++loaded;
      load_stage = load_stage + 1 == stages ? 0 : load_stage + 1;
    }
    cp_async_commit();
  }
  int stage = 0;
  for (int64_t f = 0; f < count; ++f) {
    cp_async_wait_pending(stages - 2);
    __syncthreads();
    if (loaded < count) {
      load(load_stage);
      ++loaded;
      load_stage = load_stage + 1 == stages ? 0 : load_stage + 1;
    }
    cp_async_commit();
    compute(stage);
    stage = stage + 1 == stages ? 0 : stage + 1;
  }
  cp_async_wait<0>();
}

template <class Issue, class Compute>
__device__ __forceinline__ void run_pipeline_bulk_staged(int64_t count, int stages, uint64_t* bars, Issue&& issue,
                                                         Compute&& compute) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) mbar_init(&bars[s], 1);
    mbar_fence_init();
  }
  __syncthreads();
  int64_t issued = 0;
  int issue_stage = 0;
  for (int s = 0; s < stages - 1 && issued < count; ++s) {
    issue(issue_stage, &bars[issue_stage]);
    ++issued;
    ++issue_stage;
  }
  if (issue_stage == stages) issue_stage = 0;
  int stage = 0;
  uint32_t phase = 0;
  for (int64_t f = 0; f < count; ++f) {
    mbar_wait(&bars[stage], phase);
    __syncthreads();
    if (issued < count) {
      issue(issue_stage, &bars[issue_stage]);
      ++issued;
      issue_stage = issue_stage + 1 == stages ? 0 : issue_stage + 1;
    }
    compute(stage);
    if (++stage == stages) stage = 0, phase ^= 1u;
  }
}

}  // namespace jax_conv1d::cuda
