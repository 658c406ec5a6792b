"""Forward results against lax.conv_general_dilated: the configuration sweep, precision, output types,
legal edge cases, NaN/Inf, determinism, and that the CPU really runs the FFI kernel."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from conv_reference import (BF16, EDGE_CASES, F16, F32, F64, HIGHEST, SWEEP_AXES, assert_close,
                            assert_run_to_run_bitwise_equal, conv_eqns, covered_values, float64_reference,
                            float64_vjp_reference, lax_conv1d, random_array, random_inputs, shapes, sweep_cases,
                            tolerance)
from jax_conv1d import dilated_conv1d

CASES = sweep_cases()


# ---- the sweep --------------------------------------------------------------------------------------------


def test_sweep_covers_every_value_and_pair():
    """The sweep is small only because it is pairwise; check that it really is."""
    seen = covered_values(CASES)
    for axis, values in SWEEP_AXES.items():
        missing = [v for v in values if repr(v) not in seen[axis]]
        assert not missing, f"sweep never uses {axis}={missing}"
    names = list(SWEEP_AXES)
    for a, b in itertools.combinations(names, 2):
        pairs = {(repr(getattr(c, a)), repr(getattr(c, b))) for c in CASES}
        for va, vb in itertools.product(SWEEP_AXES[a], SWEEP_AXES[b]):
            assert (repr(va), repr(vb)) in pairs, f"sweep never combines {a}={va!r} with {b}={vb!r}"
    assert len(CASES) < 150  # keeps the suite within its time budget


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_sweep(case):
    x, w, b = case.inputs()
    kw = case.conv_kwargs()
    y = dilated_conv1d(x, w, b, precision=case.precision, **kw)
    ref = lax_conv1d(x, w, b, precision=HIGHEST, **kw)
    assert y.shape == ref.shape
    assert y.dtype == x.dtype
    tol = tolerance(case.dtype, case.precision)
    assert_close(y, ref, tol, "vs lax at HIGHEST")
    assert_close(y, float64_reference(x, w, b, **kw), tol, "vs float64 lax")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_extended_sweep_forward_and_gradients(seed):
    """Three more pairwise sweeps with other random sizes, forward and gradients against float64."""
    for case in sweep_cases(seed):
        x, w, b = case.inputs(seed)
        kw = case.conv_kwargs()
        tol = tolerance(case.dtype, case.precision)
        y, vjp = jax.vjp(lambda x, w: dilated_conv1d(x, w, b, precision=case.precision, **kw), x, w)
        assert_close(y, float64_reference(x, w, b, **kw), tol, f"forward of {case.id}")
        ct = random_array(np.random.default_rng(seed), y.shape, y.dtype)
        exact = float64_vjp_reference(x, w, b, ct, **kw)
        for name, g, g64 in zip(("dx", "dw"), vjp(ct), exact):
            assert_close(g, g64, tol, f"{name} of {case.id}")


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_forward_crosses_tiles_and_threads(layout, rng):
    """Long enough to span several CPU tiles and threads; output channels per group not a multiple of 16."""
    x, w, b = random_inputs(rng, layout=layout, dtype=F32, batch=3, in_ch=24, length=1000, out_ch=40,
                            groups=2, ksize=5, bias=True)
    kw = dict(stride=2, dilation=3, padding="SAME", groups=2, layout=layout)
    y = dilated_conv1d(x, w, b, precision="highest", **kw)
    assert_close(y, lax_conv1d(x, w, b, **kw), 1e-5)
    assert_close(y, float64_reference(x, w, b, **kw), 1e-5)


# ---- precision and output types ---------------------------------------------------------------------------

# (precision, the kernels' mode: 0 may use TF32 like lax's DEFAULT, 1 asks for float32 accuracy)
PRECISIONS = [
    (None, 0), ("default", 0), ("high", 1), ("highest", 1), ("DEFAULT", 0), ("HIGHEST", 1),
    ("fastest", 0), ("bfloat16", 0), ("tensorfloat32", 1), ("float32", 1),  # lax's aliases
    (lax.Precision.DEFAULT, 0), (lax.Precision.HIGH, 1), (lax.Precision.HIGHEST, 1),
    (("highest", "default"), 1), ((lax.Precision.DEFAULT, lax.Precision.DEFAULT), 0),
    ((lax.Precision.DEFAULT, lax.Precision.HIGH), 1),
    ([lax.Precision.HIGHEST, lax.Precision.HIGHEST], 1), (("default", "fastest"), 0),
]


def _as_lax_precision(precision):
    """lax spells precision strings in lower case and pairs as tuples; ours also takes upper case and lists."""
    if isinstance(precision, (tuple, list)):
        return tuple(_as_lax_precision(p) for p in precision)
    return precision.lower() if isinstance(precision, str) else precision


@pytest.mark.parametrize("precision,mode", PRECISIONS, ids=repr)
def test_precision_values(precision, mode, rng):
    x, w, b = random_inputs(rng, layout="NCW", dtype=F32, batch=2, in_ch=4, length=30, out_ch=6, groups=2,
                            ksize=3, bias=True)
    kw = dict(stride=2, dilation=2, padding="SAME", groups=2)
    y = dilated_conv1d(x, w, b, precision=precision, **kw)
    lax_precision = _as_lax_precision(precision)
    ref = lax_conv1d(x, w, b, precision=lax_precision, **kw)
    tol = tolerance(F32, None if mode == 0 else "highest")
    assert_close(y, ref, max(tol, tolerance(F32, lax_precision)), "vs lax at the same precision")
    assert_close(y, float64_reference(x, w, b, **kw), tol, "vs float64 lax")
    (eqn,) = conv_eqns(lambda x: dilated_conv1d(x, w, b, precision=precision, **kw), x)
    assert eqn.params["cfg"].precision == mode


# (input dtype, preferred_element_type)
OUTPUT_TYPES = [(BF16, F32), (F16, F32), (F32, F32), (F64, F64), (BF16, BF16), (F16, F16), (F32, BF16),
                (F32, F16), (F32, F64), (F64, F32), (BF16, None), (F32, None), ("bfloat16", "float32")]


@pytest.mark.parametrize("in_dtype,out_dtype", OUTPUT_TYPES, ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_preferred_element_type(in_dtype, out_dtype, layout, rng):
    in_dt = np.dtype(in_dtype)
    x, w, b = random_inputs(rng, layout=layout, dtype=in_dt, batch=2, in_ch=6, length=40, out_ch=4, groups=1,
                            ksize=5, bias=True)
    kw = dict(stride=1, dilation=2, padding="CAUSAL", layout=layout)
    y = dilated_conv1d(x, w, b, precision="highest", preferred_element_type=out_dtype, **kw)
    expected_dtype = in_dt if out_dtype is None else np.dtype(out_dtype)
    assert y.dtype == expected_dtype
    ref = jax.eval_shape(lambda: lax_conv1d(x, w, b, preferred_element_type=out_dtype, **kw))
    assert (y.shape, y.dtype) == (ref.shape, ref.dtype)
    # Accumulation is float32 (float64 for float64), so a wide output of half inputs is float32-accurate:
    # rounding to the input type first would show up as a ~1e-3 error here.
    acc = F64 if in_dt == F64 else F32
    tol = max(tolerance(acc, "highest"), tolerance(expected_dtype, "highest"))
    assert_close(y, float64_reference(x, w, b, **kw), tol)


# ---- legal edge cases -------------------------------------------------------------------------------------

@pytest.mark.parametrize("edge", EDGE_CASES, ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_edge_cases_match_lax(edge, layout, with_bias, rng):
    n, c, length, o, k, groups, stride, dilation, padding = edge
    x, w, b = random_inputs(rng, layout=layout, dtype=F32, batch=n, in_ch=c, length=length, out_ch=o,
                            groups=groups, ksize=k, bias=with_bias)
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, layout=layout)
    ref = lax_conv1d(x, w, b, **kw)
    y = dilated_conv1d(x, w, b, **kw)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert_close(y, float64_reference(x, w, b, **kw), tolerance(F32))
    y_jit = jax.jit(lambda x, w, b: dilated_conv1d(x, w, b, **kw))(x, w, b)
    np.testing.assert_array_equal(np.asarray(y_jit), np.asarray(y))
    shape = jax.eval_shape(lambda x, w, b: dilated_conv1d(x, w, b, **kw), x, w, b)
    assert (shape.shape, shape.dtype) == (ref.shape, ref.dtype)


def test_python_and_numpy_arguments(rng):
    """numpy arrays and numpy integer parameters are accepted like jax arrays and Python ints."""
    x = rng.standard_normal((2, 3, 20)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)
    b = rng.standard_normal((4,)).astype(np.float32)
    y = dilated_conv1d(x, w, b, stride=np.int64(2), dilation=np.int32(2), padding=(np.int64(1), 2),
                       groups=np.int64(1))
    ref = lax_conv1d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), stride=2, dilation=2, padding=(1, 2))
    assert_close(y, ref, tolerance(F32))


@pytest.mark.parametrize("padding", ["same", "valid", "causal", "Same_Lower"])
def test_padding_strings_are_case_insensitive(padding, rng):
    x, w, _ = random_inputs(rng, layout="NCW", dtype=F32, batch=1, in_ch=2, length=11, out_ch=3, groups=1,
                            ksize=4, bias=False)
    y = dilated_conv1d(x, w, padding=padding, stride=2)
    assert_close(y, lax_conv1d(x, w, padding=padding.upper(), stride=2), tolerance(F32))


# ---- NaN and Inf ------------------------------------------------------------------------------------------


def _assert_same_specials(y, ref):
    y, ref = np.asarray(y).astype(np.float64), np.asarray(ref).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref), err_msg="NaN positions differ from lax")
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(ref), err_msg="+Inf positions differ from lax")
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(ref), err_msg="-Inf positions differ from lax")
    finite = np.isfinite(ref)
    assert finite.any()
    return y[finite], ref[finite]


@pytest.mark.parametrize("dtype", [F32, BF16, F16, F64], ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("padding", ["SAME", "VALID", (-2, 3)], ids=str)
def test_nan_and_inf_in_x_propagate_like_lax(dtype, layout, padding, rng):
    x, w, b = random_inputs(rng, layout=layout, dtype=dtype, batch=2, in_ch=4, length=24, out_ch=6, groups=2,
                            ksize=3, bias=True)
    x = np.array(x)
    length_axis = 2 if layout == "NCW" else 1
    index = [slice(None)] * 3
    for pos, value in ((0, np.nan), (5, np.inf), (6, -np.inf), (15, np.inf), (23, np.nan)):
        index[length_axis] = pos
        index[0] = pos % 2
        x[tuple(index)] = value
    x = jnp.asarray(x)
    kw = dict(stride=1, dilation=2, padding=padding, groups=2, layout=layout)
    y = dilated_conv1d(x, w, b, **kw)
    ref = lax_conv1d(x, w, b, **kw)
    finite_y, finite_ref = _assert_same_specials(y, ref)
    assert_close(finite_y, finite_ref, tolerance(dtype))


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_nan_in_w_and_bias_propagate_like_lax(layout, rng):
    x, w, b = random_inputs(rng, layout=layout, dtype=F32, batch=2, in_ch=4, length=20, out_ch=4, groups=2,
                            ksize=3, bias=True)
    w = np.array(w)
    w[(0, 1, 1) if layout == "NCW" else (1, 1, 0)] = np.nan  # one tap of output channel 0
    b = np.array(b)
    b[3] = np.inf
    kw = dict(stride=2, dilation=3, padding="VALID", groups=2, layout=layout)
    y = dilated_conv1d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), **kw)
    ref = lax_conv1d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), **kw)
    finite_y, finite_ref = _assert_same_specials(y, ref)
    assert_close(finite_y, finite_ref, tolerance(F32))


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_half_rounding_matches_lax_for_every_bit_pattern(dtype, rng):
    """y = x[0]/2 + x[1] over all 65536 half bit patterns: both products are exact in float32, so any
    difference from lax lies in the rounding to the output type (ties, subnormals, overflow to Inf, NaN).
    The input gradient (dx = w * dy, one output channel) rounds the same way."""
    patterns = np.arange(2 ** 16, dtype=np.uint16).view(dtype)
    x = np.stack([patterns, rng.permutation(patterns)])[None]  # (1, 2, 65536), NCW
    x = jnp.asarray(x)
    w = jnp.asarray(np.array([[[0.5], [1.0]]], dtype))  # (O=1, C=2, K=1)
    y = dilated_conv1d(x, w)
    ref = lax_conv1d(x, w)
    finite_y, finite_ref = _assert_same_specials(y, ref)
    np.testing.assert_array_equal(finite_y, finite_ref)

    ct = jnp.asarray(patterns[None, None])  # (1, 1, 65536)
    (dx,) = jax.vjp(lambda x: dilated_conv1d(x, w), x)[1](ct)
    (dx_ref,) = jax.vjp(lambda x: lax_conv1d(x, w), x)[1](ct)
    finite_dx, finite_dx_ref = _assert_same_specials(dx, dx_ref)
    np.testing.assert_array_equal(finite_dx, finite_dx_ref)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_float16_overflow_gives_inf_like_lax(layout, rng):
    x, w, b = random_inputs(rng, layout=layout, dtype=F16, batch=2, in_ch=4, length=32, out_ch=4, groups=1,
                            ksize=3, bias=True)
    x = x * jnp.float16(30000.0)  # many outputs exceed 65504
    y = dilated_conv1d(x, w, b, layout=layout, padding="SAME")
    ref = lax_conv1d(x, w, b, layout=layout, padding="SAME")
    assert np.isinf(np.asarray(ref, np.float32)).any()
    finite_y, finite_ref = _assert_same_specials(y, ref)
    assert_close(finite_y, finite_ref, 1e-3)


# ---- the FFI path and determinism -------------------------------------------------------------------------


def _lowered_cpu_text(fn, *args) -> str:
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cpu",)).as_text()


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_cpu_lowers_to_ffi_custom_calls(layout):
    x_shape, w_shape = shapes(layout, 2, 4, 32, 6, 2, 3)
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    w = jax.ShapeDtypeStruct(w_shape, jnp.float32)
    b = jax.ShapeDtypeStruct((6,), jnp.float32)
    kw = dict(stride=2, dilation=2, padding="SAME", groups=2, layout=layout)

    fwd = _lowered_cpu_text(lambda x, w, b: dilated_conv1d(x, w, b, **kw), x, w, b)
    assert "jax_conv1d_fwd" in fwd
    assert "stablehlo.convolution" not in fwd  # no lax fallback on CPU
    assert "stablehlo.add" not in fwd  # the bias is added inside the kernel

    def loss(x, w, b):
        return jnp.sum(dilated_conv1d(x, w, b, **kw) ** 2)

    bwd = _lowered_cpu_text(jax.grad(loss, argnums=(0, 1, 2)), x, w, b)
    for target in ("jax_conv1d_fwd", "jax_conv1d_bwd"):  # both gradients and the bias's from one call
        assert target in bwd
    assert "jax_conv1d_dgrad" not in bwd and "jax_conv1d_wgrad" not in bwd
    assert "stablehlo.convolution" not in bwd


@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_cpu_run_to_run_bitwise_deterministic(layout, dtype, rng):
    assert_run_to_run_bitwise_equal(dilated_conv1d, layout, dtype, rng, jax.devices("cpu")[0])
