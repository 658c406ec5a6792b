// wgrad_implicit_gemm for __nv_bfloat16 inputs (one file per dtype so the instantiations compile in parallel).
#include "wgrad_implicit_gemm.cuh"

namespace jax_conv1d::cuda {

template <>
cudaError_t wgrad_implicit_gemm<__nv_bfloat16>(const Conv1dParams& p, const __nv_bfloat16* x, const __nv_bfloat16* dy,
                                               __nv_bfloat16* dw, __nv_bfloat16* db, WgradWorkspace ws,
                                               cudaStream_t stream) {
  return wgrad_gemm::run<MmaBf16>(p, x, dy, dw, db, ws, stream);
}

template <>
size_t wgrad_implicit_gemm_workspace<__nv_bfloat16>(const Conv1dParams& p) {
  return wgrad_gemm::workspace_bytes<MmaBf16>(p);
}

}  // namespace jax_conv1d::cuda
