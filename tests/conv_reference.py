"""The lax reference for dilated_conv1d and the helpers the tests share: sweep cases, inputs, error measure.

The reference is built from lax.conv_general_dilated alone; it never calls into jax_conv1d, so padding rules
(SAME, SAME_LOWER) come from lax itself, and only CAUSAL, which lax does not know, is spelled out here.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
HALF_TYPES = (BF16, F16)
DTYPES = {"float32": F32, "bfloat16": BF16, "float16": F16, "float64": F64}

DIMENSION_NUMBERS = {"NCW": ("NCH", "OIH", "NCH"), "NWC": ("NHC", "HIO", "NHC")}
HIGHEST = lax.Precision.HIGHEST


# ---- the reference ----------------------------------------------------------------------------------------


def kernel_size(w, layout: str) -> int:
    return w.shape[2] if layout.upper() == "NCW" else w.shape[0]


def lax_padding(padding: Any, ksize: int, dilation: int):
    """dilated_conv1d's padding argument in the form lax.conv_general_dilated takes."""
    if isinstance(padding, str):
        if padding.upper() == "CAUSAL":
            return [((ksize - 1) * dilation, 0)]
        return padding.upper()
    if isinstance(padding, (int, np.integer)):
        return [(int(padding), int(padding))]
    pair = padding[0] if len(padding) == 1 else padding
    return [(int(pair[0]), int(pair[1]))]


def lax_conv1d(x, w, bias=None, *, stride=1, dilation=1, padding="VALID", groups=1, layout="NCW",
               precision=HIGHEST, preferred_element_type=None):
    """lax.conv_general_dilated called with dilated_conv1d's arguments and meaning.

    Half-precision inputs accumulate in float32 and the bias is added before the one rounding to the output
    type, which is the accuracy dilated_conv1d promises.
    """
    layout = layout.upper()
    in_dtype = np.dtype(x.dtype)
    acc_dtype = F32 if in_dtype in HALF_TYPES else None
    pads = lax_padding(padding, kernel_size(w, layout), dilation)
    if not isinstance(pads, str) and min(pads[0]) < 0:
        # Negative pads as an explicit crop: XLA:CPU miscomputes a negative low pad with a positive high pad,
        # and XLA:GPU lets a NaN in a cropped position reach the output; a cropped input takes no part.
        (lo, hi), axis = pads[0], (2 if layout == "NCW" else 1)
        x = lax.slice_in_dim(x, max(-lo, 0), x.shape[axis] - max(-hi, 0), axis=axis)
        pads = [(max(lo, 0), max(hi, 0))]
    y = lax.conv_general_dilated(
        x, w, window_strides=(stride,), padding=pads,
        rhs_dilation=(dilation,), dimension_numbers=DIMENSION_NUMBERS[layout], feature_group_count=groups,
        precision=precision, preferred_element_type=acc_dtype)
    if bias is not None:
        y = y + bias.astype(y.dtype).reshape((1, -1, 1) if layout == "NCW" else (1, 1, -1))
    return y.astype(in_dtype if preferred_element_type is None else preferred_element_type)


def cpu_device():
    return jax.devices("cpu")[0]


def to_float64_on_cpu(a):
    if a is None:
        return None
    return jax.device_put(np.asarray(a).astype(np.float64), cpu_device())


def float64_reference(x, w, bias=None, **conv_kwargs):
    """The exact result for the given (already rounded) inputs: lax in float64 on the CPU, as numpy."""
    conv_kwargs = dict(conv_kwargs, precision=HIGHEST, preferred_element_type=None)
    with jax.default_device(cpu_device()):
        y = lax_conv1d(to_float64_on_cpu(x), to_float64_on_cpu(w), to_float64_on_cpu(bias), **conv_kwargs)
    return np.asarray(y)


def float64_vjp_reference(x, w, bias, cotangent, **conv_kwargs):
    """(dx, dw, dbias) of the float64 lax reference at the given inputs and output cotangent, as numpy."""
    conv_kwargs = dict(conv_kwargs, precision=HIGHEST, preferred_element_type=None)
    args = [to_float64_on_cpu(a) for a in (x, w, bias)]
    with jax.default_device(cpu_device()):
        if bias is None:
            fn = lambda x, w: lax_conv1d(x, w, None, **conv_kwargs)  # noqa: E731
            args = args[:2]
        else:
            fn = lambda x, w, b: lax_conv1d(x, w, b, **conv_kwargs)  # noqa: E731
        _, vjp = jax.vjp(fn, *args)
        grads = vjp(to_float64_on_cpu(cotangent))
    grads = [np.asarray(g) for g in grads]
    return tuple(grads) + ((None,) if bias is None else ())


# ---- error measure and tolerances -------------------------------------------------------------------------


def custom_call_targets(fn, *args) -> set[str]:
    """Which of the package's FFI targets the jitted fn lowers to (on the default device)."""
    text = jax.jit(fn).lower(*args).as_text()
    return {t for t in ("jax_conv1d_fwd", "jax_conv1d_dgrad", "jax_conv1d_wgrad", "jax_conv1d_bwd") if t in text}


def rel_err(out, ref) -> float:
    """||out - ref|| / ||ref||, in float64; shapes must agree. An all-zero or empty reference asks for zeros."""
    a = np.asarray(out).astype(np.float64)
    b = np.asarray(ref).astype(np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != reference shape {b.shape}"
    if b.size == 0:
        return 0.0
    denom = np.linalg.norm(b.ravel())
    diff = np.linalg.norm((a - b).ravel())
    return float(diff if denom == 0 else diff / denom)


def may_use_tf32(precision) -> bool:
    """Whether lax (or dilated_conv1d) may compute float32 with TF32 at this precision on a GPU."""
    if isinstance(precision, (tuple, list)):
        return any(may_use_tf32(p) for p in precision)
    if isinstance(precision, str):
        return precision.lower() in ("default", "fastest", "bfloat16")
    return precision is None or precision == lax.Precision.DEFAULT


def tolerance(dtype, precision=None, platform: str | None = None) -> float:
    """Relative-error bound for a result of this dtype.

    float32 at default precision may use TF32 on a GPU (10-bit mantissa), so it gets the looser bound there.
    """
    dt = np.dtype(dtype)
    platform = platform or jax.default_backend()
    if dt == F64:
        return 1e-12
    if dt == BF16:
        return 1e-2
    if dt == F16:
        return 1e-3
    if platform != "cpu" and may_use_tf32(precision):
        return 1e-3
    return 1e-5


def assert_close(out, ref, tol: float, what: str = "result"):
    err = rel_err(out, ref)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.1g}"


# ---- inputs -----------------------------------------------------------------------------------------------


def shapes(layout: str, batch: int, in_ch: int, length: int, out_ch: int, in_per_group: int, ksize: int):
    """(x shape, w shape) for a layout."""
    if layout.upper() == "NCW":
        return (batch, in_ch, length), (out_ch, in_per_group, ksize)
    return (batch, length, in_ch), (ksize, in_per_group, out_ch)


def random_array(rng: np.random.Generator, shape, dtype, scale: float = 1.0):
    return jnp.asarray((rng.standard_normal(shape) * scale).astype(np.float32 if np.dtype(dtype) != F64
                                                                  else np.float64), dtype=dtype)


def random_inputs(rng: np.random.Generator, *, layout, dtype, batch, in_ch, length, out_ch, groups, ksize,
                  bias: bool):
    """x, w, bias (or None) with unit-variance outputs, so half types stay far from overflow."""
    x_shape, w_shape = shapes(layout, batch, in_ch, length, out_ch, in_ch // groups, ksize)
    fan_in = max(1, (in_ch // groups) * ksize)
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype, scale=fan_in ** -0.5)
    b = random_array(rng, (out_ch,), dtype) if bias else None
    return x, w, b


# ---- the sweep --------------------------------------------------------------------------------------------

# (in channels, out channels, groups) for each grouping the op must handle
GROUP_FORMS = {
    "dense": (3, 4, 1),
    "grouped": (6, 4, 2),  # 3 input and 2 output channels per group
    "depthwise": (4, 4, 4),  # groups == C
    "depthwise_x2": (3, 6, 3),  # depthwise with channel multiplier 2
}

SWEEP_AXES = {
    "layout": ["NCW", "NWC"],
    "dtype": ["float32", "bfloat16", "float16", "float64"],
    "stride": [1, 2, 3, 4],
    "dilation": [1, 2, 3, 4, 7],
    "ksize": [1, 2, 3, 4, 5, 6, 7],
    "padding": ["VALID", "SAME", "SAME_LOWER", "CAUSAL", 2, (1, 3), (-2, 1), (0, -3), [(3, 0)]],
    "group_form": list(GROUP_FORMS),
    "bias": [False, True],
    "precision": [None, "highest"],
}


def pairwise_rows(axes: dict[str, list], seed: int, candidates: int = 50) -> list[dict[str, Any]]:
    """A small set of rows in which every pair of values of every two axes occurs at least once.

    Greedy: each new row starts from a random uncovered pair, the rest is random, and the best of
    `candidates` tries (most new pairs) is kept. Seeded, so the sweep is the same on every run.
    """
    rng = random.Random(seed)
    names = list(axes)
    sizes = [len(axes[n]) for n in names]
    uncovered = {(i, a, j, b) for i, j in itertools.combinations(range(len(names)), 2)
                 for a in range(sizes[i]) for b in range(sizes[j])}

    def pairs_of(row):
        return {(i, row[i], j, row[j]) for i, j in itertools.combinations(range(len(names)), 2)}

    rows = []
    while uncovered:
        pool = sorted(uncovered)
        best, best_new = None, set()
        for _ in range(candidates):
            i, a, j, b = rng.choice(pool)
            row = [rng.randrange(s) for s in sizes]
            row[i], row[j] = a, b
            new = pairs_of(row) & uncovered
            if len(new) > len(best_new):
                best, best_new = row, new
        rows.append(best)
        uncovered -= best_new
    return [{n: axes[n][v] for n, v in zip(names, row)} for row in rows]


@dataclasses.dataclass(frozen=True)
class ConvCase:
    """One configuration of the sweep, with the sizes it runs at."""

    layout: str
    dtype: str
    stride: int
    dilation: int
    ksize: int
    padding: Any
    group_form: str
    bias: bool
    precision: Any
    batch: int
    length: int

    @property
    def channels(self):
        return GROUP_FORMS[self.group_form]

    def conv_kwargs(self) -> dict[str, Any]:
        """The keyword arguments dilated_conv1d (and lax_conv1d) take, except precision."""
        return dict(stride=self.stride, dilation=self.dilation, padding=self.padding,
                    groups=self.channels[2], layout=self.layout)

    def inputs(self, seed: int = 0):
        in_ch, out_ch, groups = self.channels
        rng = np.random.default_rng(seed)
        return random_inputs(rng, layout=self.layout, dtype=DTYPES[self.dtype], batch=self.batch, in_ch=in_ch,
                             length=self.length, out_ch=out_ch, groups=groups, ksize=self.ksize, bias=self.bias)

    @property
    def id(self) -> str:
        pad = self.padding if isinstance(self.padding, (str, int)) else "x".join(
            str(v) for v in np.ravel(self.padding))
        prec = "hi" if self.precision else "def"
        return (f"{self.layout}-{self.dtype}-s{self.stride}-d{self.dilation}-k{self.ksize}-p{pad}-"
                f"{self.group_form}-{'b' if self.bias else 'nob'}-{prec}-n{self.batch}-l{self.length}")


def _min_length(padding) -> int:
    """The shortest input a padding form accepts (negative pads crop)."""
    if isinstance(padding, str) or isinstance(padding, int):
        return 1
    lo, hi = padding[0] if len(padding) == 1 else padding
    return max(-lo, -hi, -(lo + hi), 1)


def sweep_cases(seed: int = 1) -> list[ConvCase]:
    """Pairwise coverage of SWEEP_AXES with seeded random sizes, plus the configurations that matter most."""
    rng = random.Random(seed)
    cases = []
    for row in pairwise_rows(SWEEP_AXES, seed):
        length = rng.randint(max(_min_length(row["padding"]), 3), 40)
        cases.append(ConvCase(**row, batch=rng.randint(1, 3), length=length))
    cases += [
        # KernelBench's headline problem, shrunk: every input element feeds exactly one (t, k) pair
        ConvCase("NCW", "float32", 3, 4, 3, "VALID", "dense", False, None, 2, 61),
        ConvCase("NWC", "bfloat16", 3, 4, 3, "VALID", "grouped", True, None, 2, 61),
        # Mamba's depthwise causal conv and a dilated depthwise TCN layer
        ConvCase("NWC", "bfloat16", 1, 1, 4, "CAUSAL", "depthwise", True, None, 2, 33),
        ConvCase("NWC", "float32", 1, 8, 7, "SAME", "depthwise", True, "highest", 2, 70),
        # WaveNet: K=2 with a dilation larger than the input, causal
        ConvCase("NCW", "float32", 1, 16, 2, "CAUSAL", "dense", True, None, 2, 12),
        # stride larger than the kernel span skips inputs; SAME with stride > K
        ConvCase("NCW", "float64", 4, 1, 2, "SAME", "grouped", False, None, 1, 23),
        ConvCase("NWC", "float16", 3, 1, 1, "SAME_LOWER", "depthwise_x2", True, None, 3, 17),
        # kernel span longer than the input: empty output
        ConvCase("NCW", "float32", 1, 4, 7, "VALID", "dense", True, None, 2, 10),
        # crop that leaves exactly the kernel span
        ConvCase("NWC", "float64", 1, 2, 3, (-3, -2), "grouped", True, None, 2, 10),
    ]
    return cases


def covered_values(cases: list[ConvCase]) -> dict[str, Counter]:
    return {name: Counter(repr(getattr(c, name)) for c in cases) for name in SWEEP_AXES}


# legal shapes at the edges, as (N, C, L, O, K, groups, stride, dilation, padding)
EDGE_CASES = [
    (2, 3, 4, 5, 5, 1, 1, 1, "VALID"),  # kernel longer than the input: empty output
    (2, 3, 9, 5, 3, 1, 1, 5, "VALID"),  # dilated span longer than the input
    (2, 3, 4, 5, 7, 1, 1, 1, "SAME"),  # ... but SAME still gives L outputs
    (0, 3, 10, 4, 3, 1, 1, 1, "SAME"),  # zero batch
    (2, 3, 0, 4, 3, 1, 1, 1, "VALID"),  # zero length
    (2, 3, 0, 4, 3, 1, 2, 1, "SAME"),
    (2, 3, 0, 4, 3, 1, 1, 1, (2, 2)),  # zero length, padded: the output is the bias alone
    (2, 4, 0, 4, 2, 4, 1, 3, "CAUSAL"),
    (2, 3, 5, 4, 3, 1, 1, 1, (-5, 0)),  # cropped to nothing
    (2, 3, 5, 4, 3, 1, 1, 1, (-3, 1)),  # cropped shorter than the kernel
    (2, 3, 5, 4, 3, 1, 1, 1, (-1, -1)),  # cropped to exactly the kernel span
    (2, 0, 6, 4, 3, 1, 1, 1, "SAME"),  # zero input channels
    (2, 3, 6, 0, 3, 1, 1, 1, "SAME"),  # zero output channels
    (1, 1, 1, 1, 1, 1, 1, 1, "VALID"),  # one of everything
    (1, 2, 3, 2, 1, 1, 7, 1, "VALID"),  # stride longer than the input
    (1, 2, 3, 2, 2, 2, 1, 9, (9, 9)),  # only the padding is reached by some taps
]


# ---- determinism ------------------------------------------------------------------------------------------


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def assert_run_to_run_bitwise_equal(conv, layout, dtype, rng, device):
    """conv's forward, input gradient and weight gradient, each called twice on `device`, give the same bits.

    Sizes are large enough for the CPU handlers to split work across threads and for GPU kernels to use
    many blocks, which is where a nondeterministic reduction order would show.
    """
    x, w, b = random_inputs(rng, layout=layout, dtype=dtype, batch=4, in_ch=32, length=4096, out_ch=48,
                            groups=1, ksize=5, bias=True)
    x, w, b = jax.device_put((x, w, b), device)
    kw = dict(stride=2, dilation=3, padding="SAME", layout=layout)
    fwd = jax.jit(lambda x, w, b: conv(x, w, b, **kw))
    y = fwd(x, w, b)
    ct = jax.device_put(random_array(rng, y.shape, dtype), device)

    @jax.jit
    def grads(x, w, b, ct):
        _, vjp = jax.vjp(lambda x, w, b: conv(x, w, b, **kw), x, w, b)
        return vjp(ct)

    first = [y, *grads(x, w, b, ct)]
    second = [fwd(x, w, b), *grads(x, w, b, ct)]
    for name, a, c in zip(("y", "dx", "dw", "dbias"), first, second):
        assert np.any(_bits(a)), f"{name} is all zeros"
        np.testing.assert_array_equal(_bits(a), _bits(c), err_msg=f"{name} differs between two runs")


# ---- jaxpr inspection -------------------------------------------------------------------------------------


def iter_eqns(jaxpr):
    """Every equation of a (closed) jaxpr, including those inside nested jaxprs (pjit, custom_vjp, ...)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    yield from iter_eqns(sub)


def primitive_counts(fn, *args) -> Counter:
    """How often each primitive appears in the jaxpr of fn(*args)."""
    return Counter(eqn.primitive.name for eqn in iter_eqns(jax.make_jaxpr(fn)(*args)))


def conv_eqns(fn, *args, name: str = "jax_conv1d_fwd"):
    return [eqn for eqn in iter_eqns(jax.make_jaxpr(fn)(*args)) if eqn.primitive.name == name]


LOOP_PRIMITIVES = ("while", "scan", "fori_loop", "map")
