"""``Conv1D`` for Flax NNX: ``flax.nnx.Conv`` on one spatial dimension, running on jax_conv1d's op.

Importing this module imports flax; ``import jax_conv1d`` alone does not.
"""

from __future__ import annotations

from flax import nnx

from . import lax_compat
from ._flax_common import Conv1DSpec, conv1d_call, masked_kernel

__all__ = ["Conv1D"]


class Conv1D(nnx.Conv):
    """``flax.nnx.Conv`` for one spatial dimension, computed by ``jax_conv1d.dilated_conv1d``.

    A subclass of ``flax.nnx.Conv`` built by its constructor, so the arguments, defaults, initializers, random
    key use and state (``kernel`` of shape ``(kernel_size, in_features // feature_group_count, out_features)``,
    ``bias`` of shape ``(out_features,)``) are those of the installed Flax: ``nnx.state`` of one loads into
    the other unchanged. Keyword arguments not named here (``use_bias``, ``mask``, ``dtype``, ``param_dtype``,
    ``precision``, ``kernel_init``, ``bias_init``, ``promote_dtype``, ``preferred_element_type``, metadata...)
    go to ``nnx.Conv`` as they are.

    ``kernel_size``, ``strides``, ``input_dilation`` and ``kernel_dilation`` take an int or a sequence of one.
    ``padding`` takes every form Flax's Conv takes for one dimension ('SAME', 'VALID', 'SAME_LOWER', 'CAUSAL',
    'CIRCULAR', 'REFLECT', an int, ``[(lo, hi)]``) and also a bare ``(lo, hi)``, with Flax's exact split rules.
    Inputs are ``(*batch, length, features)`` with any number of batch dimensions, or ``(length, features)``.

    ``conv_general_dilated`` defaults to ``jax_conv1d.conv_general_dilated``; with it the layer calls the op
    directly, with the bias and 'CAUSAL' zero padding fused in. ``input_dilation`` other than 1, an
    ``out_sharding``, and dtypes the op lacks are computed by lax exactly as Flax does. Any other
    ``conv_general_dilated`` is called as Flax's Conv would call it.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size, strides=1, *, padding="SAME",
                 input_dilation=1, kernel_dilation=1, feature_group_count: int = 1,
                 conv_general_dilated=lax_compat.conv_general_dilated, rngs: nnx.Rngs, **kwargs):
        # Check the arguments before nnx.Conv draws any random numbers.
        spec = Conv1DSpec.from_flax_args(kernel_size, strides, padding, input_dilation, kernel_dilation,
                                         feature_group_count)
        spec.kernel_shape(in_features, out_features)
        super().__init__(in_features, out_features, kernel_size, strides, padding=padding,
                         input_dilation=input_dilation, kernel_dilation=kernel_dilation,
                         feature_group_count=feature_group_count, conv_general_dilated=conv_general_dilated,
                         rngs=rngs, **kwargs)

    def __call__(self, inputs, out_sharding=None):
        spec = Conv1DSpec.from_flax_args(self.kernel_size, self.strides, self.padding, self.input_dilation,
                                         self.kernel_dilation, self.feature_group_count)
        kernel_shape = spec.kernel_shape(self.in_features, self.out_features)
        kernel = masked_kernel(self.kernel[...], self.mask, kernel_shape)
        bias = self.bias[...] if self.bias is not None else None
        # What nnx.Conv passes to its conv function beyond lax's positional arguments.
        conv_kwargs = {"out_sharding": out_sharding}
        preferred_element_type = getattr(self, "preferred_element_type", None)
        if preferred_element_type is not None:
            conv_kwargs["preferred_element_type"] = preferred_element_type
        conv_fn = self.conv_general_dilated
        return conv1d_call(spec, inputs, kernel, bias, promote=self._promote, precision=self.precision,
                           conv_general_dilated=None if conv_fn is lax_compat.conv_general_dilated else conv_fn,
                           conv_kwargs=conv_kwargs)

    def _promote(self, inputs, kernel, bias):
        promote = getattr(self, "promote_dtype", None) or nnx.nn.dtypes.promote_dtype
        return promote((inputs, kernel, bias), dtype=self.dtype)
