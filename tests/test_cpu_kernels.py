"""The CPU kernels against a float64 lax reference: a seeded random sweep over shapes, strides, dilations,
paddings (negative too), groups, layouts and dtypes, for the forward pass and both gradients, plus empty
sizes and run-to-run bitwise determinism.

Errors are judged against the magnitude of the sum being formed, |x| * |w| (the same convolution on
absolute values), so a tolerance means "this many units of rounding in the accumulation type", independent
of cancellation in the data.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax import lax

jax.config.update("jax_platforms", "cpu")

from jax_conv1d import dilated_conv1d  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype("float16")
F32 = np.dtype("float32")
F64 = np.dtype("float64")

# Relative to |x|*|w|: the output's rounding to its storage type plus float32 (float64) accumulation.
TOL = {F64: 1e-12, F32: 2e-6, BF16: 1e-2, F16: 2e-3}


def _x64():
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older spelling

    return enable_x64()


def _resolve_pad(padding, k, dilation):
    if padding == "CAUSAL":
        return [((k - 1) * dilation, 0)]
    if isinstance(padding, tuple):
        return [padding]
    return padding


def _lax_conv(x, w, bias, *, stride, dilation, padding, groups, layout):
    dn = ("NCH", "OIH", "NCH") if layout == "NCW" else ("NHC", "HIO", "NHC")
    k = w.shape[2] if layout == "NCW" else w.shape[0]
    y = lax.conv_general_dilated(x, w, (stride,), _resolve_pad(padding, k, dilation), rhs_dilation=(dilation,),
                                 dimension_numbers=dn, feature_group_count=groups,
                                 precision=lax.Precision.HIGHEST)
    if bias is not None:
        y = y + (bias[None, :, None] if layout == "NCW" else bias[None, None, :])
    return y


def _reference(x, w, bias, g, kw):
    """y, dx, dw of the float64 lax convolution, and the same for |x|, |w|, |g| (the error scale)."""
    with _x64():
        args = [jnp.asarray(np.asarray(a, np.float64)) for a in (x, w, g)]
        b = None if bias is None else jnp.asarray(np.asarray(bias, np.float64))

        def run(x_, w_, g_, b_):
            y, vjp = jax.vjp(lambda a, c: _lax_conv(a, c, b_, **kw), x_, w_)
            dx, dw = vjp(g_)
            return np.asarray(y), np.asarray(dx), np.asarray(dw)

        exact = run(*args, b)
        scale = run(*(jnp.abs(a) for a in args), None if b is None else jnp.abs(b))
    return exact, scale


def _ours(x, w, bias, g, kw, out_dtype=None):
    def f(x_, w_):
        return dilated_conv1d(x_, w_, bias, preferred_element_type=out_dtype, **kw)

    @jax.jit
    def run(x_, w_, g_):
        y, vjp = jax.vjp(f, x_, w_)
        dx, dw = vjp(g_.astype(y.dtype))
        return y, dx, dw

    return [np.asarray(a) for a in run(x, w, g)]


def _check(name, got, want, scale, dtype):
    assert got.shape == want.shape, (name, got.shape, want.shape)
    got = np.asarray(got, np.float64)
    err = np.abs(got - want)
    bound = TOL[dtype] * scale + 1e-30
    worst = np.max(err / bound) if err.size else 0.0
    assert worst <= 1.0, f"{name}: error {worst:.3g}x the tolerance (max abs err {err.max():.3g})"


def _random_inputs(rng, x_shape, w_shape, o, dtype, with_bias):
    def draw(shape):
        return np.asarray(rng.standard_normal(shape), np.float32).astype(dtype)

    x = draw(x_shape)
    w = draw(w_shape)
    bias = draw((o,)) if with_bias else None
    return x, w, bias


def _shapes(n, c, o, length, k, groups, layout):
    if layout == "NCW":
        return (n, c, length), (o, c // groups, k)
    return (n, length, c), (k, c // groups, o)


def _run_case(rng, *, n, c, o, length, k, stride, dilation, padding, groups, layout, dtype, with_bias,
              out_dtype=None):
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, layout=layout)
    x_shape, w_shape = _shapes(n, c, o, length, k, groups, layout)
    x, w, bias = _random_inputs(rng, x_shape, w_shape, o, dtype, with_bias)
    y_shape = jax.eval_shape(lambda a, b: dilated_conv1d(a, b, **kw), jax.ShapeDtypeStruct(x_shape, F32),
                             jax.ShapeDtypeStruct(w_shape, F32)).shape
    g = np.asarray(rng.standard_normal(y_shape), np.float32).astype(dtype)
    (y_ref, dx_ref, dw_ref), (y_s, dx_s, dw_s) = _reference(x, w, bias, g, kw)
    with _x64() if dtype == F64 else contextlib.nullcontext():
        y, dx, dw = _ours(x, w, bias, g, kw, out_dtype)
    assert y.dtype == (out_dtype or dtype) and dx.dtype == dtype and dw.dtype == dtype
    _check("y", y, y_ref, y_s, np.dtype(out_dtype or dtype))
    _check("dx", dx, dx_ref, dx_s, dtype)
    _check("dw", dw, dw_ref, dw_s, dtype)


def _random_case(seed):
    rng = np.random.default_rng(seed)
    dtype = [F32, F32, F64, BF16, F16][seed % 5]
    layout = ["NCW", "NWC"][(seed // 5) % 2]
    kind = rng.choice(["dense", "dense", "grouped", "depthwise"])
    if kind == "depthwise":
        groups = int(rng.choice([1, 3, 8, 33]))
        c = o = groups
    elif kind == "grouped":
        groups = int(rng.choice([2, 3, 4]))
        c = groups * int(rng.integers(1, 6))
        o = groups * int(rng.integers(1, 6))
    else:
        groups = 1
        c = int(rng.choice([1, 2, 3, 7, 16, 37]))
        o = int(rng.choice([1, 2, 5, 16, 33, 64]))
    k = int(rng.integers(1, 6))
    stride = int(rng.integers(1, 5))
    dilation = int(rng.integers(1, 6))
    length = int(rng.choice([1, 2, 7, 31, 64, 200, 513]))
    span = (k - 1) * dilation + 1
    pad_kind = rng.choice(["VALID", "SAME", "CAUSAL", "pair"])
    if pad_kind == "pair":
        lo = int(rng.integers(-min(length, 4), 7))
        hi = int(rng.integers(-min(length, 4), 7))
        if length + lo + hi < 0:
            lo = hi = 0
        padding = (lo, hi)
    else:
        padding = str(pad_kind)
    if padding == "VALID" and length < span:
        padding = "SAME"  # keep most cases non-empty; empty outputs have their own test
    n = int(rng.integers(1, 4))
    return dict(n=n, c=c, o=o, length=length, k=k, stride=stride, dilation=dilation, padding=padding,
                groups=groups, layout=layout, dtype=dtype, with_bias=bool(rng.integers(0, 2)))


@pytest.mark.parametrize("seed", range(60))
def test_random_sweep(seed):
    case = _random_case(seed)
    _run_case(np.random.default_rng(1000 + seed), **case)


# Shapes large enough to be split across threads and to cross the kernels' tile and reduction-block edges.
LARGE = [
    dict(n=2, c=64, o=128, length=3001, k=3, stride=3, dilation=4, padding="VALID", groups=1),  # headline
    dict(n=1, c=96, o=40, length=1500, k=5, stride=1, dilation=2, padding="SAME", groups=1),  # r > one block
    dict(n=2, c=32, o=48, length=900, k=2, stride=1, dilation=64, padding="CAUSAL", groups=1),
    dict(n=2, c=64, o=64, length=700, k=7, stride=1, dilation=8, padding="SAME", groups=64),  # depthwise
    dict(n=1, c=48, o=96, length=1111, k=3, stride=2, dilation=3, padding=(-5, 9), groups=4),
    dict(n=3, c=20, o=30, length=2000, k=4, stride=5, dilation=1, padding=(7, -3), groups=1),
]


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("dtype", [F32, F64, BF16, F16], ids=str)
@pytest.mark.parametrize("case", range(len(LARGE)))
def test_large(case, dtype, layout):
    _run_case(np.random.default_rng(case), **LARGE[case], layout=layout, dtype=dtype, with_bias=case % 2 == 0)


# Lengths around the kernels' row panels (14 or 6), vector panels (32 or 16 floats) and task tiles, so that
# some panel ends exactly at, one before or one past the end of a sequence; three batch rows, so a read
# past the end of one row would pick up the next one's data instead of failing quietly.
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("stride", [1, 3])
@pytest.mark.parametrize("length", [126, 127, 139, 140, 141, 255, 257, 337])
def test_tile_edges(length, stride, layout):
    _run_case(np.random.default_rng(length + stride), n=3, c=16, o=40, length=length, k=3, stride=stride,
              dilation=2, padding="SAME", groups=1, layout=layout, dtype=F32, with_bias=False)


# Many short rows: tiles then cover several whole batch rows laid end to end (and panels straddle rows).
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("length", [5, 16, 23])
def test_many_short_rows(length, stride, layout):
    _run_case(np.random.default_rng(length * 7 + stride), n=37, c=24, o=36, length=length, k=3, stride=stride,
              dilation=2, padding="SAME", groups=1, layout=layout, dtype=F32, with_bias=True)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_half_inputs_float32_output(dtype, layout):
    _run_case(np.random.default_rng(7), n=2, c=24, o=40, length=300, k=3, stride=2, dilation=3,
              padding="SAME", groups=2, layout=layout, dtype=dtype, with_bias=True, out_dtype=F32)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("dims", [
    dict(n=0, c=4, o=6, length=20),  # no batch
    dict(n=2, c=4, o=6, length=0),  # no input positions
    dict(n=2, c=4, o=6, length=3),  # the kernel's span does not fit: no output positions
    dict(n=2, c=4, o=0, length=20),  # no output channels
])
def test_empty_sizes(dims, layout):
    kw = dict(stride=2, dilation=3, padding="VALID", groups=1, layout=layout)
    x_shape, w_shape = _shapes(dims["n"], dims["c"], dims["o"], dims["length"], 3, 1, layout)
    x = jnp.ones(x_shape, jnp.float32)
    w = jnp.ones(w_shape, jnp.float32)
    y, vjp = jax.vjp(lambda a, b: dilated_conv1d(a, b, **kw), x, w)
    dx, dw = vjp(jnp.ones_like(y))
    y_ref, vjp_ref = jax.vjp(lambda a, b: _lax_conv(a, b, None, **kw), x, w)
    dx_ref, dw_ref = vjp_ref(jnp.ones_like(y_ref))
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # all zeros or empty


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_no_input_channels_gives_bias(layout):
    x_shape, w_shape = _shapes(2, 0, 5, 30, 3, 1, layout)
    bias = jnp.arange(5, dtype=jnp.float32)
    y = dilated_conv1d(jnp.ones(x_shape, jnp.float32), jnp.ones(w_shape, jnp.float32), bias, layout=layout)
    want = np.broadcast_to(np.arange(5, dtype=np.float32)[None, :, None] if layout == "NCW"
                           else np.arange(5, dtype=np.float32)[None, None, :], y.shape)
    np.testing.assert_array_equal(np.asarray(y), want)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("groups", [1, 64])
def test_bitwise_deterministic(layout, groups):
    """Big enough to run on every thread; repeated runs must agree bit for bit."""
    rng = np.random.default_rng(3)
    kw = dict(stride=1 if groups > 1 else 3, dilation=4, padding="SAME", groups=groups, layout=layout)
    x_shape, w_shape = _shapes(4, 64, 64 if groups > 1 else 128, 20000, 3, groups, layout)
    x, w, _ = _random_inputs(rng, x_shape, w_shape, 0, F32, False)

    @jax.jit
    def run(x_, w_):
        y, vjp = jax.vjp(lambda a, b: dilated_conv1d(a, b, **kw), x_, w_)
        return (y, *vjp(jnp.sin(y)))

    first = [np.asarray(a) for a in run(x, w)]
    for _ in range(3):
        again = [np.asarray(a) for a in run(x, w)]
        for a, b in zip(first, again):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


_THREADS_SCRIPT = textwrap.dedent("""
    import hashlib, jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_platforms", "cpu")
    from jax_conv1d import dilated_conv1d
    h = hashlib.sha256()
    cases = [  # (x shape, w shape, kwargs): dense, grouped, depthwise; both layouts; several wgrad chunks
        ((3, 48, 9000), (40, 48, 3), dict(stride=2, dilation=3, padding="SAME", layout="NCW")),
        ((3, 9000, 48), (3, 48, 40), dict(stride=2, dilation=3, padding="SAME", layout="NWC")),
        ((2, 6000, 64), (5, 16, 64), dict(padding="CAUSAL", groups=4, layout="NWC")),
        ((2, 64, 6000), (64, 1, 7), dict(dilation=4, padding="SAME", groups=64, layout="NCW")),
        ((64, 16, 200), (3, 200, 300), dict(padding="SAME", layout="NWC")),  # short rows
    ]
    for i, (xs, ws, kw) in enumerate(cases):
        x = jax.random.normal(jax.random.PRNGKey(i), xs)
        w = jax.random.normal(jax.random.PRNGKey(100 + i), ws)
        y, vjp = jax.vjp(lambda a, b: dilated_conv1d(a, b, **kw), x, w)
        for a in (y, *vjp(jnp.cos(y))):
            h.update(np.asarray(a).tobytes())
        # with a bias: the combined backward call, its bias gradient included
        bias = jax.random.normal(jax.random.PRNGKey(200 + i), (ws[0] if kw["layout"] == "NCW" else ws[2],))
        y, vjp = jax.vjp(lambda a, b, c: dilated_conv1d(a, b, c, **kw), x, w, bias)
        for a in vjp(jnp.cos(y)):
            h.update(np.asarray(a).tobytes())
    print(h.hexdigest())
""")


def test_results_do_not_depend_on_thread_count(tmp_path):
    """Work is split differently for different thread counts; every result must still be bit-identical."""
    digests = set()
    for threads in ("1", "2", "3"):
        env = dict(os.environ, JAX_CONV1D_CPU_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1, digests


def test_long_weight_gradient_reduction_is_accurate():
    """dw sums N*Lout ~ 10^6 terms; float32 running sums would drift far past this bound."""
    rng = np.random.default_rng(11)
    kw = dict(stride=1, dilation=1, padding="VALID", groups=1, layout="NWC")
    n, c, o, length, k = 4, 3, 2, 250000, 2
    x = (np.abs(rng.standard_normal((n, length, c))) + 1).astype(np.float32)
    w = rng.standard_normal((k, c, o)).astype(np.float32)
    g = (np.abs(rng.standard_normal((n, length - k + 1, o))) + 1).astype(np.float32)
    (_, _, dw_ref), (_, _, dw_s) = _reference(x, w, None, g, kw)
    _, _, dw = _ours(x, w, None, g, kw)
    err = np.max(np.abs(dw.astype(np.float64) - dw_ref) / dw_s)
    assert err < 1e-6, err
