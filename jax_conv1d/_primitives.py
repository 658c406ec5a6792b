"""The primitives (forward, input gradient, weight gradient, and the combined backward), each with the same parts:
abstract evaluation (shapes, and result shardings under explicit sharding), lowering, eager implementation,
a batching rule, and partitioning (in _sharding.py). Differentiation lives one level up, in conv.py, as
custom_vjp rules built from these.

Lowering goes in two levels so that sharded operands are convolved where they live. Each primitive lowers to
a custom_partitioning call (_sharding.py decides, per sharding, what each shard runs); that call's per-shard
body binds an inner primitive of the same signature, and only the inner primitive lowers to the FFI target
for the platform (or to lax where no native handler exists; on CUDA, channels-last 1x1 convolutions lower to
XLA's GEMM instead, see _pointwise.py, and so do the forward passes of _gemm_forward.py's shapes and the
strided gradients of _gemm_backward.py's; small strided dense 16-bit shapes lower to XLA's own convolution,
see _xla_conv.py).

Batching never loops: a batch of inputs folds into N, and a batch of weights becomes extra groups of one
grouped convolution (the batch index becomes the outer part of the group index), so one launch covers it.

The combined backward (conv1d_bwd_p) computes any of dx, dw and db from one (x, dy, w) in one call, so a
training step that needs the input and the weight gradient reads dy once; an output that is not wanted is
an empty (0,) array. It has several results; the single-pass primitives stay for the one-gradient cases.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from . import _ffi, _gemm_backward, _gemm_forward, _lax_impl, _pointwise, _sharding, _xla_conv
from ._shapes import ConvConfig, output_length

conv1d_fwd_p = Primitive("jax_conv1d_fwd")
conv1d_dgrad_p = Primitive("jax_conv1d_dgrad")
conv1d_wgrad_p = Primitive("jax_conv1d_wgrad")
conv1d_bwd_p = Primitive("jax_conv1d_bwd")
conv1d_bwd_p.multiple_results = True

# What each shard runs: lowered straight to the FFI target (or lax). Only seen during lowering.
conv1d_fwd_local_p = Primitive("jax_conv1d_fwd_local")
conv1d_dgrad_local_p = Primitive("jax_conv1d_dgrad_local")
conv1d_wgrad_local_p = Primitive("jax_conv1d_wgrad_local")
conv1d_bwd_local_p = Primitive("jax_conv1d_bwd_local")
conv1d_bwd_local_p.multiple_results = True


# --------------------------------------------------------------------------------------------------------
# Shapes


def _dims(cfg: ConvConfig, x_shape, w_shape):
    """(N, C, L) of x and (O, Cg, K) of w, whatever the layout."""
    n, c, length = (x_shape[a] for a in cfg.x_axes)
    o, cg, k = (w_shape[a] for a in cfg.w_axes)
    return n, c, length, o, cg, k


def y_shape(cfg: ConvConfig, x_shape, w_shape):
    n, _, length, o, _, k = _dims(cfg, x_shape, w_shape)
    lout = output_length(length, k, cfg.stride, cfg.dilation, *cfg.padding)
    return (n, o, lout) if cfg.layout == "NCW" else (n, lout, o)


def x_shape_from(cfg: ConvConfig, dy_shape, w_shape, in_length):
    n = dy_shape[0]
    cg = w_shape[1]
    c = cg * cfg.groups
    return (n, c, in_length) if cfg.layout == "NCW" else (n, in_length, c)


def w_shape_from(cfg: ConvConfig, x_shape, dy_shape, kernel_size):
    c = x_shape[cfg.x_axes[1]]
    o = dy_shape[1] if cfg.layout == "NCW" else dy_shape[2]
    cg = c // cfg.groups
    return (o, cg, kernel_size) if cfg.layout == "NCW" else (kernel_size, cg, o)


def _fwd_abstract(x, w, bias, *, cfg, out_dtype):
    return _sharding.result_aval(_sharding.FWD, x, (x, w, bias), y_shape(cfg, x.shape, w.shape), out_dtype,
                                 dict(cfg=cfg, out_dtype=out_dtype))


def _dgrad_abstract(dy, w, *, cfg, in_length):
    return _sharding.result_aval(_sharding.DGRAD, dy, (dy, w), x_shape_from(cfg, dy.shape, w.shape, in_length),
                                 w.dtype, dict(cfg=cfg, in_length=in_length))


def _wgrad_abstract(x, dy, *, cfg, kernel_size):
    return _sharding.result_aval(_sharding.WGRAD, x, (x, dy), w_shape_from(cfg, x.shape, dy.shape, kernel_size),
                                 x.dtype, dict(cfg=cfg, kernel_size=kernel_size))


def bwd_shapes(cfg: ConvConfig, x_shape, dy_shape, w_shape, want_dx, want_dw, want_db):
    """Shapes of (dx, dw, db): those of x, w and the bias, or (0,) for a gradient that is not wanted."""
    o = dy_shape[cfg.x_axes[1]]
    return (tuple(x_shape) if want_dx else (0,), tuple(w_shape) if want_dw else (0,), (o,) if want_db else (0,))


def _bwd_abstract(x, dy, w, *, cfg, want_dx, want_dw, want_db):
    params = dict(cfg=cfg, want_dx=want_dx, want_dw=want_dw, want_db=want_db)
    shapes = bwd_shapes(cfg, x.shape, dy.shape, w.shape, want_dx, want_dw, want_db)
    return _sharding.result_avals(_sharding.BWD, x, (x, dy, w), shapes, x.dtype, params)


for _outer, _local, _abstract in ((conv1d_fwd_p, conv1d_fwd_local_p, _fwd_abstract),
                                  (conv1d_dgrad_p, conv1d_dgrad_local_p, _dgrad_abstract),
                                  (conv1d_wgrad_p, conv1d_wgrad_local_p, _wgrad_abstract),
                                  (conv1d_bwd_p, conv1d_bwd_local_p, _bwd_abstract)):
    _outer.def_abstract_eval(_abstract)
    _local.def_abstract_eval(_abstract)


# --------------------------------------------------------------------------------------------------------
# Lowering


def _ffi_attrs(cfg: ConvConfig):
    # Names and order match ConvAttrs in csrc/ffi_params.h.
    return dict(stride=np.int64(cfg.stride), dilation=np.int64(cfg.dilation), pad_lo=np.int64(cfg.padding[0]),
                pad_hi=np.int64(cfg.padding[1]), groups=np.int64(cfg.groups),
                layout=np.int64(1 if cfg.channels_last else 0), precision=np.int64(cfg.precision))


def _ffi_rule(target):
    lower = jax.ffi.ffi_lowering(target)

    def rule(ctx, *args, cfg, **_):
        return lower(ctx, *args, **_ffi_attrs(cfg))

    return rule


# lax-based versions of each pass, for platforms without native handlers.
def _fwd_lax(x, w, bias, *, cfg, out_dtype):
    return _lax_impl.forward(x, w, bias, cfg, out_dtype)


def _dgrad_lax(dy, w, *, cfg, in_length):
    return _lax_impl.dgrad(dy, w, cfg, x_shape_from(cfg, dy.shape, w.shape, in_length))


def _wgrad_lax(x, dy, *, cfg, kernel_size):
    return _lax_impl.wgrad(x, dy, cfg, w_shape_from(cfg, x.shape, dy.shape, kernel_size))


def _bwd_lax(x, dy, w, *, cfg, want_dx, want_dw, want_db):
    empty = jnp.zeros((0,), x.dtype)
    dx = _lax_impl.dgrad(dy, w, cfg, x.shape) if want_dx else empty
    dw = _lax_impl.wgrad(x, dy, cfg, w.shape) if want_dw else empty
    db = _lax_impl.bias_grad(dy, cfg) if want_db else empty
    return dx, dw, db


def _ours_for_the_rest(x, dy, w, want_dx, want_dw, want_db, *, cfg):
    """The parts of a combined backward that _gemm_backward does not route: our kernels (the inner primitive's
    rule finds no routed part among them, so it lowers to the FFI target)."""
    return conv1d_bwd_local_p.bind(x, dy, w, cfg=cfg, want_dx=want_dx, want_dw=want_dw, want_db=want_db)


def _bwd_routed(x, dy, w, *, cfg, want_dx, want_dw, want_db):
    return _gemm_backward.backward(x, dy, w, cfg=cfg, want_dx=want_dx, want_dw=want_dw, want_db=want_db,
                                   ours=functools.partial(_ours_for_the_rest, cfg=cfg))


def _bwd_gemm_routes(target, avals_in, cfg, params):
    """(dx routed, dw routed) by _gemm_backward for this backward call, for the parts it computes."""
    if target == "jax_conv1d_bwd":
        x, _, w = avals_in
        rdx, rdw = _gemm_backward.routes(cfg, x.shape, w.shape, x.dtype)
        return rdx and params["want_dx"], rdw and params["want_dw"]
    if target == "jax_conv1d_dgrad":
        dy, w = avals_in
        x_shape = x_shape_from(cfg, dy.shape, w.shape, params["in_length"])
        return _gemm_backward.routes(cfg, x_shape, w.shape, w.dtype)[0], False
    if target == "jax_conv1d_wgrad":
        x, dy = avals_in
        w_shape = w_shape_from(cfg, x.shape, dy.shape, params["kernel_size"])
        return False, _gemm_backward.routes(cfg, x.shape, w_shape, x.dtype)[1]
    return False, False


def _xla_conv_applies(target, avals_in, avals_out, cfg, params) -> bool:
    """Whether _xla_conv runs this call: its shapes, one type for every operand and result."""
    avals_out = avals_out if isinstance(avals_out, (list, tuple)) else [avals_out]
    dtypes = {a.dtype for a in list(avals_in) + list(avals_out) if a.size}
    if len(dtypes) != 1:
        return False
    if target == "jax_conv1d_fwd":
        x, w = avals_in[:2]
        return _xla_conv.applies(cfg, x.shape, w.shape, x.dtype, backward=False)
    if target == "jax_conv1d_bwd":
        x, _, w = avals_in
        return _xla_conv.applies(cfg, x.shape, w.shape, x.dtype, backward=True)
    if target == "jax_conv1d_dgrad":
        dy, w = avals_in
        x_shape = x_shape_from(cfg, dy.shape, w.shape, params["in_length"])
        return _xla_conv.applies(cfg, x_shape, w.shape, w.dtype, backward=True)
    x, dy = avals_in
    w_shape = w_shape_from(cfg, x.shape, dy.shape, params["kernel_size"])
    return _xla_conv.applies(cfg, x.shape, w_shape, x.dtype, backward=True)


def _cuda_rule(target, gemm_fn, weight_arg, multiple_results=False):
    """Our kernels, except for the channels-last 1x1 shapes that _pointwise sends to XLA's GEMM (every pass),
    the forward shapes _gemm_forward sends there, and the strided gradients _gemm_backward computes as
    products (the rest of a combined backward stays on our kernels)."""
    ffi = _ffi_rule(target)
    gemm = mlir.lower_fun(gemm_fn, multiple_results=multiple_results)
    fwd_gemm = mlir.lower_fun(_gemm_forward.forward, multiple_results=False)
    bwd_gemm = {"jax_conv1d_bwd": mlir.lower_fun(_bwd_routed, multiple_results=True),
                "jax_conv1d_dgrad": mlir.lower_fun(_gemm_backward.routed_dgrad, multiple_results=False),
                "jax_conv1d_wgrad": mlir.lower_fun(_gemm_backward.routed_wgrad, multiple_results=False)}.get(target)
    xla_conv = {"jax_conv1d_fwd": _xla_conv.forward, "jax_conv1d_bwd": _xla_conv.backward,
                "jax_conv1d_dgrad": _xla_conv.dgrad, "jax_conv1d_wgrad": _xla_conv.wgrad}[target]
    xla_conv = mlir.lower_fun(xla_conv, multiple_results=multiple_results)

    def rule(ctx, *args, cfg, **params):
        if weight_arg is None:
            kernel_size = params["kernel_size"]
        else:
            kernel_size = ctx.avals_in[weight_arg].shape[cfg.w_axes[2]]
        if _pointwise.applies(cfg, kernel_size, ctx.avals_in[0].dtype):
            return gemm(ctx, *args, cfg=cfg, **params)
        if _xla_conv_applies(target, ctx.avals_in, ctx.avals_out, cfg, params):
            return xla_conv(ctx, *args, cfg=cfg, **params)
        if target == "jax_conv1d_fwd" and _gemm_forward.applies(cfg, ctx.avals_in[0].shape, ctx.avals_in[1].shape,
                                                                ctx.avals_in[0].dtype):
            return fwd_gemm(ctx, *args, cfg=cfg, **params)
        if bwd_gemm is not None and any(_bwd_gemm_routes(target, ctx.avals_in, cfg, params)):
            return bwd_gemm(ctx, *args, cfg=cfg, **params)
        return ffi(ctx, *args, cfg=cfg, **params)

    return rule


def _fallback_rule(lax_fn, platform, multiple_results=False):
    lowered = mlir.lower_fun(lax_fn, multiple_results=multiple_results)

    def rule(ctx, *args, **params):
        if platform is not None:
            _ffi.warn_gpu_fallback(platform)
        return lowered(ctx, *args, **params)

    return rule


# (weight_arg: which operand is the weight, for the kernel size; None: the kernel_size parameter gives it.)
for _outer, _local, _pass, _target, _lax_fn, _gemm_fn, _weight_arg in (
        (conv1d_fwd_p, conv1d_fwd_local_p, _sharding.FWD, "jax_conv1d_fwd", _fwd_lax, _pointwise.forward, 1),
        (conv1d_dgrad_p, conv1d_dgrad_local_p, _sharding.DGRAD, "jax_conv1d_dgrad", _dgrad_lax, _pointwise.dgrad,
         1),
        (conv1d_wgrad_p, conv1d_wgrad_local_p, _sharding.WGRAD, "jax_conv1d_wgrad", _wgrad_lax, _pointwise.wgrad,
         None),
        (conv1d_bwd_p, conv1d_bwd_local_p, _sharding.BWD, "jax_conv1d_bwd", _bwd_lax, _pointwise.backward, 2)):
    _multi = _outer.multiple_results
    # The per-shard primitive: native handlers where they exist, lax elsewhere.
    mlir.register_lowering(_local, _ffi_rule(_target), platform="cpu")
    if _ffi.has_cuda_handlers():
        mlir.register_lowering(_local, _cuda_rule(_target, _gemm_fn, _weight_arg, _multi), platform="cuda")
    else:
        mlir.register_lowering(_local, _fallback_rule(_lax_fn, "cuda", _multi), platform="cuda")
    mlir.register_lowering(_local, _fallback_rule(_lax_fn, "rocm", _multi), platform="rocm")
    # The public primitive: through the partitioner, on every platform.
    mlir.register_lowering(_outer, _sharding.partitioned_lowering(_pass, _local))
    _sharding.lowering_needs_devices(_outer)


# --------------------------------------------------------------------------------------------------------
# Eager implementation: compile the single primitive once per parameter set.


@functools.lru_cache(maxsize=None)
def _jitted(prim, params, gemm_switches):
    del gemm_switches  # only a cache key: the lowering reads the switch, so a change needs a new compile
    return jax.jit(functools.partial(prim.bind, **dict(params)))


def _impl(prim):
    def impl(*args, **params):
        return _jitted(prim, tuple(sorted(params.items())),
                       (_pointwise.enabled(), _gemm_forward.enabled(), _gemm_backward.mode(),
                        _xla_conv.enabled()))(*args)

    return impl


conv1d_fwd_p.def_impl(_impl(conv1d_fwd_p))
conv1d_dgrad_p.def_impl(_impl(conv1d_dgrad_p))
conv1d_wgrad_p.def_impl(_impl(conv1d_wgrad_p))
conv1d_bwd_p.def_impl(_impl(conv1d_bwd_p))


# --------------------------------------------------------------------------------------------------------
# Batching


def _fold_into_batch(prim, operand, bdim, others, params):
    """vmap over the batch-carrying operand only: merge the vmapped axis with N."""
    if bdim not in (0, 1):
        operand = jnp.moveaxis(operand, bdim, 0)
        bdim = 0
    a, b = operand.shape[:2]
    out = prim.bind(operand.reshape((a * b,) + operand.shape[2:]), *others, **params)
    return out.reshape((a, b) + out.shape[1:]), bdim


def _batched(v, bdim, size):
    """The operand with its vmapped axis first, broadcasting an unbatched one."""
    if bdim is None:
        return jnp.broadcast_to(v[None], (size,) + v.shape)
    return jnp.moveaxis(v, bdim, 0)


def _activations_to_groups(cfg: ConvConfig, a):
    """(B, N, ...) activations -> one tensor whose channel axis is B*channels (b outer), as a grouped conv sees it."""
    if cfg.layout == "NCW":  # (B, N, C, L) -> (N, B*C, L)
        bsz, n, c, length = a.shape
        return jnp.moveaxis(a, 0, 1).reshape(n, bsz * c, length)
    bsz, n, length, c = a.shape  # (B, N, L, C) -> (N, L, B*C)
    return jnp.moveaxis(a, 0, 2).reshape(n, length, bsz * c)


def _activations_from_groups(cfg: ConvConfig, a, size):
    """Inverse of _activations_to_groups, without a transpose: returns (array, batch axis)."""
    if cfg.layout == "NCW":
        n, bc, length = a.shape
        return a.reshape(n, size, bc // size, length), 1
    n, length, bc = a.shape
    return a.reshape(n, length, size, bc // size), 2


def _weights_to_groups(cfg: ConvConfig, w):
    """(B, *w) -> w of a conv with B times the output channels, b outer."""
    if cfg.layout == "NCW":  # (B, O, Cg, K) -> (B*O, Cg, K)
        bsz, o, cg, k = w.shape
        return w.reshape(bsz * o, cg, k)
    bsz, k, cg, o = w.shape  # (B, K, Cg, O) -> (K, Cg, B*O)
    return jnp.moveaxis(w, 0, 2).reshape(k, cg, bsz * o)


def _weights_from_groups(cfg: ConvConfig, w, size):
    if cfg.layout == "NCW":
        bo, cg, k = w.shape
        return w.reshape(size, bo // size, cg, k), 0
    k, cg, bo = w.shape
    return w.reshape(k, cg, size, bo // size), 2


def _unbatched(shape, bdim):
    return shape if bdim is None else shape[:bdim] + shape[bdim + 1:]


def _empty_batch(shape, dtype):
    """vmap over an axis of size 0: nothing to compute (and a grouped conv with 0 groups does not exist)."""
    return jnp.zeros((0,) + tuple(shape), dtype), 0


def _fwd_batch(args, dims, *, cfg, out_dtype):
    x, w, bias = args
    bx, bw, bb = dims
    params = dict(cfg=cfg, out_dtype=out_dtype)
    if bw is None and bb is None:
        return _fold_into_batch(conv1d_fwd_p, x, bx, (w, bias), params)
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    if size == 0:
        return _empty_batch(y_shape(cfg, _unbatched(x.shape, bx), _unbatched(w.shape, bw)), out_dtype)
    w_b = _batched(w, bw, size)
    if bias.shape[-1] == 0 and bb is None:
        bias_b = bias
    else:
        bias_b = _batched(bias, bb, size).reshape(-1)
    if bx is None and cfg.groups == 1:
        # Shared input, a batch of weights: one conv with size*O output channels reads x once.
        y = conv1d_fwd_p.bind(x, _weights_to_groups(cfg, w_b), bias_b, **params)
        return _activations_from_groups(cfg, y, size)
    x_g = _activations_to_groups(cfg, _batched(x, bx, size))
    y = conv1d_fwd_p.bind(x_g, _weights_to_groups(cfg, w_b), bias_b,
                          cfg=cfg.with_groups(cfg.groups * size), out_dtype=out_dtype)
    return _activations_from_groups(cfg, y, size)


def _dgrad_batch(args, dims, *, cfg, in_length):
    dy, w = args
    bdy, bw = dims
    if bw is None:
        return _fold_into_batch(conv1d_dgrad_p, dy, bdy, (w,), dict(cfg=cfg, in_length=in_length))
    size = w.shape[bw]
    if size == 0:
        return _empty_batch(x_shape_from(cfg, _unbatched(dy.shape, bdy), _unbatched(w.shape, bw), in_length), w.dtype)
    dy_g = _activations_to_groups(cfg, _batched(dy, bdy, size))
    w_g = _weights_to_groups(cfg, _batched(w, bw, size))
    dx = conv1d_dgrad_p.bind(dy_g, w_g, cfg=cfg.with_groups(cfg.groups * size), in_length=in_length)
    return _activations_from_groups(cfg, dx, size)


def _wgrad_batch(args, dims, *, cfg, kernel_size):
    x, dy = args
    bx, bdy = dims
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    if size == 0:
        return _empty_batch(w_shape_from(cfg, _unbatched(x.shape, bx), _unbatched(dy.shape, bdy), kernel_size),
                            x.dtype)
    x_g = _activations_to_groups(cfg, _batched(x, bx, size))
    dy_g = _activations_to_groups(cfg, _batched(dy, bdy, size))
    dw = conv1d_wgrad_p.bind(x_g, dy_g, cfg=cfg.with_groups(cfg.groups * size), kernel_size=kernel_size)
    return _weights_from_groups(cfg, dw, size)


def _bwd_batch(args, dims, *, cfg, want_dx, want_dw, want_db):
    """A batch of (x, dy, w) triples. The weight and bias gradients are per batch element, so the batch
    becomes extra groups (as in _wgrad_batch; an unbatched operand is broadcast) and every result comes from
    one grouped call. Only when the input gradient alone is wanted may a batch of (x, dy) merge with N."""
    x, dy, w = args
    bx, bdy, bw = dims
    params = dict(cfg=cfg, want_dx=want_dx, want_dw=want_dw, want_db=want_db)
    if bw is None and bx is not None and bdy is not None and not (want_dw or want_db):
        x_b, dy_b = jnp.moveaxis(x, bx, 0), jnp.moveaxis(dy, bdy, 0)
        size, n = x_b.shape[:2]
        dx, dw, db = conv1d_bwd_p.bind(x_b.reshape((size * n,) + x_b.shape[2:]),
                                       dy_b.reshape((size * n,) + dy_b.shape[2:]), w, **params)
        return [dx.reshape((size, n) + dx.shape[1:]), dw, db], [0, None, None]
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    if size == 0:
        shapes = bwd_shapes(cfg, _unbatched(x.shape, bx), _unbatched(dy.shape, bdy), _unbatched(w.shape, bw),
                            want_dx, want_dw, want_db)
        wants = (want_dx, want_dw, want_db)
        return ([jnp.zeros((0,) + s if wanted else s, x.dtype) for s, wanted in zip(shapes, wants)],
                [0 if wanted else None for wanted in wants])
    x_g = _activations_to_groups(cfg, _batched(x, bx, size))
    dy_g = _activations_to_groups(cfg, _batched(dy, bdy, size))
    w_g = _weights_to_groups(cfg, _batched(w, bw, size))
    dx, dw, db = conv1d_bwd_p.bind(x_g, dy_g, w_g, **dict(params, cfg=cfg.with_groups(cfg.groups * size)))
    dx, bdx = _activations_from_groups(cfg, dx, size) if want_dx else (dx, None)
    dw, bdw = _weights_from_groups(cfg, dw, size) if want_dw else (dw, None)
    db, bdb = (db.reshape(size, -1), 0) if want_db else (db, None)
    return [dx, dw, db], [bdx, bdw, bdb]


batching.primitive_batchers[conv1d_fwd_p] = _fwd_batch
batching.primitive_batchers[conv1d_dgrad_p] = _dgrad_batch
batching.primitive_batchers[conv1d_wgrad_p] = _wgrad_batch
batching.primitive_batchers[conv1d_bwd_p] = _bwd_batch
