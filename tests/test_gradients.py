"""Gradients: numerical checks (check_grads), agreement with lax's gradients over the sweep, that only the
needed backward kernels run, and second and third order."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from conv_reference import (BF16, EDGE_CASES, F16, F32, F64, HIGHEST, SWEEP_AXES, assert_close,
                            float64_vjp_reference, lax_conv1d, primitive_counts, random_array, random_inputs,
                            sweep_cases, to_float64_on_cpu, tolerance)
from jax_conv1d import dilated_conv1d

FWD, DGRAD, WGRAD, BWD = "jax_conv1d_fwd", "jax_conv1d_dgrad", "jax_conv1d_wgrad", "jax_conv1d_bwd"


def _vjp(conv, x, w, b, ct, **kw):
    """(dx, dw, db) of conv at (x, w, b) for cotangent ct; db is None without a bias."""
    if b is None:
        _, vjp = jax.vjp(lambda x, w: conv(x, w, None, **kw), x, w)
        return (*vjp(ct), None)
    _, vjp = jax.vjp(lambda x, w, b: conv(x, w, b, **kw), x, w, b)
    return vjp(ct)


# ---- numerical checks in float64 --------------------------------------------------------------------------

CHECK_GRADS_CONFIGS = [
    dict(layout="NCW", stride=1, dilation=1, padding="VALID", groups=1, bias=False),
    dict(layout="NWC", stride=2, dilation=3, padding="SAME", groups=2, bias=True),
    dict(layout="NCW", stride=3, dilation=2, padding="CAUSAL", groups=4, bias=True),  # depthwise
    dict(layout="NWC", stride=1, dilation=4, padding=(-2, 5), groups=1, bias=True),
    dict(layout="NCW", stride=4, dilation=1, padding="SAME_LOWER", groups=2, bias=False),
]


@pytest.mark.parametrize("cfg", CHECK_GRADS_CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_check_grads_float64(cfg, rng):
    cfg = dict(cfg)
    with_bias = cfg.pop("bias")
    groups = cfg["groups"]
    x, w, b = random_inputs(rng, layout=cfg["layout"], dtype=F64, batch=2, in_ch=4, length=13,
                            out_ch=4 if groups == 4 else 6, groups=groups, ksize=3, bias=with_bias)
    if with_bias:
        check_grads(lambda x, w, b: dilated_conv1d(x, w, b, **cfg), (x, w, b), order=2, modes=["rev"])
    else:
        check_grads(lambda x, w: dilated_conv1d(x, w, **cfg), (x, w), order=2, modes=["rev"])


# ---- against lax over the sweep ---------------------------------------------------------------------------

GRAD_CASES = sweep_cases()[::2]  # every other sweep case: still every dtype, layout, padding form, grouping


def test_grad_sample_still_covers_the_axes():
    for axis in ("layout", "dtype", "stride", "dilation", "padding", "group_form", "bias"):
        seen = {repr(getattr(c, axis)) for c in GRAD_CASES}
        every = {repr(v) for v in SWEEP_AXES[axis]}
        assert every <= seen, f"the gradient sample misses {axis} values {every - seen}"


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_gradients_sweep(case):
    x, w, b = case.inputs()
    kw = case.conv_kwargs()
    out = jax.eval_shape(lambda: dilated_conv1d(x, w, b, **kw))
    ct = random_array(np.random.default_rng(7), out.shape, out.dtype)
    ours = _vjp(dilated_conv1d, x, w, b, ct, precision=case.precision, **kw)
    lax_grads = _vjp(lax_conv1d, x, w, b, ct, precision=HIGHEST, **kw)
    exact = float64_vjp_reference(x, w, b, ct, **kw)
    tol = tolerance(case.dtype, case.precision)
    for name, g, g_lax, g64, arg in zip(("dx", "dw", "dbias"), ours, lax_grads, exact, (x, w, b)):
        if arg is None:
            continue
        assert g.shape == arg.shape and g.dtype == arg.dtype, name
        assert_close(g, g_lax, tol, f"{name} vs lax")
        assert_close(g, g64, tol, f"{name} vs float64 lax")


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_gradients_cross_tiles_and_threads(layout, rng):
    """Sizes that span several CPU tiles, threads, and output-channel blocks of the weight gradient."""
    x, w, b = random_inputs(rng, layout=layout, dtype=F32, batch=3, in_ch=24, length=1000, out_ch=40,
                            groups=2, ksize=5, bias=True)
    kw = dict(stride=2, dilation=3, padding="SAME", groups=2, layout=layout)
    ct = random_array(rng, jax.eval_shape(lambda: lax_conv1d(x, w, b, **kw)).shape, F32)
    ours = _vjp(dilated_conv1d, x, w, b, ct, precision="highest", **kw)
    for name, g, g64 in zip(("dx", "dw", "dbias"), ours, float64_vjp_reference(x, w, b, ct, **kw)):
        assert_close(g, g64, 1e-5, name)


@pytest.mark.parametrize("edge", EDGE_CASES, ids=str)
@pytest.mark.parametrize("argnums", [(0, 1, 2), (0,), (1,), (2,)], ids=str)
def test_gradients_at_edge_shapes(edge, argnums, rng):
    """Each argument alone too: with empty tensors, the backward may have no residual to work from."""
    n, c, length, o, k, groups, stride, dilation, padding = edge
    x, w, b = random_inputs(rng, layout="NWC", dtype=F64, batch=n, in_ch=c, length=length, out_ch=o,
                            groups=groups, ksize=k, bias=True)
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, layout="NWC")
    ct = random_array(rng, jax.eval_shape(lambda: lax_conv1d(x, w, b, **kw)).shape, F64)
    args = (x, w, b)

    def conv_of(*chosen):
        full = list(args)
        for i, a in zip(argnums, chosen):
            full[i] = a
        return dilated_conv1d(*full, **kw)

    _, vjp = jax.vjp(conv_of, *(args[i] for i in argnums))
    exact = float64_vjp_reference(x, w, b, ct, **kw)
    for i, g in zip(argnums, vjp(ct)):
        name = ("dx", "dw", "dbias")[i]
        assert g.shape == args[i].shape, name
        assert_close(g, exact[i], 1e-12, name)


@pytest.mark.parametrize("in_dtype", [BF16, F16], ids=str)
def test_gradients_with_float32_output(in_dtype, rng):
    """preferred_element_type=float32 on half inputs: gradients come back in the input type."""
    x, w, b = random_inputs(rng, layout="NWC", dtype=in_dtype, batch=2, in_ch=4, length=30, out_ch=6, groups=2,
                            ksize=4, bias=True)
    kw = dict(stride=2, dilation=2, padding="CAUSAL", groups=2, layout="NWC")
    out = jax.eval_shape(lambda: dilated_conv1d(x, w, b, preferred_element_type=F32, **kw))
    assert out.dtype == F32
    ct = random_array(rng, out.shape, F32)
    ours = _vjp(dilated_conv1d, x, w, b, ct, preferred_element_type=F32, **kw)
    lax_grads = _vjp(lax_conv1d, x, w, b, ct, preferred_element_type=F32, **kw)
    exact = float64_vjp_reference(x, w, b, ct, **kw)
    for name, g, g_lax, g64, arg in zip(("dx", "dw", "dbias"), ours, lax_grads, exact, (x, w, b)):
        assert g.dtype == arg.dtype, name
        assert_close(g, g_lax, tolerance(in_dtype), f"{name} vs lax")
        assert_close(g, g64, tolerance(in_dtype), f"{name} vs float64")


# ---- only the needed kernels ------------------------------------------------------------------------------

# argnums differentiated -> (input-gradient pass, weight-gradient pass, combined backward) expected: the
# weight gradient with anything else is one combined call
NEEDED_KERNELS = {(0,): (True, False, False), (1,): (False, True, False), (2,): (False, False, False),
                  (0, 1): (False, False, True), (0, 2): (True, False, False), (1, 2): (False, False, True),
                  (0, 1, 2): (False, False, True)}


@pytest.mark.parametrize("argnums", list(NEEDED_KERNELS), ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_backward_runs_only_needed_kernels(argnums, layout, rng):
    x, w, b = random_inputs(rng, layout=layout, dtype=F32, batch=2, in_ch=4, length=20, out_ch=6, groups=2,
                            ksize=3, bias=True)
    kw = dict(stride=2, dilation=2, padding="SAME", groups=2, layout=layout, precision="highest")

    def loss(conv, x, w, b):
        return jnp.sum(jnp.sin(conv(x, w, b, **kw)))

    grad = jax.grad(lambda x, w, b: loss(dilated_conv1d, x, w, b), argnums=argnums)
    counts = primitive_counts(grad, x, w, b)
    want_dgrad, want_wgrad, want_bwd = NEEDED_KERNELS[argnums]
    assert (counts[DGRAD] > 0) == want_dgrad, counts
    assert (counts[WGRAD] > 0) == want_wgrad, counts
    assert counts[BWD] == int(want_bwd), counts
    assert counts[FWD] == 1, counts
    lax_grads = jax.grad(lambda x, w, b: loss(lax_conv1d, x, w, b), argnums=argnums)(x, w, b)
    for g, g_lax in zip(grad(x, w, b), lax_grads):
        assert_close(g, g_lax, 1e-5)


def test_second_order_in_x_only_skips_weight_gradient(rng):
    """d^2/dx^2 never needs the weight gradient, at either level."""
    x, w, _ = random_inputs(rng, layout="NCW", dtype=F64, batch=2, in_ch=3, length=15, out_ch=4, groups=1,
                            ksize=3, bias=False)
    v = random_array(rng, x.shape, F64)

    def hvp(conv, x):
        g = jax.grad(lambda x: jnp.sum(conv(x, w, None, dilation=2) ** 3))
        return jax.grad(lambda x: jnp.vdot(g(x), v))(x)

    counts = primitive_counts(lambda x: hvp(dilated_conv1d, x), x)
    assert counts[WGRAD] == 0 and counts[BWD] == 0 and counts[DGRAD] > 0, counts
    assert_close(hvp(dilated_conv1d, x), hvp(lax_conv1d, x), 1e-12)


def test_frozen_weights_under_jit_and_vmap_skip_weight_gradient(rng):
    x, w, b = random_inputs(rng, layout="NWC", dtype=F32, batch=3, in_ch=4, length=20, out_ch=4, groups=4,
                            ksize=4, bias=True)

    @jax.jit
    def per_example_dx(x):
        return jax.vmap(jax.grad(lambda xi: jnp.sum(dilated_conv1d(xi[None], w, b, groups=4, layout="NWC"))))(x)

    counts = primitive_counts(per_example_dx, x)
    assert counts[WGRAD] == 0 and counts[BWD] == 0 and counts[DGRAD] == 1, counts


# ---- higher order against lax -----------------------------------------------------------------------------


def _second_order(conv, x, w, b, c, vs, **kw):
    """Gradient of <grad(loss), v> for a nonlinear loss: exercises the vjp of both backward kernels."""
    def loss(x, w, b):
        return jnp.sum(jnp.sin(conv(x, w, b, **kw)) * c)

    def directional(x, w, b):
        gx, gw, gb = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
        return jnp.vdot(gx, vs[0]) + jnp.vdot(gw, vs[1]) + jnp.vdot(gb, vs[2])

    return jax.grad(directional, argnums=(0, 1, 2))(x, w, b)


@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("layout,groups,stride,dilation,padding", [
    ("NCW", 1, 1, 1, "VALID"),
    ("NWC", 2, 2, 3, "SAME"),
    ("NCW", 4, 3, 2, (3, -1)),
    ("NWC", 4, 1, 5, "CAUSAL"),
])
def test_grad_of_grad_matches_lax(dtype, layout, groups, stride, dilation, padding, rng):
    x, w, b = random_inputs(rng, layout=layout, dtype=dtype, batch=2, in_ch=4, length=17, out_ch=8, groups=groups,
                            ksize=3, bias=True)
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, layout=layout)
    c = random_array(rng, jax.eval_shape(lambda: lax_conv1d(x, w, b, **kw)).shape, dtype)
    vs = [random_array(rng, a.shape, dtype) for a in (x, w, b)]
    ours = jax.jit(lambda *a: _second_order(dilated_conv1d, *a, precision="highest", **kw))(x, w, b, c, vs)
    exact = jax.jit(lambda *a: _second_order(lax_conv1d, *a, **kw))(
        *(to_float64_on_cpu(a) for a in (x, w, b, c)), [to_float64_on_cpu(v) for v in vs])  # runs on the CPU
    tol = 1e-11 if dtype == F64 else 1e-4
    for name, g, g64 in zip(("x", "w", "bias"), ours, exact):
        assert g.dtype == dtype
        assert_close(g, g64, tol, f"second-order gradient in {name}")


def test_third_order_matches_lax(rng):
    x, w, _ = random_inputs(rng, layout="NWC", dtype=F64, batch=1, in_ch=2, length=9, out_ch=2, groups=1,
                            ksize=2, bias=False)

    @functools.partial(jax.jit, static_argnums=0)
    def third(conv, x, w):
        f = lambda x, w: jnp.sum(jnp.tanh(conv(x, w, None, layout="NWC", padding="SAME")))  # noqa: E731
        g1 = lambda x, w: jnp.sum(jax.grad(f, argnums=1)(x, w) ** 2)  # noqa: E731
        g2 = lambda x, w: jnp.sum(jax.grad(g1, argnums=0)(x, w) ** 2)  # noqa: E731
        return jax.grad(g2, argnums=(0, 1))(x, w)

    for g, g_lax in zip(third(dilated_conv1d, x, w), third(lax_conv1d, x, w)):
        assert_close(g, g_lax, 1e-10)
