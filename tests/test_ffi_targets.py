"""The FFI targets called directly, bypassing the Python checks: a caller that disagrees with itself gets an
INVALID_ARGUMENT error back from the handler, never a crash or a silent wrong answer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv1d  # noqa: F401  (registers the targets)
from conv_reference import assert_close, lax_conv1d

ATTRS = dict(stride=1, dilation=1, pad_lo=0, pad_hi=0, groups=1, layout=0, precision=1)
# NCW: x (2, 4, 10), w (6, 4, 3), y (2, 6, 8)
X, W, Y = (2, 4, 10), (6, 4, 3), (2, 6, 8)


def _call(target, out_shape, *args, out_dtype=jnp.float32, **attrs):
    attrs = {k: np.int64(v) for k, v in dict(ATTRS, **attrs).items()}
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out_shape, out_dtype))(*args, **attrs)


def _arrays(device, *shapes, dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return [jax.device_put(jnp.asarray(rng.standard_normal(s), dtype), device) for s in shapes]


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    return jax.devices("cpu")[0] if request.param == "cpu" else request.getfixturevalue("gpu")


def test_direct_calls_compute_the_convolution(device):
    """The consistent call the bad ones below vary, so that their errors are not a broken harness."""
    x, w, dy = _arrays(device, X, W, Y)
    empty = jax.device_put(jnp.zeros((0,), jnp.float32), device)
    y = _call("jax_conv1d_fwd", Y, x, w, empty)
    assert_close(y, lax_conv1d(x, w), 1e-5)
    _, vjp = jax.vjp(lambda x, w: lax_conv1d(x, w), x, w)
    dx_ref, dw_ref = vjp(dy)
    assert_close(_call("jax_conv1d_dgrad", X, dy, w), dx_ref, 1e-5)
    assert_close(_call("jax_conv1d_wgrad", W, x, dy), dw_ref, 1e-5)


def _call_bwd(out_shapes, *args, out_dtype=jnp.float32, **attrs):
    attrs = {k: np.int64(v) for k, v in dict(ATTRS, **attrs).items()}
    outs = tuple(jax.ShapeDtypeStruct(s, out_dtype) for s in out_shapes)
    return jax.ffi.ffi_call("jax_conv1d_bwd", outs)(*args, **attrs)


@pytest.mark.parametrize("wanted", [(X, W, (6,)), (X, (0,), (0,)), ((0,), W, (6,)), ((0,), (0,), (6,))], ids=str)
def test_direct_combined_call_computes_the_gradients(wanted, device):
    """jax_conv1d_bwd: x, dy, w in; dx, dw, db out, each (0,) when not wanted."""
    x, w, dy = _arrays(device, X, W, Y)
    b = jnp.zeros((6,), jnp.float32)
    _, vjp = jax.vjp(lambda x, w, b: lax_conv1d(x, w, b), x, w, b)
    for got, shape, ref in zip(_call_bwd(wanted, x, dy, w), wanted, vjp(dy)):
        assert got.shape == shape
        if shape != (0,):
            assert_close(got, ref, 1e-5)


# (combined call's output shapes, argument shapes, attribute changes, expected message)
BAD_BWD_CALLS = [
    ("bwd-dx-shape", ((2, 4, 11), W, (6,)), (X, Y, W), {}, "dx"),
    ("bwd-dw-shape", (X, (6, 4, 4), (6,)), (X, Y, W), {}, "dw"),
    ("bwd-db-length", (X, W, (5,)), (X, Y, W), {}, "db"),
    ("bwd-db-rank", (X, W, (6, 1)), (X, Y, W), {}, "db"),
    ("bwd-dy-length", (X, W, (6,)), (X, (2, 6, 9), W), {}, "output shape"),
    ("bwd-groups", (X, W, (6,)), (X, Y, W), {"groups": 3}, "groups"),
    ("bwd-stride-0", (X, W, (6,)), (X, Y, W), {"stride": 0}, ">= 1"),
    ("bwd-rank", (X, W, (6,)), ((2, 4, 10, 1), Y, W), {}, "rank"),
]


@pytest.mark.parametrize("desc,out_shapes,arg_shapes,attrs,message", BAD_BWD_CALLS, ids=[c[0] for c in BAD_BWD_CALLS])
def test_inconsistent_combined_calls_return_errors(desc, out_shapes, arg_shapes, attrs, message, device):
    args = _arrays(device, *arg_shapes)
    with pytest.raises(Exception, match=message) as info:
        jax.block_until_ready(_call_bwd(out_shapes, *args, **attrs))
    assert "jax_conv1d" in str(info.value)


def test_combined_call_rejects_mixed_and_unsupported_dtypes(device):
    x, dy = _arrays(device, X, Y)
    (w16,) = _arrays(device, W, dtype=jnp.bfloat16)
    with pytest.raises(Exception, match="share one dtype"):
        jax.block_until_ready(_call_bwd((X, W, (6,)), x, dy, w16))
    xi, dyi, wi = _arrays(device, X, Y, W, dtype=jnp.int32)
    with pytest.raises(Exception, match="unsupported dtype"):
        jax.block_until_ready(_call_bwd((X, W, (6,)), xi, dyi, wi, out_dtype=jnp.int32))


# (description, target, output shape, argument shapes, attribute changes, expected message)
BAD_CALLS = [
    ("fwd-output-length", "jax_conv1d_fwd", (2, 6, 9), (X, W, (0,)), {}, "output shape"),
    ("fwd-output-channels", "jax_conv1d_fwd", (2, 5, 8), (X, W, (0,)), {}, "output shape"),
    ("fwd-stride-0", "jax_conv1d_fwd", Y, (X, W, (0,)), {"stride": 0}, ">= 1"),
    ("fwd-dilation-negative", "jax_conv1d_fwd", Y, (X, W, (0,)), {"dilation": -1}, ">= 1"),
    ("fwd-groups-0", "jax_conv1d_fwd", Y, (X, W, (0,)), {"groups": 0}, ">= 1"),
    ("fwd-groups-mismatch", "jax_conv1d_fwd", Y, (X, W, (0,)), {"groups": 3}, "groups"),
    ("fwd-layout", "jax_conv1d_fwd", Y, (X, W, (0,)), {"layout": 5}, "layout"),
    ("fwd-bias-length", "jax_conv1d_fwd", Y, (X, W, (5,)), {}, "bias"),
    ("fwd-rank", "jax_conv1d_fwd", Y, ((2, 4, 10, 1), W, (0,)), {}, "rank"),
    ("dgrad-input-length", "jax_conv1d_dgrad", (2, 4, 11), (Y, W), {}, "output shape"),
    ("dgrad-channels", "jax_conv1d_dgrad", (2, 5, 10), (Y, W), {}, "groups"),
    ("wgrad-kernel-size", "jax_conv1d_wgrad", (6, 4, 4), (X, Y), {}, "output shape"),
    ("wgrad-stride-0", "jax_conv1d_wgrad", W, (X, Y), {"stride": 0}, ">= 1"),
]


@pytest.mark.parametrize("desc,target,out_shape,arg_shapes,attrs,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_inconsistent_calls_return_errors(desc, target, out_shape, arg_shapes, attrs, message, device):
    args = _arrays(device, *arg_shapes)
    with pytest.raises(Exception, match=message) as info:
        jax.block_until_ready(_call(target, out_shape, *args, **attrs))
    assert "jax_conv1d" in str(info.value)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.complex64], ids=str)
def test_unsupported_dtypes_return_errors(dtype, device):
    x, w, empty = _arrays(device, X, W, (0,), dtype=dtype)
    with pytest.raises(Exception, match="unsupported dtype"):
        jax.block_until_ready(_call("jax_conv1d_fwd", Y, x, w, empty, out_dtype=dtype))


def test_mixed_dtypes_return_errors(device):
    x, w32, empty32 = _arrays(device, X, W, (0,), dtype=jnp.float32)
    w16, empty16 = _arrays(device, W, (0,), dtype=jnp.bfloat16)
    with pytest.raises(Exception, match="jax_conv1d"):  # x float32, w bfloat16
        jax.block_until_ready(_call("jax_conv1d_fwd", Y, x, w16, empty16))
    with pytest.raises(Exception, match="jax_conv1d"):  # float32 in, bfloat16 out is not a kernel
        jax.block_until_ready(_call("jax_conv1d_fwd", Y, x, w32, empty32, out_dtype=jnp.bfloat16))
