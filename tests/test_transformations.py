"""jit, eval_shape and vmap (every operand, any axis, nested, with grad), checked against per-example lax
results, plus the promise that vmap never loops: one kernel launch per pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv1d._primitives as primitives
from conv_reference import (BF16, F16, F32, LOOP_PRIMITIVES, assert_close, conv_eqns, lax_conv1d,
                            primitive_counts, random_array, random_inputs, shapes, tolerance)
from jax_conv1d import dilated_conv1d

FWD, DGRAD, WGRAD, BWD = "jax_conv1d_fwd", "jax_conv1d_dgrad", "jax_conv1d_wgrad", "jax_conv1d_bwd"
B = 3  # vmapped axis size


def _assert_no_loops(counts):
    loops = {name: n for name, n in counts.items() if name in LOOP_PRIMITIVES}
    assert not loops, f"vmap produced loops: {loops}"


# ---- jit and eval_shape -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_jit_matches_eager_bitwise(layout, rng):
    x, w, b = random_inputs(rng, layout=layout, dtype=F32, batch=2, in_ch=6, length=50, out_ch=4, groups=2,
                            ksize=5, bias=True)
    kw = dict(stride=3, dilation=2, padding=(4, -1), groups=2, layout=layout)
    eager = dilated_conv1d(x, w, b, **kw)
    jitted = jax.jit(lambda x, w, b: dilated_conv1d(x, w, b, **kw))(x, w, b)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager))
    assert_close(eager, lax_conv1d(x, w, b, **kw), tolerance(F32))


def test_jit_with_static_arguments_retraces_per_configuration(rng):
    x, w, _ = random_inputs(rng, layout="NCW", dtype=F32, batch=2, in_ch=4, length=40, out_ch=4, groups=1,
                            ksize=3, bias=False)
    conv = jax.jit(dilated_conv1d, static_argnames=("stride", "dilation", "padding", "groups", "layout"))
    for stride, dilation, padding in ((1, 1, "VALID"), (2, 3, "SAME"), (4, 2, "CAUSAL"), (1, 1, (2, 1))):
        kw = dict(stride=stride, dilation=dilation, padding=padding)
        assert_close(conv(x, w, **kw), lax_conv1d(x, w, **kw), tolerance(F32))


@pytest.fixture
def no_execution(monkeypatch):
    """Makes any attempt to run or compile one of the primitives an error."""
    def refuse(*args, **params):
        raise AssertionError("a jax_conv1d primitive was executed")

    for prim in (primitives.conv1d_fwd_p, primitives.conv1d_dgrad_p, primitives.conv1d_wgrad_p,
                 primitives.conv1d_bwd_p):
        monkeypatch.setattr(prim, "impl", refuse)
    monkeypatch.setattr(primitives, "_jitted", refuse)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_eval_shape_runs_nothing(layout, no_execution):
    # Terabytes of input: anything but shape arithmetic would run out of memory.
    x_shape, w_shape = shapes(layout, 4096, 1024, 2 ** 28, 2048, 512, 7)
    x = jax.ShapeDtypeStruct(x_shape, jnp.bfloat16)
    w = jax.ShapeDtypeStruct(w_shape, jnp.bfloat16)
    b = jax.ShapeDtypeStruct((2048,), jnp.bfloat16)
    kw = dict(stride=3, dilation=4, padding="SAME", groups=2, layout=layout)
    out = jax.eval_shape(lambda x, w, b: dilated_conv1d(x, w, b, preferred_element_type=jnp.float32, **kw),
                         x, w, b)
    ref = jax.eval_shape(lambda x, w, b: lax_conv1d(x, w, b, preferred_element_type=jnp.float32, **kw), x, w, b)
    assert (out.shape, out.dtype) == (ref.shape, ref.dtype)

    def loss(x, w, b):
        return jnp.sum(dilated_conv1d(x, w, b, **kw).astype(jnp.float32))

    grads = jax.eval_shape(jax.grad(loss, argnums=(0, 1, 2)), x, w, b)
    assert [(g.shape, g.dtype) for g in grads] == [(a.shape, a.dtype) for a in (x, w, b)]
    batched = jax.eval_shape(jax.vmap(lambda x, w, b: dilated_conv1d(x, w, b, **kw), in_axes=(0, None, None)),
                             jax.ShapeDtypeStruct((5,) + x_shape, jnp.bfloat16), w, b)
    assert batched.shape == (5,) + ref.shape


def test_jit_lowering_runs_nothing(no_execution):
    x = jax.ShapeDtypeStruct((1024, 512, 2 ** 26), jnp.float32)
    w = jax.ShapeDtypeStruct((512, 512, 3), jnp.float32)
    lowered = jax.jit(jax.grad(lambda x, w: jnp.sum(dilated_conv1d(x, w, dilation=2)), argnums=(0, 1))).lower(x, w)
    assert "jax_conv1d_bwd" in lowered.as_text()


# ---- vmap: every operand, any axis ------------------------------------------------------------------------


def _with_batch_axis(rng, shape, axis, dtype=F32):
    """A random array of `shape` with a vmapped axis of size B inserted at `axis` (or None: unbatched)."""
    if axis is None:
        return random_array(rng, shape, dtype)
    full = list(shape)
    full.insert(axis if axis >= 0 else len(shape) + 1 + axis, B)
    return random_array(rng, tuple(full), dtype)


def _slice(a, axis, i):
    return a if axis is None else jnp.take(a, i, axis=axis)


# in_axes for (x, w, bias)
IN_AXES = [
    (0, None, None), (1, None, None), (2, None, None), (-1, None, None),  # x alone, any axis
    (None, 0, None), (None, 2, None), (None, -1, None),  # w alone
    (None, None, 0), (None, None, 1),  # bias alone
    (0, 0, None), (3, 1, None), (1, 2, None),  # x and w together
    (0, None, 0), (None, 0, 0), (0, 0, 0), (2, 1, -1),  # with bias
]


@pytest.mark.parametrize("in_axes", IN_AXES, ids=str)
@pytest.mark.parametrize("layout,groups", [("NCW", 1), ("NWC", 1), ("NCW", 2), ("NWC", 4)])
def test_vmap_matches_per_example_lax_in_one_launch(in_axes, layout, groups, rng):
    in_ch, out_ch = 4, 8
    x_shape, w_shape = shapes(layout, 2, in_ch, 23, out_ch, in_ch // groups, 3)
    x = _with_batch_axis(rng, x_shape, in_axes[0])
    w = _with_batch_axis(rng, w_shape, in_axes[1])
    b = _with_batch_axis(rng, (out_ch,), in_axes[2])
    kw = dict(stride=2, dilation=2, padding="SAME", groups=groups, layout=layout)

    def conv(x, w, b):
        return dilated_conv1d(x, w, b, precision="highest", **kw)

    y = jax.vmap(conv, in_axes=in_axes)(x, w, b)
    ref = jnp.stack([lax_conv1d(_slice(x, in_axes[0], i), _slice(w, in_axes[1], i), _slice(b, in_axes[2], i), **kw)
                     for i in range(B)])
    assert_close(y, ref, 1e-5)
    counts = primitive_counts(jax.vmap(conv, in_axes=in_axes), x, w, b)
    assert counts[FWD] == 1, counts
    _assert_no_loops(counts)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("groups", [1, 2])
def test_vmap_over_x_and_w_is_one_grouped_call(layout, groups, rng):
    x_shape, w_shape = shapes(layout, 2, 4, 16, 6, 4 // groups, 3)
    x = _with_batch_axis(rng, x_shape, 0)
    w = _with_batch_axis(rng, w_shape, 0)
    fn = jax.vmap(lambda x, w: dilated_conv1d(x, w, groups=groups, layout=layout))
    (eqn,) = conv_eqns(fn, x, w)
    assert eqn.params["cfg"].groups == groups * B


def test_vmap_over_w_alone_reads_x_once(rng):
    """A batch of weights over one input: a single call with B times the output channels."""
    x = random_array(rng, (2, 4, 16), F32)
    w = _with_batch_axis(rng, (6, 4, 3), 0)
    (eqn,) = conv_eqns(jax.vmap(lambda w: dilated_conv1d(x, w)), w)
    x_in, w_in = eqn.invars[:2]
    assert x_in.aval.shape == x.shape
    assert w_in.aval.shape == (B * 6, 4, 3)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_nested_vmap(layout, rng):
    """Outer vmap over weights, inner over inputs (an ensemble applied to a batch), and a double x batch."""
    x_shape, w_shape = shapes(layout, 2, 4, 20, 6, 2, 3)
    xs = _with_batch_axis(rng, x_shape, 0)
    ws = random_array(rng, (2,) + w_shape, F32)
    kw = dict(dilation=3, padding="CAUSAL", groups=2, layout=layout)

    def conv(x, w):
        return dilated_conv1d(x, w, precision="highest", **kw)

    nested = jax.vmap(jax.vmap(conv, in_axes=(0, None)), in_axes=(None, 0))
    y = nested(xs, ws)
    assert y.shape[:2] == (2, B)
    for j in range(2):
        for i in range(B):
            assert_close(y[j, i], lax_conv1d(xs[i], ws[j], **kw), 1e-5)
    counts = primitive_counts(nested, xs, ws)
    assert counts[FWD] == 1, counts
    _assert_no_loops(counts)

    xss = random_array(rng, (2, B) + x_shape, F32)
    double = jax.vmap(jax.vmap(lambda x: conv(x, ws[0])))
    assert_close(double(xss), jnp.stack([jnp.stack([lax_conv1d(xss[j, i], ws[0], **kw) for i in range(B)])
                                         for j in range(2)]), 1e-5)
    counts = primitive_counts(double, xss)
    assert counts[FWD] == 1, counts
    _assert_no_loops(counts)


@pytest.mark.parametrize("in_axes", [(0, None, None), (None, 0, None), (None, None, 0), (0, 0, 0), (2, 1, None)],
                         ids=str)
@pytest.mark.parametrize("groups", [1, 2])
def test_vmap_over_an_empty_axis(in_axes, groups, rng):
    """A vmapped axis of size 0 is legal in JAX; results and gradients are empty, with lax's shapes."""
    layout = "NCW"
    x_shape, w_shape = shapes(layout, 2, 4, 16, 6, 4 // groups, 3)

    def empty_batch(shape, axis):
        if axis is None:
            return random_array(rng, shape, F32)
        full = list(shape)
        full.insert(axis, 0)
        return jnp.zeros(full, F32)

    x, w, b = empty_batch(x_shape, in_axes[0]), empty_batch(w_shape, in_axes[1]), empty_batch((6,), in_axes[2])
    kw = dict(stride=2, padding="SAME", groups=groups, layout=layout)
    y = jax.vmap(lambda x, w, b: dilated_conv1d(x, w, b, **kw), in_axes=in_axes)(x, w, b)
    ref = jax.eval_shape(jax.vmap(lambda x, w, b: lax_conv1d(x, w, b, **kw), in_axes=in_axes), x, w, b)
    assert (y.shape, y.dtype) == (ref.shape, ref.dtype)

    def loss(x, w, b):
        return jnp.sum(jax.vmap(lambda x, w, b: dilated_conv1d(x, w, b, **kw), in_axes=in_axes)(x, w, b) ** 2)

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
    for g, a, axis in zip(grads, (x, w, b), in_axes):
        assert g.shape == a.shape
        if axis is None:  # an unbatched operand gets the sum over zero examples
            np.testing.assert_array_equal(np.asarray(g), 0)
    per_example = jax.vmap(jax.grad(lambda x, w, b: jnp.sum(dilated_conv1d(x, w, b, **kw)), argnums=(0, 1, 2)),
                           in_axes=in_axes)(x, w, b)
    for g, a, axis in zip(per_example, (x, w, b), in_axes):
        assert g.shape == (0,) + _unbatched_shape(a.shape, axis)


def _unbatched_shape(shape, axis):
    return shape if axis is None else shape[:axis] + shape[axis + 1:]


# ---- vmap with grad ---------------------------------------------------------------------------------------


def _loss(conv, x, w, b, **kw):
    """Per-example loss: x is one example, (C, L) for NCW or (L, C) for NWC."""
    return jnp.sum(jnp.sin(conv(x[None], w, b, **kw)))


@pytest.mark.parametrize("layout,groups", [("NCW", 1), ("NWC", 2), ("NCW", 4)])
def test_per_example_gradients(layout, groups, rng):
    x_shape, w_shape = shapes(layout, B, 4, 30, 8, 4 // groups, 4)
    x = random_array(rng, x_shape, F32)
    w = random_array(rng, w_shape, F32)
    b = random_array(rng, (8,), F32)
    kw = dict(stride=2, dilation=3, padding="SAME", groups=groups, layout=layout)

    per_example = jax.vmap(jax.grad(lambda x, w, b: _loss(dilated_conv1d, x, w, b, precision="highest", **kw),
                                    argnums=(0, 1, 2)), in_axes=(0, None, None))
    grads = per_example(x, w, b)
    for i in range(B):
        ref = jax.grad(lambda x, w, b: _loss(lax_conv1d, x, w, b, **kw), argnums=(0, 1, 2))(x[i], w, b)
        for name, g, r in zip(("dx", "dw", "db"), grads, ref):
            assert_close(g[i], r, 1e-5, f"{name} of example {i}")
    counts = primitive_counts(per_example, x, w, b)
    assert counts[BWD] == 1 and counts[DGRAD] == 0 and counts[WGRAD] == 0, counts
    _assert_no_loops(counts)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_vmap_of_grad_over_an_ensemble(layout, rng):
    """x, w and bias all batched: every backward kernel sees batched operands."""
    x_shape, w_shape = shapes(layout, 2, 4, 25, 6, 2, 3)
    xs = _with_batch_axis(rng, x_shape, 0)
    ws = _with_batch_axis(rng, w_shape, 0)
    bs = _with_batch_axis(rng, (6,), 0)
    kw = dict(stride=1, dilation=2, padding=(3, 1), groups=2, layout=layout)

    def loss(conv, x, w, b, **extra):
        return jnp.sum(jnp.sin(conv(x, w, b, **kw, **extra)))

    grads = jax.vmap(jax.grad(lambda *a: loss(dilated_conv1d, *a, precision="highest"), argnums=(0, 1, 2)))(
        xs, ws, bs)
    for i in range(B):
        ref = jax.grad(lambda *a: loss(lax_conv1d, *a), argnums=(0, 1, 2))(xs[i], ws[i], bs[i])
        for name, g, r in zip(("dx", "dw", "db"), grads, ref):
            assert_close(g[i], r, 1e-5, f"{name} of member {i}")
    counts = primitive_counts(jax.vmap(jax.grad(lambda *a: loss(dilated_conv1d, *a), argnums=(0, 1, 2))),
                              xs, ws, bs)
    assert counts[FWD] == 1 and counts[BWD] == 1 and counts[DGRAD] == 0 and counts[WGRAD] == 0, counts
    _assert_no_loops(counts)


@pytest.mark.parametrize("in_axes", [(0, None, None), (None, 0, 0), (2, 0, None)], ids=str)
def test_grad_of_vmap(in_axes, rng):
    layout = "NWC"
    x_shape, w_shape = shapes(layout, 2, 4, 21, 4, 1, 5)
    x = _with_batch_axis(rng, x_shape, in_axes[0])
    w = _with_batch_axis(rng, w_shape, in_axes[1])
    b = _with_batch_axis(rng, (4,), in_axes[2])
    kw = dict(stride=2, padding="SAME_LOWER", groups=4, layout=layout)

    def total(conv, x, w, b, **extra):
        ys = jax.vmap(lambda x, w, b: conv(x, w, b, **kw, **extra), in_axes=in_axes)(x, w, b)
        return jnp.sum(jnp.cos(ys))

    grads = jax.grad(lambda *a: total(dilated_conv1d, *a, precision="highest"), argnums=(0, 1, 2))(x, w, b)

    def lax_total(x, w, b):
        return sum(jnp.sum(jnp.cos(lax_conv1d(_slice(x, in_axes[0], i), _slice(w, in_axes[1], i),
                                               _slice(b, in_axes[2], i), **kw))) for i in range(B))

    for name, g, r in zip(("dx", "dw", "db"), grads, jax.grad(lax_total, argnums=(0, 1, 2))(x, w, b)):
        assert_close(g, r, 1e-5, name)


def test_vmap_of_second_order(rng):
    """vmap over examples of a Hessian-vector product in x."""
    x = random_array(rng, (B, 3, 16), jnp.float64)
    w = random_array(rng, (4, 3, 3), jnp.float64)
    v = random_array(rng, (B, 3, 16), jnp.float64)

    def hvp(conv, x, v):
        g = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x[None], w, None, dilation=2))))
        return jax.grad(lambda x: jnp.vdot(g(x), v))(x)

    ours = jax.vmap(lambda x, v: hvp(dilated_conv1d, x, v))(x, v)
    for i in range(B):
        assert_close(ours[i], hvp(lax_conv1d, x[i], v[i]), 1e-12)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_vmap_half_types_with_float32_output(dtype, rng):
    x = _with_batch_axis(rng, (2, 20, 4), 1, dtype)
    w = random_array(rng, (3, 4, 6), dtype)
    y = jax.vmap(lambda x: dilated_conv1d(x, w, layout="NWC", preferred_element_type=jnp.float32),
                 in_axes=1)(x)
    assert y.dtype == jnp.float32
    for i in range(B):
        assert_close(y[i], lax_conv1d(x[:, i], w, layout="NWC", preferred_element_type=jnp.float32), 1e-5)


@pytest.mark.parametrize("argnum", [0, 1])
@pytest.mark.parametrize("in_axes", [(None, 0), (0, None), (0, 0)], ids=str)
@pytest.mark.parametrize("layout,groups", [("NCW", 1), ("NWC", 2)])
def test_vmap_of_grad_with_an_unbatched_cotangent(argnum, in_axes, layout, groups, rng):
    """d(sum(y))/dy is the same for every example, so the backward kernels see an unbatched dy next to a
    batched x or w."""
    x_shape, w_shape = shapes(layout, 2, 4, 20, 6, 4 // groups, 3)
    x = _with_batch_axis(rng, x_shape, in_axes[0], jnp.float64)
    w = _with_batch_axis(rng, w_shape, in_axes[1], jnp.float64)
    kw = dict(stride=2, padding="SAME", groups=groups, layout=layout)

    def per_example(conv):
        return jax.vmap(jax.grad(lambda x, w: jnp.sum(conv(x, w, None, **kw)), argnums=argnum), in_axes=in_axes)

    assert_close(per_example(dilated_conv1d)(x, w), per_example(lax_conv1d)(x, w), 1e-12)


# ---- inside other transformations -------------------------------------------------------------------------


def _residual_stack(conv, x, ws):
    """A WaveNet-like stack: lax.scan over layers of causal dilated convolutions with residual connections."""
    def layer(h, w):
        return h + jnp.tanh(conv(h, w, None, padding="CAUSAL", dilation=2)), None

    h, _ = jax.lax.scan(layer, x, ws)
    return jnp.sum(h ** 2)


@pytest.mark.parametrize("remat", [False, True])
def test_grad_through_scan_and_checkpoint(remat, rng):
    x = random_array(rng, (2, 8, 40), jnp.float64)
    ws = random_array(rng, (4, 8, 8, 2), jnp.float64, scale=0.3)

    def loss(conv):
        fn = lambda x, ws: _residual_stack(conv, x, ws)  # noqa: E731
        return jax.checkpoint(fn) if remat else fn

    grads = jax.jit(jax.grad(loss(dilated_conv1d), argnums=(0, 1)))(x, ws)
    for g, r in zip(grads, jax.grad(loss(lax_conv1d), argnums=(0, 1))(x, ws)):
        assert_close(g, r, 1e-12)
