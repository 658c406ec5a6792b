// XLA FFI handlers for the CPU: decode buffers and attributes, dispatch on dtype, run the pass.
#include <nanobind/nanobind.h>

#include <exception>
#include <new>
#include <string>

#include "../ffi_params.h"
#include "conv1d_cpu.h"

namespace nb = nanobind;

namespace jax_conv1d::cpu {
namespace {

template <typename T>
const T* as(const ffi::AnyBuffer& b) { return reinterpret_cast<const T*>(b.untyped_data()); }
template <typename T>
T* as_mut(ffi::Result<ffi::AnyBuffer>& b) { return reinterpret_cast<T*>(b->untyped_data()); }

// Runs a pass, turning an exception (scratch memory that could not be allocated) into an FFI error:
// nothing may unwind through XLA's C API.
template <typename Fn>
ffi::Error run_pass(Fn&& fn) {
  try {
    fn();
    return ffi::Error::Success();
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "jax_conv1d: out of memory for CPU scratch buffers");
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("jax_conv1d: ") + e.what());
  }
}

ffi::Error unsupported(ffi::DataType in, ffi::DataType out) {
  return shape_error("unsupported dtype combination (" + std::to_string(static_cast<int>(in)) + " -> " +
                     std::to_string(static_cast<int>(out)) + ") on CPU");
}

ffi::Error Conv1dFwd(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer bias, ffi::Result<ffi::AnyBuffer> y,
                     ConvAttrs attrs) {
  Conv1dParams p;
  if (auto err = make_params(x.dimensions(), w.dimensions(), y->dimensions(), attrs, &p); err.failure()) return err;
  if (w.element_type() != x.element_type() || (bias.element_count() && bias.element_type() != x.element_type()))
    return shape_error("x, w and bias must share one dtype");
  if (bias.element_count() != 0 && static_cast<int64_t>(bias.element_count()) != p.out_channels)
    return shape_error("bias must have one element per output channel");
  const bool has_bias = bias.element_count() != 0;
  const auto in = x.element_type(), out = y->element_type();
  using DT = ffi::DataType;
#define JC_FWD(TIN, TOUT)                                                                                      \
  return run_pass(                                                                                             \
      [&] { conv1d_fwd_cpu<TIN, TOUT>(p, as<TIN>(x), as<TIN>(w), has_bias ? as<TIN>(bias) : nullptr, as_mut<TOUT>(y)); })
  if (in == DT::F32 && out == DT::F32) { JC_FWD(float, float); }
  if (in == DT::F64 && out == DT::F64) { JC_FWD(double, double); }
  if (in == DT::BF16 && out == DT::BF16) { JC_FWD(bf16, bf16); }
  if (in == DT::BF16 && out == DT::F32) { JC_FWD(bf16, float); }
  if (in == DT::F16 && out == DT::F16) { JC_FWD(f16, f16); }
  if (in == DT::F16 && out == DT::F32) { JC_FWD(f16, float); }
#undef JC_FWD
  return unsupported(in, out);
}

ffi::Error Conv1dDgrad(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx, ConvAttrs attrs) {
  Conv1dParams p;
  if (auto err = make_params(dx->dimensions(), w.dimensions(), dy.dimensions(), attrs, &p); err.failure()) return err;
  const auto t = dy.element_type();
  if (w.element_type() != t || dx->element_type() != t) return unsupported(t, dx->element_type());
  using DT = ffi::DataType;
#define JC_DGRAD(T) return run_pass([&] { conv1d_dgrad_cpu<T>(p, as<T>(dy), as<T>(w), as_mut<T>(dx)); })
  if (t == DT::F32) { JC_DGRAD(float); }
  if (t == DT::F64) { JC_DGRAD(double); }
  if (t == DT::BF16) { JC_DGRAD(bf16); }
  if (t == DT::F16) { JC_DGRAD(f16); }
#undef JC_DGRAD
  return unsupported(t, t);
}

ffi::Error Conv1dWgrad(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw, ConvAttrs attrs) {
  Conv1dParams p;
  if (auto err = make_params(x.dimensions(), dw->dimensions(), dy.dimensions(), attrs, &p); err.failure()) return err;
  const auto t = x.element_type();
  if (dy.element_type() != t || dw->element_type() != t) return unsupported(t, dw->element_type());
  using DT = ffi::DataType;
#define JC_WGRAD(T) return run_pass([&] { conv1d_wgrad_cpu<T>(p, as<T>(x), as<T>(dy), as_mut<T>(dw)); })
  if (t == DT::F32) { JC_WGRAD(float); }
  if (t == DT::F64) { JC_WGRAD(double); }
  if (t == DT::BF16) { JC_WGRAD(bf16); }
  if (t == DT::F16) { JC_WGRAD(f16); }
#undef JC_WGRAD
  return unsupported(t, t);
}

ffi::Error Conv1dBwd(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                     ffi::Result<ffi::AnyBuffer> dw, ffi::Result<ffi::AnyBuffer> db, ConvAttrs attrs) {
  Conv1dParams p;
  BwdOutputs want;
  if (auto err = make_bwd_params(x, dy, w, *dx, *dw, *db, attrs, &p, &want); err.failure()) return err;
  const auto t = x.element_type();
  using DT = ffi::DataType;
#define JC_BWD(T)                                                                                           \
  return run_pass([&] {                                                                                      \
    conv1d_bwd_cpu<T>(p, as<T>(x), as<T>(dy), as<T>(w), want.dx ? as_mut<T>(dx) : nullptr,                   \
                      want.dw ? as_mut<T>(dw) : nullptr, want.db ? as_mut<T>(db) : nullptr);                 \
  })
  if (t == DT::F32) { JC_BWD(float); }
  if (t == DT::F64) { JC_BWD(double); }
  if (t == DT::BF16) { JC_BWD(bf16); }
  if (t == DT::F16) { JC_BWD(f16); }
#undef JC_BWD
  return unsupported(t, t);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1dFwdCpu, Conv1dFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attrs<ConvAttrs>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1dDgradCpu, Conv1dDgrad,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().Attrs<ConvAttrs>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1dWgradCpu, Conv1dWgrad,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().Attrs<ConvAttrs>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1dBwdCpu, Conv1dBwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attrs<ConvAttrs>());

}  // namespace jax_conv1d::cpu

template <typename T>
static nb::capsule capsule(T* fn) {
  return nb::capsule(reinterpret_cast<void*>(fn));
}

NB_MODULE(_cpu, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["jax_conv1d_fwd"] = capsule(jax_conv1d::cpu::Conv1dFwdCpu);
    d["jax_conv1d_dgrad"] = capsule(jax_conv1d::cpu::Conv1dDgradCpu);
    d["jax_conv1d_wgrad"] = capsule(jax_conv1d::cpu::Conv1dWgradCpu);
    d["jax_conv1d_bwd"] = capsule(jax_conv1d::cpu::Conv1dBwdCpu);
    return d;
  });
}
