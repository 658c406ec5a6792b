// The current device's properties that the launchers size grids, tiles and shared memory from. One definition
// for the forward and backward families: two structs of one name in different translation units (with
// different members) broke the one-definition rule and could have linked one family's calls to the other's.
#pragma once

namespace jax_conv1d::cuda {

struct DeviceLimits {
  int sms = 0;          // multiprocessors
  int smem_optin = 0;   // dynamic shared memory one block may opt into, bytes
  int smem_per_sm = 0;  // shared memory of one SM, for plans of two resident blocks (0: unknown)
  int cc_major = 0;     // compute capability; 9+ has the bulk-copy engine (TMA)
};

// Read once per device (thread-safe) and cached for the life of the process.
const DeviceLimits& device_limits();

}  // namespace jax_conv1d::cuda
