"""The two CUDA paths of the dense input gradient against a float64 reference.

Dense stride-1 convolutions at default precision take dx through the forward implicit GEMM on the turned-around
weight (csrc/cuda/dgrad_as_forward.cu); JAX_CONV1D_DGRAD_AS_FORWARD=0 (read on every call) sends them to the
phase-decomposed dgrad kernel instead. Both must match float64 for every padding the rewrite has to translate,
including paddings past the kernel span (which the rewrite declines). Skipped without a GPU.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conv_reference import assert_close, float64_vjp_reference, random_inputs
from jax_conv1d import dilated_conv1d

pytestmark = pytest.mark.gpu

TOLERANCE = {"float32": 1.5e-3, "bfloat16": 1e-2, "float16": 2e-3}  # TF32 / 16-bit output rounding

# n, c, o, k, length, dilation, padding
SHAPES = [
    (2, 128, 256, 2, 1500, 64, "CAUSAL"),  # WaveNet's dilated layer
    (2, 128, 128, 1, 1000, 1, "VALID"),  # WaveNet's pointwise layers
    (2, 37, 50, 3, 301, 1, "SAME"),  # nothing aligned, several channel chunks
    (3, 64, 96, 5, 700, 3, (7, 1)),  # explicit padding below the span
    (2, 16, 32, 2, 40, 64, "CAUSAL"),  # dilation longer than the input: dx from one tap only
    (2, 64, 128, 2, 1500, 512, "CAUSAL"),  # WaveNet's widest dilation: the forward's gapped window
    (2, 32, 48, 3, 200, 2, (6, 5)),  # pad_lo past the span: the rewrite declines
    (1, 64, 64, 9, 513, 1, "SAME"),  # long kernel
    (2, 256, 64, 3, 256, 8, (0, 0)),  # more output than input channels in the rewrite
]


def _dx(x, w, ct, **kw):
    _, vjp = jax.vjp(lambda x_: dilated_conv1d(x_, w, None, **kw), x)
    return vjp(ct)[0]


@pytest.mark.parametrize("path", ["as_forward", "phase_kernel"])
@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}C{s[1]}O{s[2]}K{s[3]}L{s[4]}d{s[5]}{s[6]}")
def test_stride1_dense_dx_matches_float64(monkeypatch, shape, layout, dtype, path, gpu):
    n, c, o, k, length, dilation, padding = shape
    monkeypatch.setenv("JAX_CONV1D_DGRAD_AS_FORWARD", "1" if path == "as_forward" else "0")
    monkeypatch.setenv("JAX_CONV1D_POINTWISE_GEMM", "0")  # the kernels, also for the 1x1 shape
    rng = np.random.default_rng(zlib.crc32(repr((shape, layout, dtype)).encode()))
    x, w, _ = random_inputs(rng, layout=layout, dtype=dtype, batch=n, in_ch=c, length=length, out_ch=o, groups=1,
                            ksize=k, bias=False)
    x, w = jax.device_put(x, gpu), jax.device_put(w, gpu)
    kw = dict(stride=1, dilation=dilation, padding=padding, layout=layout)
    y = jax.eval_shape(lambda: dilated_conv1d(x, w, None, **kw))
    ct = jax.device_put(jnp.asarray(rng.standard_normal(y.shape).astype(np.float32), dtype), gpu)
    dx = _dx(x, w, ct, **kw)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    ref = float64_vjp_reference(x, w, None, ct, **kw)[0]
    assert_close(dx, ref, TOLERANCE[dtype], f"dx ({path})")
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(_dx(x, w, ct, **kw)))  # run to run


# Stride > 1: n, c, o, k, length, stride, dilation, padding
STRIDED_SHAPES = [
    (2, 64, 128, 3, 1001, 3, 4, "VALID"),  # headline geometry: one tap per phase
    (2, 256, 128, 1, 517, 4, 2, "SAME"),  # K 1 (sweep/015): three of four residues get no tap
    (2, 30, 40, 2, 301, 3, 3, (2, -1)),  # ragged channels, an empty residue, a cropping pad
    (2, 48, 64, 12, 700, 12, 1, (5, 6)),  # twelve phases: two phase groups of a unit
    (2, 32, 128, 7, 2001, 3, 4, "CAUSAL"),  # several taps per phase (sweep/039)
]


def _poison(gpu):
    # Freed NaNs: an output element the kernel forgets to write fails the comparison instead of reading zero.
    jax.block_until_ready(jax.device_put(jnp.full((16 << 20,), jnp.nan, jnp.float32), gpu))


@pytest.mark.parametrize("path", ["auto", "staged", "direct", "two_per_sm"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("shape", STRIDED_SHAPES, ids=lambda s: f"N{s[0]}C{s[1]}O{s[2]}K{s[3]}L{s[4]}s{s[5]}d{s[6]}")
def test_strided_dense_dx_matches_float64(monkeypatch, shape, layout, dtype, path, gpu):
    """Both store paths of the phase kernel (staging tile / fragments straight to dx with zeros where no tap
    lands) and the two-blocks-per-SM plan, forced through the switches the planner reads on every call."""
    n, c, o, k, length, stride, dilation, padding = shape
    monkeypatch.delenv("JAX_CONV1D_DGRAD_STORES", raising=False)
    monkeypatch.delenv("JAX_CONV1D_DGRAD_SM_BLOCKS", raising=False)
    monkeypatch.setenv("JAX_CONV1D_XLA_CONV", "0")  # our kernels, also for the small 16-bit shapes
    if path in ("auto", "staged", "direct"):
        monkeypatch.setenv("JAX_CONV1D_DGRAD_STORES", path)
    if path == "two_per_sm":
        monkeypatch.setenv("JAX_CONV1D_DGRAD_SM_BLOCKS", "2")
    rng = np.random.default_rng(zlib.crc32(repr((shape, layout, dtype)).encode()))
    x, w, _ = random_inputs(rng, layout=layout, dtype=dtype, batch=n, in_ch=c, length=length, out_ch=o, groups=1,
                            ksize=k, bias=False)
    x, w = jax.device_put(x, gpu), jax.device_put(w, gpu)
    kw = dict(stride=stride, dilation=dilation, padding=padding, layout=layout)
    y = jax.eval_shape(lambda: dilated_conv1d(x, w, None, **kw))
    ct = jax.device_put(jnp.asarray(rng.standard_normal(y.shape).astype(np.float32), dtype), gpu)
    _poison(gpu)
    dx = _dx(x, w, ct, **kw)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    ref = float64_vjp_reference(x, w, None, ct, **kw)[0]
    assert_close(dx, ref, TOLERANCE[dtype], f"dx ({path})")
    _poison(gpu)
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(_dx(x, w, ct, **kw)))  # run to run
