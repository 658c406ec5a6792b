"""jax_conv1d.linen.Conv1D against flax.linen.Conv: same parameters, same outputs, same gradients."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nn = pytest.importorskip("flax.linen")
optax = pytest.importorskip("optax")

from jax_conv1d.linen import Conv1D  # noqa: E402

PADDINGS = ["SAME", "VALID", "SAME_LOWER", "CAUSAL", "CIRCULAR", "REFLECT", 2, [(1, 3)]]
# (kernel_size, strides, kernel_dilation, feature_group_count, out_features): odd and even kernels, strides that
# do and do not divide the length, dilation, grouped and depthwise, and a 1x1.
SHAPES = [(3, 1, 1, 1, 8), (4, 2, 3, 2, 8), (2, 3, 1, 6, 12), (1, 1, 1, 1, 5)]
IN_FEATURES, LENGTH = 6, 17


def _x(shape=(2, LENGTH, IN_FEATURES), dtype=jnp.float32, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _flax_padding(padding):
    # Flax's own Conv takes no bare (lo, hi) pair for one dimension; it is our extension.
    return [padding] if isinstance(padding, tuple) else padding


def _pair(padding, k, s, d, g, out, **kwargs):
    common = dict(kernel_size=k, strides=s, kernel_dilation=d, feature_group_count=g, **kwargs)
    return nn.Conv(out, padding=_flax_padding(padding), **common), Conv1D(out, padding=padding, **common)


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
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    yield from _eqns(sub)


def _primitives(fn, *args):
    return {str(e.primitive) for e in _eqns(jax.make_jaxpr(fn)(*args).jaxpr)}


# Every padding mode with every shape, plus our bare-pair form once. (Negative pads are left to
# test_lax_compat: XLA:CPU's own conv gets them wrong at times, so Flax's Conv is no reference there.)
@pytest.mark.parametrize("padding,shape", list(itertools.product(PADDINGS, SHAPES)) + [((0, 2), SHAPES[2])])
def test_outputs_and_gradients_match_flax(padding, shape):
    flax_conv, ours = _pair(padding, *shape)
    x = _x()
    variables = flax_conv.init(jax.random.key(1), x)
    variables = jax.tree.map(lambda p: p + 0.1, variables)  # a non-zero bias

    def output_and_grads(module):
        def loss(v, x):
            y = module.apply(v, x)
            return jnp.sum(jnp.sin(y)), y
        (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(variables, x)
        return y, grads

    y_ref, grads_ref = output_and_grads(flax_conv)
    y, grads = output_and_grads(ours)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    _assert_trees_close(grads, grads_ref, rtol=5e-5, atol=5e-5)


def test_runs_on_the_native_op_forward_and_backward():
    ours = Conv1D(8, 3, padding="CAUSAL", kernel_dilation=2)
    x = _x()
    variables = ours.init(jax.random.key(0), x)
    forward = _primitives(lambda v: ours.apply(v, x), variables)
    assert "jax_conv1d_fwd" in forward and "conv_general_dilated" not in forward
    assert "pad" not in forward  # causal padding and bias are fused into the op
    backward = _primitives(jax.grad(lambda v, x: jnp.sum(ours.apply(v, x) ** 2), argnums=(0, 1)), variables, x)
    assert "jax_conv1d_bwd" in backward and "conv_general_dilated" not in backward


@pytest.mark.parametrize("use_bias", [True, False])
def test_parameter_trees_identical_and_interchangeable(use_bias):
    flax_conv, ours = _pair("SAME", 5, 1, 2, 2, 8, use_bias=use_bias)
    x = _x()
    v_ref, v = flax_conv.init(jax.random.key(3), x), ours.init(jax.random.key(3), x)
    assert jax.tree.structure(v_ref) == jax.tree.structure(v)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(v_ref), jax.tree.leaves(v)))
    assert v["params"]["kernel"].shape == (5, 3, 8)
    assert ("bias" in v["params"]) == use_bias
    # Both directions: Flax's variables in our layer, ours in Flax's.
    np.testing.assert_allclose(ours.apply(v_ref, x), flax_conv.apply(v_ref, x), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(flax_conv.apply(v, x), ours.apply(v, x), rtol=2e-5, atol=2e-5)


def test_same_fields_and_defaults_as_flax_conv():
    ref = nn.Conv(4, 3)
    ours = Conv1D(4, 3)
    assert isinstance(ours, nn.Conv)
    for field in nn.Conv.__dataclass_fields__:
        if field not in ("parent", "name"):
            assert getattr(ours, field) is getattr(ref, field) or getattr(ours, field) == getattr(ref, field), field


def test_swapping_layers_in_a_model_keeps_the_parameter_tree():
    def model(conv):
        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = nn.relu(conv(8, 3, padding="CAUSAL")(x))
                x = nn.relu(nn.Conv(8, 1)(x))  # a Flax Conv left in place between ours
                return conv(2, 2, kernel_dilation=2)(x)
        return Net()

    x = _x()
    v_ref = model(nn.Conv).init(jax.random.key(0), x)
    v = model(Conv1D).init(jax.random.key(0), x)
    assert jax.tree.structure(v_ref) == jax.tree.structure(v)
    assert set(v["params"]) == {"Conv_0", "Conv_1", "Conv_2"}
    np.testing.assert_allclose(model(Conv1D).apply(v_ref, x), model(nn.Conv).apply(v_ref, x), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("shape", [(LENGTH, IN_FEATURES), (3, 2, LENGTH, IN_FEATURES), (1, 1, 1, LENGTH, IN_FEATURES)])
def test_batch_dimensions(shape):
    flax_conv, ours = _pair("SAME", 3, 2, 1, 1, 4)
    x = _x(shape)
    v = flax_conv.init(jax.random.key(0), x)
    y = ours.apply(v, x)
    assert y.shape == shape[:-2] + (9, 4)
    np.testing.assert_allclose(y, flax_conv.apply(v, x), rtol=2e-5, atol=2e-5)


def test_mask():
    mask = jnp.tril(jnp.ones((3, 6, 8)))
    flax_conv, ours = _pair("SAME", 3, 1, 1, 1, 8, mask=mask)
    x = _x()
    v = jax.tree.map(lambda p: p + 0.1, flax_conv.init(jax.random.key(0), x))
    np.testing.assert_allclose(ours.apply(v, x), flax_conv.apply(v, x), rtol=2e-5, atol=2e-5)
    g_ref = jax.grad(lambda v: jnp.sum(flax_conv.apply(v, x) ** 2))(v)
    g = jax.grad(lambda v: jnp.sum(ours.apply(v, x) ** 2))(v)
    _assert_trees_close(g, g_ref, rtol=5e-5, atol=5e-5)
    with pytest.raises(ValueError, match="Mask"):
        Conv1D(8, 3, mask=jnp.ones((3, 6, 7))).init(jax.random.key(0), x)


@pytest.mark.parametrize("dtype,param_dtype,x_dtype", [
    (jnp.bfloat16, jnp.float32, jnp.float32),
    (None, jnp.float32, jnp.bfloat16),  # promotion: bf16 inputs with f32 parameters compute in f32
    (None, jnp.bfloat16, jnp.bfloat16),
    (jnp.float16, jnp.float16, jnp.float32),
])
def test_dtypes(dtype, param_dtype, x_dtype):
    flax_conv, ours = _pair("CAUSAL", 3, 1, 2, 1, 8, dtype=dtype, param_dtype=param_dtype)
    x = _x(dtype=x_dtype)
    v = flax_conv.init(jax.random.key(0), x)
    v_ours = ours.init(jax.random.key(0), x)
    assert jax.tree.map(lambda a: a.dtype, v) == jax.tree.map(lambda a: a.dtype, v_ours)
    y_ref, y = flax_conv.apply(v, x), ours.apply(v, x)
    assert y.dtype == y_ref.dtype
    tol = 2e-5 if y.dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), rtol=tol, atol=tol)


def test_precision_and_custom_promote_dtype():
    calls = []

    def promote(*args, dtype=None):
        calls.append(dtype)
        return nn.dtypes.promote_dtype(*args, dtype=dtype)

    flax_conv, ours = _pair("VALID", 3, 1, 1, 1, 4, precision=jax.lax.Precision.HIGHEST, promote_dtype=promote)
    x = _x()
    v = flax_conv.init(jax.random.key(0), x)
    y_ref = flax_conv.apply(v, x)
    calls.clear()
    np.testing.assert_allclose(ours.apply(v, x), y_ref, rtol=1e-6, atol=1e-6)
    assert calls == [None]  # ours calls the user's promote_dtype, with the layer's dtype
    jaxpr = jax.make_jaxpr(lambda v: ours.apply(v, x))(v).jaxpr
    (eqn,) = [e for e in _eqns(jaxpr) if str(e.primitive) == "jax_conv1d_fwd"]
    assert eqn.params["cfg"].precision == 1  # float32-accurate on the native op


def test_input_dilation_is_computed_by_lax_like_flax():
    flax_conv, ours = _pair([(1, 2)], 3, 1, 1, 1, 4, input_dilation=2)  # lax takes no string padding here
    x = _x()
    v = jax.tree.map(lambda p: p + 0.1, flax_conv.init(jax.random.key(0), x))
    y = ours.apply(v, x)
    assert y.shape == (2, 2 * LENGTH, 4)
    np.testing.assert_allclose(y, flax_conv.apply(v, x), rtol=2e-5, atol=2e-5)
    assert "conv_general_dilated" in _primitives(lambda v: ours.apply(v, x), v)


def test_user_conv_function_is_called_like_flax_calls_it():
    seen = []

    def spy(*args, **kwargs):
        seen.append((args[2:], kwargs))
        return jax.lax.conv_general_dilated(*args, **kwargs)

    x = _x()
    for cls in (nn.Conv, Conv1D):
        layer = cls(4, 3, padding="CAUSAL", kernel_dilation=2, strides=2, conv_general_dilated=spy)
        v = layer.init(jax.random.key(0), x)
        layer.apply(v, x)
    assert len(seen) == 4 and seen[0] == seen[1] == seen[2] == seen[3]


def test_jit_vmap_and_unbatched():
    ours = Conv1D(4, 3, padding="REFLECT")
    x = _x((3, LENGTH, IN_FEATURES))
    v = ours.init(jax.random.key(0), x)
    batched = jax.jit(ours.apply)(v, x)
    mapped = jax.vmap(ours.apply, in_axes=(None, 0))(v, x)  # each example unbatched
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
        Conv1D(8, **kwargs).init(jax.random.key(0), _x())


def test_bad_input_rank():
    with pytest.raises(ValueError, match="inputs"):
        Conv1D(8, 3).init(jax.random.key(0), jnp.ones((6,)))


def test_optax_steps_give_the_same_losses():
    def model(conv):
        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                h = nn.tanh(conv(8, 2, padding="CAUSAL")(x))
                h = h + nn.tanh(conv(8, 2, kernel_dilation=2, padding="CAUSAL", feature_group_count=2)(h))
                return conv(1, 1)(h)[..., 0]
        return Net()

    x = _x((4, 32, 1), seed=5)
    target = jnp.sin(jnp.cumsum(x[..., 0], axis=1))
    params = model(nn.Conv).init(jax.random.key(0), x)["params"]

    def run(conv):
        net, tx = model(conv), optax.adam(1e-2)
        p, state, losses = params, tx.init(params), []

        @jax.jit
        def step(p, state):
            loss, g = jax.value_and_grad(lambda p: jnp.mean((net.apply({"params": p}, x) - target) ** 2))(p)
            updates, state = tx.update(g, state, p)
            return optax.apply_updates(p, updates), state, loss

        for _ in range(5):
            p, state, loss = step(p, state)
            losses.append(float(loss))
        return np.array(losses)

    ours, ref = run(Conv1D), run(nn.Conv)
    assert ours[-1] < ours[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_pytorch_conv1d_weights_load_transposed():
    """docs/migration.md: a PyTorch Conv1d kernel (O, C/g, K) becomes Flax's (K, C/g, O); the NCW op takes it as is."""
    from jax_conv1d import dilated_conv1d

    torch_weight = jax.random.normal(jax.random.key(0), (8, 3, 5))  # Conv1d(6, 8, 5, groups=2).weight
    torch_bias = jax.random.normal(jax.random.key(1), (8,))
    x_ncw = jax.random.normal(jax.random.key(2), (2, IN_FEATURES, LENGTH))
    y_ncw = dilated_conv1d(x_ncw, torch_weight, torch_bias, padding=2, dilation=2, groups=2, layout="NCW")
    layer = Conv1D(8, 5, padding=2, kernel_dilation=2, feature_group_count=2)
    variables = {"params": {"kernel": jnp.transpose(torch_weight, (2, 1, 0)), "bias": torch_bias}}
    y = layer.apply(variables, jnp.swapaxes(x_ncw, 1, 2))
    np.testing.assert_allclose(jnp.swapaxes(y, 1, 2), y_ncw, rtol=2e-5, atol=2e-5)


def test_promote_dtype_that_leaves_the_bias_alone():
    def promote(x, kernel, bias, dtype=None):  # casts the operands, not the bias
        return x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), bias

    flax_conv, ours = _pair("SAME", 3, 1, 1, 1, 4, promote_dtype=promote)
    x = _x()
    v = jax.tree.map(lambda p: p + 0.1, flax_conv.init(jax.random.key(0), x))
    y_ref, y = flax_conv.apply(v, x), ours.apply(v, x)
    assert y.dtype == y_ref.dtype == jnp.float32
    np.testing.assert_allclose(y, y_ref, rtol=2e-2, atol=2e-2)
