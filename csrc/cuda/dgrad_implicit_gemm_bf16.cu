// dgrad_implicit_gemm for __nv_bfloat16 inputs (one file per dtype so the instantiations compile in parallel).
#include "dgrad_implicit_gemm.cuh"

namespace jax_conv1d::cuda {

template <>
cudaError_t dgrad_implicit_gemm<__nv_bfloat16>(const Conv1dParams& p, const __nv_bfloat16* dy, const __nv_bfloat16* w,
                                               __nv_bfloat16* dx, cudaStream_t stream) {
  return dgrad_gemm::run<MmaBf16>(p, dy, w, dx, stream);
}

}  // namespace jax_conv1d::cuda
