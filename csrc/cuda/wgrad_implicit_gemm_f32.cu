// wgrad_implicit_gemm for float inputs (one file per dtype so the instantiations compile in parallel).
#include "wgrad_implicit_gemm.cuh"

namespace jax_conv1d::cuda {

template <>
cudaError_t wgrad_implicit_gemm<float>(const Conv1dParams& p, const float* x, const float* dy,
                                       float* dw, float* db, WgradWorkspace ws, cudaStream_t stream) {
  // Precision kDefault rounds operands to TF32 (as lax's DEFAULT does on GPU); kAccurate splits each into two
  // TF32 parts for float32-level products.
  if (p.precision == Precision::kAccurate) return wgrad_gemm::run<Mma3xTf32>(p, x, dy, dw, db, ws, stream);
  return wgrad_gemm::run<MmaTf32>(p, x, dy, dw, db, ws, stream);
}

template <>
size_t wgrad_implicit_gemm_workspace<float>(const Conv1dParams& p) {
  return wgrad_gemm::workspace_bytes<MmaTf32>(p);
}

}  // namespace jax_conv1d::cuda
