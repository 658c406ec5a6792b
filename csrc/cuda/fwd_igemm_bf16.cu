// Implicit-GEMM forward kernels (fwd_igemm.cuh) for __nv_bfloat16 inputs; one file per input type so the
// instantiations compile in parallel.
#include "fwd_igemm.cuh"

namespace jax_conv1d::cuda {

template <typename T, typename TOut>
bool conv1d_fwd_igemm(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y, cudaStream_t stream,
                      cudaError_t* err) {
  return igemm_dispatch<T, TOut>(p, x, w, bias, y, stream, err);
}

#define JC_INSTANTIATE(T, TOUT)                                                                        \
  template bool conv1d_fwd_igemm<T, TOUT>(const Conv1dParams&, const T*, const T*, const T*, TOUT*, \
                                           cudaStream_t, cudaError_t*);
JC_INSTANTIATE(__nv_bfloat16, __nv_bfloat16)
JC_INSTANTIATE(__nv_bfloat16, float)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cuda
