"""A drop-in for ``jax.lax.conv_general_dilated`` that runs 1-D convolutions on this library's op.

It takes exactly lax's arguments, so it can be handed to ``flax.linen.Conv(conv_general_dilated=...)`` or
``flax.nnx.Conv(conv_general_dilated=...)``. A call goes to ``dilated_conv1d`` only when the op computes the
same thing lax would: one spatial dimension in a layout the op has natively, no input dilation, no batch
groups, floating-point operands of one dtype the kernels support, and an output dtype the kernels write.
Every other call is forwarded to lax unchanged, so the drop-in is never less correct than lax.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import numpy as np
from jax import lax

from ._shapes import PRECISION_DEFAULT, SUPPORTED_DTYPES, resolve_precision
from .conv import dilated_conv1d

# ConvDimensionNumbers specs, as (lhs_spec, rhs_spec, out_spec), of the layouts the op has natively.
_NATIVE_LAYOUTS = {
    ((0, 1, 2), (0, 1, 2), (0, 1, 2)): "NCW",  # x (N, C, L), w (O, I, K): lax's default
    ((0, 2, 1), (2, 1, 0), (0, 2, 1)): "NWC",  # x (N, L, C), w (K, I, O): Flax's layout
}

_F32 = np.dtype("float32")


def _native_output_dtype(in_dtype: Any, preferred_element_type: Any) -> np.dtype | None:
    """The output dtype when the op can produce it exactly as lax would, else None.

    The kernels write their input dtype, or float32 from a 16-bit input; other requests (a wider or narrower
    type) are left to lax, which has its own rules for them.
    """
    in_dtype = np.dtype(in_dtype)
    if in_dtype not in SUPPORTED_DTYPES:
        return None
    if preferred_element_type is None:
        return in_dtype
    try:
        out = np.dtype(preferred_element_type)
    except (TypeError, ValueError):
        return None
    if out == in_dtype or (out == _F32 and in_dtype.itemsize == 2):
        return out
    return None


def _op_precision(precision: Any) -> lax.Precision | None:
    """The op's precision (DEFAULT or HIGHEST) for a lax precision argument, or None where it has no equivalent.

    lax reads ``jax.default_matmul_precision`` when precision is None; so does this, so that a user who asked
    for float32 accuracy globally does not silently get TF32 from the drop-in.
    """
    if precision is None:
        precision = jax.config.jax_default_matmul_precision
    try:
        code = resolve_precision(precision)
    except (TypeError, ValueError):
        return None  # e.g. a DotAlgorithmPreset: lax knows what to do with it
    return lax.Precision.DEFAULT if code == PRECISION_DEFAULT else lax.Precision.HIGHEST


def _single_int(value: Any, default: int = 1) -> int | None:
    """The int in a length-1 sequence (None meaning ``default``), or None for anything else."""
    if value is None:
        return default
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 1:
        return None
    item = value[0]
    if isinstance(item, (bool, np.bool_)):
        return None
    try:
        return operator.index(item)
    except TypeError:
        return None


def _explicit_padding(padding: Any, length: int, span: int, stride: int) -> tuple[int, int] | None:
    """lax's padding argument as one (lo, hi) pair, using lax's own arithmetic for the string forms."""
    if isinstance(padding, str):
        try:
            ((lo, hi),) = lax.padtype_to_pads((length,), (span,), (stride,), padding)
        except (RuntimeError, ValueError, TypeError):
            return None  # an unknown string: lax raises its own error
        return int(lo), int(hi)
    if isinstance(padding, (bytes, np.ndarray)) or not hasattr(padding, "__len__") or len(padding) != 1:
        return None
    pair = padding[0]
    if not hasattr(pair, "__len__") or len(pair) != 2:
        return None
    try:
        lo, hi = (operator.index(p) for p in pair)
    except TypeError:
        return None
    return lo, hi


def native_conv1d_kwargs(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                         feature_group_count, batch_group_count, precision, preferred_element_type, out_sharding):
    """Keyword arguments for dilated_conv1d when this lax call is one the op computes exactly; else None.

    The Flax layers ask this too, so the drop-in and the layers take the native path under the same rules.
    """
    if out_sharding is not None or batch_group_count != 1:
        return None
    if not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in (lhs, rhs)):
        return None
    if len(lhs.shape) != 3 or len(rhs.shape) != 3:
        return None
    lhs_dtype, rhs_dtype = np.dtype(lhs.dtype), np.dtype(rhs.dtype)
    if lhs_dtype != rhs_dtype or _native_output_dtype(lhs_dtype, preferred_element_type) is None:
        return None
    try:
        dnums = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    except (TypeError, ValueError):
        return None
    layout = _NATIVE_LAYOUTS.get((tuple(dnums.lhs_spec), tuple(dnums.rhs_spec), tuple(dnums.out_spec)))
    if layout is None:
        return None
    stride = _single_int(window_strides, default=None)
    dilation = _single_int(rhs_dilation)
    if stride is None or dilation is None or _single_int(lhs_dilation) != 1 or stride < 1 or dilation < 1:
        return None
    op_precision = _op_precision(precision)
    if op_precision is None:
        return None
    length = lhs.shape[dnums.lhs_spec[2]]
    kernel_size = rhs.shape[dnums.rhs_spec[2]]
    pads = _explicit_padding(padding, length, (kernel_size - 1) * dilation + 1, stride)
    if pads is None:
        return None
    return dict(stride=stride, dilation=dilation, padding=pads, groups=feature_group_count, layout=layout,
                precision=op_precision, preferred_element_type=preferred_element_type)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, out_sharding=None):
    """``jax.lax.conv_general_dilated``, running 1-D convolutions on jax_conv1d's op.

    Same arguments and results as lax. One spatial dimension in NCW/OIW/NCW (lax's default) or NWC/WIO/NWC
    (Flax's) layout, ``lhs_dilation`` 1, ``batch_group_count`` 1, no ``out_sharding``, equal float16,
    bfloat16, float32 or float64 operands, and ``preferred_element_type`` None, the input dtype or float32
    from a 16-bit input go through ``dilated_conv1d``; everything else is passed to lax unchanged.
    """
    native = native_conv1d_kwargs(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, batch_group_count, precision,
                                  preferred_element_type, out_sharding)
    if native is not None:
        return dilated_conv1d(lhs, rhs, None, **native)
    # Only pass out_sharding when it is set, so jax versions whose lax lacks it keep working.
    extra = {} if out_sharding is None else {"out_sharding": out_sharding}
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type,
        **extra)
