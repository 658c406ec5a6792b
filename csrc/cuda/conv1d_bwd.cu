// The combined backward: dx, dw and db from one call.
//
// Order: a depthwise convolution that wants dx and dw -> the fused depthwise backward (one pass over dy and
// x for both gradients) when it covers the shape; otherwise dgrad's dispatcher, then wgrad's. The bias
// gradient is its own pass over dy (bias_grad.cu) until the weight-gradient entry computes it in its pass.
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "bwd_kernels.h"
#include "conv1d_cuda.h"
#include "cuda_types.cuh"

// The fused depthwise backward (bwd_depthwise.cu) is built separately; 1 calls it.
#ifndef JAX_CONV1D_HAVE_DW_FUSED
#define JAX_CONV1D_HAVE_DW_FUSED 0
#endif
#if JAX_CONV1D_HAVE_DW_FUSED
#include "bwd_depthwise.h"
#endif

// 1 when conv1d_wgrad_cuda takes a (nullable) db and sums it in its own pass over dy.
#ifndef JAX_CONV1D_WGRAD_FUSES_BIAS
#define JAX_CONV1D_WGRAD_FUSES_BIAS 0
#endif

namespace jax_conv1d::cuda {

namespace {

#if JAX_CONV1D_HAVE_DW_FUSED
bool is_depthwise(const Conv1dParams& p) { return p.groups == p.in_channels && p.groups == p.out_channels; }
#endif

bool trace_dispatch() {
  static const bool on = std::getenv("JAX_CONV1D_TRACE_BWD") != nullptr;
  return on;
}

}  // namespace

template <typename T>
BwdScratchBytes conv1d_bwd_scratch_bytes(const Conv1dParams& p, bool want_dx, bool want_dw, bool want_db) {
  BwdScratchBytes b;
  if (want_dw) b.wgrad = conv1d_wgrad_workspace_bytes<T>(p);
  if (want_db && !(want_dw && JAX_CONV1D_WGRAD_FUSES_BIAS)) b.bias = conv1d_bias_grad_scratch_bytes<T>(p);
#if JAX_CONV1D_HAVE_DW_FUSED
  if constexpr (!std::is_same_v<T, double>) {
    if (want_dx && want_dw && is_depthwise(p)) b.fused = conv1d_bwd_depthwise_scratch_bytes<T>(p);
  }
#else
  (void)want_dx;
#endif
  return b;
}

template <typename T>
cudaError_t conv1d_bwd_cuda(const Conv1dParams& p, const T* x, const T* dy, const T* w, T* dx, T* dw, T* db,
                            const BwdWorkspace& ws, cudaStream_t stream) {
#if JAX_CONV1D_HAVE_DW_FUSED
  if constexpr (!std::is_same_v<T, double>) {
    if (dx != nullptr && dw != nullptr && is_depthwise(p)) {
      const cudaError_t err = conv1d_bwd_depthwise_cuda<T>(p, x, dy, w, dx, dw, db, ws.fused, ws.fused_bytes, stream);
      if (err != cudaErrorNotSupported) {  // NotSupported: nothing was launched
        if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d bwd: fused depthwise\n");
        return err;
      }
    }
  }
#endif
  if (trace_dispatch()) std::fprintf(stderr, "jax_conv1d bwd: dgrad %d, wgrad %d, db %d\n", dx != nullptr,
                                     dw != nullptr, db != nullptr);
  if (dx != nullptr) {
    if (const cudaError_t err = conv1d_dgrad_cuda<T>(p, dy, w, dx, stream); err != cudaSuccess) return err;
  }
  bool db_done = db == nullptr;
  if (dw != nullptr) {
#if JAX_CONV1D_WGRAD_FUSES_BIAS
    const cudaError_t err = conv1d_wgrad_cuda<T>(p, x, dy, dw, db, ws.wgrad, stream);
    db_done = true;
#else
    const cudaError_t err = conv1d_wgrad_cuda<T>(p, x, dy, dw, ws.wgrad, stream);
#endif
    if (err != cudaSuccess) return err;
  }
  if (!db_done) return conv1d_bias_grad_cuda<T>(p, dy, db, ws.bias, ws.bias_bytes, stream);
  return cudaSuccess;
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
