// Turns the FFI call's buffers and attributes into a Conv1dParams, checking that the shapes agree.
// Python has validated everything at trace time; these checks guard against a mismatched caller and
// come back as FFI errors, never as a crash.
#pragma once

#include <string>

#include "conv1d_params.h"
#include "xla/ffi/api/ffi.h"

namespace jax_conv1d {

namespace ffi = xla::ffi;

// The attributes every target takes, in one place so the three passes bind them identically.
struct ConvAttrs {
  int64_t stride, dilation, pad_lo, pad_hi, groups, layout, precision;
};

inline ffi::Error shape_error(const std::string& what) {
  return ffi::Error::InvalidArgument("jax_conv1d: " + what);
}

// x, w and y are the logical tensors of the forward op, whatever pass is running (for dgrad x is dx,
// for wgrad w is dw).
inline ffi::Error make_params(ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> w_dims,
                              ffi::Span<const int64_t> y_dims, const ConvAttrs& a, Conv1dParams* p) {
  if (x_dims.size() != 3 || w_dims.size() != 3 || y_dims.size() != 3)
    return shape_error("x, w and y must have rank 3");
  if (a.layout != 0 && a.layout != 1) return shape_error("unknown layout attribute");
  if (a.stride < 1 || a.dilation < 1 || a.groups < 1) return shape_error("stride, dilation, groups must be >= 1");
  p->layout = static_cast<Layout>(a.layout);
  p->precision = a.precision == 0 ? Precision::kDefault : Precision::kAccurate;
  p->stride = a.stride;
  p->dilation = a.dilation;
  p->pad_lo = a.pad_lo;
  p->groups = a.groups;
  p->batch = x_dims[0];
  const bool ncw = p->layout == Layout::kNCW;
  p->in_channels = ncw ? x_dims[1] : x_dims[2];
  p->in_length = ncw ? x_dims[2] : x_dims[1];
  p->out_channels = ncw ? w_dims[0] : w_dims[2];
  p->kernel_size = ncw ? w_dims[2] : w_dims[0];
  const int64_t w_cg = w_dims[1];
  if (p->in_channels % a.groups != 0 || p->out_channels % a.groups != 0 || w_cg * a.groups != p->in_channels)
    return shape_error("channel counts do not match groups");
  p->out_length = conv_out_length(p->in_length, p->kernel_size, a.stride, a.dilation, a.pad_lo, a.pad_hi);
  const int64_t y_o = ncw ? y_dims[1] : y_dims[2];
  const int64_t y_t = ncw ? y_dims[2] : y_dims[1];
  if (y_dims[0] != p->batch || y_o != p->out_channels || y_t != p->out_length)
    return shape_error("output shape does not match the convolution");
  set_strides(*p);
  return ffi::Error::Success();
}

// Which gradients a combined backward call (jax_conv1d_bwd) writes.
struct BwdOutputs {
  bool dx = false, dw = false, db = false;
};

inline bool same_dims(ffi::Span<const int64_t> a, ffi::Span<const int64_t> b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// The combined backward: operands x, dy, w; results dx, dw, db, each either its full shape (x's, w's, (O,))
// or (0,) for a gradient that is not wanted. The operands describe the convolution whatever is wanted.
inline ffi::Error make_bwd_params(const ffi::AnyBuffer& x, const ffi::AnyBuffer& dy, const ffi::AnyBuffer& w,
                                  const ffi::AnyBuffer& dx, const ffi::AnyBuffer& dw, const ffi::AnyBuffer& db,
                                  const ConvAttrs& a, Conv1dParams* p, BwdOutputs* want) {
  if (auto err = make_params(x.dimensions(), w.dimensions(), dy.dimensions(), a, p); err.failure()) return err;
  const auto t = x.element_type();
  if (dy.element_type() != t || w.element_type() != t || dx.element_type() != t || dw.element_type() != t ||
      db.element_type() != t)
    return shape_error("x, dy, w and the gradients must share one dtype");
  auto placeholder = [](const ffi::AnyBuffer& b) { return b.dimensions().size() == 1 && b.dimensions()[0] == 0; };
  want->dx = !placeholder(dx);
  want->dw = !placeholder(dw);
  want->db = !placeholder(db);
  if (want->dx && !same_dims(dx.dimensions(), x.dimensions()))
    return shape_error("dx must have the shape of x, or (0,) when not wanted");
  if (want->dw && !same_dims(dw.dimensions(), w.dimensions()))
    return shape_error("dw must have the shape of w, or (0,) when not wanted");
  if (want->db && (db.dimensions().size() != 1 || db.dimensions()[0] != p->out_channels))
    return shape_error("db must have one element per output channel, or shape (0,) when not wanted");
  return ffi::Error::Success();
}

}  // namespace jax_conv1d

// Lets a handler bind all attributes at once with .Attrs<ConvAttrs>(); the names are those the Python
// lowering passes (jax_conv1d/_primitives.py).
XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(::jax_conv1d::ConvAttrs, ::xla::ffi::StructMember<int64_t>("stride"),
                                      ::xla::ffi::StructMember<int64_t>("dilation"),
                                      ::xla::ffi::StructMember<int64_t>("pad_lo"),
                                      ::xla::ffi::StructMember<int64_t>("pad_hi"),
                                      ::xla::ffi::StructMember<int64_t>("groups"),
                                      ::xla::ffi::StructMember<int64_t>("layout"),
                                      ::xla::ffi::StructMember<int64_t>("precision"));
