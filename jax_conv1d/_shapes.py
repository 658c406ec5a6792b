"""Argument checking and shape arithmetic: the one place that knows output lengths and padding rules.

Everything here runs at trace time on static shapes, so a bad argument raises a ValueError or TypeError that
names it before anything is compiled or launched.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import jax
import numpy as np
from jax import lax

LAYOUTS = ("NCW", "NWC")
PADDING_STRINGS = ("VALID", "SAME", "SAME_LOWER", "CAUSAL")

# precision codes passed to the kernels: 0 may use TF32 for float32 inputs, 1 asks for float32 accuracy
PRECISION_DEFAULT = 0
PRECISION_ACCURATE = 1



def _supported_dtypes():
    import ml_dtypes  # jax's own dependency; bfloat16 lives there

    return (np.dtype(ml_dtypes.bfloat16), np.dtype("float16"), np.dtype("float32"), np.dtype("float64"))


SUPPORTED_DTYPES = _supported_dtypes()


@dataclasses.dataclass(frozen=True)
class ConvConfig:
    """Static description of one convolution, after validation; hashable, so it can be a primitive param."""

    layout: str  # "NCW" or "NWC"
    stride: int
    dilation: int
    padding: tuple[int, int]  # (lo, hi), resolved against the input length
    groups: int
    precision: int  # PRECISION_DEFAULT or PRECISION_ACCURATE

    @property
    def channels_last(self) -> bool:
        return self.layout == "NWC"

    # Axis positions of the logical dimensions in each tensor for this layout.
    @property
    def x_axes(self):  # (batch, channel, length)
        return (0, 1, 2) if self.layout == "NCW" else (0, 2, 1)

    @property
    def w_axes(self):  # (out channel, in channel per group, tap)
        return (0, 1, 2) if self.layout == "NCW" else (2, 1, 0)

    def with_groups(self, groups: int) -> "ConvConfig":
        return dataclasses.replace(self, groups=groups)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def _positive_int(value: Any, name: str) -> int:
    v = _as_int(value, name)
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v


def check_layout(layout: Any) -> str:
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout.upper()


def output_length(in_length: int, kernel_size: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> int:
    """lax's output length: floor((L + lo + hi - span) / stride) + 1, or 0 if the span does not fit."""
    padded = in_length + pad_lo + pad_hi
    span = (kernel_size - 1) * dilation + 1
    if padded < span:
        return 0
    return (padded - span) // stride + 1


def resolve_padding(padding: Any, in_length: int, kernel_size: int, stride: int, dilation: int) -> tuple[int, int]:
    """Turns any accepted padding form into (lo, hi) with lax's rules for SAME and SAME_LOWER."""
    span = (kernel_size - 1) * dilation + 1
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            lo, hi = 0, 0
        elif mode in ("SAME", "SAME_LOWER"):
            out = -(-in_length // stride)
            total = max(0, (out - 1) * stride + span - in_length)
            small, large = total // 2, total - total // 2
            lo, hi = (small, large) if mode == "SAME" else (large, small)
        elif mode == "CAUSAL":
            lo, hi = span - 1, 0
        else:
            raise ValueError(f"padding must be one of {PADDING_STRINGS}, an int or a (lo, hi) pair; got {padding!r}")
    elif isinstance(padding, (int, np.integer)) and not isinstance(padding, (bool, np.bool_)):
        lo = hi = int(padding)
    elif isinstance(padding, (tuple, list)):
        pair = padding
        if len(pair) == 1 and isinstance(pair[0], (tuple, list)):  # lax's [(lo, hi)] form
            pair = pair[0]
        if len(pair) != 2:
            raise ValueError(f"padding must be an int or a (lo, hi) pair, got {padding!r}")
        lo = _as_int(pair[0], "padding[0]")
        hi = _as_int(pair[1], "padding[1]")
    else:
        raise TypeError(f"padding must be a string, an int or a (lo, hi) pair, got {type(padding).__name__}")
    if -lo > in_length or -hi > in_length or in_length + lo + hi < 0:
        raise ValueError(f"padding {(lo, hi)} is more negative than the input length {in_length}")
    return lo, hi


def resolve_precision(precision: Any) -> int:
    """Maps lax's precision vocabulary to the kernels' two modes."""
    if isinstance(precision, (tuple, list)):
        if len(precision) != 2:
            raise ValueError(f"precision must be a single value or a pair, got {precision!r}")
        return max(resolve_precision(p) for p in precision)
    if precision is None:
        # As in lax: None means the global jax.default_matmul_precision, which may ask for float32 accuracy.
        configured = jax.config.jax_default_matmul_precision
        if configured is None:
            return PRECISION_DEFAULT
        try:
            return resolve_precision(configured)
        except (TypeError, ValueError):  # an algorithm preset name lax.Precision does not know
            return PRECISION_DEFAULT
    if isinstance(precision, str):
        try:
            precision = lax.Precision(precision.lower() if precision.lower() in ("default", "high", "highest")
                                      else precision)
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"precision must be None, 'default', 'high', 'highest' or a lax.Precision, "
                             f"got {precision!r}") from None
    if not isinstance(precision, lax.Precision):
        raise TypeError(f"precision must be None, a string or a lax.Precision, got {type(precision).__name__}")
    return PRECISION_DEFAULT if precision == lax.Precision.DEFAULT else PRECISION_ACCURATE


def check_dtype(dtype: Any, name: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in SUPPORTED_DTYPES:
        kind = "integer" if np.issubdtype(dt, np.integer) or dt == np.bool_ else (
            "complex" if np.issubdtype(dt, np.complexfloating) else "unsupported")
        raise TypeError(f"{name} has {kind} dtype {dt}; supported: float32, bfloat16, float16, float64")
    return dt


def make_config(x_shape, w_shape, bias_shape, *, stride, dilation, padding, groups, layout, precision):
    """Validates every argument against the shapes and returns (ConvConfig, output shape)."""
    layout = check_layout(layout)
    stride = _positive_int(stride, "stride")
    dilation = _positive_int(dilation, "dilation")
    groups = _positive_int(groups, "groups")
    if len(x_shape) != 3:
        raise ValueError(f"x must have rank 3 ({layout}), got shape {tuple(x_shape)}")
    if len(w_shape) != 3:
        w_layout = "(O, C/groups, K)" if layout == "NCW" else "(K, C/groups, O)"
        raise ValueError(f"w must have rank 3 {w_layout}, got shape {tuple(w_shape)}")
    if layout == "NCW":
        n, c, length = x_shape
        o, cg, k = w_shape
    else:
        n, length, c = x_shape
        k, cg, o = w_shape
    if k < 1:
        raise ValueError(f"w has kernel size {k}; it must be >= 1")
    if c % groups or o % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({c}) and output channels ({o})")
    if cg * groups != c:
        raise ValueError(f"channel mismatch between x and w: x has {c} channels, w expects {cg} per group x "
                         f"{groups} groups = {cg * groups}")
    if bias_shape is not None and tuple(bias_shape) != (o,):
        raise ValueError(f"bias must have shape ({o},), got {tuple(bias_shape)}")
    lo, hi = resolve_padding(padding, length, k, stride, dilation)
    cfg = ConvConfig(layout=layout, stride=stride, dilation=dilation, padding=(lo, hi), groups=groups,
                     precision=resolve_precision(precision))
    lout = output_length(length, k, stride, dilation, lo, hi)
    out_shape = (n, o, lout) if layout == "NCW" else (n, lout, o)
    return cfg, out_shape
