"""The dense wgrad's tensor-map (TMA) path against its per-thread-copy path and float64, on the shapes it takes.

    python benchmarks/wgrad_tma_check.py

For each NWC float32 shape: dw (and db) with JAX_CONV1D_WGRAD_LOADS=rows (per-thread cp.async copies) and with
the default (wgrad_tma_kernel where the shape allows it, on 128 x 256 tiles where they cost no more MMA
columns), with JAX_CONV1D_WGRAD_RELEASE=block (the TMA kernel's session-5 loop, one block barrier per unit) and
with JAX_CONV1D_WGRAD_TILE=narrow (no 128 x 256 tile) must be bitwise equal, bitwise repeatable, and within
the TF32 bound of a float64 reference. Shapes cover padding on both sides, ragged last units, odd and even
strides, dilations, several taps per column block, partial output-channel tiles, channel blocks of 32/64/96/128,
and groups.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_conv1d import dilated_conv1d

# (n, c, o, length, k, stride, dilation, padding, groups, bias)
SHAPES = [
    (2, 128, 256, 4099, 2, 1, 1, "CAUSAL", 1, True),
    (2, 128, 128, 5000, 1, 1, 1, "VALID", 1, True),
    (3, 64, 128, 9001, 3, 3, 4, "VALID", 1, False),
    (2, 64, 128, 3001, 3, 3, 4, ((7, 5),), 1, True),
    (2, 96, 200, 2050, 5, 2, 3, "SAME", 1, True),
    (2, 32, 64, 1030, 4, 1, 2, "SAME", 1, False),
    (2, 128, 256, 2100, 2, 1, 64, "CAUSAL", 1, True),
    (2, 128, 256, 3000, 3, 1, 1, "SAME", 2, True),
    (1, 256, 384, 1500, 3, 2, 1, ((-3, 9),), 1, True),
    # ~15 units per split: the stage ring wraps several times (the shapes above give each split 1-2 units)
    (8, 128, 256, 16384, 2, 1, 32, "CAUSAL", 1, True),
]


def ref_dw(x, g, *, k, stride, dilation, pad, groups):
    """float64 dw (K, C/g, O) and db of an NWC conv by direct summation over taps."""
    x = np.asarray(x, np.float64)
    g = np.asarray(g, np.float64)
    n, length, c = x.shape
    t_len, o = g.shape[1], g.shape[2]
    cg, og = c // groups, o // groups
    lo = pad[0]
    xp = np.zeros((n, length + lo + max(pad[1], 0) + k * dilation + t_len * stride, c))
    if lo >= 0:
        xp[:, lo:lo + length] = x
    else:
        xp[:, :length + lo] = x[:, -lo:]
    dw = np.zeros((k, cg, o))
    for j in range(k):
        win = xp[:, j * dilation: j * dilation + (t_len - 1) * stride + 1: stride]  # (n, t, c)
        for gi in range(groups):
            dw[j, :, gi * og:(gi + 1) * og] = np.einsum(
                "ntc,nto->co", win[..., gi * cg:(gi + 1) * cg], g[..., gi * og:(gi + 1) * og], optimize=True)
    return dw, g.sum(axis=(0, 1))


def main():
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    ok_all = True
    for i, (n, c, o, length, k, s, d, padding, groups, bias) in enumerate(SHAPES):
        kx, kw, kb, kg = jax.random.split(jax.random.key(10 + i), 4)
        x = jax.random.normal(kx, (n, length, c), jnp.float32)
        w = jax.random.normal(kw, (k, c // groups, o), jnp.float32)
        b = jax.random.normal(kb, (o,), jnp.float32) if bias else None
        kw_ = dict(stride=s, dilation=d, padding=padding, groups=groups, layout="NWC")
        y_shape = jax.eval_shape(lambda x_, w_: dilated_conv1d(x_, w_, **kw_), x, w).shape
        g = jax.random.normal(kg, y_shape, jnp.float32)
        f = jax.jit(lambda x_, w_, b_, g_: jax.vjp(lambda w2, b2: dilated_conv1d(x_, w2, b2, **kw_), w_, b_)[1](g_))
        os.environ["JAX_CONV1D_WGRAD_LOADS"] = "rows"
        ref_bits = jax.block_until_ready(f(x, w, b, g))
        os.environ.pop("JAX_CONV1D_WGRAD_LOADS")
        os.environ["JAX_CONV1D_WGRAD_RELEASE"] = "block"  # session 5's loop: one block barrier per unit
        block_bits = jax.block_until_ready(f(x, w, b, g))
        os.environ.pop("JAX_CONV1D_WGRAD_RELEASE")
        os.environ["JAX_CONV1D_WGRAD_TILE"] = "narrow"  # no 128 x 256 tile (session 7's plans)
        narrow_bits = jax.block_until_ready(f(x, w, b, g))
        os.environ.pop("JAX_CONV1D_WGRAD_TILE")
        out = jax.block_until_ready(f(x, w, b, g))
        again = jax.block_until_ready(f(x, w, b, g))
        same = all(bool(jnp.array_equal(p, q)) for p, q in zip(out, ref_bits) if p is not None)
        same_block = all(bool(jnp.array_equal(p, q)) for p, q in zip(out, block_bits) if p is not None)
        same_narrow = all(bool(jnp.array_equal(p, q)) for p, q in zip(out, narrow_bits) if p is not None)
        rep = all(bool(jnp.array_equal(p, q)) for p, q in zip(out, again) if p is not None)
        if padding == "CAUSAL":
            pad = ((k - 1) * d, 0)
        elif padding == "VALID":
            pad = (0, 0)
        elif padding == "SAME":
            tot = max((-(-length // s) - 1) * s + (k - 1) * d + 1 - length, 0)
            pad = (tot // 2, tot - tot // 2)
        else:
            pad = padding[0]
        dw64, db64 = ref_dw(x, g, k=k, stride=s, dilation=d, pad=pad, groups=groups)
        err = float(np.linalg.norm(np.asarray(out[0], np.float64) - dw64) / np.linalg.norm(dw64))
        db_err = 0.0 if b is None else float(np.linalg.norm(np.asarray(out[1], np.float64) - db64) / np.linalg.norm(db64))
        ok = same and same_block and same_narrow and rep and err < 1e-3 and db_err < 1e-5 and bool(jnp.all(jnp.isfinite(out[0])))
        ok_all &= ok
        print(f"{'ok  ' if ok else 'FAIL'} {(n, c, o, length, k, s, d, padding, groups, bias)} bits vs rows "
              f"{'same' if same else 'DIFF'} vs block {'same' if same_block else 'DIFF'} "
              f"vs narrow {'same' if same_narrow else 'DIFF'} "
              f"repeat {'ok' if rep else 'NO'} dw err {err:.2e} db err {db_err:.1e}",
              flush=True)
    print("tma check:", "all ok" if ok_all else "FAILURES")


if __name__ == "__main__":
    main()
