"""Channels-last 1x1 convolutions as matrix products, for the CUDA lowering.

With K = 1, stride 1, no padding and one group, an NWC convolution is x (N*L, C) times w (C, O): every pass
is one GEMM over contiguous operands (y = x w, dx = dy w^T, dw = x^T dy with the reduction over N*L). cuBLAS,
reached through XLA's dot, runs those at the memory roofline, and measured faster than our implicit-GEMM
kernels on such layers (WaveNet's 1x1 convolutions, N8 L65536 C128 -> 128 on an H100: forward 0.223 vs 0.232 ms,
backward 0.522 vs 0.627). The CUDA lowering sends those shapes here; everything else goes to our kernels.

Channels-first 1x1 convolutions are not routed here: their weight gradient contracts over N and L, which are
not adjacent in NCW memory, and XLA then transposes whole activations (measured 15.6 ms on a case where our
kernel takes 0.93). Accurate precision stays on our kernels too (3xTF32), where the accuracy contract is ours.

JAX_CONV1D_POINTWISE_GEMM=0 (read at lowering time) keeps these shapes on our kernels, for A/B timing and tests.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
from jax import lax

from ._shapes import PRECISION_DEFAULT, ConvConfig
from ._lax_impl import bias_grad

_GEMM_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def enabled() -> bool:
    return os.environ.get("JAX_CONV1D_POINTWISE_GEMM", "1") != "0"


def applies(cfg: ConvConfig, kernel_size: int, dtype) -> bool:
    """True for the shapes the GEMM route takes (see the module docstring)."""
    return (cfg.layout == "NWC" and kernel_size == 1 and cfg.stride == 1 and cfg.padding == (0, 0)
            and cfg.groups == 1 and cfg.precision == PRECISION_DEFAULT and jnp.dtype(dtype) in _GEMM_DTYPES
            and enabled())


def _dot(a, b, contract_a, contract_b):
    # Products accumulate in float32 and round once at the end, as our kernels do.
    return lax.dot_general(a, b, ((contract_a, contract_b), ((), ())), precision=lax.Precision.DEFAULT,
                           preferred_element_type=jnp.float32)


def forward(x, w, bias, *, cfg, out_dtype):
    """x (N, L, C), w (1, C, O), bias (O,) or empty -> y (N, L, O) in out_dtype."""
    y = _dot(x, w[0], (2,), (0,))
    if bias.size:
        y = y + bias.astype(jnp.float32)
    return y.astype(out_dtype)


def dgrad(dy, w, *, cfg, in_length):
    """dy (N, L, O), w (1, C, O) -> dx (N, L, C)."""
    return _dot(dy, w[0], (2,), (1,)).astype(w.dtype)


def wgrad(x, dy, *, cfg, kernel_size):
    """x (N, L, C), dy (N, L, O) -> dw (1, C, O), the reduction over every batch row and position."""
    return _dot(x, dy, (0, 1), (0, 1))[None].astype(x.dtype)


def backward(x, dy, w, *, cfg, want_dx, want_dw, want_db):
    empty = jnp.zeros((0,), x.dtype)
    dx = dgrad(dy, w, cfg=cfg, in_length=x.shape[1]) if want_dx else empty
    dw = wgrad(x, dy, cfg=cfg, kernel_size=1) if want_dw else empty
    db = bias_grad(dy, cfg) if want_db else empty
    return dx, dw, db
