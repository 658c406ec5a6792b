"""The strided backward product routes (jax_conv1d/_gemm_backward.py).

On the CPU: the route's dx and dw against the float64 reference over strides, dilations, paddings (negative
too), both layouts, K = 1 and K > 1, float32 and bfloat16; the phase table against a direct count of the taps;
the combined backward with part of the work on our (CPU) kernels; the predicate's conditions. On a GPU: that
the lowering takes the route for the parts it names (the custom call is gone, or asked only for the rest),
matches float64, and repeats bit for bit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conv_reference import assert_close, custom_call_targets, float64_vjp_reference, random_array, random_inputs
from jax_conv1d import _gemm_backward, dilated_conv1d
from jax_conv1d._primitives import conv1d_bwd_local_p
from jax_conv1d._shapes import PRECISION_ACCURATE, PRECISION_DEFAULT, ConvConfig, output_length

# (layout, C, O, K, L, stride, dilation, (pad_lo, pad_hi))
GEOMETRIES = [
    ("NCW", 24, 40, 1, 57, 4, 2, (0, 0)),  # sweep/015's form: three of four positions get zeros
    ("NWC", 24, 40, 1, 58, 3, 1, (2, 1)),
    ("NCW", 24, 40, 1, 60, 2, 1, (-3, 2)),
    ("NWC", 16, 48, 8, 64, 2, 1, (3, 4)),  # sweep/018's form
    ("NCW", 32, 8, 7, 61, 3, 1, (0, 0)),  # 030
    ("NCW", 8, 16, 6, 62, 3, 1, (5, 0)),  # 042
    ("NWC", 8, 12, 3, 60, 3, 4, (0, 0)),  # the headline's taps: one per phase
    ("NCW", 8, 12, 5, 53, 4, 2, (1, 2)),  # residues no tap reaches
    ("NWC", 8, 12, 2, 44, 5, 1, (0, 0)),
    ("NCW", 8, 12, 3, 44, 2, 3, (-2, 3)),
    ("NWC", 8, 12, 4, 47, 3, 2, (4, -1)),
]


def _cfg(layout, stride, dilation, pads, precision=PRECISION_DEFAULT, groups=1):
    return ConvConfig(layout=layout, stride=stride, dilation=dilation, padding=pads, groups=groups,
                      precision=precision)


def _case(rng, geometry, dtype, bias=False, batch=2):
    layout, c, o, k, length, stride, dilation, pads = geometry
    x, w, b = random_inputs(rng, layout=layout, dtype=dtype, batch=batch, in_ch=c, length=length, out_ch=o,
                            groups=1, ksize=k, bias=bias)
    t = output_length(length, k, stride, dilation, *pads)
    dy = random_array(rng, (batch, o, t) if layout == "NCW" else (batch, t, o), dtype)
    ref = float64_vjp_reference(x, w, b, dy, stride=stride, dilation=dilation, padding=[pads], layout=layout)
    return x, w, b, dy, ref


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 1e-2)])
def test_products_match_float64(rng, geometry, dtype, tol):
    layout, _, _, k, length, stride, dilation, pads = geometry
    x, w, _, dy, (dx_ref, dw_ref, _) = _case(rng, geometry, dtype)
    cfg = _cfg(layout, stride, dilation, pads)
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        dx = jax.jit(functools.partial(_gemm_backward.dgrad, cfg=cfg, in_length=length))(dy, w)
        dw = jax.jit(functools.partial(_gemm_backward.wgrad, cfg=cfg, kernel_size=k))(x, dy)
    assert dx.shape == x.shape and dx.dtype == x.dtype and dw.shape == w.shape and dw.dtype == w.dtype
    assert_close(dx, dx_ref, tol, "dx")
    assert_close(dw, dw_ref, tol, "dw")


@pytest.mark.parametrize("stride,dilation,kernel_size,pad_lo", [(2, 1, 8, 3), (3, 1, 7, 0), (3, 4, 3, 0),
                                                                (4, 2, 5, 1), (5, 1, 2, 0), (3, 2, 4, -2)])
def test_phase_table_lists_every_tap_once(stride, dilation, kernel_size, pad_lo):
    """Each tap k lands in exactly one phase r (the residue of k*d - pad_lo) at e = (r + pad_lo - k*d) / s."""
    e_min, e_max, table = _gemm_backward.phase_taps(_cfg("NWC", stride, dilation, (pad_lo, 0)), kernel_size)
    seen = sorted(int(k) for k in table.ravel() if k >= 0)
    assert seen == list(range(kernel_size))
    for (e, r), k in np.ndenumerate(table):
        if k >= 0:
            assert (e + e_min) * stride == r + pad_lo - k * dilation
    assert table.shape == (e_max - e_min + 1, stride)


G, P = _gemm_backward.GEMM, _gemm_backward.PHASE


@pytest.mark.parametrize("route", [(G, ""), ("", G), (G, G), (P, ""), ("", P), (P, P), (P, G), (G, P)])
@pytest.mark.parametrize("bias", [False, True])
def test_combined_backward_mixes_routes_and_kernels(monkeypatch, rng, route, bias):
    """The combined backward's routed parts as products or phase-reshaped stride-1 calls, the rest (with db
    beside our strided dw) on our CPU kernels."""
    geometry = ("NWC", 16, 24, 6, 70, 3, 1, (5, 0))
    layout, _, _, _, _, stride, dilation, pads = geometry
    x, w, b, dy, (dx_ref, dw_ref, db_ref) = _case(rng, geometry, "float32", bias=bias)
    cfg = _cfg(layout, stride, dilation, pads)
    monkeypatch.setattr(_gemm_backward, "_routes_by_shape", lambda *a: route)
    calls = []

    def ours(x, dy, w, want_dx, want_dw, want_db):
        calls.append((want_dx, want_dw, want_db))
        return conv1d_bwd_local_p.bind(x, dy, w, cfg=cfg, want_dx=want_dx, want_dw=want_dw, want_db=want_db)

    with jax.default_device(jax.devices("cpu")[0]):
        dx, dw, db = jax.jit(lambda x, dy, w: _gemm_backward.backward(
            x, dy, w, cfg=cfg, want_dx=True, want_dw=True, want_db=bias, ours=ours))(x, dy, w)
    rest = (not route[0], not route[1], bias and not route[1])
    assert calls == ([rest] if rest[0] or rest[1] else [])  # only strided calls reach `ours`
    assert_close(dx, dx_ref, 1e-5, "dx")
    assert_close(dw, dw_ref, 1e-5, "dw")
    if bias:
        assert_close(db, db_ref, 1e-5, "db")
    else:
        assert db.shape == (0,)


def test_predicate(monkeypatch):
    cfg015 = _cfg("NCW", 4, 2, (0, 0))
    x015, w015 = (4, 1024, 2048), (512, 1024, 1)
    for forced, expected in [("both", (G, G)), ("dw", ("", G)), ("dx", (G, "")), ("phase", (P, P)),
                             ("phase/gemm", (P, G)), ("ours/phase", ("", P))]:
        monkeypatch.setenv("JAX_CONV1D_BWD_GEMM", forced)
        assert _gemm_backward.routes(cfg015, x015, w015, jnp.float32) == expected, forced
    monkeypatch.setenv("JAX_CONV1D_BWD_GEMM", "both")
    for cfg, xs, ws, dtype in [
        (_cfg("NCW", 1, 2, (0, 0)), x015, w015, jnp.float32),  # stride 1: other paths
        (_cfg("NCW", 4, 2, (0, 0), groups=2), x015, (512, 512, 1), jnp.float32),
        (_cfg("NCW", 4, 2, (0, 0), precision=PRECISION_ACCURATE), x015, w015, jnp.float32),
        (cfg015, x015, w015, jnp.float64),
    ]:
        assert _gemm_backward.routes(cfg, xs, ws, dtype) == ("", ""), (cfg, xs, ws, dtype)
    monkeypatch.setenv("JAX_CONV1D_BWD_GEMM", "0")
    assert _gemm_backward.routes(cfg015, x015, w015, jnp.float32) == ("", "")


def test_default_routes_follow_the_measurements(monkeypatch):
    monkeypatch.delenv("JAX_CONV1D_BWD_GEMM", raising=False)
    for cfg, xs, ws, dtype, expected in [
        (_cfg("NCW", 4, 2, (0, 0)), (4, 1024, 2048), (512, 1024, 1), jnp.float32, (G, G)),  # sweep/015
        (_cfg("NWC", 2, 1, (3, 3)), (4, 32768, 64), (8, 64, 256), jnp.bfloat16, (G, G)),  # 018: streamed w
        (_cfg("NCW", 3, 1, (0, 0)), (4, 256, 8192), (32, 256, 7), jnp.bfloat16, ("", G)),  # 030
        (_cfg("NCW", 3, 1, (5, 0)), (4, 32, 65536), (64, 32, 6), jnp.bfloat16, ("", G)),  # 042
        (_cfg("NWC", 3, 8, (0, 0)), (4, 8192, 256), (9, 256, 1024), jnp.bfloat16, ("", G)),  # 007: 22 taps
        # the headline: its columns (8.6 GB) stay off the GEMM; stride 1 (WaveNet) is not routed
        (_cfg("NWC", 3, 4, (0, 0)), (64, 524280, 64), (3, 64, 128), jnp.float32, ("", "")),
        (_cfg("NCW", 3, 4, (0, 0)), (64, 64, 524280), (128, 64, 3), jnp.bfloat16, ("", "")),
        (_cfg("NWC", 1, 64, (64, 0)), (16, 65536, 128), (2, 128, 256), jnp.float32, ("", "")),
    ]:
        assert _gemm_backward.routes(cfg, xs, ws, dtype) == expected, (cfg, xs, ws, dtype)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 1e-2)])
def test_phase_route_matches_float64(rng, geometry, dtype, tol):
    """Our stride-1 (CPU) kernels on the phase-reshaped problem: dx and dw (+ db) in one call, dx alone, dw
    alone, against the strided problem's float64 gradients (L % s != 0 and negative pads included)."""
    layout, _, _, _, _, stride, dilation, pads = geometry
    x, w, b, dy, (dx_ref, dw_ref, db_ref) = _case(rng, geometry, dtype, bias=True)
    cfg = _cfg(layout, stride, dilation, pads)
    with jax.default_device(jax.devices("cpu")[0]):
        for want in [(True, True, True), (True, False, False), (False, True, False), (False, True, True)]:
            dx, dw, db = jax.jit(lambda x, dy, w: _gemm_backward.phase_backward(
                x, dy, w, cfg=cfg, want_dx=want[0], want_dw=want[1], want_db=want[2]))(x, dy, w)
            for got, ref, wanted, name in [(dx, dx_ref, want[0], "dx"), (dw, dw_ref, want[1], "dw"),
                                           (db, db_ref, want[2], "db")]:
                if wanted:
                    assert got.shape == ref.shape and got.dtype == x.dtype, (name, want)
                    assert_close(got, ref, tol, f"{name} {want}")
                else:
                    assert got.shape == (0,), (name, want)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_phase_plan_keeps_the_output_length(geometry):
    """The stride-1 problem has T outputs, and its merged axis holds each tap once."""
    layout, _, _, k, length, stride, dilation, pads = geometry
    cfg = _cfg(layout, stride, dilation, pads)
    t = output_length(length, k, stride, dilation, *pads)
    plan = _gemm_backward.phase_plan(cfg, k, length, t)
    assert plan.phase_rows * stride >= length > (plan.phase_rows - 1) * stride
    assert output_length(plan.phase_rows, plan.taps, 1, 1, *plan.inner.padding) == t
    assert len(set(plan.index)) == k and all(0 <= i < plan.taps * stride for i in plan.index)


def test_single_pass_routes_take_the_phase(monkeypatch, rng):
    """routed_dgrad / routed_wgrad (the single-pass lowerings) on the phase route, on the CPU kernels."""
    geometry = ("NCW", 8, 16, 6, 62, 3, 1, (5, 0))
    layout, _, _, k, length, stride, dilation, pads = geometry
    x, w, _, dy, (dx_ref, dw_ref, _) = _case(rng, geometry, "float32")
    cfg = _cfg(layout, stride, dilation, pads)
    monkeypatch.setenv("JAX_CONV1D_BWD_GEMM", "phase")
    with jax.default_device(jax.devices("cpu")[0]):
        dx = jax.jit(functools.partial(_gemm_backward.routed_dgrad, cfg=cfg, in_length=length))(dy, w)
        dw = jax.jit(functools.partial(_gemm_backward.routed_wgrad, cfg=cfg, kernel_size=k))(x, dy)
    assert_close(dx, dx_ref, 1e-5, "dx")
    assert_close(dw, dw_ref, 1e-5, "dw")


@pytest.mark.gpu
@pytest.mark.parametrize("geometry", [GEOMETRIES[0], GEOMETRIES[3], GEOMETRIES[4], GEOMETRIES[6], GEOMETRIES[10]])
@pytest.mark.parametrize("dtype,tol", [("float32", 1.5e-3), ("bfloat16", 1e-2)])
@pytest.mark.parametrize("mode", ["dx", "dw", "both", "phase", "phase/gemm", "ours/phase"])
def test_gpu_lowers_to_products_and_matches_float64(monkeypatch, rng, gpu, geometry, dtype, tol, mode):
    layout, _, _, _, _, stride, dilation, pads = geometry
    x, w, b, dy, (dx_ref, dw_ref, db_ref) = _case(rng, geometry, dtype, bias=True)
    x, w, b, dy = (jax.device_put(a, gpu) for a in (x, w, b, dy))
    monkeypatch.setenv("JAX_CONV1D_BWD_GEMM", mode)
    kw = dict(stride=stride, dilation=dilation, padding=pads, layout=layout)

    def grads(x, w, b, dy):
        return jax.vjp(lambda x, w, b: dilated_conv1d(x, w, b, **kw), x, w, b)[1](dy)

    targets = custom_call_targets(grads, x, w, b, dy)
    # Both as products: no backward custom call; otherwise our kernels for the rest or the stride-1 problem.
    assert not targets & {"jax_conv1d_dgrad", "jax_conv1d_wgrad", "jax_conv1d_bwd"} if mode == "both" else targets
    dx, dw, db = jax.jit(grads)(x, w, b, dy)
    assert_close(dx, dx_ref, tol, "dx")
    assert_close(dw, dw_ref, tol, "dw")
    assert_close(db, db_ref, tol, "db")
    again = jax.jit(grads)(x, w, b, dy)
    for a, r in zip((dx, dw, db), again):
        np.testing.assert_array_equal(np.asarray(a.astype(jnp.float32)), np.asarray(r.astype(jnp.float32)))
    # Each gradient alone goes through the single-pass primitives, routed the same way.
    dx_only = jax.jit(lambda x, dy: jax.vjp(lambda x: dilated_conv1d(x, w, b, **kw), x)[1](dy)[0])(x, dy)
    assert_close(dx_only, dx_ref, tol, "dx alone")
    dw_only = jax.jit(lambda w, dy: jax.vjp(lambda w: dilated_conv1d(x, w, b, **kw), w)[1](dy)[0])(w, dy)
    assert_close(dw_only, dw_ref, tol, "dw alone")
