"""Loads the compiled handler modules and registers their FFI targets with XLA, once, at import.

The CPU module is always built. The CUDA module exists when the package was built with a CUDA compiler;
without it, GPU calls fall back to lax (see _primitives.py), with one warning.
"""

from __future__ import annotations

import warnings

import jax

TARGETS = ("jax_conv1d_fwd", "jax_conv1d_dgrad", "jax_conv1d_wgrad", "jax_conv1d_bwd")

try:
    from . import _cpu
except ImportError as err:  # a source checkout that was never built
    raise ImportError(
        "jax_conv1d's compiled module is missing; install the package with `pip install .` "
        f"(or `pip install --no-build-isolation --no-deps .`). Cause: {err}"
    ) from err

try:
    from . import _cuda
except ImportError:
    _cuda = None


def _register(module, platform: str) -> None:
    for name, capsule in module.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform=platform)


_register(_cpu, "cpu")
if _cuda is not None:
    _register(_cuda, "CUDA")


def has_cuda_handlers() -> bool:
    """True when the CUDA handlers were compiled into this installation."""
    return _cuda is not None


_warned_fallback = False


def warn_gpu_fallback(platform: str) -> None:
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"jax_conv1d was built without handlers for platform {platform!r}; dilated_conv1d falls back to "
            "lax.conv_general_dilated there. Reinstall with a CUDA toolkit available (JAX_CONV1D_CUDA=ON) "
            "for the native kernels.",
            RuntimeWarning,
            stacklevel=3,
        )
