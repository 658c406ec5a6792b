"""The three passes written with lax.conv_general_dilated.

They are the fallback lowering on platforms without native handlers and the reference the tests compare
against. dgrad and wgrad are the exact transposes of the forward, taken with jax.linear_transpose.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._shapes import PRECISION_DEFAULT, ConvConfig


def _dimension_numbers(cfg: ConvConfig):
    return ("NCH", "OIH", "NCH") if cfg.layout == "NCW" else ("NHC", "HIO", "NHC")


def _lax_precision(cfg: ConvConfig):
    return lax.Precision.DEFAULT if cfg.precision == PRECISION_DEFAULT else lax.Precision.HIGHEST


def forward(x, w, bias, cfg: ConvConfig, out_dtype=None):
    """bias: an (O,) array or an empty array for none."""
    out_dtype = x.dtype if out_dtype is None else out_dtype
    # Negative pads become a crop before the conv: XLA:CPU (jax 0.10) miscomputes negative low padding
    # combined with positive high padding.
    lo, hi = cfg.padding
    axis = cfg.x_axes[2]
    length = x.shape[axis]
    if lo < 0 or hi < 0:
        x = lax.slice_in_dim(x, max(-lo, 0), length - max(-hi, 0), axis=axis)
    y = lax.conv_general_dilated(
        x, w, window_strides=(cfg.stride,), padding=[(max(lo, 0), max(hi, 0))], rhs_dilation=(cfg.dilation,),
        dimension_numbers=_dimension_numbers(cfg), feature_group_count=cfg.groups,
        precision=_lax_precision(cfg), preferred_element_type=jnp.float32 if x.dtype != jnp.float64 else None)
    if bias is not None and bias.size:
        shape = (1, -1, 1) if cfg.layout == "NCW" else (1, 1, -1)
        y = y + bias.astype(y.dtype).reshape(shape)
    return y.astype(out_dtype)


def dgrad(dy, w, cfg: ConvConfig, x_shape):
    x_aval = jax.ShapeDtypeStruct(x_shape, w.dtype)
    (dx,) = jax.linear_transpose(lambda x: forward(x, w, None, cfg, dy.dtype), x_aval)(dy)
    return dx


def wgrad(x, dy, cfg: ConvConfig, w_shape):
    w_aval = jax.ShapeDtypeStruct(w_shape, x.dtype)
    (dw,) = jax.linear_transpose(lambda w: forward(x, w, None, cfg, dy.dtype), w_aval)(dy)
    return dw


def bias_grad(dy, cfg: ConvConfig):
    """Sum of dy over batch and positions, accumulated in float32 (float64 for float64)."""
    axes = (0, 2) if cfg.layout == "NCW" else (0, 1)
    return jnp.sum(dy, axis=axes, dtype=jnp.promote_types(dy.dtype, jnp.float32)).astype(dy.dtype)
