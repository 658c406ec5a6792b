"""jax_conv1d.conv_general_dilated: lax's signature and results; native for 1-D, lax for everything else."""

import inspect
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jax_conv1d
from jax_conv1d import conv_general_dilated

NCW = ("NCH", "OIH", "NCH")
NWC = ("NWC", "WIO", "NWC")


def _eqns(jaxpr):
    """Every equation of a jaxpr, those of nested jaxprs (jit, custom_vjp) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    yield from _eqns(sub)


def _primitives(fn, *args):
    return {str(e.primitive) for e in _eqns(jax.make_jaxpr(fn)(*args).jaxpr)}


def _operands(layout, n=2, c=6, length=19, o=4, k=3, groups=1, dtype=jnp.float32, seed=0):
    kx, kw = jax.random.split(jax.random.key(seed))
    channels_last = layout in ("NWC", NWC) or getattr(layout, "lhs_spec", None) == (0, 2, 1)
    x_shape = (n, length, c) if channels_last else (n, c, length)
    w_shape = (k, c // groups, o) if channels_last else (o, c // groups, k)
    return jax.random.normal(kx, x_shape, dtype), jax.random.normal(kw, w_shape, dtype)


def _lax_reference(x, w, strides, padding, dimension_numbers=None, **kwargs):
    """lax, with negative (cropping) padding done as a slice first.

    XLA:CPU in jax 0.10 returns a wrong last output (at times uninitialised memory) for a negative low pad
    together with a positive high pad, so lax alone is not a trustworthy reference there.
    """
    if not isinstance(padding, str):
        ((lo, hi),) = padding
        axis = lax.conv_dimension_numbers(x.shape, w.shape, dimension_numbers).lhs_spec[2]
        x = lax.slice_in_dim(x, max(-lo, 0), x.shape[axis] - max(-hi, 0), axis=axis)
        padding = [(max(lo, 0), max(hi, 0))]
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dimension_numbers, **kwargs)


NATIVE_CASES = [
    # dimension_numbers, strides, padding, rhs_dilation, groups, kernel
    (None, (1,), "SAME", None, 1, 3),
    (NCW, (2,), "same", (2,), 2, 4),
    (NWC, (1,), "VALID", (3,), 1, 3),
    (NWC, (3,), "SAME_LOWER", (1,), 3, 2),
    (lax.ConvDimensionNumbers((0, 2, 1), (2, 1, 0), (0, 2, 1)), (2,), [(2, 1)], (2,), 6, 3),
    (NWC, (1,), ((0, 3),), None, 1, 5),
    (None, (2,), [(-1, 2)], (1,), 1, 3),
    (NWC, (1,), [(0, 0)], (1,), 1, 1),
]


@pytest.mark.parametrize("dnums,strides,padding,rhs_dilation,groups,k", NATIVE_CASES)
def test_native_cases_match_lax(dnums, strides, padding, rhs_dilation, groups, k):
    x, w = _operands(dnums or "NCW", k=k, groups=groups, o=6 if groups > 1 else 4)
    kwargs = dict(rhs_dilation=rhs_dilation, dimension_numbers=dnums, feature_group_count=groups)

    def output_and_grads(conv):
        def loss(x, w):
            y = conv(x, w, strides, padding, **kwargs)
            return jnp.sum(jnp.sin(y)), y
        (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, w)
        return y, grads

    y_ref, (dx_ref, dw_ref) = output_and_grads(_lax_reference)
    y, (dx, dw) = output_and_grads(conv_general_dilated)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(dx, dx_ref, rtol=5e-5, atol=5e-5)
    np.testing.assert_allclose(dw, dw_ref, rtol=5e-5, atol=5e-5)
    used = _primitives(lambda x, w: conv_general_dilated(x, w, strides, padding, **kwargs), x, w)
    assert "jax_conv1d_fwd" in used and "conv_general_dilated" not in used


@pytest.mark.parametrize("dtype,preferred", [
    (jnp.bfloat16, None), (jnp.float16, None), (jnp.bfloat16, jnp.float32), (jnp.float16, jnp.float32),
    (jnp.float32, jnp.float32),
])
def test_native_dtypes(dtype, preferred):
    x, w = _operands("NWC", dtype=dtype)
    args = ((2,), "SAME")
    kwargs = dict(dimension_numbers=NWC, rhs_dilation=(2,), preferred_element_type=preferred)
    y_ref = lax.conv_general_dilated(x, w, *args, **kwargs)
    y = conv_general_dilated(x, w, *args, **kwargs)
    assert y.dtype == y_ref.dtype
    tol = 2e-5 if y.dtype == jnp.float32 and dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), rtol=tol, atol=tol)
    assert "jax_conv1d_fwd" in _primitives(lambda x, w: conv_general_dilated(x, w, *args, **kwargs), x, w)


def _x64():
    """A context with float64 enabled, across jax versions."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64
    return enable_x64()


def test_float64():
    with _x64():
        x, w = _operands(None, dtype=jnp.float64)
        y = conv_general_dilated(x, w, (1,), "SAME", rhs_dilation=(2,))
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(y, lax.conv_general_dilated(x, w, (1,), "SAME", rhs_dilation=(2,)),
                                   rtol=1e-12, atol=1e-12)


def _two_d():
    x = jax.random.normal(jax.random.key(0), (2, 3, 8, 9))
    w = jax.random.normal(jax.random.key(1), (4, 3, 3, 2))
    return (x, w, (1, 1), "SAME"), {}


def _input_dilation():
    x, w = _operands(None)
    return (x, w, (1,), [(1, 1)]), dict(lhs_dilation=(2,))


def _batch_groups():
    x, w = _operands(None, n=4, o=4)
    return (x, w, (1,), "VALID"), dict(batch_group_count=2)


def _permuted_layout():
    x, _ = _operands(None)  # (N, C, L) in, (K, I, O) kernel, (N, L, O) out
    w = jax.random.normal(jax.random.key(2), (3, 6, 4), jnp.float32)
    return (x, w, (1,), "SAME"), dict(dimension_numbers=("NCW", "WIO", "NWC"))


def _integers():
    x, w = _operands("NWC")
    return (x.astype(jnp.int32), w.astype(jnp.int32), (1,), "SAME"), dict(dimension_numbers=NWC)


@pytest.mark.parametrize("case", [_two_d, _input_dilation, _batch_groups, _permuted_layout, _integers],
                         ids=lambda f: f.__name__.strip("_"))
def test_other_cases_delegate_to_lax(case):
    # On the CPU: XLA:GPU has no integer convolution, and delegation is what is checked here.
    with jax.default_device(jax.devices("cpu")[0]):
        _check_delegates_to_lax(case)


def _check_delegates_to_lax(case):
    args, kwargs = case()
    y_ref = lax.conv_general_dilated(*args, **kwargs)
    y = conv_general_dilated(*args, **kwargs)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    np.testing.assert_array_equal(y, y_ref)
    used = _primitives(lambda x, w: conv_general_dilated(x, w, *args[2:], **kwargs), *args[:2])
    assert "conv_general_dilated" in used and "jax_conv1d_fwd" not in used


@pytest.mark.parametrize("make,error", [
    (lambda x, w: conv_general_dilated(x, w.astype(jnp.bfloat16), (1,), "SAME"), TypeError),  # mixed dtypes
    (lambda x, w: conv_general_dilated(x, w, (1,), "SAME", preferred_element_type=jnp.bfloat16), TypeError),
    (lambda x, w: conv_general_dilated(x, w, (1,), "CAUSAL"), RuntimeError),  # not a lax padding
])
def test_what_lax_rejects_is_rejected_by_lax(make, error):
    x, w = _operands(None)
    with pytest.raises(error):
        make(x, w)


def test_delegation_passes_every_argument_unchanged(monkeypatch):
    seen = []
    sentinel = object()

    def spy(*args, **kwargs):
        seen.append((args, kwargs))
        return sentinel

    monkeypatch.setattr(lax, "conv_general_dilated", spy)
    x, w = _operands(None)
    sharding = jax.sharding.PartitionSpec()
    kwargs = dict(lhs_dilation=(2,), rhs_dilation=(3,), dimension_numbers=NCW, feature_group_count=1,
                  batch_group_count=1, precision=lax.Precision.HIGH, preferred_element_type=jnp.float32,
                  out_sharding=sharding)
    assert conv_general_dilated(x, w, (2,), [(1, 2)], **kwargs) is sentinel
    (args, passed), = seen
    assert args[0] is x and args[1] is w and args[2:] == ((2,), [(1, 2)])
    assert passed == kwargs
    # out_sharding alone (everything else native-able) also goes to lax, which knows how to honour it.
    seen.clear()
    conv_general_dilated(x, w, (1,), "SAME", out_sharding=sharding)
    assert seen[0][1]["out_sharding"] is sharding


def test_default_matmul_precision_is_honoured():
    x, w = _operands("NWC")

    def precision_code():
        jaxpr = jax.make_jaxpr(lambda x, w: conv_general_dilated(x, w, (1,), "SAME", dimension_numbers=NWC))(x, w)
        (eqn,) = [e for e in _eqns(jaxpr.jaxpr) if str(e.primitive) == "jax_conv1d_fwd"]
        return eqn.params["cfg"].precision

    assert precision_code() == 0
    with jax.default_matmul_precision("float32"):
        assert precision_code() == 1


def test_jit_and_vmap():
    x, w = _operands("NWC")
    f = jax.jit(lambda x, w: conv_general_dilated(x, w, (2,), "SAME", dimension_numbers=NWC))
    ref = lax.conv_general_dilated(x, w, (2,), "SAME", dimension_numbers=NWC)
    np.testing.assert_allclose(f(x, w), ref, rtol=2e-5, atol=2e-5)
    ws = jnp.stack([w, 2 * w])
    np.testing.assert_allclose(jax.vmap(f, in_axes=(None, 0))(x, ws), jnp.stack([ref, 2 * ref]), rtol=2e-5,
                               atol=2e-5)


def test_as_flax_linen_conv_function():
    nn = pytest.importorskip("flax.linen")
    x = jax.random.normal(jax.random.key(0), (2, 19, 6))
    ref = nn.Conv(8, 3, strides=2, kernel_dilation=2, feature_group_count=2, padding="SAME")
    ours = nn.Conv(8, 3, strides=2, kernel_dilation=2, feature_group_count=2, padding="SAME",
                   conv_general_dilated=conv_general_dilated)
    v = ref.init(jax.random.key(1), x)
    np.testing.assert_allclose(ours.apply(v, x), ref.apply(v, x), rtol=2e-5, atol=2e-5)
    g_ref = jax.grad(lambda v: jnp.sum(ref.apply(v, x) ** 2))(v)
    g = jax.grad(lambda v: jnp.sum(ours.apply(v, x) ** 2))(v)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=5e-5, atol=5e-5)
    assert "jax_conv1d_fwd" in _primitives(lambda v: ours.apply(v, x), v)


def test_as_flax_nnx_conv_function():
    nnx = pytest.importorskip("flax.nnx")
    x = jax.random.normal(jax.random.key(0), (2, 19, 6)).astype(jnp.bfloat16)
    kwargs = dict(padding="CAUSAL", kernel_dilation=3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    if "preferred_element_type" in nnx.Conv.__init__.__code__.co_varnames:
        kwargs["preferred_element_type"] = jnp.float32
    ref = nnx.Conv(6, 8, 3, **kwargs)
    kwargs["rngs"] = nnx.Rngs(0)
    ours = nnx.Conv(6, 8, 3, conv_general_dilated=conv_general_dilated, **kwargs)
    y_ref, y = ref(x), ours(x)
    assert y.dtype == y_ref.dtype
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), rtol=2e-2, atol=2e-2)
    assert "jax_conv1d_fwd" in _primitives(lambda x: ours(x), x)


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_flax_arguments_reach_lax_unchanged_when_delegated(api, monkeypatch):
    """A 2-D Flax Conv with the drop-in hands lax exactly what Flax hands lax without it."""
    flax = pytest.importorskip("flax")
    original = lax.conv_general_dilated
    signature = inspect.signature(original)
    seen = []

    def spy(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()  # passing a default and leaving it out are the same call
        seen.append(bound.arguments)
        return original(*args, **kwargs)

    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 4))
    common = dict(strides=(2, 1), padding="SAME", kernel_dilation=(1, 2), feature_group_count=2,
                  precision=lax.Precision.HIGHEST)
    outputs = []
    for conv_fn in (spy, conv_general_dilated):
        if api == "linen":
            layer = flax.linen.Conv(6, (3, 2), conv_general_dilated=conv_fn, **common)
            v = layer.init(jax.random.key(1), x)
            seen[len(outputs):] = []  # forget what init did
            monkeypatch.setattr(lax, "conv_general_dilated", spy)
            outputs.append(layer.apply(v, x))
        else:
            layer = flax.nnx.Conv(4, 6, (3, 2), conv_general_dilated=conv_fn, rngs=flax.nnx.Rngs(1), **common)
            monkeypatch.setattr(lax, "conv_general_dilated", spy)
            outputs.append(layer(x))
        monkeypatch.setattr(lax, "conv_general_dilated", original)
    assert len(seen) == 2
    flax_call, drop_in_call = seen
    for operand in ("lhs", "rhs"):
        np.testing.assert_array_equal(flax_call.pop(operand), drop_in_call.pop(operand))
    assert flax_call == drop_in_call
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_import_does_not_need_flax():
    code = "import sys, jax_conv1d; assert 'flax' not in sys.modules, 'flax imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
    assert jax_conv1d.conv_general_dilated is conv_general_dilated
