"""The combined backward (conv1d_bwd_p, FFI target jax_conv1d_bwd): dx, dw and db from one call.

Checked against lax over the sweep and for every subset of wanted gradients; that the public op binds it
exactly when the weight gradient is wanted with another one (and the single passes otherwise); and that it
composes with vmap, jit and differentiation (its own custom_vjp is built from the three passes).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conv_reference import (BF16, F32, F64, HIGHEST, assert_close, float64_vjp_reference, iter_eqns, lax_conv1d,
                            primitive_counts, random_array, random_inputs, shapes, sweep_cases, tolerance)
from jax_conv1d import dilated_conv1d
from jax_conv1d._primitives import conv1d_bwd_p
from jax_conv1d._shapes import make_config
from jax_conv1d.conv import _bwd as differentiable_bwd

FWD, DGRAD, WGRAD, BWD = "jax_conv1d_fwd", "jax_conv1d_dgrad", "jax_conv1d_wgrad", "jax_conv1d_bwd"
WANTS = [w for w in itertools.product((False, True), repeat=3) if any(w)]


def _cfg(x, w, precision=None, **kw):
    cfg, y_shape = make_config(x.shape, w.shape, None, precision=precision, **kw)
    return cfg, y_shape


def _bind(x, dy, w, want, precision=None, **kw):
    cfg, _ = _cfg(x, w, precision=precision, **kw)
    return conv1d_bwd_p.bind(x, dy, w, cfg=cfg, want_dx=want[0], want_dw=want[1], want_db=want[2])


def _bind_differentiable(x, dy, w, want, **kw):
    """The combined call through its custom_vjp (the primitive alone has no differentiation rule)."""
    cfg, _ = _cfg(x, w, **kw)
    geom = (x.shape[cfg.x_axes[2]], w.shape[cfg.w_axes[2]], None)
    return differentiable_bwd(cfg, geom, want, x, dy, w)


def _lax_grads(x, w, dy, **kw):
    """(dx, dw, db) of lax's convolution (with a bias, so db is lax's too)."""
    b = jnp.zeros((dy.shape[1] if kw["layout"] == "NCW" else dy.shape[2],), x.dtype)
    _, vjp = jax.vjp(lambda x, w, b: lax_conv1d(x, w, b, precision=HIGHEST, **kw), x, w, b)
    return vjp(dy)


# ---- against lax and float64 ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sweep_cases(), ids=lambda c: c.id)
def test_combined_matches_lax_over_the_sweep(case):
    """Every layout, dtype, stride, dilation, padding form and grouping of the sweep; all three gradients."""
    x, w, _ = case.inputs()
    kw = case.conv_kwargs()
    _, y_shape = _cfg(x, w, **kw)
    dy = random_array(np.random.default_rng(5), y_shape, x.dtype)
    dx, dw, db = _bind(x, dy, w, (True, True, True), precision=case.precision, **kw)
    b = jnp.zeros((dy.shape[1] if case.layout == "NCW" else dy.shape[2],), x.dtype)
    exact = float64_vjp_reference(x, w, b, dy, **kw)
    lax_grads = _lax_grads(x, w, dy, **kw)
    tol = tolerance(case.dtype, case.precision)
    for name, g, g_lax, g64, like in zip(("dx", "dw", "db"), (dx, dw, db), lax_grads, exact, (x, w, b)):
        assert g.shape == like.shape and g.dtype == like.dtype, name
        assert_close(g, g_lax, tol, f"{name} vs lax")
        assert_close(g, g64, tol, f"{name} vs float64 lax")


@pytest.mark.parametrize("want", WANTS, ids=lambda w: "".join(n for n, on in zip(("dx", "dw", "db"), w) if on))
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("dtype", [F32, BF16, F64], ids=str)
def test_every_subset_of_gradients(want, layout, dtype, rng):
    """An unwanted gradient is an empty (0,) result; dx and dw are bitwise unchanged by what else is wanted.
    db is only required to agree closely: on CUDA it is summed inside the weight gradient's pass when dw is
    wanted and by a separate reduction when not, two fixed but different orders (seen: 1 ulp on an H100)."""
    x, w, _ = random_inputs(rng, layout=layout, dtype=dtype, batch=3, in_ch=6, length=41, out_ch=8, groups=2,
                            ksize=3, bias=False)
    kw = dict(stride=2, dilation=3, padding="SAME", groups=2, layout=layout)
    _, y_shape = _cfg(x, w, **kw)
    dy = random_array(rng, y_shape, dtype)
    got = _bind(x, dy, w, want, precision="highest", **kw)
    full = _bind(x, dy, w, (True, True, True), precision="highest", **kw)
    ref = _lax_grads(x, w, dy, **kw)
    for name, wanted, g, g_full, r in zip(("dx", "dw", "db"), want, got, full, ref):
        if not wanted:
            assert g.shape == (0,), name
            continue
        if name == "db":
            assert_close(g, g_full, 1e-6 if dtype == F32 else tolerance(dtype, "highest"), name)
        else:
            np.testing.assert_array_equal(np.asarray(g), np.asarray(g_full), err_msg=name)
        assert_close(g, r, tolerance(dtype, "highest"), name)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_long_bias_reduction_is_accurate(layout):
    """db sums N*Lout ~ 10^6 positive terms; a float32 running sum would drift far past this bound."""
    rng = np.random.default_rng(12)
    n, c, o, length = 4, 2, 3, 250000
    x_shape, w_shape = shapes(layout, n, c, length, o, c, 1)
    x = jnp.asarray(rng.standard_normal(x_shape), F32)
    w = jnp.asarray(rng.standard_normal(w_shape), F32)
    dy = np.abs(rng.standard_normal(x_shape[:1] + ((o, length) if layout == "NCW" else (length, o)))) + 1
    _, _, db = _bind(x, jnp.asarray(dy, F32), w, (False, False, True), layout=layout, stride=1, dilation=1,
                     padding="VALID", groups=1)
    exact = dy.astype(F32).astype(np.float64).sum(axis=(0, 2) if layout == "NCW" else (0, 1))
    assert np.max(np.abs(np.asarray(db, np.float64) - exact) / exact) < 1e-6


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_empty_sizes(layout):
    """Zero batch, zero length, an empty output, zero channels: every wanted gradient comes back with its
    shape (zeros)."""
    for n, c, length, o, padding in ((0, 3, 10, 4, "SAME"), (2, 3, 0, 4, "SAME"), (2, 3, 2, 4, "VALID"),
                                     (2, 0, 6, 4, "SAME"), (2, 3, 6, 0, "SAME")):
        x, w, _ = random_inputs(np.random.default_rng(0), layout=layout, dtype=F32, batch=n, in_ch=c, length=length,
                                out_ch=o, groups=1, ksize=3, bias=False)
        kw = dict(stride=1, dilation=1, padding=padding, groups=1, layout=layout)
        _, y_shape = _cfg(x, w, **kw)
        dy = jnp.ones(y_shape, F32)
        dx, dw, db = _bind(x, dy, w, (True, True, True), **kw)
        ref = _lax_grads(x, w, dy, **kw)
        for g, r in zip((dx, dw, db), ref):
            assert g.shape == r.shape
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-6)


# ---- which calls the public op makes ----------------------------------------------------------------------


def _backward_eqns(argnums, layout="NWC", bias=True):
    x, w, b = random_inputs(np.random.default_rng(0), layout=layout, dtype=F32, batch=2, in_ch=4, length=20,
                            out_ch=6, groups=2, ksize=3, bias=bias)
    kw = dict(stride=2, dilation=2, padding="SAME", groups=2, layout=layout)
    args = (x, w, b)
    y = dilated_conv1d(x, w, b, **kw)
    ct = random_array(np.random.default_rng(1), y.shape, F32)

    def vjp_of(*chosen):
        def conv(*diff):
            full = list(args)
            for i, a in zip(argnums, diff):
                full[i] = a
            return dilated_conv1d(*full, **kw)

        return jax.vjp(conv, *chosen)[1](ct)

    chosen = [args[i] for i in argnums]
    return list(iter_eqns(jax.make_jaxpr(vjp_of)(*chosen))), vjp_of(*chosen)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_full_gradient_is_one_combined_call(layout):
    """dx, dw and db: one jax_conv1d_bwd, no separate pass, and no reduction left to XLA for db."""
    eqns, _ = _backward_eqns((0, 1, 2), layout)
    names = [e.primitive.name for e in eqns]
    assert names.count(BWD) == 1 and DGRAD not in names and WGRAD not in names, names
    assert not any(n.startswith("reduce") for n in names), names
    (bwd,) = [e for e in eqns if e.primitive.name == BWD]
    assert (bwd.params["want_dx"], bwd.params["want_dw"], bwd.params["want_db"]) == (True, True, True)


@pytest.mark.parametrize("argnums,calls,want", [
    ((0, 1), {BWD: 1}, (True, True, False)),  # no bias
    ((1, 2), {BWD: 1}, (False, True, True)),  # the input is data: no dx
    ((1,), {WGRAD: 1}, None),  # the weight gradient alone: the plain pass
    ((0,), {DGRAD: 1}, None),  # frozen weights: the plain input-gradient pass
    ((0, 2), {DGRAD: 1}, None),  # frozen weights, trained bias: dgrad, and db reduced by XLA
], ids=str)
def test_only_the_needed_calls(argnums, calls, want):
    eqns, grads = _backward_eqns(argnums, bias=True)
    names = [e.primitive.name for e in eqns]
    for name in (DGRAD, WGRAD, BWD):
        assert names.count(name) == calls.get(name, 0), names
    if want is not None:
        (bwd,) = [e for e in eqns if e.primitive.name == BWD]
        assert (bwd.params["want_dx"], bwd.params["want_dw"], bwd.params["want_db"]) == want
        if not want[0]:
            assert not any(n.startswith("reduce") for n in names), names


def test_wider_output_type_sums_db_before_rounding(rng):
    """preferred_element_type=float32 on bfloat16 inputs: dx and dw from one call, db from the float32
    cotangent (the kernels see it rounded to bfloat16)."""
    x, w, b = random_inputs(rng, layout="NWC", dtype=BF16, batch=2, in_ch=4, length=30, out_ch=6, groups=1,
                            ksize=3, bias=True)
    kw = dict(padding="SAME", layout="NWC")
    ct = random_array(rng, (2, 30, 6), F32)
    vjp_of = lambda x, w, b: jax.vjp(  # noqa: E731
        lambda *a: dilated_conv1d(*a, preferred_element_type=F32, **kw), x, w, b)[1](ct)
    eqns = list(iter_eqns(jax.make_jaxpr(vjp_of)(x, w, b)))
    (bwd,) = [e for e in eqns if e.primitive.name == BWD]
    assert (bwd.params["want_dx"], bwd.params["want_dw"], bwd.params["want_db"]) == (True, True, False)
    db = vjp_of(x, w, b)[2]
    exact = np.asarray(ct, np.float64).sum(axis=(0, 1))
    assert_close(db, exact, tolerance(BF16))


def test_lowered_program_has_one_backward_custom_call():
    x, w, b = random_inputs(np.random.default_rng(0), layout="NCW", dtype=F32, batch=2, in_ch=4, length=32,
                            out_ch=6, groups=1, ksize=3, bias=True)
    loss = lambda x, w, b: jnp.sum(jnp.sin(dilated_conv1d(x, w, b, dilation=2, padding="CAUSAL")))  # noqa: E731
    text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, w, b).as_text()
    assert text.count("@jax_conv1d_bwd") == 1, text
    assert "@jax_conv1d_dgrad" not in text and "@jax_conv1d_wgrad" not in text


# ---- transformations -------------------------------------------------------------------------------------


B = 3


@pytest.mark.parametrize("in_axes", [(0, 0, None), (None, 0, None), (0, 0, 0), (None, None, 0), (2, 1, 0)],
                         ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_vmap_of_the_primitive(in_axes, layout, rng):
    """Every batched-operand pattern against a loop over the batch; one call, no loop."""
    x, w, _ = random_inputs(rng, layout=layout, dtype=F64, batch=2, in_ch=4, length=19, out_ch=6, groups=2,
                            ksize=3, bias=False)
    kw = dict(stride=2, dilation=2, padding="SAME", groups=2, layout=layout)
    _, y_shape = _cfg(x, w, **kw)
    bases = (x, random_array(rng, y_shape, F64), w)
    batched = [random_array(rng, (B,) + a.shape, F64) if ax is not None else a for a, ax in zip(bases, in_axes)]
    batched = [jnp.moveaxis(a, 0, ax) if ax is not None else a for a, ax in zip(batched, in_axes)]
    fn = lambda x, dy, w: _bind(x, dy, w, (True, True, True), **kw)  # noqa: E731
    got = jax.vmap(fn, in_axes=in_axes)(*batched)
    for i in range(B):
        one = [jnp.take(a, i, axis=ax) if ax is not None else a for a, ax in zip(batched, in_axes)]
        for name, g, r in zip(("dx", "dw", "db"), got, _lax_grads(one[0], one[2], one[1], **kw)):
            assert_close(g[i], r, 1e-12, f"{name} of batch element {i}")
    counts = primitive_counts(jax.vmap(fn, in_axes=in_axes), *batched)
    assert counts[BWD] == 1 and not any(n in counts for n in ("while", "scan")), counts


def test_vmap_input_gradient_alone_merges_the_batch(rng):
    """With only dx wanted and w shared, the vmapped axis merges with N (no grouped call)."""
    x, w, _ = random_inputs(rng, layout="NWC", dtype=F64, batch=2, in_ch=4, length=19, out_ch=6, groups=1,
                            ksize=3, bias=False)
    kw = dict(stride=1, dilation=3, padding="CAUSAL", groups=1, layout="NWC")
    _, y_shape = _cfg(x, w, **kw)
    xs, dys = random_array(rng, (B,) + x.shape, F64), random_array(rng, (B,) + y_shape, F64)
    fn = lambda x, dy: _bind(x, dy, w, (True, False, False), **kw)[0]  # noqa: E731
    got = jax.vmap(fn)(xs, dys)
    for i in range(B):
        assert_close(got[i], _lax_grads(xs[i], w, dys[i], **kw)[0], 1e-12)
    (eqn,) = [e for e in iter_eqns(jax.make_jaxpr(jax.vmap(fn))(xs, dys)) if e.primitive.name == BWD]
    assert eqn.params["cfg"].groups == 1 and eqn.invars[0].aval.shape[0] == B * 2


def test_vmap_over_an_empty_batch(rng):
    x, w, _ = random_inputs(rng, layout="NCW", dtype=F32, batch=2, in_ch=4, length=10, out_ch=4, groups=1,
                            ksize=3, bias=False)
    kw = dict(stride=1, dilation=1, padding="SAME", groups=1, layout="NCW")
    dx, dw, db = jax.vmap(lambda x, dy: _bind(x, dy, w, (True, True, True), **kw))(
        jnp.zeros((0,) + x.shape, F32), jnp.zeros((0, 2, 4, 10), F32))
    assert dx.shape == (0,) + x.shape and dw.shape == (0,) + w.shape and db.shape == (0, 4)


@pytest.mark.parametrize("want", WANTS, ids=lambda w: "".join(n for n, on in zip(("dx", "dw", "db"), w) if on))
@pytest.mark.parametrize("layout,groups,stride,dilation,padding", [
    ("NCW", 1, 2, 3, "SAME"),
    ("NWC", 2, 1, 2, (3, -1)),
])
def test_grad_of_the_combined_call(want, layout, groups, stride, dilation, padding, rng):
    """Differentiating (dx, dw, db) in x, dy and w: the custom_vjp's rules against lax's second order."""
    x, w, _ = random_inputs(rng, layout=layout, dtype=F64, batch=2, in_ch=4, length=17, out_ch=6, groups=groups,
                            ksize=3, bias=False)
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, layout=layout)
    _, y_shape = _cfg(x, w, **kw)
    dy = random_array(rng, y_shape, F64)
    o = w.shape[0] if layout == "NCW" else w.shape[2]
    weights = [random_array(rng, s, F64) for s in (x.shape, w.shape, (o,))]

    def scalar(grads):
        return sum(jnp.sum(jnp.sin(g) * c) for g, c, on in zip(grads, weights, want) if on)

    ours = jax.jit(jax.grad(lambda x, dy, w: scalar(_bind_differentiable(x, dy, w, want, **kw)),
                            argnums=(0, 1, 2)))(x, dy, w)
    ref = jax.grad(lambda x, dy, w: scalar(_lax_grads(x, w, dy, **kw)), argnums=(0, 1, 2))(x, dy, w)
    for name, g, r in zip(("x", "dy", "w"), ours, ref):
        assert_close(g, r, 1e-11, f"gradient in {name}")


def test_second_order_through_the_public_op_stays_native(rng):
    x, w, b = random_inputs(rng, layout="NWC", dtype=F64, batch=2, in_ch=4, length=15, out_ch=4, groups=1,
                            ksize=3, bias=True)
    kw = dict(dilation=2, padding="SAME", layout="NWC")

    def second(conv, x, w, b):
        g = jax.grad(lambda x, w, b: jnp.sum(jnp.tanh(conv(x, w, b, **kw))), argnums=(0, 1, 2))
        return jax.grad(lambda x, w, b: sum(jnp.sum(t ** 2) for t in g(x, w, b)), argnums=(0, 1, 2))(x, w, b)

    for g, r in zip(jax.jit(lambda *a: second(dilated_conv1d, *a))(x, w, b), second(lax_conv1d, x, w, b)):
        assert_close(g, r, 1e-11)
    counts = primitive_counts(lambda *a: second(dilated_conv1d, *a), x, w, b)
    assert counts[BWD] >= 1 and "conv_general_dilated" not in counts, counts
