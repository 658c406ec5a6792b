"""The wgmma (sm_90a) NWC forward (csrc/cuda/fwd_wgmma.cuh, JAX_CONV1D_WGMMA=1) against a float64 reference.

The three blocks (JAX_CONV1D_WGMMA_TILE=128x64: one warp group; 128x128: two; 128x64s: two splitting the
channels) on shapes that exercise its paths: several channel chunks per step, taps, partial o-tiles, two
o-tiles, padding (negative too), gapped windows, bias, every input type. Each case also checks that a second
call gives the same bits and, on sm_90 where C is a whole number of 64-byte channel chunks, that the wgmma
kernel ran (JAX_CONV1D_WGMMA_SWAP_LBO=1, which only it reads, must break the result). Skipped without a GPU;
elsewhere than sm_90 the kernel declines (the fallback runs) and the ran-check is skipped.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jax_conv1d import dilated_conv1d
from jax_conv1d._shapes import resolve_padding

from test_fwd_cuda_kernels import reference

pytestmark = pytest.mark.gpu

TOL = {"float32": 1.5e-3, "bfloat16": 8e-3, "float16": 2e-3, "bfloat16->float32": 1e-5}

# n, c, o, k, length, stride, dilation, padding, bias
SHAPES = [
    (2, 64, 128, 3, 4096, 3, 4, "VALID", False),  # the headline's geometry, shorter
    (3, 48, 100, 3, 3001, 4, 5, "SAME", True),  # three chunks, a partial o-tile
    (2, 128, 256, 2, 1500, 1, 64, "CAUSAL", True),  # WaveNet's layer: two o-tiles
    (2, 64, 96, 3, 1200, 1, 256, "CAUSAL", True),  # taps further apart than a tile: a gapped window
    (3, 32, 200, 5, 2501, 1, 3, (7, -2), True),  # negative padding, ragged length, partial second o-tile
]


def _hopper():
    """sm_90 (where the kernel runs): the device's compute capability, or its name where jax does not say."""
    dev = jax.devices()[0]
    cc = getattr(dev, "compute_capability", None)
    if cc is not None:
        return str(cc) == "9.0"
    return any(name in dev.device_kind for name in ("H100", "H200", "H800", "H20"))


def _run(monkeypatch, env, x, w, b, **kw):
    for k in ("JAX_CONV1D_WGMMA", "JAX_CONV1D_WGMMA_TILE", "JAX_CONV1D_WGMMA_SWAP_LBO"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return np.asarray(jnp.asarray(dilated_conv1d(x, w, b, **kw)).astype(jnp.float64))


@pytest.mark.parametrize("tile", ["128x64", "128x128", "128x64s"])
@pytest.mark.parametrize("dtypes", ["float32", "bfloat16", "float16", "bfloat16->float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}C{s[1]}O{s[2]}K{s[3]}L{s[4]}s{s[5]}d{s[6]}")
def test_wgmma_forward_matches_float64(monkeypatch, shape, dtypes, tile):
    n, c, o, k, length, stride, dilation, padding, with_bias = shape
    in_dt, out_dt = (dtypes.split("->") * 2)[:2]
    rng = np.random.default_rng(zlib.crc32(repr((shape, dtypes)).encode()))
    x = jnp.asarray(rng.standard_normal((n, length, c)), in_dt)
    w = jnp.asarray(rng.standard_normal((k, c, o)) / np.sqrt(c * k), in_dt)
    b = jnp.asarray(rng.standard_normal(o), in_dt) if with_bias else None
    pads = resolve_padding(padding, length, k, stride, dilation)
    kw = dict(stride=stride, dilation=dilation, padding=pads, layout="NWC", preferred_element_type=out_dt)
    env = {"JAX_CONV1D_FWD_KERNEL": "igemm", "JAX_CONV1D_WGMMA": "1", "JAX_CONV1D_WGMMA_TILE": tile}
    y = _run(monkeypatch, env, x, w, b, **kw)
    ref = reference(np.asarray(x.astype(jnp.float64)), np.asarray(w.astype(jnp.float64)),
                    None if b is None else np.asarray(b.astype(jnp.float64)), stride=stride, dilation=dilation,
                    pads=pads, groups=1, layout="NWC")
    assert y.shape == ref.shape
    assert np.all(np.isfinite(y))
    rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert rel < TOL[dtypes], rel
    assert np.array_equal(y, _run(monkeypatch, env, x, w, b, **kw))  # run to run, bit for bit
    chunk = 16 if jnp.dtype(in_dt).itemsize == 4 else 32  # channels per 64-byte window row: C must be whole rows
    if _hopper() and c % chunk == 0:
        # Proof that the wgmma kernel ran: its descriptor offsets swapped (a probe knob that only it reads) must
        # break the result. (Its correct output can equal the mma.sync kernel's bit for bit: the same k-steps
        # in the same order on the same tensor cores.)
        broken = _run(monkeypatch, {**env, "JAX_CONV1D_WGMMA_SWAP_LBO": "1"}, x, w, b, **kw)
        assert not np.allclose(broken, y, rtol=1e-2, atol=1e-2), "JAX_CONV1D_WGMMA=1 did not run the wgmma kernel"
