// The fused depthwise backward built without its sliding-window kernels (every tap read from shared memory),
// under other names, so dw_fused_test can time both variants in one process.
#define JC_DW_FUSED_NO_SLIDE
#define JC_DW_FUSED_NS dw_fused_noslide
#define conv1d_bwd_depthwise_cuda conv1d_bwd_depthwise_cuda_noslide
#define conv1d_bwd_depthwise_scratch_bytes conv1d_bwd_depthwise_scratch_bytes_noslide
#include "cuda/bwd_depthwise_fused.cu"
#include "cuda/bwd_depthwise_fused_mult2.cu"
