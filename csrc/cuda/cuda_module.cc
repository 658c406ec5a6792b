// Python module exposing the CUDA handlers as capsules; jax_conv1d/_ffi.py registers them with XLA.
#include <nanobind/nanobind.h>

#include "cuda_handlers.h"

namespace nb = nanobind;

NB_MODULE(_cuda, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["jax_conv1d_fwd"] = nb::capsule(reinterpret_cast<void*>(jax_conv1d::cuda::Conv1dFwdCuda));
    d["jax_conv1d_dgrad"] = nb::capsule(reinterpret_cast<void*>(jax_conv1d::cuda::Conv1dDgradCuda));
    d["jax_conv1d_wgrad"] = nb::capsule(reinterpret_cast<void*>(jax_conv1d::cuda::Conv1dWgradCuda));
    d["jax_conv1d_bwd"] = nb::capsule(reinterpret_cast<void*>(jax_conv1d::cuda::Conv1dBwdCuda));
    return d;
  });
}
