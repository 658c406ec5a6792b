"""Small strided dense 16-bit convolutions through XLA's own convolution (cuDNN), for the CUDA lowering.

On these shapes cuDNN's strided kernels are faster than anything of ours measured (session 8, H100, one
process, ms ours / XLA; docs/notes/sweep8_session8.md): sweep/018 (N4 C64 O256 K8 s2 NWC bf16, 17 GFLOP)
forward 0.090 (im2col GEMM route) / 0.080 and backward 0.202 (phase correlation + columns GEMM) / 0.109;
sweep/030 (C256 O32 K7 s3 NCW bf16, 1.3 GFLOP) backward 0.147 / 0.140; sweep/042 (C32 O64 K6 s3 NCW bf16,
2.1 GFLOP) backward 0.141 / 0.130. Our strided gradients there are several launches (columns, GEMMs, phase
reshapes) around a small amount of work; cuDNN's are one kernel per gradient. The forward is routed only where
our dispatch would run the im2col GEMM (_gemm_forward.py; of the sweep, 018): below that bound our kernel ties
or wins (030 0.99x and 1.00x; 042 1.89x and 0.95x in session 6, 1.81x in session 8). The larger strided 16-bit
shape (sweep/007, 51 GFLOP) stays on the GEMM and kernel routes, which beat cuDNN there (forward 1.4x, backward
4.3x).

The route is the convolution XLA itself would run for lax.conv_general_dilated in the input type (and its
jax.vjp for the gradients), so its results are XLA's: a 16-bit output with a bias is rounded twice (product,
then bias add), as in an XLA convolution followed by a bias add. With it, in one process (ms ours / XLA, medians
of three rounds): 018 forward 0.079 / 0.082, backward 0.110 / 0.113; 030 backward 0.108 / 0.108; 042 backward
0.126 / 0.121, the same program and cuDNN algorithms as XLA's (the difference is the spread of one program:
XLA's own rounds read 0.097-0.126).

Determinism is XLA's too: the algorithms its autotuner picked here (algo_id 62 forward, 65 and 73 for the
two gradients) gave the same bits in two runs on every routed row, but XLA may pick a non-deterministic cuDNN
algorithm unless --xla_gpu_deterministic_ops (or --xla_gpu_exclude_nondeterministic_ops) is set.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jax import lax

from . import _gemm_backward, _gemm_forward
from ._lax_impl import bias_grad
from ._shapes import PRECISION_DEFAULT, ConvConfig

_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# Forward FLOPs (2 N O T C K) at or below which the route is taken: 018 at 17 GFLOP lost to cuDNN in both
# passes, 007 at 51 GFLOP won by 1.4x (forward) and 4.3x (backward) on our routes.
_MAX_FLOPS = 32e9


def enabled() -> bool:
    """JAX_CONV1D_XLA_CONV=0 turns the route off; read when a function is lowered."""
    return os.environ.get("JAX_CONV1D_XLA_CONV", "1") != "0"


def applies(cfg: ConvConfig, x_shape, w_shape, dtype, *, backward: bool) -> bool:
    """True for the shapes this route takes. The forward defers to a pinned kernel family or
    JAX_CONV1D_FWD_GEMM=0 (both mean "our kernels"), the backward to any JAX_CONV1D_BWD_GEMM but the default."""
    if not enabled():
        return False
    if backward and _gemm_backward.mode() != "1":
        return False
    if not backward and not _gemm_forward.enabled():
        return False
    if not (cfg.groups == 1 and cfg.stride > 1 and cfg.precision == PRECISION_DEFAULT
            and jnp.dtype(dtype) in _DTYPES and min(cfg.padding) >= 0):
        return False
    n, c, length = (x_shape[a] for a in cfg.x_axes)
    o, _, k = (w_shape[a] for a in cfg.w_axes)
    out_length = (length + sum(cfg.padding) - (k - 1) * cfg.dilation - 1) // cfg.stride + 1
    if k == 1 or out_length < 1 or 2.0 * n * o * out_length * c * k > _MAX_FLOPS:
        return False
    # Forward: only the shapes the im2col GEMM route would take (018). Below its bound our kernel ties or wins
    # (030: 0.99x; 042: 1.89x and 0.95x in two processes of session 6).
    return backward or _gemm_forward.applies(cfg, x_shape, w_shape, dtype)


def _conv(x, w, cfg: ConvConfig):
    dims = ("NCH", "OIH", "NCH") if cfg.layout == "NCW" else ("NHC", "HIO", "NHC")
    return lax.conv_general_dilated(x, w, (cfg.stride,), [tuple(cfg.padding)], rhs_dilation=(cfg.dilation,),
                                    dimension_numbers=dims, precision=lax.Precision.DEFAULT)


def forward(x, w, bias, *, cfg, out_dtype):
    """y = conv(x, w) (+ bias) in x's type (the lowering takes this route only when out_dtype is x's type)."""
    y = _conv(x, w, cfg)
    if bias.size:
        y = y + bias.astype(y.dtype).reshape((1, -1, 1) if cfg.layout == "NCW" else (1, 1, -1))
    return y.astype(out_dtype)


def backward(x, dy, w, *, cfg, want_dx, want_dw, want_db):
    """(dx, dw, db) of the combined backward, an empty array for each part not wanted."""
    _, vjp = jax.vjp(lambda x_, w_: _conv(x_, w_, cfg), x, w)
    dx, dw = vjp(dy.astype(x.dtype))
    empty = jnp.zeros((0,), x.dtype)
    return (dx if want_dx else empty, dw if want_dw else empty,
            bias_grad(dy, cfg).astype(x.dtype) if want_db else empty)


def dgrad(dy, w, *, cfg, in_length):
    from ._primitives import x_shape_from

    x = jnp.zeros(x_shape_from(cfg, dy.shape, w.shape, in_length), w.dtype)  # shapes only: dx does not read x
    return jax.vjp(lambda x_: _conv(x_, w, cfg), x)[1](dy.astype(w.dtype))[0]


def wgrad(x, dy, *, cfg, kernel_size):
    from ._primitives import w_shape_from

    w = jnp.zeros(w_shape_from(cfg, x.shape, dy.shape, kernel_size), x.dtype)  # shapes only
    return jax.vjp(lambda w_: _conv(x, w_, cfg), w)[1](dy.astype(x.dtype))[0]
