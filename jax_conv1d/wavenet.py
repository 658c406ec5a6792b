"""A WaveNet-style model for the examples and the benchmark's training-step row (needs flax and optax).

A stack of residual blocks: a causal dilated convolution to 2 x channels, a gated activation (tanh x sigmoid),
then 1x1 convolutions for the residual and the skip path; the summed skips go through two more 1x1
convolutions to predict the next sample of the signal. `conv` picks the convolution layer, so the same model
runs on jax_conv1d.linen.Conv1D or on flax.linen.Conv (lax) with identical parameter trees.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

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

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(self.layers))


# ---- model ----------------------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    conv: type
    channels: int
    skip_channels: int
    kernel_size: int
    dilation: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        h = self.conv(2 * self.channels, self.kernel_size, kernel_dilation=self.dilation, padding="CAUSAL",
                      dtype=self.dtype)(x)
        filt, gate = jnp.split(h, 2, axis=-1)
        z = jnp.tanh(filt) * jax.nn.sigmoid(gate)
        skip = self.conv(self.skip_channels, 1, dtype=self.dtype)(z)
        residual = self.conv(self.channels, 1, dtype=self.dtype)(z)
        return x + residual, skip


class WaveNet(nn.Module):
    conv: type  # Conv1D or nn.Conv: the only difference between the two backends
    config: Config

    @nn.compact
    def __call__(self, signal):
        """signal (batch, length) -> prediction of signal[:, t + 1] from signal[:, :t + 1], (batch, length)."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        h = self.conv(cfg.channels, cfg.kernel_size, padding="CAUSAL", dtype=dtype)(signal[..., None])
        skips = 0
        for dilation in cfg.dilations:
            h, skip = ResidualBlock(self.conv, cfg.channels, cfg.skip_channels, cfg.kernel_size, dilation, dtype)(h)
            skips = skips + skip
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


def make_train_step(model: WaveNet, tx: optax.GradientTransformation):
    def loss_fn(params, signal):
        pred = model.apply({"params": params}, signal)
        return jnp.mean((pred[:, :-1] - signal[:, 1:]) ** 2)

    def train_step(params, opt_state, signal):
        loss, grads = jax.value_and_grad(loss_fn)(params, signal)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1))


def init_params(cfg: Config):
    """Parameters for either backend: the trees are identical, and conv parameters do not depend on length."""
    model = WaveNet(nn.Conv, cfg)
    return model.init(jax.random.key(cfg.seed), jnp.zeros((1, 16), jnp.float32))["params"]
