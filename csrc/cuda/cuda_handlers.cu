// XLA FFI handlers for CUDA: decode buffers and attributes, dispatch on dtype, launch on XLA's stream, and
// return CUDA errors as FFI errors.
#include <algorithm>
#include <optional>
#include <string>

#include "../ffi_params.h"
#include "bwd_kernels.h"
#include "conv1d_cuda.h"
#include "cuda_handlers.h"
#include "cuda_types.cuh"
#include "wgrad_kernels.cuh"

namespace jax_conv1d::cuda {

int grid_for(int64_t count, int threads) {
  static const int max_blocks = [] {
    int device = 0, sms = 132;
    if (cudaGetDevice(&device) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    return sms * 32;
  }();
  const int64_t needed = (count + threads - 1) / threads;
  return static_cast<int>(needed < max_blocks ? needed : max_blocks);
}

namespace {

using bf16 = __nv_bfloat16;
using f16 = __half;
using DT = ffi::DataType;

template <typename T>
const T* as(const ffi::AnyBuffer& b) { return reinterpret_cast<const T*>(b.untyped_data()); }
template <typename T>
T* as_mut(ffi::Result<ffi::AnyBuffer>& b) { return reinterpret_cast<T*>(b->untyped_data()); }

ffi::Error cuda_result(cudaError_t err) {
  if (err == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("jax_conv1d CUDA error: ") + cudaGetErrorString(err));
}

ffi::Error unsupported(DT in, DT out) {
  return shape_error("unsupported dtype combination (" + std::to_string(static_cast<int>(in)) + " -> " +
                     std::to_string(static_cast<int>(out)) + ") on CUDA");
}

ffi::Error Conv1dFwd(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer bias,
                     ffi::Result<ffi::AnyBuffer> y, ConvAttrs attrs) {
  Conv1dParams p;
  if (auto err = make_params(x.dimensions(), w.dimensions(), y->dimensions(), attrs, &p); err.failure()) return err;
  if (w.element_type() != x.element_type() || (bias.element_count() && bias.element_type() != x.element_type()))
    return shape_error("x, w and bias must share one dtype");
  if (bias.element_count() != 0 && static_cast<int64_t>(bias.element_count()) != p.out_channels)
    return shape_error("bias must have one element per output channel");
  const bool has_bias = bias.element_count() != 0;
  const auto in = x.element_type(), out = y->element_type();
#define JC_FWD(TIN, TOUT)                                                                             \
  return cuda_result(conv1d_fwd_cuda<TIN, TOUT>(p, as<TIN>(x), as<TIN>(w), has_bias ? as<TIN>(bias) : nullptr, \
                                                as_mut<TOUT>(y), stream))
  if (in == DT::F32 && out == DT::F32) JC_FWD(float, float);
  if (in == DT::F64 && out == DT::F64) JC_FWD(double, double);
  if (in == DT::BF16 && out == DT::BF16) JC_FWD(bf16, bf16);
  if (in == DT::BF16 && out == DT::F32) JC_FWD(bf16, float);
  if (in == DT::F16 && out == DT::F16) JC_FWD(f16, f16);
  if (in == DT::F16 && out == DT::F32) JC_FWD(f16, float);
#undef JC_FWD
  return unsupported(in, out);
}

ffi::Error Conv1dDgrad(cudaStream_t stream, ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                       ConvAttrs attrs) {
  Conv1dParams p;
  if (auto err = make_params(dx->dimensions(), w.dimensions(), dy.dimensions(), attrs, &p); err.failure()) return err;
  const auto t = dy.element_type();
  if (w.element_type() != t || dx->element_type() != t) return unsupported(t, dx->element_type());
#define JC_DGRAD(T) return cuda_result(conv1d_dgrad_cuda<T>(p, as<T>(dy), as<T>(w), as_mut<T>(dx), stream))
  if (t == DT::F32) JC_DGRAD(float);
  if (t == DT::F64) JC_DGRAD(double);
  if (t == DT::BF16) JC_DGRAD(bf16);
  if (t == DT::F16) JC_DGRAD(f16);
#undef JC_DGRAD
  return unsupported(t, t);
}

// The split reductions' scratch comes from XLA's allocator (stream-ordered, freed after the call), at most
// kWgradScratchCap; if even that is refused, the request halves until it is granted or too small to split.
constexpr size_t kWgradScratchCap = size_t(64) << 20;

WgradWorkspace grant_wgrad_workspace(const Conv1dParams& p, ffi::ScratchAllocator& scratch, size_t wanted) {
  WgradWorkspace ws;
  const size_t two_splits = 2 * sizeof(float) * static_cast<size_t>(p.w_size());
  for (size_t want = std::min(wanted, kWgradScratchCap); want >= two_splits && want; want /= 2) {
    if (std::optional<void*> ptr = scratch.Allocate(want, 16)) {  // XLA accepts alignments <= 16
      ws.ptr = *ptr;
      ws.bytes = want;
      break;
    }
  }
  return ws;
}

// All or nothing: a part that cannot be granted whole runs without (the callee then splits less).
void* grant(ffi::ScratchAllocator& scratch, size_t bytes) {
  if (bytes == 0) return nullptr;
  std::optional<void*> ptr = scratch.Allocate(bytes, 16);
  return ptr ? *ptr : nullptr;
}

template <typename T>
ffi::Error run_wgrad(const Conv1dParams& p, ffi::ScratchAllocator& scratch, const T* x, const T* dy, T* dw,
                     cudaStream_t stream) {
  const WgradWorkspace ws = grant_wgrad_workspace(p, scratch, conv1d_wgrad_workspace_bytes<T>(p));
  return cuda_result(conv1d_wgrad_cuda<T>(p, x, dy, dw, /*db=*/nullptr, ws, stream));
}

ffi::Error Conv1dWgrad(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                       ffi::Result<ffi::AnyBuffer> dw, ConvAttrs attrs) {
  Conv1dParams p;
  if (auto err = make_params(x.dimensions(), dw->dimensions(), dy.dimensions(), attrs, &p); err.failure()) return err;
  const auto t = x.element_type();
  if (dy.element_type() != t || dw->element_type() != t) return unsupported(t, dw->element_type());
#define JC_WGRAD(T) return run_wgrad<T>(p, scratch, as<T>(x), as<T>(dy), as_mut<T>(dw), stream)
  if (t == DT::F32) JC_WGRAD(float);
  if (t == DT::F64) JC_WGRAD(double);
  if (t == DT::BF16) JC_WGRAD(bf16);
  if (t == DT::F16) JC_WGRAD(f16);
#undef JC_WGRAD
  return unsupported(t, t);
}

template <typename T>
ffi::Error run_bwd(const Conv1dParams& p, const BwdOutputs& want, ffi::ScratchAllocator& scratch, const T* x,
                   const T* dy, const T* w, T* dx, T* dw, T* db, cudaStream_t stream) {
  const BwdScratchBytes bytes = conv1d_bwd_scratch_bytes<T>(p, want.dx, want.dw, want.db);
  BwdWorkspace ws;
  ws.fused = grant(scratch, bytes.fused);
  ws.fused_bytes = ws.fused ? bytes.fused : 0;
  if (want.dw) ws.wgrad = grant_wgrad_workspace(p, scratch, bytes.wgrad);
  return cuda_result(conv1d_bwd_cuda<T>(p, x, dy, w, want.dx ? dx : nullptr, want.dw ? dw : nullptr,
                                        want.db ? db : nullptr, ws, stream));
}

ffi::Error Conv1dBwd(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                     ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dw,
                     ffi::Result<ffi::AnyBuffer> db, ConvAttrs attrs) {
  Conv1dParams p;
  BwdOutputs want;
  if (auto err = make_bwd_params(x, dy, w, *dx, *dw, *db, attrs, &p, &want); err.failure()) return err;
  const auto t = x.element_type();
#define JC_BWD(T)                                                                                           \
  return run_bwd<T>(p, want, scratch, as<T>(x), as<T>(dy), as<T>(w), as_mut<T>(dx), as_mut<T>(dw),          \
                    as_mut<T>(db), stream)
  if (t == DT::F32) JC_BWD(float);
  if (t == DT::F64) JC_BWD(double);
  if (t == DT::BF16) JC_BWD(bf16);
  if (t == DT::F16) JC_BWD(f16);
#undef JC_BWD
  return unsupported(t, t);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1dFwdCuda, Conv1dFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attrs<ConvAttrs>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1dDgradCuda, Conv1dDgrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attrs<ConvAttrs>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1dWgradCuda, Conv1dWgrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attrs<ConvAttrs>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1dBwdCuda, Conv1dBwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attrs<ConvAttrs>());

}  // namespace jax_conv1d::cuda
