"""What the linen and nnx Conv1D layers share: Flax Conv's rules for one spatial dimension, and the call.

Flax's Conv resolves 'CIRCULAR', 'REFLECT' and 'CAUSAL' itself, by padding the input and then convolving with
'VALID'; every other padding goes to lax. The layers follow the same rules so that they compute what Flax's
Conv computes, with two differences in how, not in what: 'CAUSAL' zero padding and the bias are fused into
the op instead of being separate passes over memory.

Nothing here imports flax: the caller hands in its promote_dtype and its conv function.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from .conv import dilated_conv1d
from .lax_compat import native_conv1d_kwargs

# Flax's channels-last 1-D dimension numbers: x (N, L, C), kernel (K, C/groups, O), y (N, L, O).
NWC_DIMENSION_NUMBERS = lax.ConvDimensionNumbers(lhs_spec=(0, 2, 1), rhs_spec=(2, 1, 0), out_spec=(0, 2, 1))

_LAX_PADDING_STRINGS = ("VALID", "SAME", "SAME_LOWER")
_PRE_PAD_MODES = {"CIRCULAR": "wrap", "REFLECT": "reflect"}


def _int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def _positive_int(value: Any, name: str) -> int:
    out = _int(value, name)
    if out < 1:
        raise ValueError(f"{name} must be >= 1, got {out}")
    return out


def _one_spatial(value: Any, name: str, *, none_means: int | None = None) -> int:
    """Flax's per-dimension argument (an int or a sequence of one per spatial dimension) for one dimension."""
    if value is None and none_means is not None:
        return none_means  # Flax's old sentinel for 1
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a sequence of one int for a 1-D convolution, got {value!r}")
        value = value[0]
    return _positive_int(value, name)


@dataclasses.dataclass(frozen=True)
class FlaxPadding:
    """Flax's resolution of a Conv padding argument for one spatial dimension.

    ``pre_pad`` is what Flax adds to the input itself (with ``jnp.pad`` mode ``pre_pad_mode``) before calling
    the convolution with ``lax_padding``; for the lax padding forms there is no pre-pad.
    """

    lax_padding: str | list[tuple[int, int]]
    pre_pad: tuple[int, int] | None = None
    pre_pad_mode: str | None = None  # "wrap", "reflect" or "constant"


def resolve_flax_padding(padding: Any, kernel_size: int, dilation: int) -> FlaxPadding:
    """Flax Conv's padding rules for one spatial dimension.

    'CIRCULAR' and 'REFLECT' pad the input by ``((span - 1) // 2, span // 2)`` where span is the dilated kernel
    extent (so an even kernel gets its extra element on the right), 'CAUSAL' zero-pads ``(span - 1, 0)``; all
    three then convolve with 'VALID'. 'SAME', 'SAME_LOWER' and 'VALID' go to lax, whose split puts the odd
    element on the right for 'SAME' and on the left for 'SAME_LOWER'. An int pads both sides; ``[(lo, hi)]``
    (Flax's form for one dimension) or a bare ``(lo, hi)`` pads each side.
    """
    span = (kernel_size - 1) * dilation + 1
    if isinstance(padding, str):
        # Flax matches these three names exactly; lax's own strings are case-insensitive.
        if padding in _PRE_PAD_MODES:
            return FlaxPadding("VALID", ((span - 1) // 2, span // 2), _PRE_PAD_MODES[padding])
        if padding == "CAUSAL":
            return FlaxPadding("VALID", (span - 1, 0), "constant")
        if padding.upper() in _LAX_PADDING_STRINGS:
            return FlaxPadding(padding)
        raise ValueError(f"padding must be 'SAME', 'VALID', 'SAME_LOWER', 'CAUSAL', 'CIRCULAR', 'REFLECT', an int "
                         f"or a (lo, hi) pair; got {padding!r}")
    if isinstance(padding, (list, tuple)):
        if len(padding) == 1 and not isinstance(padding[0], (list, tuple)):
            pair = (padding[0], padding[0])  # [p]: one int for the one dimension
        elif len(padding) == 1 and len(padding[0]) == 2:
            pair = padding[0]  # [(lo, hi)]
        elif len(padding) == 2 and not any(isinstance(p, (list, tuple)) for p in padding):
            pair = padding  # (lo, hi)
        else:
            raise ValueError(f"padding must be an int, [(lo, hi)] or (lo, hi) for a 1-D convolution, "
                             f"got {padding!r}")
        return FlaxPadding([(_int(pair[0], "padding low"), _int(pair[1], "padding high"))])
    p = _int(padding, "padding")
    return FlaxPadding([(p, p)])


@dataclasses.dataclass(frozen=True)
class Conv1DSpec:
    """A Conv1D layer's static arguments, checked and reduced to one spatial dimension."""

    kernel_size: int
    stride: int
    input_dilation: int
    kernel_dilation: int
    groups: int
    padding: FlaxPadding

    @classmethod
    def from_flax_args(cls, kernel_size, strides, padding, input_dilation, kernel_dilation, feature_group_count):
        k = _one_spatial(kernel_size, "kernel_size")
        dilation = _one_spatial(kernel_dilation, "kernel_dilation", none_means=1)
        return cls(kernel_size=k, stride=_one_spatial(strides, "strides", none_means=1),
                   input_dilation=_one_spatial(input_dilation, "input_dilation", none_means=1),
                   kernel_dilation=dilation, groups=_positive_int(feature_group_count, "feature_group_count"),
                   padding=resolve_flax_padding(padding, k, dilation))

    def kernel_shape(self, in_features: int, out_features: int) -> tuple[int, int, int]:
        """Flax's kernel shape (K, C_in / groups, C_out)."""
        if in_features % self.groups:
            raise ValueError(f"feature_group_count={self.groups} must divide the input features ({in_features})")
        if out_features % self.groups:
            raise ValueError(f"feature_group_count={self.groups} must divide the output features ({out_features})")
        return (self.kernel_size, in_features // self.groups, out_features)


def masked_kernel(kernel, mask, kernel_shape):
    """Flax's mask: same shape as the kernel, multiplied in before dtype promotion."""
    if mask is None:
        return kernel
    if tuple(np.shape(mask)) != tuple(kernel_shape):
        raise ValueError(f"Mask needs to have the same shape as weights. Shapes are: {np.shape(mask)}, "
                         f"{tuple(kernel_shape)}")
    return kernel * mask


def input_features(inputs) -> int:
    """The channel count of channels-last inputs, after checking they have a length and a channel axis."""
    if np.ndim(inputs) < 2:
        raise ValueError(f"inputs must have shape (*batch, length, features), got shape {np.shape(inputs)}")
    return np.shape(inputs)[-1]


def _flatten_batch(inputs):
    """(*batch, L, C) -> (prod(batch), L, C), as Flax does; unbatched (L, C) becomes (1, L, C)."""
    input_features(inputs)
    batch_shape = inputs.shape[:-2]
    return jnp.reshape(inputs, (math.prod(batch_shape),) + inputs.shape[-2:]), batch_shape


def _pad_input(x, pad: tuple[int, int], mode: str):
    return jnp.pad(x, ((0, 0), pad, (0, 0)), mode=mode)


def conv1d_call(spec: Conv1DSpec, inputs, kernel, bias, *, promote: Callable, precision=None,
                conv_general_dilated: Callable | None = None, conv_kwargs: Mapping[str, Any] | None = None):
    """The body of both layers' ``__call__``, given the (masked) kernel and the bias or None.

    ``promote(inputs, kernel, bias)`` is the layer's dtype promotion. ``conv_general_dilated`` None means this
    library's op; a function is called exactly as Flax's Conv would call it, with ``conv_kwargs`` (nnx's
    ``out_sharding`` and ``preferred_element_type``) passed on.
    """
    conv_kwargs = dict(conv_kwargs or {})
    x, batch_shape = _flatten_batch(jnp.asarray(inputs))
    pad = spec.padding
    if pad.pre_pad_mode in ("wrap", "reflect"):
        x = _pad_input(x, pad.pre_pad, pad.pre_pad_mode)
    x, kernel, bias = promote(x, kernel, bias)
    strides, input_dilation, kernel_dilation = (spec.stride,), (spec.input_dilation,), (spec.kernel_dilation,)

    y = None
    if conv_general_dilated is None:
        # Causal zero padding is plain op padding; no need to materialise a padded copy of the input.
        op_padding = [pad.pre_pad] if pad.pre_pad_mode == "constant" else pad.lax_padding
        native = native_conv1d_kwargs(
            x, kernel, strides, op_padding, input_dilation, kernel_dilation, NWC_DIMENSION_NUMBERS, spec.groups,
            1, precision, conv_kwargs.get("preferred_element_type"), conv_kwargs.get("out_sharding"))
        if native is not None:
            # The bias is fused unless a custom promote_dtype left it in another dtype.
            fuse_bias = bias is not None and bias.dtype == x.dtype
            y = dilated_conv1d(x, kernel, bias if fuse_bias else None, **native)
            bias = None if fuse_bias else bias
        else:
            # Not a case the op covers (input dilation, complex dtypes, a sharded output...): lax, as Flax does.
            conv_general_dilated = lax.conv_general_dilated
            if conv_kwargs.get("out_sharding", 0) is None:
                del conv_kwargs["out_sharding"]  # older lax has no out_sharding; None is its default anyway

    if y is None:
        if pad.pre_pad_mode == "constant":
            x = _pad_input(x, pad.pre_pad, "constant")
        y = conv_general_dilated(x, kernel, strides, pad.lax_padding, lhs_dilation=input_dilation,
                                 rhs_dilation=kernel_dilation, dimension_numbers=NWC_DIMENSION_NUMBERS,
                                 feature_group_count=spec.groups, precision=precision, **conv_kwargs)
    if bias is not None:
        y = y + jnp.reshape(bias, (1, 1, -1))
    return jnp.reshape(y, batch_shape + y.shape[1:])
