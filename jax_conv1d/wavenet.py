"""A WaveNet-style model for the examples and the benchmark's training-step row (needs flax and optax).

A stack of residual blocks: a causal dilated convolution to 2 x channels, a gated activation (tanh x sigmoid),
then 1x1 convolutions for the residual and the skip path; the summed skips go through two more 1x1
convolutions to predict the next sample of the signal. `conv` picks the convolution layer, so the same model
runs on jax_conv1d.linen.Conv1D or on flax.linen.Conv (lax) with identical parameter trees. With Conv1D the
1x1 layers of a block can run as one call and the skip gradients of all blocks as one GEMM (Config's route
switches); nn.Conv always runs the plain composition, the reference the benchmark compares losses with.
"""

from __future__ import annotations

import dataclasses
import functools
import operator

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.flatten_util import ravel_pytree

from .linen import Conv1D

BACKENDS = {"ours": Conv1D, "flax": nn.Conv}


@dataclasses.dataclass(frozen=True)
class Config:
    layers: int = 10  # dilations 1, 2, 4, ..., 2**(layers - 1)
    channels: int = 128
    skip_channels: int = 128
    kernel_size: int = 2
    length: int = 65536
    batch: int = 8
    dtype: str = "float32"
    steps: int = 20
    lr: float = 1e-3
    seed: int = 0
    # How the "ours" backend computes (not what; the lax reference always runs the plain composition, and the
    # parameter trees are the same either way). fused_pointwise: a block's skip and residual 1x1 convolutions
    # run as one C -> 2C call (z read once). skip_grad_once: every block's skip dz comes from one GEMM over the
    # cotangent all skips share (sum_of_skips). Together -1.4 ms on the step (H100, session 6,
    # docs/notes/trainstep6_session6.md). gate_keeps_input: the gated activation's backward recomputes tanh
    # and sigmoid from h instead of XLA storing tanh; off because XLA then stores sigmoid in a fusion of its
    # own (measured +1.0 ms on the step with the other two).
    gate_keeps_input: bool = False
    fused_pointwise: bool = True
    skip_grad_once: bool = True

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(self.layers))


# ---- model ----------------------------------------------------------------------------------------------


def _gated(h):
    filt, gate = jnp.split(h, 2, axis=-1)
    return jnp.tanh(filt) * jax.nn.sigmoid(gate)


@jax.custom_vjp
def gated_activation(h):
    """tanh(filter) * sigmoid(gate) of h = [filter | gate] on the last axis; its gradient keeps h alone.

    Differentiating `_gated` directly keeps tanh(filter) for the backward pass, so XLA's forward fusion writes
    it (C per position) beside z (C per position). h (2 x C) stays in memory either way, so recomputing both
    nonlinearities from it in the backward could save that write; on the H100 it did (-0.9 ms over ten
    blocks), but XLA then wrote sigmoid(gate) from a fusion of its own for the backward (+1.8 ms), so
    Config.gate_keeps_input is off by default (docs/notes/trainstep6_session6.md)."""
    return _gated(h)


def _gated_fwd(h):
    return _gated(h), h


def _gated_bwd(h, dz):
    # Without the barrier XLA finds the forward's tanh(filter) again (common subexpressions) and stores it.
    filt, gate = jnp.split(lax.optimization_barrier(h), 2, axis=-1)
    t, s = jnp.tanh(filt), jax.nn.sigmoid(gate)
    d_filt = dz * s * (1 - t * t)
    d_gate = dz * t * (s * (1 - s))
    return (jnp.concatenate([d_filt, d_gate], axis=-1),)


gated_activation.defvjp(_gated_fwd, _gated_bwd)


class PointwiseParams(nn.Module):
    """A 1x1 convolution's parameters alone, named and initialized as nn.Conv's (for fused calls)."""
    features: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, in_features: int):
        kernel = self.param("kernel", nn.linear.default_kernel_init, (1, in_features, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return kernel.astype(self.dtype), bias.astype(self.dtype)


PointwiseParams.__name__ = "Conv"  # auto-named Conv_1, Conv_2 inside a block, like the layers it replaces


def _pointwise(z, kernel, bias=None):
    from .conv import dilated_conv1d

    return dilated_conv1d(z, kernel, bias, layout="NWC")


def _pointwise_dgrad(dy, kernel):
    """dz of y = z kernel: dy kernel^T, itself a 1x1 convolution of dy with the kernel's transpose."""
    return _pointwise(dy, jnp.swapaxes(kernel, 1, 2))


def _pointwise_wgrad(z, dy, kernel):
    _, vjp = jax.vjp(lambda k: _pointwise(z, k), kernel)
    return vjp(dy)[0]


def _bias_grad(dy):
    return jnp.sum(dy, axis=tuple(range(dy.ndim - 1)), dtype=jnp.promote_types(dy.dtype, jnp.float32)).astype(dy.dtype)


@functools.partial(jax.custom_vjp)
def shared_input_pointwise(z, params):
    """Several 1x1 convolutions of one input, params ((kernel, bias), ...), as one call with the kernels side
    by side: z is read once. The gradient runs each convolution's own backward (no concatenated cotangent)
    and skips the outputs whose cotangent is a symbolic zero."""
    kernel = jnp.concatenate([k for k, _ in params], axis=-1)
    bias = jnp.concatenate([b for _, b in params])
    y = _pointwise(z, kernel, bias)
    bounds = [0]
    for k, _ in params:
        bounds.append(bounds[-1] + k.shape[-1])
    return tuple(y[..., lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]))


def _shared_fwd(z, params):
    z, params = z.value, jax.tree.map(lambda p: p.value, params)
    return shared_input_pointwise(z, params), (z, params)


def _shared_bwd(res, cts):
    z, params = res
    dz, dparams = None, []
    for (k, b), ct in zip(params, cts):
        if isinstance(ct, SymbolicZero):
            dparams.append((None, None))
            continue
        _, vjp = jax.vjp(_pointwise, z, k, b)
        dz_i, dk, db = vjp(ct)
        dz = dz_i if dz is None else dz + dz_i
        dparams.append((dk, db))
    return dz, tuple(dparams)


shared_input_pointwise.defvjp(_shared_fwd, _shared_bwd, symbolic_zeros=True)


@jax.custom_vjp
def sum_of_skips(skips, zs, params):
    """skips[0] + skips[1] + ..., where skips[i] = zs[i] params[i][0] + params[i][1] (a 1x1 convolution)
    was computed by the caller (in one call with the block's residual convolution).

    The gradient is that of the sum of those convolutions, taken with respect to zs and params; skips get
    none (their own backward would repeat it). Every term's cotangent is the same array g, so dz of all
    layers comes from one GEMM that reads g once, g (kernel_0 | kernel_1 | ...)^T, instead of one per layer,
    and the bias gradients are one sum of g."""
    return functools.reduce(operator.add, skips)


def _skips_fwd(skips, zs, params):
    return sum_of_skips(skips, zs, params), (zs, params)


def _skips_bwd(res, g):
    zs, params = res
    dz_all = _pointwise_dgrad(g, jnp.concatenate([k for k, _ in params], axis=1))
    bounds = [0]
    for z in zs:
        bounds.append(bounds[-1] + z.shape[-1])
    dzs = tuple(dz_all[..., lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]))
    db = _bias_grad(g)
    dparams = tuple((_pointwise_wgrad(z, g, k), db) for z, (k, _) in zip(zs, params))
    return None, dzs, dparams


sum_of_skips.defvjp(_skips_fwd, _skips_bwd)


class ResidualBlock(nn.Module):
    conv: type
    channels: int
    skip_channels: int
    kernel_size: int
    dilation: int
    dtype: jnp.dtype
    routes: "Routes" = None  # how the 1x1 layers run (Conv1D only); None: as `conv` layers
    last: bool = False  # the last block's residual output is unused

    @nn.compact
    def __call__(self, x):
        """x -> (x + residual, skip, (z, skip parameters) for sum_of_skips, or None)."""
        r = self.routes
        h = self.conv(2 * self.channels, self.kernel_size, kernel_dilation=self.dilation, padding="CAUSAL",
                      dtype=self.dtype)(x)
        z = gated_activation(h) if r is not None and r.gate_keeps_input else _gated(h)
        if r is None or not (r.fused_pointwise or r.skip_grad_once):
            skip = self.conv(self.skip_channels, 1, dtype=self.dtype)(z)
            residual = self.conv(self.channels, 1, dtype=self.dtype)(z)
            return x + residual, skip, None
        skip_params = PointwiseParams(self.skip_channels, self.dtype)(z.shape[-1])
        residual_params = PointwiseParams(self.channels, self.dtype)(z.shape[-1])
        if r.fused_pointwise and not self.last:
            skip, residual = shared_input_pointwise(z, (skip_params, residual_params))
        else:
            skip, residual = _pointwise(z, *skip_params), _pointwise(z, *residual_params)
        return x + residual, skip, (z, skip_params)


@dataclasses.dataclass(frozen=True)
class Routes:
    """Config's route switches for the blocks (None in a block: the plain composition of `conv` layers)."""

    gate_keeps_input: bool
    fused_pointwise: bool
    skip_grad_once: bool


class WaveNet(nn.Module):
    conv: type  # Conv1D or nn.Conv: the only difference between the two backends
    config: Config

    @nn.compact
    def __call__(self, signal):
        """signal (batch, length) -> prediction of signal[:, t + 1] from signal[:, :t + 1], (batch, length)."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        routes = None
        if self.conv is Conv1D:  # nn.Conv (the lax reference) always runs the plain composition
            routes = Routes(cfg.gate_keeps_input, cfg.fused_pointwise, cfg.skip_grad_once)
        h = self.conv(cfg.channels, cfg.kernel_size, padding="CAUSAL", dtype=dtype)(signal[..., None])
        skips, taps = [], []
        for i, dilation in enumerate(cfg.dilations):
            h, skip, tap = ResidualBlock(self.conv, cfg.channels, cfg.skip_channels, cfg.kernel_size, dilation,
                                         dtype, routes, last=i + 1 == len(cfg.dilations))(h)
            skips.append(skip)
            taps.append(tap)
        if routes is not None and routes.skip_grad_once:
            skips = sum_of_skips(tuple(skips), tuple(z for z, _ in taps), tuple(p for _, p in taps))
        else:
            skips = functools.reduce(operator.add, skips)
        out = self.conv(cfg.skip_channels, 1, dtype=dtype)(nn.relu(skips))
        out = self.conv(1, 1, dtype=dtype)(nn.relu(out))
        return out[..., 0].astype(jnp.float32)


# ---- data and training ------------------------------------------------------------------------------------


def synthetic_batch(key, batch: int, length: int, tones: int = 4):
    """Sums of sinusoids with random frequencies, phases and amplitudes, plus a little noise."""
    k_freq, k_phase, k_amp, k_noise = jax.random.split(key, 4)
    freq = jax.random.uniform(k_freq, (batch, 1, tones), minval=1e-3, maxval=5e-2)  # cycles per sample
    phase = jax.random.uniform(k_phase, (batch, 1, tones), maxval=2 * jnp.pi)
    amp = jax.random.uniform(k_amp, (batch, 1, tones), minval=0.2, maxval=1.0) / tones
    t = jnp.arange(length, dtype=jnp.float32)[None, :, None]
    signal = jnp.sum(amp * jnp.sin(2 * jnp.pi * freq * t + phase), axis=-1)
    return signal + 0.01 * jax.random.normal(k_noise, (batch, length))


def next_sample_loss(model: WaveNet, params, signal):
    pred = model.apply({"params": params}, signal)
    return jnp.mean((pred[:, :-1] - signal[:, 1:]) ** 2)


def make_train_step(model: WaveNet, tx: optax.GradientTransformation):
    loss_fn = functools.partial(next_sample_loss, model)

    def train_step(params, opt_state, signal):
        loss, grads = jax.value_and_grad(loss_fn)(params, signal)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1))


def make_flat_train_step(model: WaveNet, tx: optax.GradientTransformation, params):
    """The same step on one flat vector of every parameter (ravel_pytree's order), so that the jitted call takes
    and donates a handful of buffers (the vector, Adam's two moment vectors and its count) instead of three per
    parameter leaf. Returns (step, flat parameters, unravel). Adam is elementwise, so the update is the tree
    step's; XLA may fuse it differently (last-bit differences)."""
    flat, unravel = ravel_pytree(params)

    def loss_fn(flat_params, signal):
        return next_sample_loss(model, unravel(flat_params), signal)

    def train_step(flat_params, opt_state, signal):
        loss, grads = jax.value_and_grad(loss_fn)(flat_params, signal)
        updates, opt_state = tx.update(grads, opt_state, flat_params)
        return optax.apply_updates(flat_params, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1)), flat, unravel


def init_params(cfg: Config):
    """Parameters for either backend: the trees are identical, and conv parameters do not depend on length."""
    model = WaveNet(nn.Conv, cfg)
    return model.init(jax.random.key(cfg.seed), jnp.zeros((1, 16), jnp.float32))["params"]
