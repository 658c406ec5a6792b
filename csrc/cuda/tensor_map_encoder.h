// cuTensorMapEncodeTiled, fetched through the runtime's driver entry point so the module needs no link against
// libcuda (CI machines have none). One place for every family that builds tensor maps on the host.
#pragma once

#include <cuda.h>  // CUtensorMap and the encoder's argument types
#include <cuda_runtime.h>

namespace jax_conv1d::cuda {

using TensorMapEncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                          const cuuint64_t*, const cuuint32_t*, const cuuint32_t*,
                                          CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion,
                                          CUtensorMapFloatOOBfill);

// Null where the driver does not offer it (the callers then take their per-thread copy paths).
inline TensorMapEncodeTiled tensor_map_encoder() {
  static const TensorMapEncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult status{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &status) !=
            cudaSuccess ||
        status != cudaDriverEntryPointSuccess)
      p = nullptr;
    return reinterpret_cast<TensorMapEncodeTiled>(p);
  }();
  return fn;
}

}  // namespace jax_conv1d::cuda
