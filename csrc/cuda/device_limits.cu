#include "device_limits.h"

#include <cuda_runtime.h>

#include <array>
#include <mutex>

namespace jax_conv1d::cuda {

namespace {

// What a launcher may assume when the driver does not answer: one SM (grids stay correct, only small) and the
// shared memory every CUDA device has.
DeviceLimits query(int device) {
  DeviceLimits v;
  if (cudaDeviceGetAttribute(&v.sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) v.sms = 1;
  if (cudaDeviceGetAttribute(&v.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
    v.smem_optin = 48 * 1024;
  if (cudaDeviceGetAttribute(&v.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device) != cudaSuccess)
    v.smem_per_sm = 0;
  if (cudaDeviceGetAttribute(&v.cc_major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) v.cc_major = 0;
  return v;
}

}  // namespace

const DeviceLimits& device_limits() {
  constexpr int kMaxDevices = 64;
  static std::array<std::once_flag, kMaxDevices> once;
  static std::array<DeviceLimits, kMaxDevices> cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) device = 0;
  std::call_once(once[device], [device] { cache[device] = query(device); });
  return cache[device];
}

}  // namespace jax_conv1d::cuda
