"""jax_conv1d.wavenet's fused routes: the gated activation that keeps its input for the backward pass, and a
block's skip and residual 1x1 convolutions as one call. Each must compute what the plain composition computes
(values and gradients against float64), keep the parameter tree, and train to the same losses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from conftest import gpu_device  # noqa: E402
from jax_conv1d import dilated_conv1d, wavenet  # noqa: E402

DEVICES = ["cpu"] + (["gpu"] if gpu_device() is not None else [])


def _device(name):
    return jax.devices("cpu")[0] if name == "cpu" else gpu_device()


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b))  # zero for the last block's residual layer, whose output is unused
    return np.max(np.abs(a - b)) / scale if scale else np.max(np.abs(a))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gated_activation_value_and_gradient_match_float64(device, dtype, rng):
    h = rng.normal(size=(2, 37, 2 * 6)) * 2
    dz = rng.normal(size=(2, 37, 6))
    with jax.default_device(_device(device)):
        z, vjp = jax.vjp(wavenet.gated_activation, jnp.asarray(h, dtype))
        (dh,) = vjp(jnp.asarray(dz, dtype))
    with jax.default_device(jax.devices("cpu")[0]):
        z64, vjp64 = jax.vjp(wavenet._gated, jnp.asarray(h, jnp.float64))  # autodiff of the plain composition
        (dh64,) = vjp64(jnp.asarray(dz, jnp.float64))
    tol = 1e-6 if dtype == "float32" else 1e-14
    assert z.dtype == dh.dtype == jnp.dtype(dtype)
    assert _rel(z, z64) < tol and _rel(dh, dh64) < tol


@pytest.mark.parametrize("device", DEVICES)
def test_shared_input_pointwise_matches_separate_convolutions_in_float64(device, rng):
    n, length, c = 2, 33, 8
    z = rng.normal(size=(n, length, c))
    params = [(rng.normal(size=(1, c, o)) / np.sqrt(c), rng.normal(size=(o,))) for o in (5, 8)]
    cts = [rng.normal(size=(n, length, o)) for o in (5, 8)]

    def separate(z, params):
        return tuple(jnp.einsum("nlc,co->nlo", z, k[0], precision="highest") + b for k, b in params)

    with jax.default_device(jax.devices("cpu")[0]):
        as64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)  # noqa: E731
        ys64, vjp64 = jax.vjp(separate, as64(z), as64(params))
        grads64 = vjp64(as64(tuple(cts)))
    as32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)  # noqa: E731
    with jax.default_device(_device(device)):
        ys, vjp = jax.vjp(jax.jit(wavenet.shared_input_pointwise), as32(z), as32(tuple(map(tuple, params))))
        grads = vjp(as32(tuple(cts)))
    tol = 2e-3 if device == "gpu" else 1e-5  # TF32 on the GPU (default precision), float32 on the CPU
    for y, y64 in zip(ys, ys64):
        assert y.shape == y64.shape and _rel(y, y64) < tol
    for g, g64 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads64)):
        assert g.shape == g64.shape and _rel(g, g64) < tol


@pytest.mark.parametrize("device", DEVICES)
def test_sum_of_skips_gradient_is_that_of_the_summed_convolutions_in_float64(device, rng):
    n, length, widths, s = 2, 29, (8, 5, 8), 6
    zs = tuple(rng.normal(size=(n, length, c)) for c in widths)
    params = tuple((rng.normal(size=(1, c, s)) / np.sqrt(c), rng.normal(size=(s,))) for c in widths)
    g = rng.normal(size=(n, length, s))

    def reference(zs, params):
        return sum(jnp.einsum("nlc,co->nlo", z, k[0], precision="highest") + b for z, (k, b) in zip(zs, params))

    def route(zs, params):
        skips = tuple(wavenet._pointwise(z, k, b) for z, (k, b) in zip(zs, params))
        return wavenet.sum_of_skips(skips, zs, params)

    with jax.default_device(jax.devices("cpu")[0]):
        as64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)  # noqa: E731
        y64, vjp64 = jax.vjp(reference, as64(zs), as64(params))
        grads64 = vjp64(jnp.asarray(g, jnp.float64))
    as32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)  # noqa: E731
    with jax.default_device(_device(device)):
        y, vjp = jax.vjp(jax.jit(route), as32(zs), as32(params))
        grads = vjp(jnp.asarray(g, jnp.float32))
    tol = 2e-3 if device == "gpu" else 1e-5
    assert _rel(y, y64) < tol
    assert jax.tree.structure(grads) == jax.tree.structure(grads64)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads64)):
        assert a.shape == b.shape and _rel(a, b) < tol


def test_shared_input_pointwise_runs_one_forward_call_on_the_cpu():
    # The route is one convolution with the kernels side by side, not one per output.
    z = jnp.ones((1, 4, 3), jnp.float32)
    params = tuple((jnp.ones((1, 3, o), jnp.float32), jnp.zeros(o, jnp.float32)) for o in (2, 5))
    with jax.default_device(jax.devices("cpu")[0]):
        text = jax.jit(wavenet.shared_input_pointwise).lower(z, params).as_text()
    assert text.count("jax_conv1d_fwd") == 1


SMALL = wavenet.Config(layers=3, channels=8, skip_channels=6, length=96, batch=2, gate_keeps_input=False,
                       fused_pointwise=False, skip_grad_once=False)  # the plain composition
ROUTES = [dict(gate_keeps_input=g, fused_pointwise=p, skip_grad_once=k) for g in (False, True) for p in (False, True)
          for k in (False, True)]


def _route_id(r):
    return "-".join(name for name, key in (("gate", "gate_keeps_input"), ("pair", "fused_pointwise"),
                                            ("skip", "skip_grad_once")) if r[key]) or "plain"


@pytest.mark.parametrize("route", ROUTES, ids=_route_id)
def test_routes_keep_the_parameter_tree_and_its_initial_values(route):
    cfg = dataclasses.replace(SMALL, **route)
    reference = wavenet.init_params(SMALL)  # nn.Conv everywhere
    for backend in ("ours", "flax"):
        tree = wavenet.WaveNet(wavenet.BACKENDS[backend], cfg).init(jax.random.key(cfg.seed),
                                                                    jnp.zeros((1, 16), jnp.float32))["params"]
        assert jax.tree.structure(tree) == jax.tree.structure(reference)
        for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference)):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("route", ROUTES[1:], ids=_route_id)
def test_routes_give_the_plain_models_loss_and_gradients(device, route):
    cfg = dataclasses.replace(SMALL, **route)
    params = wavenet.init_params(cfg)
    signal = wavenet.synthetic_batch(jax.random.key(3), cfg.batch, cfg.length)

    def loss(model, p):
        pred = model.apply({"params": p}, signal)
        return jnp.mean((pred[:, :-1] - signal[:, 1:]) ** 2)

    with jax.default_device(_device(device)):
        plain = jax.jit(jax.value_and_grad(lambda p: loss(wavenet.WaveNet(wavenet.Conv1D, SMALL), p)))(params)
        lax_ref = jax.jit(jax.value_and_grad(lambda p: loss(wavenet.WaveNet(wavenet.BACKENDS["flax"], cfg), p)))(params)
        fused = jax.jit(jax.value_and_grad(lambda p: loss(wavenet.WaveNet(wavenet.Conv1D, cfg), p)))(params)
        again = jax.jit(jax.value_and_grad(lambda p: loss(wavenet.WaveNet(wavenet.Conv1D, cfg), p)))(params)
    tol = 1e-3 if device == "gpu" else 1e-5
    assert abs(float(fused[0]) - float(plain[0])) <= tol * abs(float(plain[0]))
    for a, b in zip(jax.tree.leaves(fused[1]), jax.tree.leaves(plain[1])):
        assert _rel(a, b) < tol
    assert abs(float(lax_ref[0]) - float(plain[0])) <= tol * abs(float(plain[0]))  # nn.Conv ignores the routes
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(again)):  # bitwise repeatable
        np.testing.assert_array_equal(a, b)


def test_the_routes_are_the_default_and_the_flax_backend_ignores_them():
    cfg = wavenet.Config()
    assert cfg.fused_pointwise and cfg.skip_grad_once and not cfg.gate_keeps_input  # measured fastest
    signal = jnp.zeros((1, 16), jnp.float32)
    small = dataclasses.replace(SMALL, gate_keeps_input=True, fused_pointwise=True, skip_grad_once=True)
    params = wavenet.init_params(small)
    with jax.default_device(jax.devices("cpu")[0]):
        flax_text = jax.jit(lambda p: wavenet.WaveNet(wavenet.BACKENDS["flax"], small).apply({"params": p}, signal)
                            ).lower(params).as_text()
        ours_text = jax.jit(lambda p: wavenet.WaveNet(wavenet.Conv1D, small).apply({"params": p}, signal)
                            ).lower(params).as_text()
    assert "jax_conv1d" not in flax_text
    # 3 dilated + 2 fused pairs + the last block's skip (its residual output is unused and traced away)
    # + the input and 2 output layers
    assert ours_text.count("jax_conv1d_fwd") == 3 + 2 + 1 + 3


def test_flat_train_step_trains_like_the_tree_step():
    """make_flat_train_step (one parameter vector, for host time per step) takes the tree step's updates: the
    same losses and parameters after three Adam steps, up to the last bits XLA's fusions may change."""
    import optax

    cfg = SMALL
    params = wavenet.init_params(cfg)
    signal = wavenet.synthetic_batch(jax.random.key(5), cfg.batch, cfg.length)
    model = wavenet.WaveNet(wavenet.Conv1D, cfg)
    tx = optax.adam(1e-2)
    with jax.default_device(jax.devices("cpu")[0]):
        step = wavenet.make_train_step(model, tx)
        flat_step, flat, unravel = wavenet.make_flat_train_step(model, tx, params)
        p = jax.tree.map(jnp.array, params)
        state, flat_state = tx.init(p), tx.init(flat)
        for _ in range(3):
            p, state, loss = step(p, state, signal)
            flat, flat_state, flat_loss = flat_step(flat, flat_state, signal)
            assert abs(float(flat_loss) - float(loss)) <= 1e-5 * abs(float(loss))
    assert flat.shape == (sum(leaf.size for leaf in jax.tree.leaves(params)),)
    for a, b in zip(jax.tree.leaves(unravel(flat)), jax.tree.leaves(p)):
        assert _rel(a, b) < 1e-5
    assert any(_rel(a, b) > 1e-3 for a, b in zip(jax.tree.leaves(unravel(flat)), jax.tree.leaves(params)))  # moved
