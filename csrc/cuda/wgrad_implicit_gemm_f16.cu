// wgrad_implicit_gemm for __half inputs (one file per dtype so the instantiations compile in parallel).
#include "wgrad_implicit_gemm.cuh"

namespace jax_conv1d::cuda {

template <>
cudaError_t wgrad_implicit_gemm<__half>(const Conv1dParams& p, const __half* x, const __half* dy,
                                        __half* dw, __half* db, WgradWorkspace ws, cudaStream_t stream) {
  return wgrad_gemm::run<MmaF16>(p, x, dy, dw, db, ws, stream);
}

template <>
size_t wgrad_implicit_gemm_workspace<__half>(const Conv1dParams& p) {
  return wgrad_gemm::workspace_bytes<MmaF16>(p);
}

}  // namespace jax_conv1d::cuda
