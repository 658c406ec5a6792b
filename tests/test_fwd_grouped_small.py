"""The small-group forward family (csrc/cuda/fwd_grouped_small.cu) against float64 lax on the CPU.

The family is pinned through JAX_CONV1D_FWD_KERNEL=grouped and also reached through the default dispatch
("auto") for the grouped shapes it is meant for. It takes Og <= 32 and Cg * K <= 1024 (the default dispatch
sends it a narrower set, _auto_runs_grouped); outside that a pinned "grouped" falls back to the direct kernel,
so the shapes here stay inside. Skipped without a GPU and the compiled CUDA handlers.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import jax.numpy as jnp

from conv_reference import float64_reference
from jax_conv1d import dilated_conv1d


pytestmark = pytest.mark.gpu  # conftest skips these without a GPU and the CUDA handlers

# (input dtype, output dtype) -> bound on ||y - ref|| / ||ref||; the family multiplies in fp32 on CUDA cores
# whatever the precision, so the error is the output rounding alone.
TOLERANCE = {
    ("float32", "float32"): 1e-5,
    ("bfloat16", "bfloat16"): 8e-3,
    ("bfloat16", "float32"): 1e-5,
    ("float16", "float16"): 2e-3,
    ("float16", "float32"): 1e-5,
}

# n, c, o, k, length, stride, dilation, padding, groups, with bias
SHAPES = [
    (2, 32, 32, 6, 3000, 1, 2, "CAUSAL", 8, False),  # sweep/038's geometry, shorter: Cg = Og = 4
    (2, 16, 16, 8, 5000, 3, 3, "VALID", 8, False),  # sweep/044's: Cg = Og = 2, stride 3
    (2, 64, 128, 3, 2000, 1, 8, "VALID", 8, True),  # sweep/016's: Cg 8, Og 16
    (1, 16, 256, 6, 3001, 2, 4, "VALID", 8, False),  # Og 32, odd length
    (2, 24, 36, 5, 1003, 2, 3, (7, -2), 6, True),  # Og 6 (in the 8-wide instantiation), 6 groups (NWC: 4 + 2)
    (3, 40, 60, 4, 777, 4, 1, "SAME", 20, True),  # Og 3, 20 groups, stride 4
    (1, 48, 24, 3, 2500, 1, 700, (900, 5), 12, False),  # dilation wider than a tile, padding wider still
    (2, 6, 3, 1, 5, 5, 1, "VALID", 3, True),  # tiny: one output position per row
    (2, 256, 32, 4, 700, 4, 6, "CAUSAL", 8, False),  # Cg * K = 128; its NCW window (stride 4) is too big: declined
]


def _inputs(shape, in_dt, layout):
    n, c, o, k, length, stride, dilation, padding, groups, with_bias = shape
    rng = np.random.default_rng(zlib.crc32(repr((shape, in_dt, layout)).encode()))
    cg = c // groups
    xs, ws = ((n, c, length), (o, cg, k)) if layout == "NCW" else ((n, length, c), (k, cg, o))
    x = jnp.asarray(rng.standard_normal(xs), in_dt)
    w = jnp.asarray(rng.standard_normal(ws) / np.sqrt(cg * k), in_dt)
    b = jnp.asarray(rng.standard_normal(o), in_dt) if with_bias else None
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, layout=layout)
    return x, w, b, kw


def _auto_runs_grouped(shape, layout, in_dt, out_dt, out_shape):
    """grouped_small_preferred (fwd_grouped_small.cu), restated."""
    n, c, o, k, length, *_, groups, _ = shape
    cg, og, ncw = c // groups, o // groups, layout == "NCW"
    if groups < 2 or cg < 2 or cg * k > (128 if ncw else 64) or og > (32 if ncw else 16):
        return False
    y_size = int(np.prod(out_shape))
    nbytes = n * c * length * np.dtype(in_dt).itemsize + y_size * np.dtype(out_dt).itemsize
    return y_size * cg * k <= (11 if ncw else 9) * nbytes


def _run(monkeypatch, family, x, w, b, **kw):
    monkeypatch.setenv("JAX_CONV1D_FWD_KERNEL", family)
    y = dilated_conv1d(x, w, b, **kw)
    return np.asarray(jnp.asarray(y).astype(jnp.float64))


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("dtypes", list(TOLERANCE), ids="-".join)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"C{s[1]}O{s[2]}K{s[3]}L{s[4]}s{s[5]}d{s[6]}g{s[8]}")
def test_grouped_small_matches_float64(monkeypatch, shape, dtypes, layout):
    in_dt, out_dt = dtypes
    x, w, b, kw = _inputs(shape, in_dt, layout)
    ref = float64_reference(x, w, b, **kw)
    tol = TOLERANCE[dtypes]
    # where the default dispatch picks the implicit GEMM instead (TF32 for float32, outside these tolerances),
    # "auto" is left to the other kernel tests
    families = ("grouped", "auto") if _auto_runs_grouped(shape, layout, in_dt, out_dt, ref.shape) else ("grouped",)
    for family in families:
        y = _run(monkeypatch, family, x, w, b, preferred_element_type=out_dt, **kw)
        assert y.shape == ref.shape
        assert np.all(np.isfinite(y)), family
        # The family declines windows over 96 KB (large strides and dilations), and "auto" then runs the
        # implicit GEMM: TF32 for float32 inputs, so "auto" gets the default-precision bound for float32.
        bound = max(tol, 1.5e-3) if family == "auto" and in_dt == "float32" else tol
        err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
        assert err < bound, (family, err)
        assert np.max(np.abs(y - ref)) < 8 * bound * np.max(np.abs(ref)), family


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_grouped_small_is_bitwise_reproducible_and_independent_of_the_output_buffer(monkeypatch, layout):
    x, w, b, kw = _inputs(SHAPES[0], "bfloat16", layout)
    first = _run(monkeypatch, "grouped", x, w, b, **kw)
    for _ in range(3):
        # a NaN-filled buffer of the output's size freed just before, so unwritten outputs would show
        jnp.full(first.shape, jnp.nan, jnp.bfloat16).block_until_ready()
        np.testing.assert_array_equal(_run(monkeypatch, "grouped", x, w, b, **kw), first)


def test_grouped_small_takes_dense_shapes_when_pinned(monkeypatch):
    """groups = 1 with few channels is inside the family's domain too (the default dispatch keeps it on the
    implicit GEMM): same float64 check."""
    x, w, b, kw = _inputs((2, 8, 16, 8, 1500, 1, 1, "SAME", 1, True), "float32", "NWC")
    ref = float64_reference(x, w, b, **kw)
    y = _run(monkeypatch, "grouped", x, w, b, precision="highest", **kw)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5
