"""``Conv1D`` for Flax linen: ``flax.linen.Conv`` on one spatial dimension, running on jax_conv1d's op.

Importing this module imports flax; ``import jax_conv1d`` alone does not.
"""

from __future__ import annotations

import flax.linen as nn

from . import lax_compat
from ._flax_common import Conv1DSpec, conv1d_call, input_features, masked_kernel

__all__ = ["Conv1D"]


class Conv1D(nn.Conv):
    """``flax.linen.Conv`` for one spatial dimension, computed by ``jax_conv1d.dilated_conv1d``.

    It is a subclass of ``flax.linen.Conv`` with the same attributes, defaults, initializers and parameters
    (``kernel`` of shape ``(kernel_size, in_features // feature_group_count, features)`` and ``bias`` of shape
    ``(features,)``), so variables move between the two unchanged. Inside a parent module it is auto-named
    ``Conv_0``, ``Conv_1``... like Flax's Conv, so swapping one for the other keeps a model's parameter tree.

    ``kernel_size``, ``strides``, ``input_dilation`` and ``kernel_dilation`` take an int or a sequence of one.
    ``padding`` takes every form Flax's Conv takes for one dimension ('SAME', 'VALID', 'SAME_LOWER', 'CAUSAL',
    'CIRCULAR', 'REFLECT', an int, ``[(lo, hi)]``) and also a bare ``(lo, hi)``, with Flax's exact split rules.
    Inputs are ``(*batch, length, features)`` with any number of batch dimensions, or ``(length, features)``.

    The bias and 'CAUSAL' zero padding are fused into the op. ``input_dilation`` other than 1, and dtypes the
    op lacks (complex), are computed by lax exactly as Flax does. Setting Flax's ``conv_general_dilated`` (or
    ``conv_general_dilated_cls``) makes the layer call that function as Flax's Conv would.
    """

    @nn.compact
    def __call__(self, inputs):
        spec = Conv1DSpec.from_flax_args(self.kernel_size, self.strides, self.padding, self.input_dilation,
                                         self.kernel_dilation, self.feature_group_count)
        kernel_shape = spec.kernel_shape(input_features(inputs), self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        kernel = masked_kernel(kernel, self.mask, kernel_shape)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        return conv1d_call(spec, inputs, kernel, bias, promote=self._promote, precision=self.precision,
                           conv_general_dilated=self._conv_function())

    def _promote(self, inputs, kernel, bias):
        promote = getattr(self, "promote_dtype", None) or nn.dtypes.promote_dtype  # a field since flax 0.8
        return promote(inputs, kernel, bias, dtype=self.dtype)

    def _conv_function(self):
        """None for this library's op, or the user's function, mirroring Flax's deprecated fields."""
        cls = getattr(self, "conv_general_dilated_cls", None)
        fn = cls() if cls is not None else getattr(self, "conv_general_dilated", None)
        return None if fn is lax_compat.conv_general_dilated else fn


# linen auto-names submodules after their class; sharing Flax Conv's name keeps parameter trees (and
# checkpoints) identical when a model swaps nn.Conv for Conv1D. __qualname__ stays, so pickling finds the class.
Conv1D.__name__ = "Conv"
