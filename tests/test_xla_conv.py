"""The XLA-convolution route for small strided dense 16-bit shapes (jax_conv1d/_xla_conv.py).

Its functions are lax code, checked on the CPU against the float64 reference (forward with and without bias,
the combined backward with each part wanted or not, the single-pass gradients); its predicate on the sweep
rows it was measured on and on the conditions that keep a shape on our kernels; and on a GPU that the lowering
takes it (no custom call left), matches float64, and that the switch brings our kernels back.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conv_reference import (assert_close, custom_call_targets, float64_reference, float64_vjp_reference,
                            random_array, random_inputs)
from jax_conv1d import _gemm_forward, _xla_conv, bench, dilated_conv1d
from jax_conv1d._shapes import PRECISION_ACCURATE, PRECISION_DEFAULT, ConvConfig, output_length

# (layout, C, O, K, L, stride, dilation, (pad_lo, pad_hi))
GEOMETRIES = [
    ("NWC", 16, 48, 8, 64, 2, 1, (3, 4)),  # sweep/018's form
    ("NCW", 32, 8, 7, 61, 3, 1, (0, 0)),  # 030
    ("NCW", 8, 16, 6, 62, 3, 1, (5, 0)),  # 042
    ("NWC", 8, 12, 3, 60, 3, 4, (2, 0)),
    ("NCW", 8, 12, 5, 53, 4, 2, (1, 2)),
]


def _cfg(layout, stride, dilation, pads, precision=PRECISION_DEFAULT, groups=1):
    return ConvConfig(layout=layout, stride=stride, dilation=dilation, padding=pads, groups=groups,
                      precision=precision)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_route_matches_float64(rng, geometry, dtype):
    layout, c, o, k, length, stride, dilation, pads = geometry
    x, w, b = random_inputs(rng, layout=layout, dtype=dtype, batch=2, in_ch=c, length=length, out_ch=o, groups=1,
                            ksize=k, bias=True)
    t = output_length(length, k, stride, dilation, *pads)
    dy = random_array(rng, (2, o, t) if layout == "NCW" else (2, t, o), dtype)
    cfg = _cfg(layout, stride, dilation, pads)
    kw = dict(stride=stride, dilation=dilation, padding=[pads], layout=layout)
    tol = 1e-2 if dtype == "bfloat16" else 2e-3
    y_ref = float64_reference(x, w, b, **kw)
    dx_ref, dw_ref, db_ref = float64_vjp_reference(x, w, b, dy, **kw)
    empty = jnp.zeros((0,), x.dtype)
    with jax.default_device(jax.devices("cpu")[0]):
        y = jax.jit(functools.partial(_xla_conv.forward, cfg=cfg, out_dtype=x.dtype))(x, w, b)
        y0 = jax.jit(functools.partial(_xla_conv.forward, cfg=cfg, out_dtype=x.dtype))(x, w, empty)
        dx, dw, db = jax.jit(functools.partial(_xla_conv.backward, cfg=cfg, want_dx=True, want_dw=True,
                                               want_db=True))(x, dy, w)
        dx1, dw1, db1 = jax.jit(functools.partial(_xla_conv.backward, cfg=cfg, want_dx=False, want_dw=True,
                                                  want_db=False))(x, dy, w)
        dx_only = jax.jit(functools.partial(_xla_conv.dgrad, cfg=cfg, in_length=length))(dy, w)
        dw_only = jax.jit(functools.partial(_xla_conv.wgrad, cfg=cfg, kernel_size=k))(x, dy)
    assert y.dtype == x.dtype and y.shape == y_ref.shape
    assert_close(y, y_ref, tol, "y")
    assert_close(y0, float64_reference(x, w, None, **kw), tol, "y without bias")
    for got, ref, what in ((dx, dx_ref, "dx"), (dw, dw_ref, "dw"), (db, db_ref, "db"), (dw1, dw_ref, "dw alone"),
                           (dx_only, dx_ref, "dgrad"), (dw_only, dw_ref, "wgrad")):
        assert got.dtype == x.dtype and got.shape == ref.shape, what
        assert_close(got, ref, tol, what)
    assert dx1.shape == (0,) and db1.shape == (0,)


def _sweep(name):
    case = {c.name: c for c in bench.all_cases(48)}[name]
    x_shape, w_shape, _ = case.shapes()
    return _cfg(case.layout, case.stride, case.dilation, case.pads), x_shape, w_shape, jnp.dtype(case.dtype)


def test_predicate_on_the_sweep_and_named_cases():
    """The route takes the sweep rows where cuDNN won (018 both passes, 030 and 042 backward) and no other bench
    case: 007 (51 GFLOP) stays on the GEMM and kernel routes, float32 and the stride-1 shapes on our kernels."""
    taken = set()
    for case in bench.all_cases(48):
        if case.name.startswith("train"):
            continue
        x_shape, w_shape, _ = case.shapes()
        cfg = _cfg(case.layout, case.stride, case.dilation, case.pads,
                   PRECISION_ACCURATE if case.precision == "highest" else PRECISION_DEFAULT, case.groups)
        for backward in (False, True):
            if _xla_conv.applies(cfg, x_shape, w_shape, case.dtype, backward=backward):
                taken.add((case.name, "bwd" if backward else "fwd"))
    assert taken == {("sweep/018", "fwd"), ("sweep/018", "bwd"), ("sweep/030", "bwd"), ("sweep/042", "bwd")}


def test_predicate_conditions(monkeypatch):
    cfg, xs, ws, dtype = _sweep("sweep/018")
    assert _xla_conv.applies(cfg, xs, ws, dtype, backward=False)
    assert _xla_conv.applies(cfg, xs, ws, jnp.float16, backward=True)
    n, length, c = xs
    k, _, o = ws
    for why, args in {
        "float32": (cfg, xs, ws, jnp.float32),
        "stride 1": (_cfg("NWC", 1, 1, cfg.padding), xs, ws, dtype),
        "groups": (_cfg("NWC", 2, 1, cfg.padding, groups=2), xs, (k, c // 2, o), dtype),
        "accurate": (_cfg("NWC", 2, 1, cfg.padding, PRECISION_ACCURATE), xs, ws, dtype),
        "negative pad": (_cfg("NWC", 2, 1, (-1, 3)), xs, ws, dtype),
        "K = 1": (cfg, xs, (1, c, o), dtype),
        "over the FLOP bound": (cfg, (4 * n, length, c), ws, dtype),
    }.items():
        assert not _xla_conv.applies(*args, backward=False), why
        assert not _xla_conv.applies(*args, backward=True), why
    small, small_x, small_w, _ = _sweep("sweep/030")  # under the im2col bound: only the gradients
    assert _xla_conv.applies(small, small_x, small_w, dtype, backward=True)
    assert not _xla_conv.applies(small, small_x, small_w, dtype, backward=False)
    monkeypatch.setenv("JAX_CONV1D_BWD_GEMM", "both")  # a forced product route: backward defers to it
    assert not _xla_conv.applies(cfg, xs, ws, dtype, backward=True)
    assert _xla_conv.applies(cfg, xs, ws, dtype, backward=False)
    monkeypatch.setenv("JAX_CONV1D_BWD_GEMM", "1")
    monkeypatch.setenv("JAX_CONV1D_FWD_KERNEL", "igemm")  # a pinned family means our kernels
    assert not _xla_conv.applies(cfg, xs, ws, dtype, backward=False)
    assert _xla_conv.applies(cfg, xs, ws, dtype, backward=True)
    monkeypatch.delenv("JAX_CONV1D_FWD_KERNEL")
    monkeypatch.setenv("JAX_CONV1D_XLA_CONV", "0")
    assert not _xla_conv.applies(cfg, xs, ws, dtype, backward=False)
    assert not _xla_conv.applies(cfg, xs, ws, dtype, backward=True)


@pytest.mark.gpu
@pytest.mark.parametrize("geometry", GEOMETRIES[:3])
def test_gpu_lowers_to_xla_and_matches_float64(monkeypatch, rng, gpu, geometry):
    """Small shapes, with the im2col bounds lowered so that the forward takes the route too."""
    monkeypatch.setattr(_gemm_forward, "_IM2COL_MIN_FLOPS", 0)
    monkeypatch.setattr(_gemm_forward, "_IM2COL_MIN_FLOPS_PER_BYTE", 0)
    layout, c, o, k, length, stride, dilation, pads = geometry
    x, w, b = random_inputs(rng, layout=layout, dtype="bfloat16", batch=2, in_ch=c, length=length, out_ch=o,
                            groups=1, ksize=k, bias=True)
    t = output_length(length, k, stride, dilation, *pads)
    dy = random_array(rng, (2, o, t) if layout == "NCW" else (2, t, o), "bfloat16")
    x, w, b, dy = (jax.device_put(a, gpu) for a in (x, w, b, dy))
    kw = dict(stride=stride, dilation=dilation, padding=pads, layout=layout)

    def fwd_and_grads(x, w, b, dy):
        y, vjp = jax.vjp(lambda x, w, b: dilated_conv1d(x, w, b, **kw), x, w, b)
        return (y, *vjp(dy))

    assert custom_call_targets(fwd_and_grads, x, w, b, dy) == set()
    y, dx, dw, db = jax.jit(fwd_and_grads)(x, w, b, dy)
    ref_kw = dict(stride=stride, dilation=dilation, padding=[pads], layout=layout)
    assert_close(y, float64_reference(x, w, b, **ref_kw), 1e-2, "y")
    for got, ref, what in zip((dx, dw, db), float64_vjp_reference(x, w, b, dy, **ref_kw), ("dx", "dw", "db")):
        assert_close(got, ref, 1e-2, what)
    again = jax.jit(fwd_and_grads)(x, w, b, dy)
    for a, r in zip((y, dx, dw, db), again):
        np.testing.assert_array_equal(np.asarray(a.astype(jnp.float32)), np.asarray(r.astype(jnp.float32)))
    monkeypatch.setenv("JAX_CONV1D_XLA_CONV", "0")  # read at lowering: a fresh function
    assert custom_call_targets(lambda x, w, b, dy: fwd_and_grads(x, w, b, dy), x, w, b, dy)
