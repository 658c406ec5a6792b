"""The forward GEMM route (jax_conv1d/_gemm_forward.py): strided / channels-first 1x1 and im2col products.

The route's function is plain jnp code, checked on the CPU against the float64 reference over strides,
dilations, paddings (negative too), both layouts and K = 1 and K > 1; its predicate on the conditions that must
keep a shape on our kernels; and on a GPU that the lowering takes the route where the predicate says so (no
custom call left) and matches float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conv_reference import assert_close, custom_call_targets, float64_reference, random_inputs
from jax_conv1d import _gemm_backward, _gemm_forward, dilated_conv1d
from jax_conv1d._shapes import PRECISION_ACCURATE, PRECISION_DEFAULT, ConvConfig, output_length, resolve_padding

# (layout, C, O, K, L, stride, dilation, (pad_lo, pad_hi))
GEOMETRIES = [
    ("NCW", 24, 40, 1, 57, 4, 1, (0, 0)),
    ("NCW", 24, 40, 1, 58, 3, 2, (1, 2)),
    ("NWC", 24, 40, 1, 57, 2, 1, (0, 1)),
    ("NWC", 16, 24, 5, 61, 3, 4, (0, 0)),
    ("NWC", 16, 24, 9, 70, 1, 2, (8, 8)),
    ("NCW", 16, 24, 7, 66, 3, 1, (0, 0)),
    ("NCW", 8, 12, 4, 50, 2, 3, (5, 4)),
    ("NWC", 8, 12, 3, 40, 1, 1, (-2, 3)),
    ("NCW", 8, 12, 3, 40, 2, 2, (3, -1)),
]


def _cfg(layout, stride, dilation, pads, precision=PRECISION_DEFAULT, groups=1):
    return ConvConfig(layout=layout, stride=stride, dilation=dilation, padding=pads, groups=groups,
                      precision=precision)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 1e-2)])
@pytest.mark.parametrize("bias", [False, True])
def test_route_matches_float64(rng, geometry, dtype, tol, bias):
    layout, c, o, k, length, stride, dilation, pads = geometry
    x, w, b = random_inputs(rng, layout=layout, dtype=dtype, batch=3, in_ch=c, length=length, out_ch=o, groups=1,
                            ksize=k, bias=bias)
    cfg = _cfg(layout, stride, dilation, pads)
    with jax.default_device(jax.devices("cpu")[0]):
        y = _gemm_forward.forward(x, w, b if bias else jnp.zeros((0,), x.dtype), cfg=cfg, out_dtype=x.dtype)
        y32 = _gemm_forward.forward(x, w, b if bias else jnp.zeros((0,), x.dtype), cfg=cfg, out_dtype=jnp.float32)
    t = output_length(length, k, stride, dilation, *pads)
    assert y.shape == ((3, o, t) if layout == "NCW" else (3, t, o)) and y.dtype == x.dtype
    assert y32.dtype == jnp.float32
    ref = float64_reference(x, w, b if bias else None, stride=stride, dilation=dilation, padding=[pads],
                            layout=layout)
    assert_close(y, ref, tol, "y")
    assert_close(y32, ref, 1e-5 if dtype == "float32" else 5e-3, "y (float32 out)")


def test_predicate(monkeypatch):
    strided_1x1 = _cfg("NCW", 4, 1, (0, 0))
    x_shape, w_shape = (4, 1024, 2048), (512, 1024, 1)
    assert _gemm_forward.applies(strided_1x1, x_shape, w_shape, jnp.float32)
    assert _gemm_forward.applies(_cfg("NWC", 2, 1, (0, 0)), (4, 2048, 64), (1, 64, 64), jnp.bfloat16)
    # sweep/033: 155 GFLOP of bfloat16 at 542 FLOPs per byte
    heavy = _cfg("NWC", 1, 5, (20, 20))
    heavy_x, heavy_w = (4, 32768, 64), (9, 64, 1024)
    assert _gemm_forward.applies(heavy, heavy_x, heavy_w, jnp.bfloat16)
    for cfg, xs, ws, dtype in [
        (_cfg("NCW", 1, 1, (0, 0)), x_shape, w_shape, jnp.float32),  # stride-1 1x1 stays ours
        (_cfg("NCW", 4, 1, (0, 0), groups=2), x_shape, (512, 512, 1), jnp.float32),
        (_cfg("NCW", 4, 1, (0, 0), precision=PRECISION_ACCURATE), x_shape, w_shape, jnp.float32),
        (strided_1x1, x_shape, w_shape, jnp.float64),
        (heavy, heavy_x, heavy_w, jnp.float32),  # float32 im2col lost every A/B
        (heavy, (4, 1024, 64), heavy_w, jnp.bfloat16),  # 4.8 GFLOP: under the size bound
        (_cfg("NWC", 3, 4, (0, 0)), (64, 524280, 64), (3, 64, 128), jnp.bfloat16),  # the headline: memory-bound
    ]:
        assert not _gemm_forward.applies(cfg, xs, ws, dtype), (cfg, xs, ws, dtype)
    monkeypatch.setenv("JAX_CONV1D_FWD_GEMM", "0")
    assert not _gemm_forward.applies(strided_1x1, x_shape, w_shape, jnp.float32)
    assert not _gemm_forward.applies(heavy, heavy_x, heavy_w, jnp.bfloat16)


def test_cpu_keeps_the_native_handler(rng):
    """The route is CUDA-only: on the CPU the FFI handler runs, so the CPU tests keep covering it."""
    x, w, _ = random_inputs(rng, layout="NCW", dtype="float32", batch=4, in_ch=64, length=256, out_ch=32, groups=1,
                            ksize=1, bias=False)
    cpu = jax.devices("cpu")[0]
    x, w = jax.device_put(x, cpu), jax.device_put(w, cpu)
    with jax.default_device(cpu):
        assert custom_call_targets(lambda x, w: dilated_conv1d(x, w, stride=4, layout="NCW"), x, w) == {
            "jax_conv1d_fwd"}


@pytest.mark.gpu
@pytest.mark.parametrize("layout,k,stride,dilation,dtype,tol", [
    ("NCW", 1, 4, 1, "float32", 1.5e-3),
    ("NWC", 1, 2, 1, "bfloat16", 1e-2),
    ("NWC", 9, 3, 8, "bfloat16", 1e-2),
    ("NCW", 4, 1, 7, "bfloat16", 1e-2),
])
def test_gpu_lowers_to_gemm_and_matches_float64(monkeypatch, rng, gpu, layout, k, stride, dilation, dtype, tol):
    """Small shapes, with the im2col size bounds lowered so they take the route; gradients stay on our kernels."""
    monkeypatch.setattr(_gemm_forward, "_IM2COL_MIN_FLOPS", 0)
    monkeypatch.setattr(_gemm_forward, "_IM2COL_MIN_FLOPS_PER_BYTE", 0)
    monkeypatch.setenv("JAX_CONV1D_XLA_CONV", "0")  # small strided 16-bit shapes would go to XLA's conv
    n, c, o, length = 2, 64, 96, 700
    x, w, b = random_inputs(rng, layout=layout, dtype=dtype, batch=n, in_ch=c, length=length, out_ch=o, groups=1,
                            ksize=k, bias=True)
    x, w, b = (jax.device_put(a, gpu) for a in (x, w, b))
    kw = dict(stride=stride, dilation=dilation, padding="SAME", layout=layout)
    fwd = lambda x, w, b: dilated_conv1d(x, w, b, **kw)  # noqa: E731
    assert custom_call_targets(fwd, x, w, b) == set()
    y = jax.jit(fwd)(x, w, b)
    ref = float64_reference(x, w, b, stride=stride, dilation=dilation, padding="SAME", layout=layout)
    assert y.shape == ref.shape and y.dtype == x.dtype
    assert_close(y, ref, tol, "y")
    np.testing.assert_array_equal(np.asarray(jax.jit(fwd)(x, w, b)), np.asarray(y))  # run to run

    def loss(x, w, b):
        return jnp.sum(fwd(x, w, b).astype(jnp.float32) ** 2)

    targets = custom_call_targets(jax.grad(loss, argnums=(0, 1)), x, w, b)
    # The gradients keep a call to our kernels, except where _gemm_backward computes both as products (the
    # strided 1x1 shapes since session 6).
    cfg = ConvConfig(layout=layout, stride=stride, dilation=dilation, padding=resolve_padding("SAME", length, k,
                     stride, dilation), groups=1, precision=PRECISION_DEFAULT)
    both_products = all(_gemm_backward.routes(cfg, x.shape, w.shape, x.dtype))
    assert "jax_conv1d_fwd" not in targets and bool(targets) != both_products, targets
    # The switch is read when a function is lowered: a fresh function, since jax caches the trace of `fwd`.
    monkeypatch.setenv("JAX_CONV1D_FWD_GEMM", "0")
    assert custom_call_targets(lambda x, w, b: dilated_conv1d(x, w, b, **kw), x, w, b) == {"jax_conv1d_fwd"}
