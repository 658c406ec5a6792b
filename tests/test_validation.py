"""Every bad input raises ValueError or TypeError at trace time, naming the argument, eagerly, under jit and
under eval_shape; and the legal spellings next to them are accepted."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from conv_reference import assert_close, lax_conv1d, tolerance
from jax_conv1d import dilated_conv1d

# The valid call the bad ones are variations of: NCW, x (2, 4, 16), w (6, 2, 3), groups 2, bias (6,).
X_SHAPE, W_SHAPE, B_SHAPE = (2, 4, 16), (6, 2, 3), (6,)
BASE = dict(stride=1, dilation=1, padding="VALID", groups=2, layout="NCW", precision=None,
            preferred_element_type=None)


def bad(id, *, names, x=X_SHAPE, w=W_SHAPE, b=B_SHAPE, x_dtype=jnp.float32, w_dtype=None, b_dtype=None,
        errors=(ValueError, TypeError), **params):
    """One bad call: shapes, dtypes and keyword arguments that differ from the valid base call."""
    return pytest.param(dict(x=x, w=w, b=b, x_dtype=x_dtype, w_dtype=w_dtype or x_dtype,
                             b_dtype=b_dtype or x_dtype, params=params, names=names, errors=errors), id=id)


BAD_INPUTS = [
    # ranks
    bad("x-rank-2", x=(4, 16), names=["x"]),
    bad("x-rank-4", x=(2, 4, 16, 1), names=["x"]),
    bad("x-rank-0", x=(), names=["x"]),
    bad("w-rank-2", w=(6, 2), names=["w"]),
    bad("w-rank-4", w=(6, 2, 3, 1), names=["w"]),
    bad("w-kernel-size-0", w=(6, 2, 0), names=["w"]),
    bad("nwc-w-in-ncw-layout", w=(3, 2, 6), groups=1, names=["w"]),
    # channels and groups
    bad("channel-mismatch", w=(6, 3, 3), names=["w"]),
    bad("channel-mismatch-groups-1", w=(6, 3, 3), groups=1, names=["w"]),
    bad("groups-do-not-divide-C", w=(6, 1, 3), groups=3, names=["groups"]),
    bad("groups-do-not-divide-O", w=(6, 1, 3), groups=4, names=["groups"]),
    bad("groups-0", groups=0, names=["groups"]),
    bad("groups-negative", groups=-2, names=["groups"]),
    bad("groups-float", groups=2.0, names=["groups"], errors=TypeError),
    bad("groups-string", groups="2", names=["groups"], errors=TypeError),
    bad("groups-none", groups=None, names=["groups"], errors=TypeError),
    # stride and dilation
    bad("stride-0", stride=0, names=["stride"]),
    bad("stride-negative", stride=-1, names=["stride"]),
    bad("stride-float", stride=1.5, names=["stride"], errors=TypeError),
    bad("stride-integral-float", stride=2.0, names=["stride"], errors=TypeError),
    bad("stride-string", stride="2", names=["stride"], errors=TypeError),
    bad("stride-tuple", stride=(1, 2), names=["stride"], errors=TypeError),
    bad("stride-bool", stride=True, names=["stride"], errors=TypeError),
    bad("dilation-0", dilation=0, names=["dilation"]),
    bad("dilation-negative", dilation=-3, names=["dilation"]),
    bad("dilation-float", dilation=0.5, names=["dilation"], errors=TypeError),
    bad("dilation-none", dilation=None, names=["dilation"], errors=TypeError),
    # padding
    bad("padding-unknown-string", padding="FULL", names=["padding"], errors=ValueError),
    bad("padding-empty-string", padding="", names=["padding"], errors=ValueError),
    bad("padding-same-upper", padding="SAME_UPPER", names=["padding"], errors=ValueError),
    bad("padding-triple", padding=(1, 2, 3), names=["padding"]),
    bad("padding-single", padding=(1,), names=["padding"]),
    bad("padding-empty-tuple", padding=(), names=["padding"]),
    bad("padding-float-pair", padding=(1.5, 2), names=["padding"]),
    bad("padding-string-pair", padding=("a", 1), names=["padding"]),
    bad("padding-nested-pairs", padding=((1, 2), (3, 4)), names=["padding"]),
    bad("padding-two-lax-pairs", padding=[(1, 2), (3, 4)], names=["padding"]),
    bad("padding-float", padding=1.5, names=["padding"]),
    bad("padding-none", padding=None, names=["padding"]),
    bad("padding-dict", padding={"lo": 1, "hi": 1}, names=["padding"]),
    bad("padding-bool", padding=True, names=["padding"]),
    bad("padding-crops-past-start", padding=(-17, 0), names=["padding"], errors=ValueError),
    bad("padding-crops-past-end", padding=(2, -19), names=["padding"], errors=ValueError),
    bad("padding-crops-more-than-length", padding=(-9, -8), names=["padding"], errors=ValueError),
    bad("padding-int-crops-too-much", padding=-9, names=["padding"], errors=ValueError),
    # the other side's padding does not make up for cropping past an end of the input
    bad("padding-crops-past-end-despite-lo", padding=(5, -17), names=["padding"], errors=ValueError),
    bad("padding-crops-past-start-despite-hi", padding=(-17, 5), names=["padding"], errors=ValueError),
    # layout
    bad("layout-unknown", layout="NHWC", names=["layout"]),
    bad("layout-empty", layout="", names=["layout"]),
    bad("layout-none", layout=None, names=["layout"]),
    bad("layout-int", layout=0, names=["layout"]),
    # bias
    bad("bias-too-short", b=(5,), names=["bias"]),
    bad("bias-per-input-channel", b=(4,), names=["bias"]),
    bad("bias-2d", b=(1, 6), names=["bias"]),
    bad("bias-column", b=(6, 1), names=["bias"]),
    bad("bias-scalar", b=(), names=["bias"]),
    # dtypes
    bad("w-dtype-differs", w_dtype=jnp.bfloat16, names=["w"], errors=TypeError),
    bad("x-float16-w-float32", x_dtype=jnp.float16, w_dtype=jnp.float32, names=["w"], errors=TypeError),
    bad("bias-dtype-differs", b_dtype=jnp.float16, names=["bias"], errors=TypeError),
    bad("x-w-int32", x_dtype=jnp.int32, names=["x"], errors=TypeError),
    bad("x-w-uint8", x_dtype=jnp.uint8, names=["x"], errors=TypeError),
    bad("x-w-bool", x_dtype=jnp.bool_, names=["x"], errors=TypeError),
    bad("x-w-complex64", x_dtype=jnp.complex64, names=["x"], errors=TypeError),
    bad("w-int8", w_dtype=jnp.int8, names=["w"], errors=TypeError),
    bad("bias-int32", b_dtype=jnp.int32, names=["bias"], errors=TypeError),
    bad("bias-complex", b_dtype=jnp.complex64, names=["bias"], errors=TypeError),
    bad("preferred-int32", preferred_element_type=jnp.int32, names=["preferred_element_type"], errors=TypeError),
    bad("preferred-complex", preferred_element_type=jnp.complex64, names=["preferred_element_type"],
        errors=TypeError),
    # precision
    bad("precision-unknown-string", precision="fast", names=["precision"]),
    bad("precision-empty-string", precision="", names=["precision"]),
    bad("precision-int", precision=3, names=["precision"]),
    bad("precision-one-tuple", precision=("highest",), names=["precision"]),
    bad("precision-triple", precision=("highest", "highest", "highest"), names=["precision"]),
    bad("precision-bad-in-pair", precision=("highest", "fast"), names=["precision"]),
    bad("precision-object", precision=object(), names=["precision"]),
]


def _array(shape, dtype):
    return jnp.zeros(shape, dtype)


def _call(mode: str, case):
    x = _array(case["x"], case["x_dtype"])
    w = _array(case["w"], case["w_dtype"])
    b = _array(case["b"], case["b_dtype"])
    params = dict(BASE, **case["params"])

    def conv(x, w, b):
        return dilated_conv1d(x, w, b, **params)

    if mode == "eager":
        return conv(x, w, b)
    if mode == "jit":  # lowering only: an error here is raised before anything runs
        return jax.jit(conv).lower(x, w, b)
    avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (x, w, b)]
    return jax.eval_shape(conv, *avals)


def _names_argument(message: str, name: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message) is not None


@pytest.mark.parametrize("mode", ["eager", "jit", "eval_shape"])
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises_naming_the_argument(case, mode):
    with pytest.raises(case["errors"]) as info:
        _call(mode, case)
    message = str(info.value)
    for name in case["names"]:
        assert _names_argument(message, name), f"the error does not name {name!r}: {message}"


def test_bad_inputs_also_raise_under_grad_and_vmap():
    x, w = jnp.zeros((2, 4, 16)), jnp.zeros((6, 2, 3))
    with pytest.raises(ValueError, match="stride"):
        jax.grad(lambda x: jnp.sum(dilated_conv1d(x, w, groups=2, stride=0)))(x)
    with pytest.raises(ValueError, match="groups"):
        jax.vmap(lambda x: dilated_conv1d(x, w, groups=3))(x[None])


def test_non_array_arguments_are_rejected():
    w = jnp.zeros(W_SHAPE)
    with pytest.raises(TypeError, match=r"\bx\b"):
        dilated_conv1d("not an array", w, groups=2)
    with pytest.raises(TypeError, match=r"\bw\b"):
        dilated_conv1d(jnp.zeros(X_SHAPE), object(), groups=2)
    with pytest.raises(TypeError, match=r"\bbias\b"):
        dilated_conv1d(jnp.zeros(X_SHAPE), w, {"b": 1}, groups=2)


# ---- the legal spellings around the bad ones --------------------------------------------------------------

GOOD_VARIANTS = [
    dict(padding=[(1, 2)]),  # lax's list-of-pairs form
    dict(padding=[1, 2]),
    dict(padding=(np.int32(1), np.int64(2))),
    dict(padding=np.int64(2)),
    dict(padding=(-16, 3)),  # crops the whole input, pads back one kernel span of zeros
    dict(padding=(-16, 2)),  # ... or less than one: empty output
    dict(padding=(0, -13)),  # leaves exactly the kernel span
    dict(padding="same_lower"),
    dict(stride=np.int32(3), dilation=np.uint8(2)),
    dict(layout="ncw"),
    dict(groups=np.int64(2)),
    dict(precision=("highest", "default")),
    dict(preferred_element_type="float32"),
    dict(preferred_element_type=np.float32),
]


@pytest.mark.parametrize("variant", GOOD_VARIANTS, ids=str)
def test_legal_spellings_are_accepted(variant, rng):
    x = jnp.asarray(rng.standard_normal(X_SHAPE), jnp.float32)
    w = jnp.asarray(rng.standard_normal(W_SHAPE), jnp.float32)
    b = jnp.asarray(rng.standard_normal(B_SHAPE), jnp.float32)
    params = dict(BASE, **variant)
    y = dilated_conv1d(x, w, b, **params)
    ref_params = dict(params, layout=params["layout"].upper(), precision=lax.Precision.HIGHEST,
                      padding=params["padding"].upper() if isinstance(params["padding"], str) else params["padding"])
    assert_close(y, lax_conv1d(x, w, b, **ref_params), tolerance(jnp.float32, params["precision"]))
