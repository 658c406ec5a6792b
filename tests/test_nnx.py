"""jax_conv1d.nnx.Conv1D against flax.nnx.Conv: same state, same outputs, same gradients."""

import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")
optax = pytest.importorskip("optax")

import jax_conv1d  # noqa: E402
from jax_conv1d.nnx import Conv1D  # noqa: E402

PADDINGS = ["SAME", "VALID", "SAME_LOWER", "CAUSAL", "CIRCULAR", "REFLECT", 2, [(1, 3)]]
# (kernel_size, strides, kernel_dilation, feature_group_count, out_features)
SHAPES = [(3, 1, 1, 1, 8), (4, 2, 3, 2, 8), (2, 3, 1, 6, 12), (1, 1, 1, 1, 5)]
IN_FEATURES, LENGTH = 6, 17


def _x(shape=(2, LENGTH, IN_FEATURES), dtype=jnp.float32, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _pair(padding, k, s, d, g, out, in_features=IN_FEATURES, **kwargs):
    common = dict(kernel_dilation=d, feature_group_count=g, **kwargs)
    flax_padding = [padding] if isinstance(padding, tuple) else padding  # Flax takes no bare (lo, hi)
    return (nnx.Conv(in_features, out, k, s, padding=flax_padding, rngs=nnx.Rngs(0), **common),
            Conv1D(in_features, out, k, s, padding=padding, rngs=nnx.Rngs(0), **common))


def _assert_trees_close(a, b, rtol=2e-5, atol=2e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_allclose(np.asarray(u, np.float64), np.asarray(v, np.float64), rtol=rtol, atol=atol)


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


def _output_and_grads(layer, state, x):
    """The layer's output and the gradients of a loss wrt its state and input, with `state` loaded into it."""
    graphdef, _ = nnx.split(layer)

    def loss(state, x):
        y = nnx.merge(graphdef, state)(x)
        return jnp.sum(jnp.sin(y)), y

    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(state, x)
    return y, grads


# Every padding mode with every shape, plus our bare-pair form once. (Negative pads are left to
# test_lax_compat: XLA:CPU's own conv gets them wrong at times, so Flax's Conv is no reference there.)
@pytest.mark.parametrize("padding,shape", list(itertools.product(PADDINGS, SHAPES)) + [((0, 2), SHAPES[2])])
def test_outputs_and_gradients_match_flax(padding, shape):
    flax_conv, ours = _pair(padding, *shape)
    x = _x()
    state = jax.tree.map(lambda p: p + 0.1, nnx.state(flax_conv))  # a non-zero bias
    y_ref, grads_ref = _output_and_grads(flax_conv, state, x)
    y, grads = _output_and_grads(ours, state, x)  # Flax's state, loaded into our layer
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    _assert_trees_close(grads, grads_ref, rtol=5e-5, atol=5e-5)


def test_runs_on_the_native_op_forward_and_backward():
    ours = Conv1D(IN_FEATURES, 8, 3, padding="CAUSAL", kernel_dilation=2, rngs=nnx.Rngs(0))
    x = _x()
    forward = _primitives(lambda x: ours(x), x)
    assert "jax_conv1d_fwd" in forward and "conv_general_dilated" not in forward and "pad" not in forward
    graphdef, state = nnx.split(ours)
    backward = _primitives(jax.grad(lambda s, x: jnp.sum(nnx.merge(graphdef, s)(x) ** 2), argnums=(0, 1)),
                           state, x)
    assert "jax_conv1d_bwd" in backward and "conv_general_dilated" not in backward


@pytest.mark.parametrize("use_bias", [True, False])
def test_state_identical_and_interchangeable(use_bias):
    flax_conv, ours = _pair("SAME", 5, 1, 2, 2, 8, use_bias=use_bias)
    s_ref, s = nnx.state(flax_conv), nnx.state(ours)
    assert jax.tree.structure(s_ref) == jax.tree.structure(s)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s_ref), jax.tree.leaves(s)))
    assert ours.kernel.shape == (5, 3, 8)
    assert (ours.bias is not None) == use_bias
    x = _x()
    # Both directions, through nnx.update, as a checkpoint restore would do it.
    other = Conv1D(IN_FEATURES, 8, 5, kernel_dilation=2, feature_group_count=2, use_bias=use_bias,
                   rngs=nnx.Rngs(7))
    nnx.update(other, nnx.state(flax_conv))
    np.testing.assert_allclose(other(x), flax_conv(x), rtol=2e-5, atol=2e-5)
    flax_other = nnx.Conv(IN_FEATURES, 8, 5, kernel_dilation=2, feature_group_count=2, use_bias=use_bias,
                          rngs=nnx.Rngs(7))
    nnx.update(flax_other, nnx.state(ours))
    np.testing.assert_allclose(flax_other(x), ours(x), rtol=2e-5, atol=2e-5)


def test_same_arguments_and_defaults_as_flax_conv():
    flax_params = inspect.signature(nnx.Conv.__init__).parameters
    ours_params = inspect.signature(Conv1D.__init__).parameters
    for name, param in ours_params.items():  # what we name, we name with Flax's defaults
        if name in ("self", "kwargs", "conv_general_dilated"):
            continue
        assert name in flax_params, name
        assert param.default == flax_params[name].default, name
        assert param.kind == flax_params[name].kind, name
    ref = nnx.Conv(IN_FEATURES, 4, 3, rngs=nnx.Rngs(0))
    ours = Conv1D(IN_FEATURES, 4, 3, rngs=nnx.Rngs(0))
    assert isinstance(ours, nnx.Conv)
    for name in flax_params:  # and the rest are nnx.Conv's own
        if name not in ("self", "rngs", "kernel_init", "bias_init", "kernel_metadata", "bias_metadata",
                        "conv_general_dilated"):
            assert getattr(ours, name) == getattr(ref, name), name
    assert ours.conv_general_dilated is jax_conv1d.conv_general_dilated


@pytest.mark.parametrize("shape", [(LENGTH, IN_FEATURES), (3, 2, LENGTH, IN_FEATURES), (1, 1, 1, LENGTH, IN_FEATURES)])
def test_batch_dimensions(shape):
    flax_conv, ours = _pair("SAME", 3, 2, 1, 1, 4)
    x = _x(shape)
    y = ours(x)
    assert y.shape == shape[:-2] + (9, 4)
    np.testing.assert_allclose(y, flax_conv(x), rtol=2e-5, atol=2e-5)


def test_mask():
    mask = jnp.tril(jnp.ones((3, IN_FEATURES, 8)))
    flax_conv, ours = _pair("CAUSAL", 3, 1, 1, 1, 8, mask=mask)
    x = _x()
    state = jax.tree.map(lambda p: p + 0.1, nnx.state(flax_conv))
    y_ref, g_ref = _output_and_grads(flax_conv, state, x)
    y, g = _output_and_grads(ours, state, x)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    _assert_trees_close(g, g_ref, rtol=5e-5, atol=5e-5)
    bad = Conv1D(IN_FEATURES, 8, 3, mask=jnp.ones((3, IN_FEATURES, 7)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="Mask"):
        bad(x)


@pytest.mark.parametrize("dtype,param_dtype,x_dtype,preferred", [
    (jnp.bfloat16, jnp.float32, jnp.float32, None),
    (None, jnp.float32, jnp.bfloat16, None),
    (None, jnp.bfloat16, jnp.bfloat16, None),
    (None, jnp.bfloat16, jnp.bfloat16, jnp.float32),  # 16-bit operands, float32 output: native
    (jnp.float16, jnp.float16, jnp.float32, jnp.float32),
])
def test_dtypes_and_preferred_element_type(dtype, param_dtype, x_dtype, preferred):
    flax_conv, ours = _pair("CAUSAL", 3, 1, 2, 1, 8, dtype=dtype, param_dtype=param_dtype,
                            preferred_element_type=preferred)
    x = _x(dtype=x_dtype)
    y_ref, y = flax_conv(x), ours(x)
    assert y.dtype == y_ref.dtype
    if preferred is not None:
        assert y.dtype == preferred
    tol = 2e-5 if np.dtype(y.dtype) == np.float32 and param_dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), rtol=tol, atol=tol)
    assert "jax_conv1d_fwd" in _primitives(lambda x: ours(x), x)


def test_precision_and_custom_promote_dtype():
    calls = []

    def promote(args, dtype=None):
        calls.append(dtype)
        return nnx.nn.dtypes.promote_dtype(args, dtype=dtype)

    flax_conv, ours = _pair("VALID", 3, 1, 1, 1, 4, precision=jax.lax.Precision.HIGHEST, promote_dtype=promote)
    x = _x()
    y_ref = flax_conv(x)
    calls.clear()
    np.testing.assert_allclose(ours(x), y_ref, rtol=1e-6, atol=1e-6)
    assert calls == [None]
    (eqn,) = [e for e in _eqns(jax.make_jaxpr(lambda x: ours(x))(x).jaxpr) if str(e.primitive) == "jax_conv1d_fwd"]
    assert eqn.params["cfg"].precision == 1  # float32-accurate on the native op


def test_input_dilation_is_computed_by_lax_like_flax():
    flax_conv, ours = _pair([(1, 2)], 3, 1, 1, 1, 4, input_dilation=2)  # lax takes no string padding here
    x = _x()
    y = ours(x)
    assert y.shape == (2, 2 * LENGTH, 4)
    np.testing.assert_allclose(y, flax_conv(x), rtol=2e-5, atol=2e-5)
    assert "conv_general_dilated" in _primitives(lambda x: ours(x), x)


def test_user_conv_function_is_called_like_flax_calls_it():
    seen = []

    def spy(*args, **kwargs):
        seen.append((args[2:], kwargs))
        return jax.lax.conv_general_dilated(*args, **kwargs)

    x = _x()
    for cls in (nnx.Conv, Conv1D):
        layer = cls(IN_FEATURES, 4, 3, 2, padding="CAUSAL", kernel_dilation=2, conv_general_dilated=spy,
                    preferred_element_type=jnp.float32, rngs=nnx.Rngs(0))
        layer(x)
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0][1]["out_sharding"] is None and seen[0][1]["preferred_element_type"] == jnp.float32


def test_out_sharding_is_honoured_through_lax():
    mesh_kwargs = {}
    axis_type = getattr(jax.sharding, "AxisType", None)
    use_mesh = getattr(jax.sharding, "use_mesh", None) or getattr(jax, "set_mesh", None)
    if axis_type is None or use_mesh is None:
        pytest.skip("this jax has no explicit sharding")
    mesh_kwargs["axis_types"] = (axis_type.Explicit,)
    mesh = jax.make_mesh((1,), ("batch",), **mesh_kwargs)
    flax_conv, ours = _pair("SAME", 3, 1, 1, 1, 4)
    spec = jax.sharding.PartitionSpec("batch")
    with use_mesh(mesh):
        x = jax.device_put(_x(), jax.sharding.NamedSharding(mesh, spec))
        y_ref = flax_conv(x, out_sharding=spec)
        y = ours(x, out_sharding=spec)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    assert y.sharding == y_ref.sharding


def test_jit_and_vmap():
    ours = Conv1D(IN_FEATURES, 4, 3, padding="REFLECT", rngs=nnx.Rngs(0))
    x = _x((3, LENGTH, IN_FEATURES))
    batched = nnx.jit(lambda m, x: m(x))(ours, x)
    mapped = jax.vmap(ours)(x)  # each example unbatched
    np.testing.assert_allclose(mapped, batched, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(kernel_size=(3, 3)), ValueError, "kernel_size"),
    (dict(kernel_size=3, strides=0), ValueError, "strides"),
    (dict(kernel_size=3, kernel_dilation=(1, 2)), ValueError, "kernel_dilation"),
    (dict(kernel_size=3, padding="causal"), ValueError, "padding"),
    (dict(kernel_size=3, padding=[(1, 2, 3)]), ValueError, "padding"),
    (dict(kernel_size=3, padding=1.5), TypeError, "padding"),
    (dict(kernel_size=3, feature_group_count=4), ValueError, "feature_group_count"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Conv1D(IN_FEATURES, 8, rngs=nnx.Rngs(0), **kwargs)


def test_bad_input():
    layer = Conv1D(IN_FEATURES, 8, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="inputs"):
        layer(jnp.ones((IN_FEATURES,)))
    with pytest.raises(ValueError, match="channel"):
        layer(jnp.ones((2, LENGTH, IN_FEATURES + 1)))


class _Net(nnx.Module):
    def __init__(self, conv, rngs):
        self.a = conv(1, 8, 2, padding="CAUSAL", rngs=rngs)
        self.b = conv(8, 8, 2, kernel_dilation=2, padding="CAUSAL", feature_group_count=2, rngs=rngs)
        self.head = conv(8, 1, 1, rngs=rngs)

    def __call__(self, x):
        h = jnp.tanh(self.a(x))
        h = h + jnp.tanh(self.b(h))
        return self.head(h)[..., 0]


def test_optax_steps_give_the_same_losses():
    x = _x((4, 32, 1), seed=5)
    target = jnp.sin(jnp.cumsum(x[..., 0], axis=1))

    def run(conv):
        graphdef, params = nnx.split(_Net(conv, nnx.Rngs(0)))
        tx = optax.adam(1e-2)
        state, losses = tx.init(params), []

        @jax.jit
        def step(params, state):
            loss, g = jax.value_and_grad(lambda p: jnp.mean((nnx.merge(graphdef, p)(x) - target) ** 2))(params)
            updates, state = tx.update(g, state, params)
            return optax.apply_updates(params, updates), state, loss

        for _ in range(5):
            params, state, loss = step(params, state)
            losses.append(float(loss))
        return params, np.array(losses)

    params, ours = run(Conv1D)
    params_ref, ref = run(nnx.Conv)
    assert ours[-1] < ours[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    _assert_trees_close(params, params_ref, rtol=1e-4, atol=1e-5)


def test_loading_pytorch_conv1d_weights():
    """docs/migration.md: assign the transposed PyTorch kernel in place."""
    torch_weight = jax.random.normal(jax.random.key(0), (8, IN_FEATURES, 3), jnp.float32)  # (O, C, K)
    torch_bias = jax.random.normal(jax.random.key(1), (8,), jnp.float32)
    layer = Conv1D(IN_FEATURES, 8, 3, padding=1, rngs=nnx.Rngs(0))
    layer.kernel[...] = jnp.transpose(torch_weight, (2, 1, 0))
    layer.bias[...] = torch_bias
    x_ncw = _x((2, IN_FEATURES, LENGTH))
    y_ncw = jax.lax.conv_general_dilated(x_ncw, torch_weight, (1,), [(1, 1)]) + torch_bias[:, None]
    np.testing.assert_allclose(jnp.swapaxes(layer(jnp.swapaxes(x_ncw, 1, 2)), 1, 2), y_ncw, rtol=2e-5, atol=2e-5)
