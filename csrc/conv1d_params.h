// One description of a 1-D convolution, shared by every handler (CPU and CUDA) and every pass.
//
// The op is a cross-correlation, exactly as lax.conv_general_dilated computes it:
//   y[n, o, t] = bias[o] + sum_{c < Cg, k < K} w[o, c, k] * x[n, g(o)*Cg + c, t*stride + k*dilation - pad_lo]
// with x read as zero outside [0, L). Layout only changes where an element lives, so the handlers describe
// tensors by element strides and the simple kernels never branch on layout.
#pragma once

#include <cstdint>

// The struct is passed by value into CUDA kernels, so its helpers must be callable on both sides.
#if defined(__CUDACC__)
#define JC_HOST_DEVICE __host__ __device__
#else
#define JC_HOST_DEVICE
#endif

namespace jax_conv1d {

enum class Layout : int64_t { kNCW = 0, kNWC = 1 };

// Precision 0 lets the GPU use TF32 tensor cores for float32 (lax's DEFAULT); 1 asks for float32-level accuracy.
enum class Precision : int64_t { kDefault = 0, kAccurate = 1 };

struct Conv1dParams {
  int64_t batch = 0;         // N
  int64_t in_channels = 0;   // C
  int64_t out_channels = 0;  // O
  int64_t in_length = 0;     // L
  int64_t out_length = 0;    // Lout
  int64_t kernel_size = 0;   // K
  int64_t stride = 1;
  int64_t dilation = 1;
  int64_t pad_lo = 0;  // may be negative (crops), as in lax
  int64_t groups = 1;
  Layout layout = Layout::kNCW;
  Precision precision = Precision::kDefault;

  // Element strides; x[n, c, l] lives at n*x_n + c*x_c + l*x_l, and likewise for w[o, c, k] and y[n, o, t].
  int64_t x_n = 0, x_c = 0, x_l = 0;
  int64_t w_o = 0, w_c = 0, w_k = 0;
  int64_t y_n = 0, y_o = 0, y_t = 0;

  JC_HOST_DEVICE int64_t in_per_group() const { return in_channels / groups; }
  JC_HOST_DEVICE int64_t out_per_group() const { return out_channels / groups; }
  JC_HOST_DEVICE int64_t x_size() const { return batch * in_channels * in_length; }
  JC_HOST_DEVICE int64_t w_size() const { return out_channels * in_per_group() * kernel_size; }
  JC_HOST_DEVICE int64_t y_size() const { return batch * out_channels * out_length; }
};

// Fills the strides from the logical sizes. NCW: x (N, C, L), w (O, C/g, K), y (N, O, Lout).
// NWC: x (N, L, C), w (K, C/g, O) (Flax's kernel layout), y (N, Lout, O). All row-major.
inline void set_strides(Conv1dParams& p) {
  const int64_t cg = p.in_per_group();
  if (p.layout == Layout::kNCW) {
    p.x_l = 1, p.x_c = p.in_length, p.x_n = p.in_channels * p.in_length;
    p.w_k = 1, p.w_c = p.kernel_size, p.w_o = cg * p.kernel_size;
    p.y_t = 1, p.y_o = p.out_length, p.y_n = p.out_channels * p.out_length;
  } else {
    p.x_c = 1, p.x_l = p.in_channels, p.x_n = p.in_length * p.in_channels;
    p.w_o = 1, p.w_c = p.out_channels, p.w_k = cg * p.out_channels;
    p.y_o = 1, p.y_t = p.out_channels, p.y_n = p.out_length * p.out_channels;
  }
}

// Output length of lax's rule: floor((L + lo + hi - span) / stride) + 1, and 0 when the padded input is
// shorter than the dilated kernel's span.
inline int64_t conv_out_length(int64_t in_length, int64_t kernel_size, int64_t stride, int64_t dilation,
                               int64_t pad_lo, int64_t pad_hi) {
  const int64_t padded = in_length + pad_lo + pad_hi;
  const int64_t span = (kernel_size - 1) * dilation + 1;
  if (padded < span) return 0;
  return (padded - span) / stride + 1;
}

}  // namespace jax_conv1d
