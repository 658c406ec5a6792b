// dgrad_implicit_gemm for __half inputs (one file per dtype so the instantiations compile in parallel).
#include "dgrad_implicit_gemm.cuh"

namespace jax_conv1d::cuda {

template <>
cudaError_t dgrad_implicit_gemm<__half>(const Conv1dParams& p, const __half* dy, const __half* w,
                                        __half* dx, cudaStream_t stream) {
  return dgrad_gemm::run<MmaF16>(p, dy, w, dx, stream);
}

}  // namespace jax_conv1d::cuda
