"""Channels-last 1x1 convolutions as GEMMs (jax_conv1d/_pointwise.py).

The GEMM functions are checked on the CPU against the float64 reference (they are plain jnp code), the route's
predicate on every condition that must keep a shape on our kernels, and on a GPU that the lowering really takes
the route (no custom call left) and gives the same gradients as float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conv_reference import assert_close, custom_call_targets, float64_reference, float64_vjp_reference, random_inputs
from jax_conv1d import _pointwise, dilated_conv1d
from jax_conv1d._shapes import PRECISION_ACCURATE, PRECISION_DEFAULT, ConvConfig

POINTWISE = ConvConfig(layout="NWC", stride=1, dilation=1, padding=(0, 0), groups=1, precision=PRECISION_DEFAULT)


def test_predicate_takes_only_dense_channels_last_unit_stride_unpadded_default_precision(monkeypatch):
    assert _pointwise.applies(POINTWISE, 1, jnp.float32)
    assert _pointwise.applies(POINTWISE, 1, jnp.bfloat16)
    assert _pointwise.applies(POINTWISE, 1, jnp.float16)
    assert _pointwise.applies(ConvConfig("NWC", 1, 7, (0, 0), 1, PRECISION_DEFAULT), 1, jnp.float32)  # dilation moot
    for cfg, k, dtype in [
        (POINTWISE, 2, jnp.float32),
        (ConvConfig("NCW", 1, 1, (0, 0), 1, PRECISION_DEFAULT), 1, jnp.float32),
        (ConvConfig("NWC", 2, 1, (0, 0), 1, PRECISION_DEFAULT), 1, jnp.float32),
        (ConvConfig("NWC", 1, 1, (1, 0), 1, PRECISION_DEFAULT), 1, jnp.float32),
        (ConvConfig("NWC", 1, 1, (0, 0), 2, PRECISION_DEFAULT), 1, jnp.float32),
        (ConvConfig("NWC", 1, 1, (0, 0), 1, PRECISION_ACCURATE), 1, jnp.float32),
        (POINTWISE, 1, jnp.float64),
    ]:
        assert not _pointwise.applies(cfg, k, dtype), (cfg, k, dtype)
    monkeypatch.setenv("JAX_CONV1D_POINTWISE_GEMM", "0")
    assert not _pointwise.applies(POINTWISE, 1, jnp.float32)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 1e-2)])
@pytest.mark.parametrize("bias", [False, True])
def test_gemm_passes_match_float64(rng, dtype, tol, bias):
    """The GEMM passes themselves, on the CPU (float32 there is exact enough for 1e-5; a GPU would use TF32)."""
    with jax.default_device(jax.devices("cpu")[0]):
        _check_gemm_passes(rng, dtype, tol, bias)


def _check_gemm_passes(rng, dtype, tol, bias):
    n, c, o, length = 3, 24, 40, 57
    x, w, b = random_inputs(rng, layout="NWC", dtype=dtype, batch=n, in_ch=c, length=length, out_ch=o, groups=1,
                            ksize=1, bias=bias)
    empty = jnp.zeros((0,), x.dtype)
    y = _pointwise.forward(x, w, b if bias else empty, cfg=POINTWISE, out_dtype=x.dtype)
    assert y.shape == (n, length, o) and y.dtype == x.dtype
    assert_close(y, float64_reference(x, w, b, layout="NWC"), tol, "y")

    y32 = _pointwise.forward(x, w, b if bias else empty, cfg=POINTWISE, out_dtype=jnp.float32)
    assert y32.dtype == jnp.float32

    ct = jnp.asarray(rng.standard_normal(y.shape).astype(np.float32), x.dtype)
    dx_ref, dw_ref, db_ref = float64_vjp_reference(x, w, b, ct, layout="NWC")
    dx, dw, db = _pointwise.backward(x, ct, w, cfg=POINTWISE, want_dx=True, want_dw=True, want_db=bias)
    assert dx.shape == x.shape and dx.dtype == x.dtype and dw.shape == w.shape and dw.dtype == w.dtype
    assert_close(dx, dx_ref, tol, "dx")
    assert_close(dw, dw_ref, tol, "dw")
    if bias:
        assert_close(db, db_ref, tol, "db")
    else:
        assert db.shape == (0,)
    only_dw = _pointwise.backward(x, ct, w, cfg=POINTWISE, want_dx=False, want_dw=True, want_db=False)
    assert only_dw[0].shape == (0,) and only_dw[2].shape == (0,)
    np.testing.assert_array_equal(np.asarray(only_dw[1]), np.asarray(dw))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [("float32", 1.5e-3), ("bfloat16", 1e-2)])
def test_gpu_lowers_pointwise_to_gemm_and_matches_float64(monkeypatch, rng, gpu, dtype, tol):
    n, c, o, length = 2, 128, 96, 1000
    x, w, b = random_inputs(rng, layout="NWC", dtype=dtype, batch=n, in_ch=c, length=length, out_ch=o, groups=1,
                            ksize=1, bias=True)
    x, w, b = (jax.device_put(a, gpu) for a in (x, w, b))
    ct = jax.device_put(jnp.asarray(rng.standard_normal((n, length, o)).astype(np.float32), x.dtype), gpu)

    def loss(x, w, b):
        return jnp.sum(dilated_conv1d(x, w, b, layout="NWC").astype(jnp.float32) * ct.astype(jnp.float32))

    grad = jax.grad(loss, argnums=(0, 1, 2))
    assert custom_call_targets(grad, x, w, b) == set()
    dx, dw, db = jax.jit(grad)(x, w, b)
    dx_ref, dw_ref, db_ref = float64_vjp_reference(x, w, b, ct, layout="NWC")
    assert_close(dx, dx_ref, tol, "dx")
    assert_close(dw, dw_ref, tol, "dw")
    assert_close(db, db_ref, tol, "db")

    # The switch keeps the shape on our kernels (a fresh function, so the lowering runs again).
    monkeypatch.setenv("JAX_CONV1D_POINTWISE_GEMM", "0")
    assert custom_call_targets(jax.grad(loss, argnums=(0, 1, 2)), x, w, b)
    # Channels-first stride-1 1x1 convolutions stay on our kernels; strided ones run only their forward pass as
    # a GEMM (_gemm_forward.py), and with that route switched off stay on our kernels too.
    xt = jnp.transpose(x, (0, 2, 1))
    wt = jnp.transpose(w, (2, 1, 0))
    monkeypatch.setenv("JAX_CONV1D_POINTWISE_GEMM", "1")
    assert custom_call_targets(lambda x, w: dilated_conv1d(x, w, layout="NCW"), xt, wt) == {"jax_conv1d_fwd"}
    monkeypatch.setenv("JAX_CONV1D_FWD_GEMM", "0")
    assert custom_call_targets(lambda x, w: dilated_conv1d(x, w, stride=2, layout="NWC"), x, w) == {
        "jax_conv1d_fwd"}


def test_cpu_keeps_the_native_handler(rng):
    """The route is CUDA-only: on the CPU the FFI handler runs, so the CPU tests keep covering it."""
    x, w, _ = random_inputs(rng, layout="NWC", dtype="float32", batch=2, in_ch=8, length=16, out_ch=4, groups=1,
                            ksize=1, bias=False)
    cpu = jax.devices("cpu")[0]
    x, w = jax.device_put(x, cpu), jax.device_put(w, cpu)
    with jax.default_device(cpu):
        assert custom_call_targets(lambda x, w: dilated_conv1d(x, w, layout="NWC"), x, w) == {"jax_conv1d_fwd"}
