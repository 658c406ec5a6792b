"""How each pass runs on sharded operands: the partitioning rules of the primitives.

An FFI custom call is opaque to XLA's SPMD partitioner, which would gather every sharded operand onto every
device. So each primitive lowers through a ``jax.experimental.custom_partitioning`` function instead: on one
device its body is the plain (FFI-lowered) inner primitive; on a mesh, ``partition`` below looks at how the
operands are sharded, decides a plan, and returns a per-shard function that runs the inner primitive on the
local blocks plus the few collectives the plan needs:

  batch (N) sharded               local; the weight gradient is psum'ed over the batch axes.
  output channels sharded         (forward: w's O; input gradient: w's C/groups) local.
  input channels sharded          (forward: C; input gradient: O) local partial sums, then a psum.
  grouped, channels sharded       local when each shard holds whole groups (groups divisible by the shard
                                  count): the shard runs a conv with groups/shards groups.
  length sharded (sequence)       each shard takes a halo from each neighbour (collective permute), at most
                                  (K-1)*dilation elements per side, and convolves the window; the input
                                  gradient sends the halo's contributions back; the weight gradient psums.

The combined backward (dx, dw and db from one call) follows the weight-gradient plan for x and dy and the
input-gradient plan for dy and w, which agree by construction (plan_bwd): dx is reduced as dgrad reduces
it, dw and db as wgrad reduces dw.

Anything else (a kernel-tap axis sharded, shard counts that do not divide, a halo longer than a shard) is
replicated for that dimension, which is correct but communicates; docs/sharding.md lists the cases.

The same plan serves every consumer, so they cannot disagree: ``partition`` (the per-shard program),
``infer_sharding_from_operands`` (GSPMD propagation), the result type under explicit sharding (abstract eval),
and, for Shardy, a ``sharding_rule`` that names which dimensions share a factor.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.custom_partitioning import ArrayMapping, SdyShardingRule, custom_partitioning
from jax.interpreters import mlir
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import _sequence_parallel as sp
from ._shapes import ConvConfig, output_length

Axes = tuple  # mesh axis names sharding one dimension, major to minor; () when the dimension is whole

FWD, DGRAD, WGRAD, BWD = "fwd", "dgrad", "wgrad", "bwd"


# --------------------------------------------------------------------------------------------------------
# Plans: from operand shardings to a per-shard program


@dataclasses.dataclass(frozen=True)
class LengthPlan:
    """Sequence parallelism: x split into `shards` blocks of `x_block`, y into blocks of `y_block`.

    Output block p needs the input window that starts `offset(p) = p*drift - pad_lo` elements after input
    block p starts and is `window` long. `halo_lo`/`halo_hi` are the most any shard needs from its left/right
    neighbour; the window is cut from [left halo | own block | right halo].
    """

    axes: Axes
    shards: int
    x_block: int
    y_block: int
    window: int
    halo_lo: int
    halo_hi: int
    drift: int
    pad_lo: int


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per-pass decision. Specs are per tensor dimension, in the tensor's own layout order."""

    operand_specs: tuple  # one tuple of Axes per operand
    result_spec: tuple  # tuple of Axes
    local_cfg: ConvConfig  # what the inner primitive runs on each shard
    psum_axes: Axes  # reduction after the local pass
    length: Optional[LengthPlan]


def _as_axes(entry) -> Axes:
    if entry is None:
        return ()
    if isinstance(entry, str):
        return (entry,)
    return tuple(entry)


def _spec_axes(spec, ndim: int) -> tuple:
    """PartitionSpec (possibly shorter than ndim) -> tuple of Axes per dimension."""
    entries = tuple(spec) if spec is not None else ()
    entries = entries + (None,) * (ndim - len(entries))
    return tuple(_as_axes(e) if e is not P.UNCONSTRAINED else () for e in entries)


def _place(positions, values, ndim=3):
    """Logical values -> layout order: values[i] goes to dimension positions[i]."""
    out = [()] * ndim
    for pos, v in zip(positions, values):
        out[pos] = v
    return tuple(out)


class _AxisBudget:
    """Hands out mesh axes to dimensions: an axis can shard at most one dimension of the whole pass."""

    def __init__(self, axis_sizes):
        self.sizes = dict(axis_sizes)
        self.used: set = set()

    def count(self, axes: Axes) -> int:
        return math.prod(self.sizes[a] for a in axes)

    def take(self, axes: Axes, extent: int, ok=True) -> Axes:
        """`axes` if they are free, known, divide `extent` and `ok` holds for their shard count; else ()."""
        if not axes or any(a not in self.sizes for a in axes) or len(set(axes)) != len(axes):
            return ()
        if set(axes) & self.used:
            return ()
        n = self.count(axes)
        if extent % n or not (ok(n) if callable(ok) else ok):
            return ()
        self.used |= set(axes)
        return axes


def length_plan(cfg: ConvConfig, in_length: int, kernel_size: int, axes: Axes, shards: int):
    """Halo geometry for sharding the length over `shards` blocks, or None when a small exchange with the two
    neighbours cannot express it (uneven blocks, a halo longer than a block or than (K-1)*dilation)."""
    out_len = output_length(in_length, kernel_size, cfg.stride, cfg.dilation, *cfg.padding)
    if shards < 2 or out_len == 0 or in_length % shards or out_len % shards:
        return None
    x_block, y_block = in_length // shards, out_len // shards
    span = (kernel_size - 1) * cfg.dilation + 1
    window = (y_block - 1) * cfg.stride + span
    drift = y_block * cfg.stride - x_block
    offsets = [p * drift - cfg.padding[0] for p in range(shards)]
    halo_lo = max(0, max(-o for o in offsets))
    halo_hi = max(0, max(o + window - x_block for o in offsets))
    # Only the neighbours, and at most (K-1)*dilation elements from each: SAME, CAUSAL and VALID padding
    # stay within that; unusual explicit paddings that would need more fall back to a gather.
    limit = min(x_block, span - 1)
    if halo_lo > limit or halo_hi > limit:
        return None
    return LengthPlan(axes=axes, shards=shards, x_block=x_block, y_block=y_block, window=window,
                      halo_lo=halo_lo, halo_hi=halo_hi, drift=drift, pad_lo=cfg.padding[0])


def _take_length(budget, cfg, in_length, kernel_size, *candidates):
    for axes in candidates:
        if axes and set(axes).isdisjoint(budget.used) and all(a in budget.sizes for a in axes):
            lp = length_plan(cfg, in_length, kernel_size, axes, budget.count(axes))
            if lp is not None and budget.take(axes, in_length):
                return axes, lp
    return (), None


def _take_groups(budget, groups, extent, *candidates):
    for axes in candidates:
        got = budget.take(axes, extent, ok=lambda n: groups % n == 0)
        if got:
            return got
    return ()


def _local_cfg(cfg: ConvConfig, group_axes: Axes, lp, budget) -> ConvConfig:
    local = cfg
    if group_axes:
        local = local.with_groups(cfg.groups // budget.count(group_axes))
    if lp is not None:
        local = dataclasses.replace(local, padding=(0, 0))  # the halos carry the global padding as zeros
    return local


def plan_fwd(cfg: ConvConfig, axis_sizes, x_spec, w_spec, x_shape, w_shape, has_bias: bool) -> Plan:
    """x (N, C, L) * w (O, C/g, K) -> y (N, O, Lout)."""
    n, c, length = (x_shape[a] for a in cfg.x_axes)
    o, _, k = (w_shape[a] for a in cfg.w_axes)
    xn, xc, xl = (x_spec[a] for a in cfg.x_axes)
    wo, wc, _ = (w_spec[a] for a in cfg.w_axes)
    b = _AxisBudget(axis_sizes)
    batch = b.take(xn, n)
    seq, lp = _take_length(b, cfg, length, k, xl)
    if cfg.groups == 1:
        red = b.take(xc, c) or b.take(wc, c)
        out = b.take(wo, o)
        grp = ()
    else:
        red = out = ()
        grp = _take_groups(b, cfg.groups, c, xc, wo)
    ch_out = out or grp
    x_out = _place(cfg.x_axes, (batch, red or grp, seq))
    w_out = _place(cfg.w_axes, (ch_out, red, ()))
    return Plan(operand_specs=(x_out, w_out, (ch_out if has_bias else (),)),
                result_spec=_place(cfg.x_axes, (batch, ch_out, seq)),
                local_cfg=_local_cfg(cfg, grp, lp, b), psum_axes=red, length=lp)


def plan_dgrad(cfg: ConvConfig, axis_sizes, dy_spec, w_spec, dy_shape, w_shape, in_length: int) -> Plan:
    """dy (N, O, Lout), w (O, C/g, K) -> dx (N, C, L)."""
    n, o, _ = (dy_shape[a] for a in cfg.x_axes)
    _, cg, k = (w_shape[a] for a in cfg.w_axes)
    c = cg * cfg.groups
    dn, do, dl = (dy_spec[a] for a in cfg.x_axes)
    wo, wc, _ = (w_spec[a] for a in cfg.w_axes)
    b = _AxisBudget(axis_sizes)
    batch = b.take(dn, n)
    seq, lp = _take_length(b, cfg, in_length, k, dl)
    if cfg.groups == 1:
        red = b.take(do, o) or b.take(wo, o)
        out = b.take(wc, c)
        grp = ()
    else:
        red = out = ()
        grp = _take_groups(b, cfg.groups, o, do, wo)
    dy_out = _place(cfg.x_axes, (batch, red or grp, seq))
    w_out = _place(cfg.w_axes, (red or grp, out, ()))
    return Plan(operand_specs=(dy_out, w_out), result_spec=_place(cfg.x_axes, (batch, out or grp, seq)),
                local_cfg=_local_cfg(cfg, grp, lp, b), psum_axes=red, length=lp)


def plan_wgrad(cfg: ConvConfig, axis_sizes, x_spec, dy_spec, x_shape, dy_shape, kernel_size: int) -> Plan:
    """x (N, C, L), dy (N, O, Lout) -> dw (O, C/g, K); summed over batch and length shards."""
    n, c, length = (x_shape[a] for a in cfg.x_axes)
    o = dy_shape[cfg.x_axes[1]]
    xn, xc, xl = (x_spec[a] for a in cfg.x_axes)
    dn, do, dl = (dy_spec[a] for a in cfg.x_axes)
    b = _AxisBudget(axis_sizes)
    batch = b.take(xn, n) or b.take(dn, n)
    seq, lp = _take_length(b, cfg, length, kernel_size, xl, dl)
    if cfg.groups == 1:
        cin = b.take(xc, c)
        out = b.take(do, o)
        grp = ()
    else:
        cin = out = ()
        grp = _take_groups(b, cfg.groups, c, xc, do)
    x_out = _place(cfg.x_axes, (batch, cin or grp, seq))
    dy_out = _place(cfg.x_axes, (batch, out or grp, seq))
    return Plan(operand_specs=(x_out, dy_out), result_spec=_place(cfg.w_axes, (out or grp, cin, ())),
                local_cfg=_local_cfg(cfg, grp, lp, b), psum_axes=batch + seq, length=lp)


@dataclasses.dataclass(frozen=True)
class BwdPlan:
    """The combined backward: x and dy as `wgrad` wants them, dy and w as `dgrad` wants them (the same dy)."""

    wgrad: Plan
    dgrad: Plan

    @property
    def operand_specs(self):  # x, dy, w
        return (self.wgrad.operand_specs[0], self.wgrad.operand_specs[1], self.dgrad.operand_specs[1])

    @property
    def local_cfg(self):
        return self.wgrad.local_cfg

    @property
    def length(self):
        return self.wgrad.length

    def result_specs(self, want_dx, want_dw, want_db):
        """dx like x, dw and db like dy's channels; an unwanted (empty) result is replicated."""
        channels = self.wgrad.result_spec[self.wgrad.local_cfg.w_axes[0]]
        return (self.dgrad.result_spec if want_dx else ((),), self.wgrad.result_spec if want_dw else ((),),
                (channels,) if want_db else ((),))


def plan_bwd(cfg: ConvConfig, axis_sizes, x_spec, dy_spec, w_spec, x_shape, dy_shape, w_shape) -> BwdPlan:
    """x (N, C, L), dy (N, O, Lout), w (O, C/g, K) -> dx, dw, db from one per-shard call.

    The channel axes of w fill in for those x and dy do not shard; plan_wgrad then decides how x and dy are
    split, and plan_dgrad, given that dy and the w it implies, decides the same split (its batch, length and
    channel choices read exactly the axes wgrad took), so one set of local blocks serves both passes.
    """
    xc_pos, w_o_pos, w_c_pos = cfg.x_axes[1], cfg.w_axes[0], cfg.w_axes[1]
    x_spec, dy_spec = list(x_spec), list(dy_spec)
    x_spec[xc_pos] = x_spec[xc_pos] or w_spec[w_c_pos]
    dy_spec[xc_pos] = dy_spec[xc_pos] or w_spec[w_o_pos]
    if cfg.groups > 1:  # any of the three may name the group axes
        x_spec[xc_pos] = x_spec[xc_pos] or dy_spec[xc_pos]
    wp = plan_wgrad(cfg, axis_sizes, tuple(x_spec), tuple(dy_spec), x_shape, dy_shape, w_shape[cfg.w_axes[2]])
    dp = plan_dgrad(cfg, axis_sizes, wp.operand_specs[1], wp.result_spec, dy_shape, w_shape,
                    x_shape[cfg.x_axes[2]])
    # Both plans must cut dy the same way and hand dx the blocks of x; anything else is a bug here.
    assert dp.operand_specs[0] == wp.operand_specs[1] and dp.result_spec == wp.operand_specs[0], (wp, dp)
    assert dp.local_cfg == wp.local_cfg and dp.length == wp.length, (wp, dp)
    return BwdPlan(wgrad=wp, dgrad=dp)


def _plan(pass_name, cfg, axis_sizes, specs, shapes, params):
    if pass_name == BWD:
        return plan_bwd(cfg, axis_sizes, specs[0], specs[1], specs[2], shapes[0], shapes[1], shapes[2])
    if pass_name == FWD:
        return plan_fwd(cfg, axis_sizes, specs[0], specs[1], shapes[0], shapes[1], has_bias=shapes[2][0] > 0)
    if pass_name == DGRAD:
        return plan_dgrad(cfg, axis_sizes, specs[0], specs[1], shapes[0], shapes[1], params["in_length"])
    return plan_wgrad(cfg, axis_sizes, specs[0], specs[1], shapes[0], shapes[1], params["kernel_size"])


# --------------------------------------------------------------------------------------------------------
# Per-shard programs (the length-sharded parts live in _sequence_parallel.py)


def _psum(a, axes: Axes, accumulate_f32=False):
    if not axes:
        return a
    if accumulate_f32 and a.dtype.itemsize < 4:
        return lax.psum(a.astype(jnp.float32), axes).astype(a.dtype)
    return lax.psum(a, axes)


def _local_fwd(inner, plan: Plan, *, cfg: ConvConfig, out_dtype):
    axis = cfg.x_axes[2]
    lp = plan.length

    def conv(x, w, bias):
        if lp is None:
            return inner.bind(x, w, bias, cfg=plan.local_cfg, out_dtype=out_dtype)
        if sp.halo_mode() == "window":
            return inner.bind(sp.gather_window(x, axis, lp), w, bias, cfg=plan.local_cfg, out_dtype=out_dtype)
        return sp.forward(inner, lp, plan.local_cfg, x, w, bias, out_dtype=out_dtype)

    def run(x, w, bias):
        if not plan.psum_axes:
            return conv(x, w, bias)
        # Partial sums over this shard's input channels; the bias is added once, after the reduction.
        y = lax.psum(conv(x, w, jnp.zeros((0,), x.dtype)), plan.psum_axes)
        if bias.shape[0]:
            shape = (1, -1, 1) if cfg.layout == "NCW" else (1, 1, -1)
            acc = jnp.promote_types(y.dtype, jnp.float32)  # as the kernel adds it: in f32 (f64 for f64)
            y = (y.astype(acc) + bias.astype(acc).reshape(shape)).astype(y.dtype)
        return y

    return run


def _local_dgrad(inner, plan: Plan, *, cfg: ConvConfig, in_length: int):
    axis = cfg.x_axes[2]
    lp = plan.length

    def run(dy, w):
        if lp is None:
            dx = inner.bind(dy, w, cfg=plan.local_cfg, in_length=in_length)
        elif sp.halo_mode() == "window":  # the gradient of the window, folded back onto the blocks
            dx = sp.scatter_window(inner.bind(dy, w, cfg=plan.local_cfg, in_length=lp.window), axis, lp)
        else:
            dx = sp.input_gradient(inner, lp, plan.local_cfg, dy, w)
        return _psum(dx, plan.psum_axes)

    return run


def _local_wgrad(inner, plan: Plan, *, cfg: ConvConfig, kernel_size: int):
    axis = cfg.x_axes[2]
    lp = plan.length

    def run(x, dy):
        if lp is None:
            dw = inner.bind(x, dy, cfg=plan.local_cfg, kernel_size=kernel_size)
        elif sp.halo_mode() == "window":
            dw = inner.bind(sp.gather_window(x, axis, lp), dy, cfg=plan.local_cfg, kernel_size=kernel_size)
        else:
            dw = sp.weight_gradient(inner, lp, plan.local_cfg, x, dy, kernel_size=kernel_size)
        return _psum(dw, plan.psum_axes, accumulate_f32=True)

    return run


def _local_bwd(inner, plan: BwdPlan, *, cfg: ConvConfig, want_dx, want_dw, want_db):
    axis = cfg.x_axes[2]
    lp = plan.length
    wants = dict(want_dx=want_dx, want_dw=want_dw, want_db=want_db)

    def run(x, dy, w):
        if lp is None:
            dx, dw, db = inner.bind(x, dy, w, cfg=plan.local_cfg, **wants)
        elif sp.halo_mode() == "window":  # the window of x this shard's dy covers: dw reads it, dx is its gradient
            dx, dw, db = inner.bind(sp.gather_window(x, axis, lp), dy, w, cfg=plan.local_cfg, **wants)
            dx = sp.scatter_window(dx, axis, lp) if want_dx else dx
        else:
            dx, dw, db = sp.backward(inner, lp, plan.local_cfg, x, dy, w, **wants)
        if want_dx:
            dx = _psum(dx, plan.dgrad.psum_axes)
        if want_dw:
            dw = _psum(dw, plan.wgrad.psum_axes, accumulate_f32=True)
        if want_db:
            db = _psum(db, plan.wgrad.psum_axes, accumulate_f32=True)
        return dx, dw, db

    return run


# --------------------------------------------------------------------------------------------------------
# custom_partitioning callbacks


def _named(mesh, axes_per_dim):
    return NamedSharding(mesh, P(*[None if not a else (a[0] if len(a) == 1 else a) for a in axes_per_dim]))


def _operand_specs(arg_shapes):
    specs = []
    for a in arg_shapes:
        s = a.sharding
        specs.append(_spec_axes(s.spec, len(a.shape)) if isinstance(s, NamedSharding) else ((),) * len(a.shape))
    return specs


def _mesh_sizes(mesh):
    return dict(mesh.shape) if not mesh.empty else {}


class _Pass:
    """One primitive's partitioning: `names` are its static parameters, in the order the body takes them."""

    def __init__(self, name, inner, local_program, names, n_operands):
        self.multiple_results = name == BWD
        self.name = name
        self.inner = inner
        self.local_program = local_program
        self.names = names
        self.n_operands = n_operands

    def params(self, static):
        return dict(zip(self.names, static))

    def plan(self, static, axis_sizes, specs, shapes):
        p = self.params(static)
        return _plan(self.name, p["cfg"], axis_sizes, specs, shapes, p)

    def result_shardings(self, mesh, plan, static):
        if not self.multiple_results:
            return _named(mesh, plan.result_spec)
        p = self.params(static)
        specs = plan.result_specs(p["want_dx"], p["want_dw"], p["want_db"])
        return tuple(_named(mesh, s) for s in specs)

    # -- callbacks (static params come first, then what custom_partitioning passes) --

    def partition(self, *args):
        """The per-shard program and the operand/result shardings it expects; XLA reshards any operand that
        arrives otherwise (that is where a fallback communicates)."""
        static, (mesh, arg_shapes, _) = args[:-3], args[-3:]
        plan = self.plan(static, _mesh_sizes(mesh), _operand_specs(arg_shapes), [a.shape for a in arg_shapes])
        program = self.local_program(self.inner, plan, **self.params(static))
        arg_shardings = tuple(_named(mesh, s) for s in plan.operand_specs)
        return mesh, program, self.result_shardings(mesh, plan, static), arg_shardings

    def infer_sharding_from_operands(self, *args):  # GSPMD's propagation (Shardy uses sharding_rule)
        static, (mesh, arg_shapes, _) = args[:-3], args[-3:]
        plan = self.plan(static, _mesh_sizes(mesh), _operand_specs(arg_shapes), [a.shape for a in arg_shapes])
        return self.result_shardings(mesh, plan, static)

    def sharding_rule(self, *args):
        static, (mesh, operand_types, result_types) = args[:-3], args[-3:]
        shapes = [tuple(t.shape) for t in operand_types]
        return shardy_rule(self.name, self.params(static), shapes)


def shardy_rule(pass_name, params, shapes) -> SdyShardingRule:
    """Which dimensions share a sharding factor, for Shardy's propagation.

    A factor may span dimensions of different sizes (Shardy then uses the smaller): the length factor links
    input and output length, and for grouped convolutions one channel factor links input and output
    channels, since a shard that holds whole groups holds both. Compound (group, within-group) factors would
    be more precise but let Shardy split a mesh axis into sub-axes, which custom_partitioning cannot hand to
    `partition`.
    """
    cfg = params["cfg"]
    x_pos, w_pos = cfg.x_axes, cfg.w_axes
    grouped = cfg.groups > 1
    cin, cout = ("ch", "ch") if grouped else ("c", "o")
    w_in = "cg" if grouped else "c"

    def act(n, ch, length):  # an activation's mapping, in layout order
        return ArrayMapping(*_place(x_pos, (n, ch, length)))

    def wts(o, cg, k):
        return ArrayMapping(*_place(w_pos, (o, cg, k)))

    if pass_name == FWD:
        bias = ArrayMapping(cout) if shapes[2][0] else ArrayMapping("e")
        return SdyShardingRule((act("n", cin, "l"), wts(cout, w_in, "k"), bias), (act("n", cout, "l"),),
                               reduction_factors=(w_in,), need_replication_factors=("k",),
                               permutation_factors=("l",))
    if pass_name == BWD:
        # dx keeps n, l and the input channels; dw and db keep the output channels: no factor is absent from
        # every result, so none is a reduction factor (the partition callback adds the sums each plan needs).
        def result(wanted, mapping, name):
            return mapping if wanted else ArrayMapping(name)

        return SdyShardingRule(
            (act("n", cin, "l"), act("n", cout, "l"), wts(cout, w_in, "k")),
            (result(params["want_dx"], act("n", cin, "l"), "e_dx"), result(params["want_dw"], wts(cout, w_in, "k"),
             "e_dw"), result(params["want_db"], ArrayMapping(cout), "e_db")),
            need_replication_factors=("k",), permutation_factors=("l",))
    if pass_name == DGRAD:
        return SdyShardingRule((act("n", cout, "l"), wts(cout, w_in, "k")), (act("n", cin, "l"),),
                               reduction_factors=() if grouped else ("o",), need_replication_factors=("k",),
                               permutation_factors=("l",))
    return SdyShardingRule((act("n", cin, "l"), act("n", cout, "l")), (wts(cout, w_in, "k"),),
                           reduction_factors=("n", "l"), need_replication_factors=("k",))


# --------------------------------------------------------------------------------------------------------
# Registration: outer primitive lowers through custom_partitioning around the inner (FFI) primitive


def _fwd_body(inner):
    def body(x, w, bias, cfg, out_dtype):
        return inner.bind(x, w, bias, cfg=cfg, out_dtype=out_dtype)

    return body


def _dgrad_body(inner):
    def body(dy, w, cfg, in_length):
        return inner.bind(dy, w, cfg=cfg, in_length=in_length)

    return body


def _wgrad_body(inner):
    def body(x, dy, cfg, kernel_size):
        return inner.bind(x, dy, cfg=cfg, kernel_size=kernel_size)

    return body


def _bwd_body(inner):
    def body(x, dy, w, cfg, want_dx, want_dw, want_db):
        return tuple(inner.bind(x, dy, w, cfg=cfg, want_dx=want_dx, want_dw=want_dw, want_db=want_db))

    return body


# per pass: static parameter names (in the body's order, after the operands), operand count, body, program
_PASSES = {
    FWD: (("cfg", "out_dtype"), 3, _fwd_body, _local_fwd),
    DGRAD: (("cfg", "in_length"), 2, _dgrad_body, _local_dgrad),
    WGRAD: (("cfg", "kernel_size"), 2, _wgrad_body, _local_wgrad),
    BWD: (("cfg", "want_dx", "want_dw", "want_db"), 3, _bwd_body, _local_bwd),
}


def partitioned_lowering(pass_name: str, inner):
    """The lowering rule of an outer primitive: a custom_partitioning call whose body binds `inner` (what
    runs when there is a single device, or inside shard_map where every axis is manual)."""
    names, n_operands, make_body, local_program = _PASSES[pass_name]
    rules = _Pass(pass_name, inner, local_program, names, n_operands)
    fn = custom_partitioning(make_body(inner), static_argnums=tuple(range(n_operands, n_operands + len(names))))
    fn.def_partition(partition=rules.partition, infer_sharding_from_operands=rules.infer_sharding_from_operands,
                     sharding_rule=rules.sharding_rule)
    return mlir.lower_fun(fn, multiple_results=rules.multiple_results)


# --------------------------------------------------------------------------------------------------------
# Result types: explicit sharding and shard_map's varying axes


def result_aval(pass_name, ref, operands, shape, dtype, params):
    """The result's abstract value. It inherits `ref`'s varying manual axes (shard_map) and, when operands
    carry explicit shardings in their types, the plan's result sharding."""
    return result_avals(pass_name, ref, operands, (shape,), dtype, params)[0]


def result_avals(pass_name, ref, operands, shapes, dtype, params):
    """result_aval for each of a primitive's results (the combined backward has three)."""
    sharding = getattr(ref, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return [jax.core.ShapedArray(tuple(s), dtype) for s in shapes]
    mesh = sharding.mesh
    specs = [_spec_axes(a.sharding.spec, a.ndim) if isinstance(getattr(a, "sharding", None), NamedSharding)
             else ((),) * a.ndim for a in operands]
    if any(any(d) for s in specs for d in s):
        plan = _plan(pass_name, params["cfg"], _mesh_sizes(mesh), specs, [a.shape for a in operands], params)
        if pass_name == BWD:
            result_specs = plan.result_specs(params["want_dx"], params["want_dw"], params["want_db"])
        else:
            result_specs = (plan.result_spec,)
    else:
        result_specs = [((),) * len(s) for s in shapes]
    out = []
    for shape, spec in zip(shapes, result_specs):
        new = sharding.update(spec=P(*[None if not a else (a[0] if len(a) == 1 else a) for a in spec]))
        out.append(ref.update(shape=tuple(shape), dtype=dtype, weak_type=False, sharding=new))
    return out


def lowering_needs_devices(prim) -> None:
    """custom_partitioning needs the device assignment while lowering; jit only provides it for jaxprs that
    contain a primitive in this registry (custom_partitioning's own entry is hidden inside our lowering).
    jax's own cuDNN attention registers its wrapper primitives the same way."""
    from jax._src import dispatch  # no public spelling exists in jax 0.10/0.11

    dispatch.prim_requires_devices_during_lowering.add(prim)


# --------------------------------------------------------------------------------------------------------
# Typing helpers for the public op (conv.py): shard_map's varying axes and explicit-sharding types


def _varying_axes(a) -> frozenset:
    aval = jax.typeof(a)
    mat = getattr(aval, "mat", None)  # jax 0.10+: manual axis types
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", frozenset()))  # jax 0.7-0.9 spelling


def match_varying(*arrays):
    """Inside shard_map, makes every operand vary over the union of the operands' manual axes (what jax's
    own binary ops do implicitly), so each gradient has its primal's type: the weight gradient of a
    replicated weight stays varying inside the conv and is summed by the transpose of this cast."""
    axes = [_varying_axes(a) for a in arrays]
    union = frozenset().union(*axes)
    if all(a == union for a in axes):
        return arrays
    out = []
    for a, have in zip(arrays, axes):
        missing = tuple(sorted(union - have))
        if missing:
            a = lax.pcast(a, missing, to="varying") if hasattr(lax, "pcast") else lax.pvary(a, missing)
        out.append(a)
    return tuple(out)


def explicit_shardings(*arrays):
    """The operands' shardings when their types carry explicit mesh axes, else None (nothing to enforce)."""
    shardings = tuple(getattr(jax.typeof(a), "sharding", None) for a in arrays)
    if any(isinstance(s, NamedSharding) and any(e is not None for e in s.spec) for s in shardings):
        return shardings
    return None


def cast_like(ct, sharding):
    """A cotangent with the sharding its primal's type has (explicit sharding requires equal types); a
    no-op unless the partitioning plan of the backward pass chose differently."""
    if ct is None or sharding is None or not isinstance(sharding, NamedSharding):
        return ct
    have = getattr(jax.typeof(ct), "sharding", None)
    if isinstance(have, NamedSharding) and _spec_axes(have.spec, ct.ndim) == _spec_axes(sharding.spec, ct.ndim):
        return ct
    return jax.sharding.reshard(ct, sharding)
