// The wgmma (sm_90a) forward kernels of fwd_wgmma.cuh for every input type, in one file (the dispatcher in
// fwd_igemm.cuh calls them first for NWC when JAX_CONV1D_WGMMA=1).
#include "fwd_wgmma.cuh"

namespace jax_conv1d::cuda {

template <typename T, typename TOut>
bool conv1d_fwd_wgmma(const Conv1dParams& p, const T* x, const T* w, const T* bias, TOut* y, cudaStream_t stream,
                      cudaError_t* err) {
  if (!wgmma_requested()) return false;
  return wgmma_dispatch<T, TOut>(p, x, w, bias, y, stream, err);
}

#define JC_INSTANTIATE(T, TOUT)                                                                        \
  template bool conv1d_fwd_wgmma<T, TOUT>(const Conv1dParams&, const T*, const T*, const T*, TOUT*, \
                                           cudaStream_t, cudaError_t*);
JC_INSTANTIATE(float, float)
JC_INSTANTIATE(__nv_bfloat16, __nv_bfloat16)
JC_INSTANTIATE(__nv_bfloat16, float)
JC_INSTANTIATE(__half, __half)
JC_INSTANTIATE(__half, float)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cuda
