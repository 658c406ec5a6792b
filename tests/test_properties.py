"""Property tests over random shapes and parameters: shapes always agree with lax (including empty results,
zero batch and zero length), values agree with the float64 reference, gradients too, and illegal crops are
refused exactly when the padding is more negative than the input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from conv_reference import (BF16, F32, F64, assert_close, float64_reference, float64_vjp_reference,
                            lax_conv1d, random_array, random_inputs, shapes, tolerance)
from jax_conv1d import dilated_conv1d

# Each example compiles a fresh convolution, so examples are few; derandomized so CI time is stable.
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _crop_is_legal(length: int, lo: int, hi: int) -> bool:
    return -lo <= length and -hi <= length and length + lo + hi >= 0


@st.composite
def paddings(draw, length: int):
    form = draw(st.sampled_from(["string", "int", "pair"]))
    if form == "string":
        return draw(st.sampled_from(["VALID", "SAME", "SAME_LOWER", "CAUSAL"]))
    if form == "int":
        return draw(st.integers(-(length // 2), 6))
    return (draw(st.integers(-length, 8)), draw(st.integers(-length, 8)))


@st.composite
def conv_configs(draw, max_length: int = 40, dtypes=(F32, F64)):
    # Zero-sized dimensions are legal but would dominate if every size could shrink to 0; one in four
    # examples gets exactly one of them.
    zero = draw(st.sampled_from(["none"] * 9 + ["batch", "in_ch", "length"]))
    groups = draw(st.integers(1, 3))
    length = 0 if zero == "length" else draw(st.integers(1, max_length))
    padding = draw(paddings(length))
    if isinstance(padding, tuple):
        assume(_crop_is_legal(length, *padding))
    return dict(
        layout=draw(st.sampled_from(["NCW", "NWC"])),
        dtype=draw(st.sampled_from(dtypes)),
        batch=0 if zero == "batch" else draw(st.integers(1, 3)),
        in_ch=0 if zero == "in_ch" else groups * draw(st.integers(1, 3)),
        out_ch=groups * draw(st.integers(1, 3)),
        groups=groups,
        length=length,
        ksize=draw(st.integers(1, 8)),
        stride=draw(st.integers(1, 5)),
        dilation=draw(st.integers(1, 4)),
        padding=padding,
        bias=draw(st.booleans()),
    )


def _record_edges(x_shape, y_shape):
    """Lets `pytest --hypothesis-show-statistics` show how often the edge cases came up."""
    if 0 in x_shape:
        event("empty input")
    if 0 in y_shape:
        event("empty output")


def _inputs(cfg, seed=0):
    return random_inputs(np.random.default_rng(seed), layout=cfg["layout"], dtype=cfg["dtype"],
                         batch=cfg["batch"], in_ch=cfg["in_ch"], length=cfg["length"], out_ch=cfg["out_ch"],
                         groups=cfg["groups"], ksize=cfg["ksize"], bias=cfg["bias"])


def _conv_kwargs(cfg):
    return {k: cfg[k] for k in ("stride", "dilation", "padding", "groups", "layout")}


@settings(max_examples=60, **SETTINGS)
@given(cfg=conv_configs(dtypes=(F32, F64, BF16)))
def test_forward_matches_lax_on_random_shapes(cfg):
    x, w, b = _inputs(cfg)
    kw = _conv_kwargs(cfg)
    y = dilated_conv1d(x, w, b, precision="highest", **kw)
    ref = jax.eval_shape(lambda: lax_conv1d(x, w, b, **kw))
    assert (y.shape, y.dtype) == (ref.shape, ref.dtype)
    _record_edges(x.shape, y.shape)
    assert_close(y, float64_reference(x, w, b, **kw), tolerance(cfg["dtype"], "highest"))


@settings(max_examples=25, **SETTINGS)
@given(cfg=conv_configs(max_length=16, dtypes=(F64,)))
def test_gradients_match_lax_on_random_shapes(cfg):
    x, w, b = _inputs(cfg)
    kw = _conv_kwargs(cfg)
    out = jax.eval_shape(lambda: lax_conv1d(x, w, b, **kw))
    ct = random_array(np.random.default_rng(1), out.shape, out.dtype)
    if b is None:
        _, vjp = jax.vjp(lambda x, w: dilated_conv1d(x, w, **kw), x, w)
        grads = (*vjp(ct), None)
    else:
        _, vjp = jax.vjp(lambda x, w, b: dilated_conv1d(x, w, b, **kw), x, w, b)
        grads = vjp(ct)
    for name, g, g64, arg in zip(("dx", "dw", "dbias"), grads, float64_vjp_reference(x, w, b, ct, **kw), (x, w, b)):
        if arg is not None:
            assert g.shape == arg.shape, name
            assert_close(g, g64, 1e-12, name)


@settings(max_examples=15, **SETTINGS)
@given(cfg=conv_configs(max_length=16, dtypes=(F32,)), axis=st.integers(-4, 3), size=st.integers(1, 3))
def test_vmap_over_x_matches_per_example(cfg, axis, size):
    x, w, b = _inputs(cfg)
    xs = jnp.stack([x * (i + 1) for i in range(size)], axis=axis)
    kw = _conv_kwargs(cfg)
    ys = jax.vmap(lambda x: dilated_conv1d(x, w, b, precision="highest", **kw), in_axes=axis)(xs)
    for i in range(size):
        assert_close(ys[i], lax_conv1d(jnp.take(xs, i, axis=axis), w, b, **kw), 1e-5)


@st.composite
def shape_problems(draw):
    """Sizes from empty to far beyond memory, with pads and crops scaled to the length (some illegal)."""
    length = draw(st.one_of(st.integers(0, 64), st.integers(0, 2 ** 34)))
    big = length + 2 ** 20
    # one side's crop near the length, where legal turns illegal, or anything in range
    side = st.one_of(st.integers(-length - 2, -length + 2), st.integers(-length - 2, big))
    padding = draw(st.one_of(
        st.sampled_from(["VALID", "SAME", "SAME_LOWER", "CAUSAL"]),
        st.integers(-(length // 2) - 2, big),
        st.tuples(side, side)))
    return dict(layout=draw(st.sampled_from(["NCW", "NWC"])), batch=draw(st.integers(0, 2 ** 20)),
                cg=draw(st.integers(0, 64)), og=draw(st.integers(1, 64)), groups=draw(st.integers(1, 64)),
                length=length, ksize=draw(st.integers(1, 64)), stride=draw(st.integers(1, 1000)),
                dilation=draw(st.integers(1, 1000)), padding=padding,
                dtype=draw(st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64])))


# Shape arithmetic alone: huge sizes cost nothing, so this covers the whole range of lax's rules.
@settings(max_examples=300, **SETTINGS)
@given(p=shape_problems())
def test_output_shape_matches_lax_and_crops_are_checked(p):
    x_shape, w_shape = shapes(p["layout"], p["batch"], p["cg"] * p["groups"], p["length"], p["og"] * p["groups"],
                              p["cg"], p["ksize"])
    x = jax.ShapeDtypeStruct(x_shape, p["dtype"])
    w = jax.ShapeDtypeStruct(w_shape, p["dtype"])
    kw = dict(stride=p["stride"], dilation=p["dilation"], padding=p["padding"], groups=p["groups"],
              layout=p["layout"])

    def ours():
        return jax.eval_shape(lambda x, w: dilated_conv1d(x, w, **kw), x, w)

    padding = p["padding"]
    pair = (padding, padding) if isinstance(padding, int) else padding
    if isinstance(pair, tuple) and not _crop_is_legal(p["length"], *pair):
        event("illegal crop")
        with pytest.raises(ValueError, match="padding"):
            ours()
        return
    out = ours()
    ref = jax.eval_shape(lambda x, w: lax_conv1d(x, w, **kw), x, w)
    assert (out.shape, out.dtype) == (ref.shape, ref.dtype)
    if 0 in out.shape:
        event("empty output")
