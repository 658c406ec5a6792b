"""The CUDA handlers against lax on the same GPU at HIGHEST precision: the forward and gradient sweeps, a
large tensor, a tensor with more than 2**31 elements (64-bit indexing), and run-to-run determinism.

Everything here is marked `gpu` and skips cleanly without a GPU or without the compiled CUDA handlers; the
lowering test at the end runs everywhere and checks which path a GPU would take.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv1d
from conv_reference import (BF16, F16, F32, HIGHEST, assert_close, assert_run_to_run_bitwise_equal,
                            float64_reference, float64_vjp_reference, lax_conv1d, random_array, random_inputs,
                            sweep_cases, tolerance)
from jax_conv1d import dilated_conv1d

CASES = sweep_cases()


def _on(device, *arrays):
    return tuple(None if a is None else jax.device_put(a, device) for a in arrays)


def _vjp(conv, x, w, b, ct, **kw):
    if b is None:
        _, vjp = jax.vjp(lambda x, w: conv(x, w, None, **kw), x, w)
        return (*vjp(ct), None)
    _, vjp = jax.vjp(lambda x, w, b: conv(x, w, b, **kw), x, w, b)
    return vjp(ct)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", [None, "highest"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gpu_forward_sweep(case, precision, gpu):
    x, w, b = _on(gpu, *case.inputs())
    kw = case.conv_kwargs()
    y = dilated_conv1d(x, w, b, precision=precision, **kw)
    assert y.devices() == {gpu}
    ref = lax_conv1d(x, w, b, precision=HIGHEST, **kw)
    assert ref.devices() == {gpu}
    tol = tolerance(case.dtype, precision, platform="gpu")
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert_close(y, ref, tol, "vs lax on the GPU at HIGHEST")
    assert_close(y, float64_reference(x, w, b, **kw), tol, "vs float64 lax on the CPU")


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gpu_gradient_sweep(case, gpu):
    x, w, b = _on(gpu, *case.inputs())
    kw = case.conv_kwargs()
    out = jax.eval_shape(lambda: dilated_conv1d(x, w, b, **kw))
    (ct,) = _on(gpu, random_array(np.random.default_rng(7), out.shape, out.dtype))
    ours = _vjp(dilated_conv1d, x, w, b, ct, precision="highest", **kw)
    lax_grads = _vjp(lax_conv1d, x, w, b, ct, precision=HIGHEST, **kw)
    exact = float64_vjp_reference(x, w, b, ct, **kw)
    tol = tolerance(case.dtype, "highest", platform="gpu")
    for name, g, g_lax, g64, arg in zip(("dx", "dw", "dbias"), ours, lax_grads, exact, (x, w, b)):
        if arg is None:
            continue
        assert g.shape == arg.shape and g.dtype == arg.dtype, name
        assert_close(g, g_lax, tol, f"{name} vs lax on the GPU")
        assert_close(g, g64, tol, f"{name} vs float64 lax on the CPU")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_gpu_large_tensor(layout, dtype, gpu):
    """KernelBench's headline problem at 1/64 of its size (2 x 64 x 131072 inputs, stride 3, dilation 4):
    small enough for lax's HIGHEST-precision backward, which is orders of magnitude slower than its default."""
    rng = np.random.default_rng(0)
    x, w, b = _on(gpu, *random_inputs(rng, layout=layout, dtype=dtype, batch=2, in_ch=64, length=2 ** 17,
                                      out_ch=128, groups=1, ksize=3, bias=True))
    kw = dict(stride=3, dilation=4, padding="VALID", layout=layout)
    y = jax.jit(lambda x, w, b: dilated_conv1d(x, w, b, precision="highest", **kw))(x, w, b)
    ref = jax.jit(lambda x, w, b: lax_conv1d(x, w, b, precision=HIGHEST, **kw))(x, w, b)
    tol = tolerance(dtype, "highest", platform="gpu")
    assert_close(y, ref, tol, "forward")
    (ct,) = _on(gpu, random_array(rng, y.shape, dtype))
    grads = jax.jit(lambda *a: _vjp(dilated_conv1d, *a, precision="highest", **kw))(x, w, b, ct)
    lax_grads = jax.jit(lambda *a: _vjp(lax_conv1d, *a, precision=HIGHEST, **kw))(x, w, b, ct)
    for name, g, g_lax in zip(("dx", "dw", "dbias"), grads, lax_grads):
        assert_close(g, g_lax, tol, name)


# ---- depthwise with a channel multiplier --------------------------------------------------------------------

# (batch, C, length, K, stride, dilation, padding): O = 2C, groups = C. Sizes span several channel blocks and
# reduction splits; 44 channels is no multiple of the widest NWC vectors, 7 is odd (the narrow paths).
MULTIPLIER_SHAPES = [
    (3, 64, 1500, 3, 2, 1, "CAUSAL"),
    (2, 44, 2000, 6, 1, 8, "SAME"),
    (2, 7, 777, 9, 3, 5, (4, -2)),
    (4, 16, 3000, 2, 1, 5, "VALID"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16, F16], ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("shape", MULTIPLIER_SHAPES, ids=lambda s: f"n{s[0]}c{s[1]}l{s[2]}k{s[3]}s{s[4]}d{s[5]}")
def test_gpu_depthwise_multiplier_2_backward(shape, layout, dtype, gpu):
    """dx, dw and db of a depthwise layer with O = 2C (the fused depthwise backward over virtual channels),
    together and each alone, against float64; the combined call twice gives the same bits."""
    n, c, length, k, stride, dilation, padding = shape
    rng = np.random.default_rng(c + k)
    x, w, b = _on(gpu, *random_inputs(rng, layout=layout, dtype=dtype, batch=n, in_ch=c, length=length,
                                      out_ch=2 * c, groups=c, ksize=k, bias=True))
    kw = dict(stride=stride, dilation=dilation, padding=padding, groups=c, layout=layout)
    out = jax.eval_shape(lambda: dilated_conv1d(x, w, b, **kw))
    (ct,) = _on(gpu, random_array(rng, out.shape, dtype))
    grads = jax.jit(lambda *a: _vjp(dilated_conv1d, *a, **kw))
    ours = grads(x, w, b, ct)
    again = grads(x, w, b, ct)
    exact = float64_vjp_reference(x, w, b, ct, **kw)
    tol = tolerance(dtype, "highest", platform="gpu")
    for name, g, g2, g64, arg in zip(("dx", "dw", "dbias"), ours, again, exact, (x, w, b)):
        assert g.shape == arg.shape and g.dtype == arg.dtype, name
        assert_close(g, g64, tol, f"{name} vs float64 lax on the CPU")
        np.testing.assert_array_equal(np.asarray(g2), np.asarray(g), err_msg=f"{name} differs between two runs")
    dx_only = jax.jit(lambda x, w, ct: jax.vjp(lambda x: dilated_conv1d(x, w, **kw), x)[1](ct)[0])(x, w, ct)
    dw_only = jax.jit(lambda x, w, ct: jax.vjp(lambda w: dilated_conv1d(x, w, **kw), w)[1](ct)[0])(x, w, ct)
    assert_close(dx_only, exact[0], tol, "dx alone")
    assert_close(dw_only, exact[1], tol, "dw alone")


# ---- more than 2**31 elements -----------------------------------------------------------------------------

HUGE_LENGTH = 2 ** 28 + 64  # x and y each have 8 * HUGE_LENGTH > 2**31 elements
TAIL = 128  # outputs checked at each end


def _free_bytes(device) -> int:
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)


def _along_length(a, layout, start, stop):
    return a[:, :, start:stop] if layout == "NCW" else a[:, start:stop, :]


def _hashed_input(shape, length_axis: int, channel_axis: int):
    """Pseudo-random bf16 values in [-1, 1) from an integer hash of (position, channel), made in one fused
    kernel so that no float32 or random-bits temporary of the tensor's size is ever allocated."""
    @jax.jit
    def make():
        pos = jax.lax.broadcasted_iota(jnp.uint32, shape, length_axis)
        ch = jax.lax.broadcasted_iota(jnp.uint32, shape, channel_axis)
        h = pos * np.uint32(0x9E3779B1) + ch * np.uint32(0x85EBCA77)
        h = (h ^ (h >> 15)) * np.uint32(0x2C1B3C6D)
        h = h ^ (h >> 13)
        return ((h >> 8).astype(jnp.float32) * (2.0 ** -23) - 1.0).astype(jnp.bfloat16)

    return make()


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_gpu_64bit_indexing(layout, gpu):
    """bf16 x of 8 x (2**28 + 64) elements: the ends of y, dx and dw must match lax on small slices."""
    channels, ksize = 8, 3
    tensor_bytes = 2 * channels * HUGE_LENGTH  # one activation-sized bf16 tensor
    if _free_bytes(gpu) < 6 * tensor_bytes:  # x, y, cotangent, dx, and room for XLA
        pytest.skip(f"needs ~{6 * tensor_bytes / 2 ** 30:.0f} GiB of free GPU memory")
    kw = dict(layout=layout)  # stride 1, dilation 1, VALID: y[t] reads x[t : t + ksize]
    lout = HUGE_LENGTH - ksize + 1
    ncw = layout == "NCW"
    w_shape = (channels, channels, ksize) if ncw else (ksize, channels, channels)
    (w,) = _on(gpu, random_array(np.random.default_rng(0), w_shape, BF16, scale=0.2))
    with jax.default_device(gpu):
        x = _hashed_input((1, channels, HUGE_LENGTH) if ncw else (1, HUGE_LENGTH, channels),
                          length_axis=2 if ncw else 1, channel_axis=1 if ncw else 2)

    y = jax.jit(lambda x, w: dilated_conv1d(x, w, precision="highest", **kw))(x, w)
    y_shape = (1, channels, lout) if ncw else (1, lout, channels)
    assert y.shape == y_shape
    for start in (0, lout // 2, lout - TAIL):  # the last outputs sit past element 2**31
        x_slice = _along_length(x, layout, start, start + TAIL + ksize - 1)
        assert_close(_along_length(y, layout, start, start + TAIL), lax_conv1d(x_slice, w, **kw), 1e-2,
                     f"y[{start}:{start + TAIL}]")
    del y

    # A cotangent that is zero except for the last TAIL outputs: dx is zero before them and dw sums only them.
    tail_shape = (1, channels, TAIL) if ncw else (1, TAIL, channels)
    with jax.default_device(gpu):
        tail = jax.random.normal(jax.random.key(2), tail_shape, jnp.bfloat16)

    @jax.jit
    def tail_cotangent(tail):
        ct = jnp.zeros(y_shape, jnp.bfloat16)
        return ct.at[:, :, lout - TAIL:].set(tail) if ncw else ct.at[:, lout - TAIL:, :].set(tail)

    ct = tail_cotangent(tail)
    dx, dw = jax.jit(lambda x, w, ct: jax.vjp(lambda x, w: dilated_conv1d(x, w, precision="highest", **kw),
                                              x, w)[1](ct))(x, w, ct)
    x_tail = _along_length(x, layout, lout - TAIL, HUGE_LENGTH)
    _, lax_vjp = jax.vjp(lambda x, w: lax_conv1d(x, w, **kw), x_tail, w)
    dx_ref, dw_ref = lax_vjp(tail)
    assert_close(_along_length(dx, layout, lout - TAIL, HUGE_LENGTH), dx_ref, 1e-2, "dx tail")
    nonzero_before_tail = jax.jit(lambda d: jnp.count_nonzero(_along_length(d, layout, 0, lout - TAIL)))(dx)
    assert int(nonzero_before_tail) == 0, "dx is nonzero before the tail"
    assert_close(dw, dw_ref, 1e-2, "dw")


# ---- determinism and lowering -----------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_gpu_run_to_run_bitwise_deterministic(layout, dtype, gpu):
    assert_run_to_run_bitwise_equal(dilated_conv1d, layout, dtype, np.random.default_rng(0), gpu)


def test_cuda_lowering_uses_ffi_exactly_when_handlers_exist():
    """Lowering for CUDA works on any machine; it is the FFI call when the handlers were compiled in and the
    lax fallback (with a warning) otherwise."""
    x = jax.ShapeDtypeStruct((2, 4, 64), jnp.float32)
    w = jax.ShapeDtypeStruct((6, 2, 3), jnp.float32)

    def loss(x, w):
        return jnp.sum(dilated_conv1d(x, w, groups=2, stride=2) ** 2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        text = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, w).lower(lowering_platforms=("cuda",)).as_text()
    if jax_conv1d.has_cuda_handlers():
        for target in ("jax_conv1d_fwd", "jax_conv1d_bwd"):
            assert f"@{target}" in text
        assert "stablehlo.convolution" not in text
    else:
        assert "jax_conv1d_" not in text
        assert "stablehlo.convolution" in text
