// The CUDA handler symbols (C linkage, as XLA_FFI_DEFINE_HANDLER_SYMBOL defines them), declared for the host-compiled nanobind module (which cannot include CUDA code).
#pragma once

#include "xla/ffi/api/c_api.h"

namespace jax_conv1d::cuda {
extern "C" XLA_FFI_Error* Conv1dFwdCuda(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* Conv1dDgradCuda(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* Conv1dWgradCuda(XLA_FFI_CallFrame* call_frame);
extern "C" XLA_FFI_Error* Conv1dBwdCuda(XLA_FFI_CallFrame* call_frame);
}  // namespace jax_conv1d::cuda
