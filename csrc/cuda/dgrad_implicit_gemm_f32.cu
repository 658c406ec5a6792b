// dgrad_implicit_gemm for float inputs (one file per dtype so the instantiations compile in parallel).
#include "dgrad_implicit_gemm.cuh"

namespace jax_conv1d::cuda {

template <>
cudaError_t dgrad_implicit_gemm<float>(const Conv1dParams& p, const float* dy, const float* w,
                                       float* dx, cudaStream_t stream) {
  // Precision kDefault rounds operands to TF32 (as lax's DEFAULT does on GPU); kAccurate splits each into two
  // TF32 parts for float32-level products.
  if (p.precision == Precision::kAccurate) return dgrad_gemm::run<Mma3xTf32>(p, dy, w, dx, stream);
  return dgrad_gemm::run<MmaTf32>(p, dy, w, dx, stream);
}

}  // namespace jax_conv1d::cuda
