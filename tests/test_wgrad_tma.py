"""The dense weight gradient's tensor-map kernel (csrc/cuda/wgrad_tma.cuh; NWC float32 at default precision).

It must give the bits of the per-thread-copy kernel (JAX_CONV1D_WGRAD_LOADS=rows: the same products summed in
the same order, only the lane that owns an accumulator differs) and the float64 dw within the TF32 bound, on
shapes that exercise what the copy engine now does alone: padding on both sides (negative coordinates), ragged
last units, partial output-channel tiles, channel blocks of 32..128 channels, several taps per column block,
odd and even strides, and groups. Marked `gpu`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conv_reference import float64_vjp_reference
from jax_conv1d import dilated_conv1d

# (n, c, o, length, k, stride, dilation, padding, groups)
SHAPES = [
    (2, 128, 256, 4099, 2, 1, 1, "CAUSAL", 1),
    (3, 64, 128, 3001, 3, 3, 4, ((7, 5),), 1),
    (2, 96, 200, 2050, 5, 2, 3, "SAME", 1),
    (2, 128, 256, 3000, 3, 1, 1, "SAME", 2),
    (1, 256, 384, 1500, 3, 2, 1, ((-3, 9),), 1),
]


def _dw_db(x, w, b, g, **kw):
    return jax.jit(lambda x_, w_, b_, g_: jax.vjp(lambda w2, b2: dilated_conv1d(x_, w2, b2, **kw), w_, b_)[1](g_))(
        x, w, b, g)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tma_wgrad_matches_row_copies_and_float64(shape, gpu, monkeypatch):
    n, c, o, length, k, s, d, padding, groups = shape
    rng = np.random.default_rng(sum(shape[:7]))
    kw = dict(stride=s, dilation=d, padding=padding, groups=groups, layout="NWC")
    x64 = rng.standard_normal((n, length, c))
    w64 = rng.standard_normal((k, c // groups, o))
    b64 = rng.standard_normal((o,))
    y_shape = jax.eval_shape(lambda x_, w_: dilated_conv1d(x_, w_, **kw), jnp.zeros(x64.shape, jnp.float32),
                             jnp.zeros(w64.shape, jnp.float32)).shape
    g64 = rng.standard_normal(y_shape)
    on = lambda a: jax.device_put(jnp.asarray(a, jnp.float32), gpu)  # noqa: E731
    x, w, b, g = on(x64), on(w64), on(b64), on(g64)

    monkeypatch.setenv("JAX_CONV1D_WGRAD_LOADS", "rows")
    dw_rows, db_rows = _dw_db(x, w, b, g, **kw)
    monkeypatch.delenv("JAX_CONV1D_WGRAD_LOADS")
    dw, db = _dw_db(x, w, b, g, **kw)
    dw_again, _ = _dw_db(x, w, b, g, **kw)
    assert bool(jnp.array_equal(dw, dw_rows)) and bool(jnp.array_equal(db, db_rows))
    assert bool(jnp.array_equal(dw, dw_again))

    _, dw_ref, db_ref = float64_vjp_reference(x, w, b, g, **kw)
    err = np.linalg.norm(np.asarray(dw, np.float64) - dw_ref) / np.linalg.norm(dw_ref)
    db_err = np.linalg.norm(np.asarray(db, np.float64) - db_ref) / np.linalg.norm(db_ref)
    assert err < 1e-3, err
    assert db_err < 1e-5, db_err


@pytest.mark.gpu
@pytest.mark.parametrize("dilation", [1, 32, 512])
def test_loops_and_tiles_give_the_same_bits(dilation, gpu, monkeypatch):
    """WaveNet's layer shape (C 128 -> O 256, K 2) through the three TMA loops: the default 128 x 256 tile (both
    taps in one block, block barrier per unit; 3 stages at d 1, 2 at d 32 and 512), session 7's 128 x 128 tile
    with the producer warp (JAX_CONV1D_WGRAD_TILE=narrow) and session 5's 128 x 128 block loop (and
    JAX_CONV1D_WGRAD_RELEASE=block): the same bits (same splits, same products in the same order), repeatable,
    on a shape whose splits take ~15 units each, so the stage ring wraps several times (SHAPES above give each
    split one or two units)."""
    rng = np.random.default_rng(7 + dilation)
    kw = dict(dilation=dilation, padding="CAUSAL", layout="NWC")
    on = lambda a: jax.device_put(jnp.asarray(a, jnp.float32), gpu)  # noqa: E731
    x = on(rng.standard_normal((8, 16384, 128)))
    w = on(rng.standard_normal((2, 128, 256)))
    b = on(rng.standard_normal((256,)))
    g = on(rng.standard_normal((8, 16384, 256)))
    monkeypatch.setenv("JAX_CONV1D_WGRAD_TILE", "narrow")
    dw_narrow, db_narrow = _dw_db(x, w, b, g, **kw)
    monkeypatch.setenv("JAX_CONV1D_WGRAD_RELEASE", "block")
    dw_block, db_block = _dw_db(x, w, b, g, **kw)
    monkeypatch.delenv("JAX_CONV1D_WGRAD_RELEASE")
    monkeypatch.delenv("JAX_CONV1D_WGRAD_TILE")
    dw, db = _dw_db(x, w, b, g, **kw)
    dw_again, db_again = _dw_db(x, w, b, g, **kw)
    assert bool(jnp.array_equal(dw, dw_narrow)) and bool(jnp.array_equal(db, db_narrow))
    assert bool(jnp.array_equal(dw, dw_block)) and bool(jnp.array_equal(db, db_block))
    assert bool(jnp.array_equal(dw, dw_again)) and bool(jnp.array_equal(db, db_again))
    assert bool(jnp.all(jnp.isfinite(dw))) and float(jnp.max(jnp.abs(dw))) > 0
