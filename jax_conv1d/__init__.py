"""jax-conv1d: fast dilated and strided 1-D convolution for JAX, as XLA FFI custom calls (CPU and CUDA)."""

from . import _ffi  # registers the FFI targets, once
from ._ffi import has_cuda_handlers
from .conv import dilated_conv1d
from .lax_compat import conv_general_dilated

__version__ = "0.1.0"
__all__ = ["conv_general_dilated", "dilated_conv1d", "has_cuda_handlers", "__version__"]
