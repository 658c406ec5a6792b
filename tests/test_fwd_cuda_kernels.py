"""The CUDA forward kernel families (implicit GEMM, depthwise, direct) against a float64 NumPy reference.

Each family is pinned through JAX_CONV1D_FWD_KERNEL (read by the dispatcher on every call), so a shape the
dispatcher would route elsewhere still exercises the family under test. Skipped without a GPU and the
compiled CUDA handlers. A longer randomized sweep lives in benchmarks/fwd_check.py.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import jax.numpy as jnp

from jax_conv1d import dilated_conv1d
from jax_conv1d._shapes import resolve_padding


pytestmark = pytest.mark.gpu  # conftest skips these without a GPU and the CUDA handlers

# (input dtype, output dtype, precision) -> bound on ||y - ref|| / ||ref||
TOLERANCE = {
    ("float32", "float32", "default"): 1.5e-3,  # TF32 operands
    ("float32", "float32", "highest"): 1e-5,  # 3xTF32
    ("bfloat16", "bfloat16", "default"): 8e-3,  # bf16 output rounding
    ("bfloat16", "float32", "default"): 1e-5,  # exact products, fp32 accumulation
    ("float16", "float16", "default"): 2e-3,
}


def reference(x, w, b, *, stride, dilation, pads, groups, layout):
    """float64 cross-correlation, lax.conv_general_dilated's semantics, in NumPy."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    if layout == "NWC":
        x, w = x.transpose(0, 2, 1), w.transpose(2, 1, 0)
    n, c, length = x.shape
    o, cg, k = w.shape
    lo, hi = pads
    x = x[:, :, max(-lo, 0):length - max(-hi, 0)]
    x = np.pad(x, ((0, 0), (0, 0), (max(lo, 0), max(hi, 0))))
    lout = max(0, (x.shape[2] - (k - 1) * dilation - 1) // stride + 1)
    og = o // groups
    y = np.zeros((n, o, lout))
    for g in range(groups):
        for tap in range(k):
            xs = x[:, g * cg:(g + 1) * cg, tap * dilation:tap * dilation + (lout - 1) * stride + 1:stride]
            y[:, g * og:(g + 1) * og] += np.einsum("ncl,oc->nol", xs, w[g * og:(g + 1) * og, :, tap])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None]
    return y.transpose(0, 2, 1) if layout == "NWC" else y


# n, c, o, k, length, stride, dilation, padding, groups, with bias
SHAPES = [
    (2, 64, 128, 3, 4096, 3, 4, "VALID", 1, False),  # the headline's geometry, shorter
    (2, 100, 300, 3, 1000, 3, 4, "SAME", 1, True),  # several o-tiles and channel chunks, ragged
    (2, 128, 256, 2, 1500, 1, 64, "CAUSAL", 1, True),  # WaveNet-style
    (2, 64, 96, 3, 1200, 1, 256, "CAUSAL", 1, True),  # taps further apart than a tile: a gapped window
    (3, 24, 40, 5, 301, 2, 3, (4, -2), 4, True),  # grouped, negative padding, odd length
    (1, 7, 5, 9, 77, 4, 1, "SAME", 1, False),  # tiny, nothing aligned
    (2, 64, 64, 7, 1000, 1, 8, "SAME", 64, True),  # depthwise
    (2, 48, 96, 4, 333, 1, 1, "CAUSAL", 48, True),  # depthwise, multiplier 2
    (2, 30, 90, 3, 257, 2, 2, "VALID", 30, False),  # depthwise, multiplier 3, stride 2
]


def _families(groups, c):
    return ("auto", "direct", "depthwise", "igemm") if groups == c else ("auto", "direct", "igemm")


def _run(monkeypatch, family, x, w, b, **kw):
    monkeypatch.setenv("JAX_CONV1D_FWD_KERNEL", family)
    return np.asarray(jnp.asarray(dilated_conv1d(x, w, b, **kw)).astype(jnp.float32))


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("dtypes", list(TOLERANCE))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}C{s[1]}O{s[2]}K{s[3]}L{s[4]}s{s[5]}d{s[6]}g{s[8]}")
def test_forward_families_match_float64(monkeypatch, shape, dtypes, layout):
    n, c, o, k, length, stride, dilation, padding, groups, with_bias = shape
    in_dt, out_dt, precision = dtypes
    rng = np.random.default_rng(zlib.crc32(repr((shape, dtypes, layout)).encode()))
    cg = c // groups
    xs, ws = ((n, c, length), (o, cg, k)) if layout == "NCW" else ((n, length, c), (k, cg, o))
    x = jnp.asarray(rng.standard_normal(xs), in_dt)
    w = jnp.asarray(rng.standard_normal(ws) / np.sqrt(cg * k), in_dt)
    b = jnp.asarray(rng.standard_normal(o), in_dt) if with_bias else None
    pads = resolve_padding(padding, length, k, stride, dilation)
    ref = reference(x.astype(jnp.float32), w.astype(jnp.float32), None if b is None else b.astype(jnp.float32),
                    stride=stride, dilation=dilation, pads=pads, groups=groups, layout=layout)
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, layout=layout, precision=precision,
              preferred_element_type=out_dt)
    for family in _families(groups, c):
        y = _run(monkeypatch, family, x, w, b, **kw)
        assert y.shape == ref.shape
        assert np.all(np.isfinite(y)), family
        err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
        assert err < TOLERANCE[dtypes], (family, err)
        assert np.max(np.abs(y - ref)) < 8 * TOLERANCE[dtypes] * np.max(np.abs(ref)), family


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_forward_is_bitwise_reproducible(monkeypatch, layout):
    rng = np.random.default_rng(1)
    xs, ws = ((2, 96, 3000), (160, 96, 3)) if layout == "NCW" else ((2, 3000, 96), (3, 96, 160))
    x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)
    kw = dict(stride=2, dilation=3, padding="SAME", layout=layout)
    first = _run(monkeypatch, "auto", x, w, None, **kw)
    for _ in range(3):
        np.testing.assert_array_equal(_run(monkeypatch, "auto", x, w, None, **kw), first)


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_igemm_staged_stores_match_direct_stores(monkeypatch, layout, dtype):
    """The implicit GEMM's interior tiles store through a shared-memory staging area; the edge tiles (and
    JAX_CONV1D_IGEMM_STAGED_STORES=0) store straight from the fragments. Same sums, so bitwise equal."""
    rng = np.random.default_rng(2)
    xs, ws = ((2, 64, 5000), (192, 64, 3)) if layout == "NCW" else ((2, 5000, 64), (3, 64, 192))
    x = jnp.asarray(rng.standard_normal(xs), dtype)
    w = jnp.asarray(rng.standard_normal(ws) / 14.0, dtype)
    b = jnp.asarray(rng.standard_normal(192), dtype)
    kw = dict(stride=3, dilation=4, padding="SAME", layout=layout)
    monkeypatch.setenv("JAX_CONV1D_IGEMM_STAGED_STORES", "1")
    staged = _run(monkeypatch, "igemm", x, w, b, **kw)
    monkeypatch.setenv("JAX_CONV1D_IGEMM_STAGED_STORES", "0")
    direct = _run(monkeypatch, "igemm", x, w, b, **kw)
    assert np.all(np.isfinite(staged))
    np.testing.assert_array_equal(staged, direct)


# (x shape NWC, w shape KCO, kwargs): WaveNet's layer, a ragged one with edge tiles and a partial o-tile,
# a strided K = 3 one (the wide tiles take any NWC shape when pinned), and a gapped window.
WIDE_SHAPES = [
    ((2, 1500, 128), (2, 128, 256), dict(dilation=64, padding="CAUSAL")),
    ((3, 700, 96), (2, 96, 200), dict(dilation=1, padding="CAUSAL")),
    ((2, 2100, 64), (3, 64, 96), dict(stride=2, dilation=3, padding="SAME")),
    ((2, 1800, 64), (2, 64, 128), dict(dilation=512, padding="CAUSAL")),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", range(len(WIDE_SHAPES)))
def test_wide_warp_tiles_match_narrow_tiles_bitwise(monkeypatch, case, dtype):
    """The 64 x 64 warp tiles (128 x 256 and 64 x 512 blocks) add the same products in the same order as the
    64 x 32 ones (pair (chunk, tap) by pair, k-step 0 before 1), so pinned they must give the same bits; and
    they must match float64."""
    xs, ws, kw = WIDE_SHAPES[case]
    rng = np.random.default_rng(10 + case)
    x = jnp.asarray(rng.standard_normal(xs), dtype)
    w = jnp.asarray(rng.standard_normal(ws) / np.sqrt(ws[0] * ws[1]), dtype)
    b = jnp.asarray(rng.standard_normal(ws[2]), dtype)
    kw = dict(layout="NWC", **kw)
    pads = resolve_padding(kw.get("padding"), xs[1], ws[0], kw.get("stride", 1), kw.get("dilation", 1))
    ref = reference(x.astype(jnp.float32), w.astype(jnp.float32), b.astype(jnp.float32), stride=kw.get("stride", 1),
                    dilation=kw.get("dilation", 1), pads=pads, groups=1, layout="NWC")
    tol = TOLERANCE[(dtype, dtype, "default")]
    outs = {}
    for tile in ("128x128", "64x256", "128x256", "64x512"):
        monkeypatch.setenv("JAX_CONV1D_IGEMM_TILE", tile)
        outs[tile] = _run(monkeypatch, "igemm", x, w, b, **kw)
        assert np.all(np.isfinite(outs[tile])), tile
        assert np.linalg.norm(outs[tile] - ref) / np.linalg.norm(ref) < tol, tile
    np.testing.assert_array_equal(outs["128x256"], outs["128x128"])
    np.testing.assert_array_equal(outs["64x512"], outs["64x256"])


def test_wide_warp_tiles_in_the_stride1_input_gradient(monkeypatch):
    """WaveNet's input gradient runs the forward kernel (dgrad_as_forward.cu) on a 64-row tile; pinned to the
    64 x 512 block of wide warp tiles it must give the bits of the default (64 x 256) and float64's values."""
    import jax

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 1500, 128)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((2, 128, 256)) / 16.0, jnp.float32)
    dy = jnp.asarray(rng.standard_normal((2, 1500, 256)), jnp.float32)
    kw = dict(dilation=64, padding="CAUSAL", layout="NWC")

    def dx():
        _, vjp = jax.vjp(lambda x_: dilated_conv1d(x_, w, **kw), x)
        return np.asarray(vjp(dy)[0])

    monkeypatch.setenv("JAX_CONV1D_IGEMM_TILE", "64x512")
    wide = dx()
    monkeypatch.delenv("JAX_CONV1D_IGEMM_TILE")
    narrow = dx()
    np.testing.assert_array_equal(wide, narrow)
    # float64: dx[n, l, c] = sum_{k, o} w[k, c, o] * dy[n, l + 64 (1 - k), o] (causal: pad 64 on the left)
    w64, dy64 = np.asarray(w, np.float64), np.asarray(dy, np.float64)
    ref = np.einsum("nlo,co->nlc", dy64, w64[1])
    ref[:, :-64] += np.einsum("nlo,co->nlc", dy64[:, 64:], w64[0])
    assert np.linalg.norm(wide - ref) / np.linalg.norm(ref) < 1.5e-3


def test_wide_warp_tile_default_matches_old_tiles(monkeypatch):
    """WaveNet's forward (dilation <= 64) takes the 128 x 256 wide tile by default: same bits as with
    JAX_CONV1D_IGEMM_WIDE=0, at dilations on both sides of the rule's window limit."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 3000, 128)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((2, 128, 256)) / 16.0, jnp.float32)
    b = jnp.asarray(rng.standard_normal(256), jnp.float32)
    for d in (1, 64, 128, 512):
        kw = dict(dilation=d, padding="CAUSAL", layout="NWC")
        monkeypatch.delenv("JAX_CONV1D_IGEMM_WIDE", raising=False)
        new = _run(monkeypatch, "auto", x, w, b, **kw)
        monkeypatch.setenv("JAX_CONV1D_IGEMM_WIDE", "0")
        old = _run(monkeypatch, "auto", x, w, b, **kw)
        monkeypatch.delenv("JAX_CONV1D_IGEMM_WIDE")
        assert np.all(np.isfinite(new)), d
        np.testing.assert_array_equal(new, old)


@pytest.mark.parametrize("c,o,stride", [(64, 128, 3), (48, 100, 4), (64, 72, 5)])
def test_short_tile_default_matches_old_tiles(monkeypatch, c, o, stride):
    """NWC float32 at stride >= 3 with 64 < Og <= 128 takes the short 128 x 64 tile (whole input rows per step)
    by default: the bits of JAX_CONV1D_IGEMM_SHORT=0 (the 128 x 128 tile) and of its other plan (two chunks
    per step, eight stages), and float64's values. Lengths leave a partial last tile; SAME pads both ends."""
    rng = np.random.default_rng(c + o + stride)
    x = jnp.asarray(rng.standard_normal((2, 4001, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, c, o)) / np.sqrt(3 * c), jnp.float32)
    b = jnp.asarray(rng.standard_normal(o), jnp.float32)
    kw = dict(stride=stride, dilation=4, padding="SAME", layout="NWC")
    for k in ("JAX_CONV1D_IGEMM_SHORT", "JAX_CONV1D_IGEMM_STEP_CHUNKS", "JAX_CONV1D_IGEMM_STAGES"):
        monkeypatch.delenv(k, raising=False)
    new = _run(monkeypatch, "auto", x, w, b, **kw)
    monkeypatch.setenv("JAX_CONV1D_IGEMM_STEP_CHUNKS", "2")
    monkeypatch.setenv("JAX_CONV1D_IGEMM_STAGES", "8")
    monkeypatch.setenv("JAX_CONV1D_IGEMM_TILE", "128x64")
    deep = _run(monkeypatch, "igemm", x, w, b, **kw)
    for k in ("JAX_CONV1D_IGEMM_STEP_CHUNKS", "JAX_CONV1D_IGEMM_STAGES", "JAX_CONV1D_IGEMM_TILE"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("JAX_CONV1D_IGEMM_SHORT", "0")
    old = _run(monkeypatch, "auto", x, w, b, **kw)
    monkeypatch.delenv("JAX_CONV1D_IGEMM_SHORT")
    pads = resolve_padding("SAME", 4001, 3, stride, 4)
    ref = reference(x, w, b, stride=stride, dilation=4, pads=pads, groups=1, layout="NWC")
    assert np.all(np.isfinite(new))
    assert np.linalg.norm(new - ref) / np.linalg.norm(ref) < TOLERANCE[("float32", "float32", "default")]
    np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(new, deep)


def test_bf16_nwc_two_chunks_per_step_matches_one(monkeypatch):
    """16-bit NWC at stride >= 3 with two channel chunks (whole 128-byte rows) takes both per pipeline step by
    default: the bits of one chunk per step, and float64's values."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((2, 3001, 64)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((3, 64, 128)) / np.sqrt(192), jnp.bfloat16)
    kw = dict(stride=3, dilation=4, padding="VALID", layout="NWC")
    monkeypatch.delenv("JAX_CONV1D_IGEMM_STEP_CHUNKS", raising=False)
    new = _run(monkeypatch, "auto", x, w, None, **kw)
    monkeypatch.setenv("JAX_CONV1D_IGEMM_STEP_CHUNKS", "1")
    old = _run(monkeypatch, "auto", x, w, None, **kw)
    monkeypatch.delenv("JAX_CONV1D_IGEMM_STEP_CHUNKS")
    ref = reference(x.astype(jnp.float32), w.astype(jnp.float32), None, stride=3, dilation=4, pads=(0, 0), groups=1,
                    layout="NWC")
    assert np.linalg.norm(new - ref) / np.linalg.norm(ref) < TOLERANCE[("bfloat16", "bfloat16", "default")]
    np.testing.assert_array_equal(new, old)
