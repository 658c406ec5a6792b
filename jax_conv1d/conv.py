"""The public op: argument checking, dtype policy, and differentiation.

Differentiation is a custom_vjp on each of the three passes. They are closed under transposition
(the forward's input gradient is dgrad, its weight gradient wgrad; dgrad's and wgrad's own gradients are
forward, dgrad and wgrad again), so grad-of-grad to any order stays on the native kernels.

The rules run with symbolic zeros: the forward rule sees which inputs are being differentiated and keeps
only the residuals their gradients need, so frozen weights skip the wgrad kernel and data that is not
differentiated skips dgrad. When the weight gradient is wanted together with the input or the bias
gradient, one combined call (conv1d_bwd_p, its own custom_vjp built from the three passes) computes them
all from one read of dy.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from . import _sharding
from ._primitives import conv1d_bwd_p, conv1d_dgrad_p, conv1d_fwd_p, conv1d_wgrad_p
from ._shapes import SUPPORTED_DTYPES, ConvConfig, check_dtype, make_config

_F32 = np.dtype("float32")
_HALF_TYPES = tuple(d for d in SUPPORTED_DTYPES if d.itemsize == 2)


def _as_array(value: Any, name: str):
    if isinstance(value, (jax.Array, np.ndarray)) or hasattr(value, "aval"):
        return value
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array, got {type(value).__name__}") from None


def _kernel_out_dtype(in_dtype: np.dtype, out_dtype: np.dtype) -> np.dtype:
    """The output type the kernels write; anything else is produced by a cast afterwards."""
    if out_dtype == in_dtype or (out_dtype == _F32 and in_dtype in _HALF_TYPES):
        return out_dtype
    return in_dtype


def _bias_axes(cfg: ConvConfig):
    return (0, 2) if cfg.layout == "NCW" else (0, 1)


def _empty(dtype):
    return jnp.zeros((0,), dtype)


def _typed(geom, which, ct):
    """A cotangent cast to the sharding of its primal (0: x, 1: w, 2: bias) when types carry explicit
    shardings: the backward passes' own partitioning may choose another one (_sharding.py)."""
    shardings = geom[2]
    return ct if shardings is None else _sharding.cast_like(ct, shardings[which])


# ---- forward ------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _conv(cfg, out_dtype, geom, x, w, b):
    return conv1d_fwd_p.bind(x, w, b, cfg=cfg, out_dtype=out_dtype)


def _conv_fwd(cfg, out_dtype, geom, x, w, b):
    # Through _conv, not the primitive, so an outer differentiation (grad of grad) meets the custom rule.
    y = _conv(cfg, out_dtype, geom, x.value, w.value, b.value)
    need_db = b.perturbed and b.value.shape[0] > 0
    # The combined backward call takes w even when dx is not wanted (for its shape; weights are small).
    combined = w.perturbed and (x.perturbed or need_db)
    residuals = (
        x.value if w.perturbed else None,  # dw needs x
        w.value if x.perturbed or combined else None,  # dx needs w
        _empty(x.value.dtype) if x.perturbed else None,  # a marker: dx is wanted
        _empty(b.value.dtype) if need_db else None,  # a marker: db is wanted
    )
    return y, residuals


def _conv_bwd(cfg, out_dtype, geom, residuals, g):
    x, w, dx_marker, db_marker = residuals
    # All residuals are None when only an empty bias (zero output channels) is differentiated: nothing to do.
    if isinstance(g, SymbolicZero) or all(r is None for r in residuals):
        return None, None, None
    in_dtype = next(a.dtype for a in residuals if a is not None)
    dy = g.astype(in_dtype)
    want_dx, want_dw, want_db = dx_marker is not None, x is not None, db_marker is not None
    # A wider cotangent (preferred_element_type) is summed for db before it is rounded to the input type.
    native_db = want_db and g.dtype == in_dtype
    db = None
    if want_dw and (want_dx or native_db):
        dx, dw, db = _bwd(cfg, geom, (want_dx, want_dw, native_db), x, dy, w)
        dx, db = (dx if want_dx else None), (db if native_db else None)
    else:
        dx = _dgrad(cfg, geom, dy, w) if want_dx else None
        dw = _wgrad(cfg, geom, x, dy) if want_dw else None
    if want_db and db is None:
        db = jnp.sum(g, axis=_bias_axes(cfg), dtype=jnp.promote_types(g.dtype, jnp.float32)).astype(in_dtype)
    return _typed(geom, 0, dx), _typed(geom, 1, dw), _typed(geom, 2, db)


_conv.defvjp(_conv_fwd, _conv_bwd, symbolic_zeros=True)


# ---- input gradient -----------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _dgrad(cfg, geom, dy, w):
    return conv1d_dgrad_p.bind(dy, w, cfg=cfg, in_length=geom[0])


def _dgrad_fwd(cfg, geom, dy, w):
    dx = _dgrad(cfg, geom, dy.value, w.value)
    return dx, (dy.value if w.perturbed else None, w.value if dy.perturbed else None)


def _dgrad_bwd(cfg, geom, residuals, u):
    dy, w = residuals
    if isinstance(u, SymbolicZero):
        return None, None
    d_dy = _conv(cfg, w.dtype, geom, u, w, _empty(w.dtype)) if w is not None else None
    d_w = _wgrad(cfg, geom, u, dy) if dy is not None else None
    return d_dy, _typed(geom, 1, d_w)


_dgrad.defvjp(_dgrad_fwd, _dgrad_bwd, symbolic_zeros=True)


# ---- weight gradient ----------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _wgrad(cfg, geom, x, dy):
    return conv1d_wgrad_p.bind(x, dy, cfg=cfg, kernel_size=geom[1])


def _wgrad_fwd(cfg, geom, x, dy):
    dw = _wgrad(cfg, geom, x.value, dy.value)
    return dw, (x.value if dy.perturbed else None, dy.value if x.perturbed else None)


def _wgrad_bwd(cfg, geom, residuals, v):
    x, dy = residuals
    if isinstance(v, SymbolicZero):
        return None, None
    d_x = _dgrad(cfg, geom, dy, v) if dy is not None else None
    d_dy = _conv(cfg, x.dtype, geom, x, v, _empty(x.dtype)) if x is not None else None
    return _typed(geom, 0, d_x), d_dy


_wgrad.defvjp(_wgrad_fwd, _wgrad_bwd, symbolic_zeros=True)


# ---- combined backward: dx, dw and db from one call ---------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _bwd(cfg, geom, want, x, dy, w):
    """(dx, dw, db) of the forward at (x, w) for cotangent dy; an entry not in `want` is an empty (0,) array."""
    return tuple(conv1d_bwd_p.bind(x, dy, w, cfg=cfg, want_dx=want[0], want_dw=want[1], want_db=want[2]))


def _bwd_fwd(cfg, geom, want, x, dy, w):
    out = _bwd(cfg, geom, want, x.value, dy.value, w.value)
    want_dx, want_dw, want_db = want
    residuals = (
        x.value if dy.perturbed and want_dw else None,  # d(dw)/d(dy) = conv(x, .)
        w.value if dy.perturbed and want_dx else None,  # d(dx)/d(dy) = conv(., w)
        dy.value if x.perturbed and want_dw else None,  # d(dw)/dx = dgrad(dy, .)
        dy.value if w.perturbed and want_dx else None,  # d(dx)/dw = wgrad(., dy)
        jnp.zeros((0,) + dy.value.shape, dy.value.dtype) if dy.perturbed else None,  # dy's shape, no data
    )
    return out, residuals


def _bwd_bwd(cfg, geom, want, residuals, cts):
    """dx = dgrad(dy, w), dw = wgrad(x, dy), db = sum of dy: each term's transpose, through the custom_vjp
    passes so that higher orders stay native. u, v, s are the cotangents of dx, dw, db."""
    x, w, dy_for_x, dy_for_w, dy_shape = residuals
    u, v, s = (None if isinstance(c, SymbolicZero) or not wanted else c for c, wanted in zip(cts, want))
    d_x = _dgrad(cfg, geom, dy_for_x, v) if dy_for_x is not None and v is not None else None
    d_w = _wgrad(cfg, geom, u, dy_for_w) if dy_for_w is not None and u is not None else None
    d_dy = None
    if dy_shape is not None:
        dtype = dy_shape.dtype
        terms = []
        if w is not None and u is not None:  # conv(u, w) with db's cotangent as its bias
            terms.append(_conv(cfg, dtype, geom, u, w, _empty(dtype) if s is None else s))
            s = None
        if x is not None and v is not None:
            terms.append(_conv(cfg, dtype, geom, x, v, _empty(dtype)))
        if s is not None:
            shape = (1, -1, 1) if cfg.layout == "NCW" else (1, 1, -1)
            terms.append(jnp.broadcast_to(s.reshape(shape), dy_shape.shape[1:]).astype(dtype))
        for t in terms:
            d_dy = t if d_dy is None else d_dy + t
    return _typed(geom, 0, d_x), d_dy, _typed(geom, 1, d_w)


_bwd.defvjp(_bwd_fwd, _bwd_bwd, symbolic_zeros=True)


# ---- public API ---------------------------------------------------------------------------------------


def dilated_conv1d(x, w, bias=None, *, stride=1, dilation=1, padding="VALID", groups=1, layout="NCW",
                   precision=None, preferred_element_type=None) -> jax.Array:
    """1-D cross-correlation with stride, dilation, padding and groups; same results as
    ``lax.conv_general_dilated(x, w, (stride,), padding, rhs_dilation=(dilation,), feature_group_count=groups)``.

    Args:
      x: input, ``(N, C, L)`` for ``layout="NCW"`` or ``(N, L, C)`` for ``"NWC"``.
      w: kernel, ``(O, C // groups, K)`` for NCW or ``(K, C // groups, O)`` for NWC (Flax's layout).
      bias: ``(O,)`` or None; added inside the op.
      stride, dilation: positive ints.
      padding: "VALID", "SAME", "SAME_LOWER" (lax's rules), "CAUSAL" (left pad ``(K-1)*dilation``), an int
        for both sides, or a ``(lo, hi)`` pair; negative pads crop.
      groups: feature groups; must divide C and O (``groups == C`` is depthwise).
      layout: "NCW" or "NWC".
      precision: None/"default" (float32 may use TF32 on GPU), "high"/"highest" (float32 accuracy), or a
        ``lax.Precision``.
      preferred_element_type: output dtype; defaults to the input dtype. Accumulation is float32 (float64
        for float64 inputs).

    Returns:
      ``(N, O, Lout)`` for NCW or ``(N, Lout, O)`` for NWC.
    """
    x = _as_array(x, "x")
    w = _as_array(w, "w")
    in_dtype = check_dtype(x.dtype, "x")
    if check_dtype(w.dtype, "w") != in_dtype:
        raise TypeError(f"x and w must have the same dtype, got x {in_dtype} and w {np.dtype(w.dtype)}")
    if bias is not None:
        bias = _as_array(bias, "bias")
        if check_dtype(bias.dtype, "bias") != in_dtype:
            raise TypeError(f"bias must have the dtype of x ({in_dtype}), got {np.dtype(bias.dtype)}")
    cfg, _ = make_config(x.shape, w.shape, None if bias is None else bias.shape, stride=stride,
                         dilation=dilation, padding=padding, groups=groups, layout=layout, precision=precision)
    if preferred_element_type is None:
        out_dtype = in_dtype
    else:
        out_dtype = check_dtype(preferred_element_type, "preferred_element_type")
    kernel_dtype = _kernel_out_dtype(in_dtype, out_dtype)
    b = _empty(in_dtype) if bias is None else bias
    x, w, b = _sharding.match_varying(x, w, b)  # inside shard_map: one set of varying axes for all operands
    # (L, K, explicit shardings of x, w, b or None): static facts the gradients need
    geom = (x.shape[cfg.x_axes[2]], w.shape[cfg.w_axes[2]], _sharding.explicit_shardings(x, w, b))
    y = _conv(cfg, kernel_dtype, geom, x, w, b)
    return y if kernel_dtype == out_dtype else y.astype(out_dtype)
