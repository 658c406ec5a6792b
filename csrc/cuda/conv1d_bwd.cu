// The combined backward: dx, dw and db from one call.
//
// Order: a depthwise convolution (channel multiplier 1 or 2) that wants dx and dw -> the fused depthwise
// backward (one pass over dy and x for dx, dw and db) when it covers the shape; otherwise dgrad's dispatcher,
// then wgrad's, which sums db in its own pass over dy (conv1d_wgrad.cu). A bias gradient wanted without dw runs
// the stand-alone bias reduction.
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "bwd_depthwise.h"
#include "bwd_kernels.h"
#include "conv1d_cuda.h"
#include "cuda_types.cuh"

namespace jax_conv1d::cuda {

namespace {

bool is_depthwise(const Conv1dParams& p) { return depthwise_channel_multiplier(p) > 0; }

bool trace_dispatch() {
  static const bool on = std::getenv("JAX_CONV1D_TRACE_BWD") != nullptr;
  return on;
}

}  // namespace

template <typename T>
BwdScratchBytes conv1d_bwd_scratch_bytes(const Conv1dParams& p, bool want_dx, bool want_dw, bool want_db) {
  BwdScratchBytes b;
  (void)want_db;  // db's partials live in the weight gradient's scratch, or need none (bias_grad)
  if (want_dw) b.wgrad = conv1d_wgrad_workspace_bytes<T>(p);
  if constexpr (!std::is_same_v<T, double>) {
    if (want_dx && want_dw && is_depthwise(p)) b.fused = conv1d_bwd_depthwise_scratch_bytes<T>(p);
  }
  return b;
}

template <typename T>
cudaError_t conv1d_bwd_cuda(const Conv1dParams& p, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db,
                            const BwdWorkspace& ws, cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, double>) {
    if (dx != nullptr && dw != nullptr && is_depthwise(p)) {
      const cudaError_t err = conv1d_bwd_depthwise_cuda<T>(p, x, dy, w, dx, dw, db, ws.fused, ws.fused_bytes, stream);
      if (err != cudaErrorNotSupported) {  // NotSupported: nothing was launched
        if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d bwd: fused depthwise\n");
        return err;
      }
    }
  }
  if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d bwd: dgrad %d, wgrad %d, db %d\n", dx != nullptr,
                                     dw != nullptr, db != nullptr);
  if (dx != nullptr) {
    if (const cudaError_t err = conv1d_dgrad_cuda<T>(p, dy, w, dx, stream); err != cudaSuccess) return err;
  }
  if (dw != nullptr) return conv1d_wgrad_cuda<T>(p, x, dy, dw, db, ws.wgrad, stream);
  return db != nullptr ? bias_grad<T>(p, dy, db, stream) : cudaSuccess;
}

#define JC_INSTANTIATE(T)                                                                                     \
  template BwdScratchBytes conv1d_bwd_scratch_bytes<T>(const Conv1dParams&, bool, bool, bool);               \
  template cudaError_t conv1d_bwd_cuda<T>(const Conv1dParams&, const T*, const T*, const T*, T*, T*, T*,      \
                                          const BwdWorkspace&, cudaStream_t);
JC_INSTANTIATE(float)
JC_INSTANTIATE(double)
JC_INSTANTIATE(__nv_bfloat16)
JC_INSTANTIATE(__half)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cuda
