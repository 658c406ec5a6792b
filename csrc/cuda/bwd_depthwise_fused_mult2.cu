// The multiplier-2 instantiations of the fused depthwise backward kernel (bwd_depthwise_fused.cuh), in their
// own translation unit so that they compile beside the multiplier-1 ones.
#include "bwd_depthwise_fused.cuh"

namespace jax_conv1d::cuda::JC_DW_FUSED_NS {

template <typename T>
cudaError_t launch_taps_mult2(const FusedPlan& q, int taps, size_t smem, const T* x, const T* dy, const T* w, T* dx,
                              cudaStream_t stream) {
  return launch_taps<T, 2>(q, taps, smem, x, dy, w, dx, stream);
}

#define JC_INSTANTIATE(T)                                                                                 \
  template cudaError_t launch_taps_mult2<T>(const FusedPlan&, int, size_t, const T*, const T*, const T*, T*, \
                                            cudaStream_t);
JC_INSTANTIATE(float)
JC_INSTANTIATE(__nv_bfloat16)
JC_INSTANTIATE(__half)
#undef JC_INSTANTIATE

}  // namespace jax_conv1d::cuda::JC_DW_FUSED_NS
