"""Dense forward convolutions as one GEMM through XLA (cuBLAS), for the CUDA lowering.

A dense (one group) convolution is the matrix product of the weight, (O, K*C), with the input's columns,
X[(k, c), (n, t)] = x[n, c, t*stride + k*dilation - pad_lo]. Two kinds of shape run that product faster
through XLA's dot than through our implicit-GEMM kernel:

- K = 1 with a stride, padding, or channels-first layout (_pointwise.py takes the stride-1 unpadded
  channels-last ones, for every pass): the columns are a strided slice of x, a fraction of its bytes, and
  cuBLAS runs the product; our kernel copies the whole strided window into shared memory (sweep/015: stride
  4, 3/4 of each window unused).
- Compute-heavy dense shapes (many FLOPs per byte of x and y), where cuBLAS's Hopper GEMMs (wgmma) outrun
  our mma.sync kernel by more than the columns' extra memory traffic costs; the columns are materialised
  once (im2col: K times x's bytes).

Only the forward pass is routed: the backward passes keep our kernels. Accurate precision (3xTF32) stays on
our kernels, where the accuracy contract is ours; default precision here is XLA's (TF32 for float32, as
ours). Products accumulate in float32 (cuBLAS's compute type for 16-bit GEMMs) and are rounded once to the
output type by the GEMM; the bias is added after that, in the output type, as an XLA convolution followed by a
bias add would: a 16-bit result with a bias is rounded twice here (our kernels add the bias before their one
rounding). A float32 product written out and converted measured slower (sweep/033: 0.707 against 0.438 ms).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
from jax import lax

from ._shapes import PRECISION_DEFAULT, ConvConfig

_GEMM_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def enabled() -> bool:
    """JAX_CONV1D_FWD_GEMM=0 keeps every forward on our kernels, and so does a pinned kernel family
    (JAX_CONV1D_FWD_KERNEL, which the kernel checks set); both are read when a function is lowered."""
    pinned = os.environ.get("JAX_CONV1D_FWD_KERNEL", "auto") not in ("", "auto")
    return os.environ.get("JAX_CONV1D_FWD_GEMM", "1") != "0" and not pinned


def _pad_length(x, axis, lo, hi):
    """x padded (or cropped, for negative pads) along its length axis."""
    length = x.shape[axis]
    if lo < 0 or hi < 0:
        x = lax.slice_in_dim(x, max(-lo, 0), length - max(-hi, 0), axis=axis)
    if lo > 0 or hi > 0:
        config = [(0, 0, 0)] * x.ndim
        config[axis] = (max(lo, 0), max(hi, 0), 0)
        x = lax.pad(x, jnp.zeros((), x.dtype), config)
    return x


def columns(x, cfg: ConvConfig, kernel_size: int, out_length: int):
    """The GEMM's input operand. NWC: (N, T, K*C), index k*C + c; NCW: (N, C*K, T), index c*K + k."""
    axis = cfg.x_axes[2]
    xp = _pad_length(x, axis, *cfg.padding)
    span = (out_length - 1) * cfg.stride + 1
    taps = [lax.slice_in_dim(xp, k * cfg.dilation, k * cfg.dilation + span, cfg.stride, axis=axis)
            for k in range(kernel_size)]
    if kernel_size == 1:
        return taps[0]
    n = x.shape[0]
    if cfg.layout == "NWC":
        return jnp.stack(taps, axis=2).reshape(n, out_length, -1)
    return jnp.stack(taps, axis=2).reshape(n, -1, out_length)


def forward(x, w, bias, *, cfg, out_dtype):
    """x, w in cfg.layout (groups 1), bias (O,) or empty -> y in out_dtype."""
    if cfg.layout == "NWC":
        k, c, o = w.shape
        t = (x.shape[1] + sum(cfg.padding) - (k - 1) * cfg.dilation - 1) // cfg.stride + 1
        cols = columns(x, cfg, k, t)
        w2 = w.reshape(k * c, o)
        y = lax.dot_general(cols, w2, (((2,), (0,)), ((), ())), precision=lax.Precision.DEFAULT,
                            preferred_element_type=out_dtype)
        bias_shape = (1, 1, o)
    else:
        o, c, k = w.shape
        t = (x.shape[2] + sum(cfg.padding) - (k - 1) * cfg.dilation - 1) // cfg.stride + 1
        cols = columns(x, cfg, k, t)
        w2 = w.reshape(o, c * k)
        # (O, N, T) from the product, then N to the front: a copy of y, small beside the columns for the shapes
        # routed here.
        y = lax.dot_general(w2, cols, (((1,), (1,)), ((), ())), precision=lax.Precision.DEFAULT,
                            preferred_element_type=out_dtype)
        y = jnp.transpose(y, (1, 0, 2))
        bias_shape = (1, o, 1)
    if bias.size:
        y = y + bias.astype(out_dtype).reshape(bias_shape)
    return y


# The im2col product's region, from same-process A/B runs on an H100 (docs/notes/fwdsweep5_session5.md):
# 16-bit dense shapes won at 17 GFLOP and up (sweep/018, 036, 007, 033; 34-155 GFLOP, 62-1312 FLOPs per byte
# of x and y) and lost or tied below 2.1 GFLOP (004, 030, 042); float32 (TF32 GEMMs at half the rate) lost
# on every compute-heavy shape measured (027, 012, 035, 039, 040, 005). The byte bound keeps the memory-bound
# headline (8 FLOPs per byte, 13 GB of columns) on our kernel.
_IM2COL_MIN_FLOPS = 8e9
_IM2COL_MIN_FLOPS_PER_BYTE = 48
_IM2COL_MAX_COLUMN_BYTES = 1 << 30


def applies(cfg: ConvConfig, x_shape, w_shape, dtype) -> bool:
    """True for the shapes the GEMM route takes (see the module docstring)."""
    dtype = jnp.dtype(dtype)
    if not (cfg.groups == 1 and cfg.precision == PRECISION_DEFAULT and dtype in _GEMM_DTYPES and enabled()):
        return False
    n, c, length = (x_shape[a] for a in cfg.x_axes)
    o, _, k = (w_shape[a] for a in cfg.w_axes)
    out_length = (length + sum(cfg.padding) - (k - 1) * cfg.dilation - 1) // cfg.stride + 1
    if out_length < 1:
        return False
    if k == 1:
        # Strided 1x1 (sweep/015: 0.097 against our 0.231 ms; 014: 0.044 against 0.074); at stride 1 our
        # kernel won (026, channels-first: 0.320 against 0.387).
        return cfg.stride > 1
    if dtype.itemsize != 2:
        return False
    flops = 2.0 * n * o * out_length * c * k
    io_bytes = (n * c * length + n * o * out_length) * dtype.itemsize
    column_bytes = n * out_length * c * k * dtype.itemsize
    return (flops >= _IM2COL_MIN_FLOPS and flops >= _IM2COL_MIN_FLOPS_PER_BYTE * io_bytes
            and column_bytes <= _IM2COL_MAX_COLUMN_BYTES)
