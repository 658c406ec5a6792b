"""Sharded inputs on several devices: every case runs sharded and unsharded and compares, for the forward and
all gradients, in both layouts; checks the result keeps its sharding; and reads the compiled HLO to check
which collectives the partitioned program uses (never an all-gather, except where a case documents the
fallback).

Runs on whatever devices jax finds, 2, 4 or 8 of them: the "1d" mesh spans all of them and the "2d" mesh is
2 x D/2 (1 x 2 on two devices, where collectives over the axis of one device vanish from the expectations).
On CPU devices the data is float64 and sharded must equal unsharded to 1e-10; on GPUs it is float32 through
the CUDA kernels at default (TF32) precision, compared to 2e-3 of the largest value (a shard's smaller
problem may take another kernel than the whole one; a wrong halo or a missing reduction is off by ~5e-2).

tests/test_sharding.py runs this file in a subprocess with 8 CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8 before jax is imported), and on the GPUs where a machine
has two or more. By hand:
  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu python -m pytest tests/sharding_cases.py
  python -m pytest tests/sharding_cases.py   # on a machine with several GPUs
"""

from __future__ import annotations

import dataclasses
import os
import re

if "jax" not in __import__("sys").modules:  # harmless when the flag is already there
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jax_conv1d import dilated_conv1d
from jax_conv1d._sequence_parallel import halo_mode

DEVICES = len(jax.devices())
if DEVICES not in (2, 4, 8):
    pytest.skip(f"needs 2, 4 or 8 devices, found {DEVICES} (on CPU: XLA_FLAGS="
                "--xla_force_host_platform_device_count=8 before importing jax)", allow_module_level=True)

jax.config.update("jax_enable_x64", True)

ON_GPU = jax.default_backend() == "gpu"
DTYPE = np.float32 if ON_GPU else np.float64  # float32 on GPUs, so the CUDA kernels (not a fallback) run
RTOL = 2e-3 if ON_GPU else 1e-10  # GPU: TF32 products, and shards may take other kernels than the whole

COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")


AXIS_SIZES = {"dev": DEVICES, "data": 2 if DEVICES >= 4 else 1, "model": DEVICES // 2 if DEVICES >= 4 else 2}


def make_mesh(kind, axis_type=AxisType.Auto):
    if kind == "1d":
        return jax.make_mesh((DEVICES,), ("dev",), axis_types=(axis_type,))
    return jax.make_mesh((AXIS_SIZES["data"], AXIS_SIZES["model"]), ("data", "model"),
                         axis_types=(axis_type, axis_type))


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    mesh: str  # "1d": ('dev',) of all devices; "2d": ('data', 'model') of 2 x D/2 (1 x 2 on two devices)
    x: tuple  # logical (N, C, L) mesh axes
    w: tuple  # logical (O, C/groups, K) mesh axes
    y: tuple  # expected logical (N, O, Lout) sharding of the result
    fwd_collectives: frozenset  # collectives the partitioned forward must use (and no others)
    n: int = 4
    c: int = 8
    o: int = 8
    length: int = 64
    k: int = 3
    stride: int = 1
    dilation: int = 1
    padding: object = "VALID"
    groups: int = 1
    bias: bool = True
    fallback: bool = False  # documented fallback: correct, but may all-gather
    dx_like_x: bool = True  # whether propagation gives the input gradient x's sharding

    @property
    def halo_limit(self):
        return (self.k - 1) * self.dilation


CASES = [
    Case("batch", "1d", x=("dev", None, None), w=(None, None, None), y=("dev", None, None),
         fwd_collectives=frozenset(), n=8),
    Case("batch_and_out_channels", "2d", x=("data", None, None), w=("model", None, None),
         y=("data", "model", None), fwd_collectives=frozenset()),
    Case("in_channels", "2d", x=("data", "model", None), w=(None, "model", None), y=("data", None, None),
         fwd_collectives=frozenset({"all-reduce"})),
    Case("in_channels_weights_replicated", "2d", x=(None, "model", None), w=(None, None, None),
         y=(None, None, None), fwd_collectives=frozenset({"all-reduce"}), bias=False,
         dx_like_x=False),  # nothing shards dy or w, so dx is computed whole on each device (no traffic)
    Case("grouped_channels", "2d", x=("data", "model", None), w=("model", None, None), y=("data", "model", None),
         fwd_collectives=frozenset(), groups=4, o=16),
    Case("depthwise", "1d", x=(None, "dev", None), w=("dev", None, None), y=(None, "dev", None),
         fwd_collectives=frozenset(), groups=8, k=4, padding="CAUSAL"),
    Case("length_same", "2d", x=("data", None, "model"), w=(None, None, None), y=("data", None, "model"),
         fwd_collectives=frozenset({"collective-permute"}), padding="SAME", dilation=2),
    Case("length_causal", "1d", x=(None, None, "dev"), w=(None, None, None), y=(None, None, "dev"),
         fwd_collectives=frozenset({"collective-permute"}), padding="CAUSAL", k=4, dilation=3, length=128),
    Case("length_same_strided", "2d", x=(None, None, "model"), w=(None, None, None), y=(None, None, "model"),
         fwd_collectives=frozenset({"collective-permute"}), padding="SAME", stride=3, dilation=4, length=96),
    Case("length_valid_drifting", "1d", x=(None, None, "dev"), w=(None, None, None), y=(None, None, "dev"),
         fwd_collectives=frozenset({"collective-permute"}), k=9),  # Lout 56: blocks drift by one per shard
    Case("length_and_out_channels", "2d", x=(None, None, "data"), w=("model", None, None),
         y=(None, "model", "data"), fwd_collectives=frozenset({"collective-permute"}), padding=(3, 1), k=5),
    Case("length_over_two_axes", "2d", x=(None, None, ("data", "model")), w=(None, None, None),
         y=(None, None, ("data", "model")), fwd_collectives=frozenset({"collective-permute"}), k=9),
    # 8 blocks numbered data-major, as ppermute and axis_index over both axes number them; drifting windows
    Case("length_uneven_falls_back", "1d", x=(None, None, "dev"), w=(None, None, None), y=None,
         fwd_collectives=frozenset(), fallback=True),  # Lout 62 does not split in 8
]


def _to_layout(logical, layout, kind):
    if kind == "act":
        return logical if layout == "NCW" else (logical[0], logical[2], logical[1])
    return logical if layout == "NCW" else (logical[2], logical[1], logical[0])


def _norm(spec, ndim=3):
    """A spec as a tuple of entries (None, one name, or a tuple of names), without axes of one device, which
    jax drops from result shardings."""
    entries = tuple(spec) + (None,) * (ndim - len(tuple(spec)))
    out = []
    for e in entries:
        names = () if e is None else ((e,) if isinstance(e, str) else tuple(e))
        names = tuple(a for a in names if AXIS_SIZES[a] > 1)
        out.append(None if not names else (names[0] if len(names) == 1 else names))
    return tuple(out)


def _data(case: Case, layout, dtype=DTYPE, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.n, case.c, case.length))
    w = rng.standard_normal((case.o, case.c // case.groups, case.k))
    b = rng.standard_normal((case.o,))
    if layout == "NWC":
        x, w = x.transpose(0, 2, 1), w.transpose(2, 1, 0)
    return jnp.asarray(x, dtype), jnp.asarray(w, dtype), jnp.asarray(b, dtype)


def _conv_fn(case: Case, layout):
    kw = dict(stride=case.stride, dilation=case.dilation, padding=case.padding, groups=case.groups, layout=layout)
    if case.bias:
        return lambda x, w, b: dilated_conv1d(x, w, b, **kw)
    return lambda x, w, b: dilated_conv1d(x, w, **kw)


def _shard(case: Case, layout, mesh, x, w, b):
    xs = jax.device_put(x, NamedSharding(mesh, P(*_to_layout(case.x, layout, "act"))))
    ws = jax.device_put(w, NamedSharding(mesh, P(*_to_layout(case.w, layout, "w"))))
    bs = jax.device_put(b, NamedSharding(mesh, P(case.w[0])))
    return xs, ws, bs


def collectives(hlo: str):
    """{collective name: [result shapes]} of a compiled HLO module's text."""
    found = {}
    for line in hlo.splitlines():
        line = re.sub(r"/\*.*?\*/", "", line)  # long tuples carry /*index=5*/ comments
        m = re.search(r"=\s*(\(?[a-z0-9]+\[[^=]*?)\s+(all-gather|all-reduce|collective-permute|all-to-all|"
                      r"reduce-scatter)(-start)?\(", line)
        if m:
            found.setdefault(m.group(2), []).append(m.group(1))
    return found


def _halo_extents(shapes, layout):
    """Length extents of collective-permute results (f64[4,8,2]{...} -> 2 for NCW)."""
    axis = 2 if layout == "NCW" else 1
    out = []
    for s in shapes:
        for dims in re.findall(r"\[([0-9,]*)\]", s):
            d = [int(v) for v in dims.split(",") if v]
            if len(d) == 3:
                out.append(d[axis])
    return out


def _expected_forward_collectives(case: Case) -> set:
    """The case's forward collectives, less those over mesh axes of one device (the 1 x 2 mesh on two
    devices): a length or channel split over such an axis is no split, so nothing is exchanged."""
    def shards(entry):
        axes = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
        return int(np.prod([AXIS_SIZES[a] for a in axes]))

    expected = set(case.fwd_collectives)
    if shards(case.x[2]) == 1:
        expected.discard("collective-permute")
    if shards(case.x[1]) == 1:
        expected.discard("all-reduce")
    return expected


def _check_hlo(case: Case, layout, hlo: str, forward: bool):
    found = collectives(hlo)
    if case.fallback:
        return
    assert "all-gather" not in found, f"{case.name}: all-gather in {'forward' if forward else 'gradient'}:\n" \
                                      f"{found['all-gather']}"
    if forward:
        expected = _expected_forward_collectives(case)
        assert set(found) == expected, f"{case.name}: forward collectives {sorted(found)}, expected {expected}"
    for extent in _halo_extents(found.get("collective-permute", []), layout):
        assert extent <= case.halo_limit, f"{case.name}: a halo of {extent} > (K-1)*dilation={case.halo_limit}"


def _check_close(got, want, what, rtol=RTOL):
    scale = float(jnp.max(jnp.abs(want))) or 1.0
    err = float(jnp.max(jnp.abs(jnp.asarray(got, jnp.float64) - jnp.asarray(want, jnp.float64))))
    assert err <= rtol * scale, f"{what}: max error {err} (scale {scale})"


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_forward_and_gradients(case: Case, layout):
    mesh = make_mesh(case.mesh)
    f = _conv_fn(case, layout)
    x, w, b = _data(case, layout)
    xs, ws, bs = _shard(case, layout, mesh, x, w, b)

    fwd = jax.jit(f).lower(xs, ws, bs).compile()
    y = fwd(xs, ws, bs)
    _check_close(y, jax.jit(f)(x, w, b), f"{case.name} forward")
    if case.y is not None:
        assert _norm(y.sharding.spec) == _norm(_to_layout(case.y, layout, "act")), y.sharding
    _check_hlo(case, layout, fwd.as_text(), forward=True)

    def loss(x, w, b):
        y = f(x, w, b)
        return jnp.sum(y * y) * 0.5 + jnp.sum(jnp.sin(y))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(xs, ws, bs).compile()
    got = grad(xs, ws, bs)
    want = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, w, b)
    for g, r, name in zip(got, want, ("dx", "dw", "db")):
        if name == "db" and not case.bias:
            continue
        _check_close(g, r, f"{case.name} {name}")
    if case.dx_like_x and not case.fallback:
        assert _norm(got[0].sharding.spec) == _norm(xs.sharding.spec), f"dx sharding {got[0].sharding}"
    _check_hlo(case, layout, grad.as_text(), forward=False)


def _case(name):
    return next(c for c in CASES if c.name == name)


@pytest.mark.parametrize("name", ["batch_and_out_channels", "length_same", "grouped_channels", "in_channels"])
def test_explicit_sharding_types(name):
    """Meshes with Explicit axes (jax.make_mesh's default in jax 0.10): the result's type carries the
    plan's sharding, and gradients come back with their primal's type."""
    case = _case(name)
    mesh = make_mesh(case.mesh, AxisType.Explicit)
    f = _conv_fn(case, "NCW")
    x, w, b = _data(case, "NCW")
    xs, ws, bs = _shard(case, "NCW", mesh, x, w, b)
    y = jax.jit(f)(xs, ws, bs)
    _check_close(y, f(x, w, b), f"{name} forward")
    assert _norm(jax.typeof(y).sharding.spec) == _norm(case.y)
    loss = lambda x, w, b: jnp.sum(jnp.sin(f(x, w, b)))  # noqa: E731
    got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(xs, ws, bs)
    want = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
    for g, r, s, what in zip(got, want, (xs, ws, bs), ("dx", "dw", "db")):
        _check_close(g, r, f"{name} {what}")
        assert _norm(g.sharding.spec, g.ndim) == _norm(s.sharding.spec, g.ndim), what


@pytest.mark.parametrize("name", ["batch_and_out_channels", "length_causal", "in_channels", "depthwise"])
def test_gspmd_partitioner(name):
    """The same plans through GSPMD's callbacks (jax_use_shardy_partitioner=False)."""
    case = _case(name)
    previous = jax.config.jax_use_shardy_partitioner
    try:
        jax.config.update("jax_use_shardy_partitioner", False)
    except Exception as err:  # GSPMD propagation is deprecated; a later jax may refuse the switch
        pytest.skip(f"GSPMD partitioner unavailable: {err}")
    try:
        mesh = make_mesh(case.mesh)
        f = _conv_fn(case, "NWC")
        x, w, b = _data(case, "NWC")
        xs, ws, bs = _shard(case, "NWC", mesh, x, w, b)
        fwd = jax.jit(f).lower(xs, ws, bs).compile()
        y = fwd(xs, ws, bs)
        _check_close(y, jax.jit(f)(x, w, b), f"{name} forward")
        assert _norm(y.sharding.spec) == _norm(_to_layout(case.y, "NWC", "act"))
        _check_hlo(case, "NWC", fwd.as_text(), forward=True)
        loss = lambda x, w, b: jnp.sum(jnp.sin(f(x, w, b)))  # noqa: E731
        grad = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(xs, ws, bs).compile()
        got = grad(xs, ws, bs)
        want = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w, b)
        for g, r in zip(got, want):
            _check_close(g, r, f"{name} gradient")
        _check_hlo(case, "NWC", grad.as_text(), forward=False)
    finally:
        jax.config.update("jax_use_shardy_partitioner", previous)


def test_shard_map_data_parallel_step():
    """Inside shard_map the op runs on local blocks; a replicated weight's gradient is varying per device
    until the psum that the varying-axes cast transposes into."""
    mesh = make_mesh("1d")
    case = _case("batch")
    x, w, b = _data(case, "NWC")
    f = _conv_fn(case, "NWC")

    def local_loss(x, w, b):
        return jax.lax.psum(jnp.sum(jnp.tanh(f(x, w, b))), "dev")

    sharded = jax.shard_map(local_loss, mesh=mesh, in_specs=(P("dev"), P(), P()), out_specs=P())
    got = jax.jit(jax.value_and_grad(sharded, argnums=(1, 2)))(x, w, b)
    want = jax.value_and_grad(lambda x, w, b: jnp.sum(jnp.tanh(f(x, w, b))), argnums=(1, 2))(x, w, b)
    _check_close(got[0], want[0], "loss")
    for g, r in zip(got[1], want[1]):
        _check_close(g, r, "shard_map gradient")


def test_eager_call_on_sharded_arrays():
    case = _case("length_same")
    mesh = make_mesh(case.mesh)
    f = _conv_fn(case, "NCW")
    x, w, b = _data(case, "NCW")
    xs, ws, bs = _shard(case, "NCW", mesh, x, w, b)
    y = f(xs, ws, bs)
    _check_close(y, f(x, w, b), "eager")
    assert _norm(y.sharding.spec) == _norm(case.y)


def test_vmap_over_sharded_axis():
    """vmap folds the mapped axis into N (mapped axis major); sharding the mapped axis then gives the
    partitioner a batch-sharded convolution."""
    mesh = make_mesh("1d")
    case = dataclasses.replace(_case("batch"), n=2)
    x, w, b = _data(case, "NCW")
    xb = jnp.stack([x * (i + 1) for i in range(8)])  # (8, 2, C, L), sharded along the mapped axis
    f = _conv_fn(case, "NCW")
    xs = jax.device_put(xb, NamedSharding(mesh, P("dev")))
    g = jax.jit(jax.vmap(f, in_axes=(0, None, None))).lower(xs, w, b).compile()
    y = g(xs, w, b)
    _check_close(y, jax.jit(jax.vmap(f, in_axes=(0, None, None)))(xb, w, b), "vmap")
    assert _norm(y.sharding.spec, 4) == ("dev", None, None, None)
    assert "all-gather" not in collectives(g.as_text())


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_low_precision_weight_gradient_sum(dtype):
    """Batch-sharded weight gradients are summed in float32; the result matches the unsharded one to the
    dtype's rounding."""
    mesh = make_mesh("1d")
    case = _case("batch")
    x, w, b = _data(case, "NCW", dtype=dtype)
    xs, ws, bs = _shard(case, "NCW", mesh, x, w, b)
    f = _conv_fn(case, "NCW")
    loss = lambda x, w, b: jnp.sum(f(x, w, b).astype(jnp.float32) ** 2)  # noqa: E731
    got = jax.jit(jax.grad(loss, argnums=1))(xs, ws, bs)
    want = jax.jit(jax.grad(loss, argnums=1))(x, w, b)
    _check_close(got, want, f"{dtype} dw", rtol=2e-2 if dtype == "bfloat16" else max(1e-5, RTOL))


@pytest.mark.parametrize("argnums", [(0, 1, 2), (1, 2)], ids=str)
@pytest.mark.parametrize("name", ["batch_and_out_channels", "in_channels", "grouped_channels", "length_same",
                                  "length_valid_drifting", "depthwise"])
def test_combined_backward_is_one_partitioned_call(name, argnums):
    """The weight gradient with the input and/or bias gradient: one jax_conv1d_bwd per device, no separate
    passes, no all-gather, and the same results as unsharded."""
    case = _case(name)
    mesh = make_mesh(case.mesh)
    f = _conv_fn(dataclasses.replace(case, bias=True), "NWC")
    x, w, b = _data(case, "NWC")
    xs, ws, bs = _shard(case, "NWC", mesh, x, w, b)
    loss = lambda x, w, b: jnp.sum(jnp.sin(f(x, w, b)))  # noqa: E731
    grad = jax.jit(jax.grad(loss, argnums=argnums)).lower(xs, ws, bs).compile()
    text = grad.as_text()
    targets = re.findall(r'custom_call_target="(jax_conv1d_[a-z]+)"', text)
    # one call per device; a length-sharded one adds a small call for the outputs at each end of its block, the default)
    # (JAX_CONV1D_SP_HALO=edges, the default), in each shard's branch of a switch when blocks drift
    calls = targets.count("jax_conv1d_bwd")
    assert calls == 1 or (case.x[2] is not None and halo_mode() == "edges" and calls <= 3 * DEVICES), targets
    assert "jax_conv1d_dgrad" not in targets and "jax_conv1d_wgrad" not in targets, targets
    assert "all-gather" not in collectives(text), collectives(text)
    got = grad(xs, ws, bs)
    want = jax.jit(jax.grad(loss, argnums=argnums))(x, w, b)
    for g, r, i in zip(got, want, argnums):
        _check_close(g, r, f"{name} {('dx', 'dw', 'db')[i]}")


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("name", ["length_same", "length_causal", "length_same_strided", "length_valid_drifting",
                                  "length_and_out_channels"])
def test_length_shards_are_not_copied(name, layout):
    """With JAX_CONV1D_SP_HALO=edges (the default) a shard convolves its block where it lies: neither the
    forward nor the gradients build a block-sized [halo | block | halo] array (window mode does)."""
    case = dataclasses.replace(_case(name), length=8 * _case(name).length)  # blocks much longer than halos
    if os.environ.get("FORCE_COPY_CHECK") is None and halo_mode() != "edges" or \
            AXIS_SIZES["data"] == 1 and name == "length_and_out_channels":
        pytest.skip("window mode, or the length is not split on this mesh")
    mesh = make_mesh(case.mesh)
    f = _conv_fn(case, layout)
    x, w, b = _data(case, layout)
    xs, ws, bs = _shard(case, layout, mesh, x, w, b)
    block = xs.addressable_shards[0].data.shape[2 if layout == "NCW" else 1]
    loss = lambda x, w, b: jnp.sum(jnp.sin(f(x, w, b)))  # noqa: E731
    for what, fn in (("forward", f), ("gradients", jax.grad(loss, argnums=(0, 1, 2)))):
        text = jax.jit(fn).lower(xs, ws, bs).compile().as_text()
        axis = 2 if layout == "NCW" else 1
        for shape in re.findall(r"=\s*[a-z0-9]+\[([0-9,]+)\][^=]*?\s(?:concatenate|pad)\(", text):
            dims = [int(d) for d in shape.split(",")]
            assert len(dims) != 3 or dims[axis] < block, f"{name} {what}: a block-sized copy {dims}"
