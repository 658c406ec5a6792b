"""Sequence parallelism: the per-shard programs of a convolution whose length is split into blocks.

Shard p holds input block p (x_block elements) and computes output block p (y_block outputs), whose input
window starts `start = p*drift - pad_lo` elements after the block's first element and is `window` long
(`LengthPlan`, in _sharding.py). A window reaches at most `halo_lo` elements into the left neighbour's block
and `halo_hi` into the right one's; those halos arrive by one collective permute per side. Two ways to use
them (JAX_CONV1D_SP_HALO picks; "edges" is the default):

- edges: the shard convolves its own block where it lies, with zero padding (or cropping) that makes its
  output exactly its block, and then adds what the halo elements contribute to the few outputs at either
  end: small convolutions of [halo | zeros] and [zeros | halo]. Nothing as large as the block is copied.
  In the gradients, the input gradient of those small convolutions is the part that belongs to the
  neighbours' elements: it is sent back and added to the ends of their input gradient; their weight
  gradients add to the shard's.
- window: the shard builds [left halo | block | right halo] (a copy of the block) and convolves that window
  without padding; the gradient of the window is folded back the same way. Kept for comparison.

When blocks drift against each other (drift != 0), the padding differs from shard to shard: each shard's
static program is one branch of a `lax.switch` on the shard index (only one branch runs).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax.numpy as jnp
from jax import lax

_MODES = ("edges", "window")


def halo_mode() -> str:
    """How a length-sharded convolution uses its halos (read when the program is traced)."""
    mode = os.environ.get("JAX_CONV1D_SP_HALO", "edges") or "edges"
    if mode not in _MODES:
        raise ValueError(f"JAX_CONV1D_SP_HALO must be one of {_MODES}, got {mode!r}")
    return mode


# --------------------------------------------------------------------------------------------------------
# The halo exchange


def _from_left(a, axis, count, lp):
    """Each shard receives the last `count` elements of its left neighbour; the first shard receives zeros,
    which is the global left padding."""
    tail = lax.slice_in_dim(a, a.shape[axis] - count, a.shape[axis], axis=axis)
    return lax.ppermute(tail, lp.axes, perm=[(i, i + 1) for i in range(lp.shards - 1)])


def _from_right(a, axis, count, lp):
    head = lax.slice_in_dim(a, 0, count, axis=axis)
    return lax.ppermute(head, lp.axes, perm=[(i + 1, i) for i in range(lp.shards - 1)])


def _to_left(a, lp):
    return lax.ppermute(a, lp.axes, perm=[(i + 1, i) for i in range(lp.shards - 1)])


def _to_right(a, lp):
    return lax.ppermute(a, lp.axes, perm=[(i, i + 1) for i in range(lp.shards - 1)])


def _pad_along(a, axis, lo, hi):
    pads = [(0, 0, 0)] * a.ndim
    pads[axis] = (lo, hi, 0)
    return lax.pad(a, jnp.zeros((), a.dtype), pads)


def _add_at(a, part, start, axis):
    """a with `part` added to a[start:start+len] along axis (an in-place update for XLA)."""
    current = lax.slice_in_dim(a, start, start + part.shape[axis], axis=axis)
    return lax.dynamic_update_slice_in_dim(a, current + part.astype(a.dtype), start, axis=axis)


# --------------------------------------------------------------------------------------------------------
# window: convolve [left halo | block | right halo]


def _window_start(lp):
    """Start of this shard's window inside [left halo | block | right halo]."""
    static = lp.halo_lo - lp.pad_lo
    if lp.drift == 0:
        return static
    return static + lax.axis_index(lp.axes) * lp.drift


def gather_window(x, axis, lp):
    """The input window this shard's output block reads: its own block plus neighbours' halos."""
    parts = [x]
    if lp.halo_lo:
        parts.insert(0, _from_left(x, axis, lp.halo_lo, lp))
    if lp.halo_hi:
        parts.append(_from_right(x, axis, lp.halo_hi, lp))
    ext = lax.concatenate(parts, axis) if len(parts) > 1 else x
    start = _window_start(lp)
    if isinstance(start, int):
        if start == 0 and lp.window == ext.shape[axis]:
            return ext
        return lax.slice_in_dim(ext, start, start + lp.window, axis=axis)
    return lax.dynamic_slice_in_dim(ext, start, lp.window, axis=axis)


def scatter_window(g, axis, lp):
    """Transpose of gather_window: a window-sized gradient back onto this shard's block, with the parts
    that fell on the neighbours' blocks sent to them and added there."""
    total = lp.halo_lo + lp.x_block + lp.halo_hi
    start = _window_start(lp)
    if isinstance(start, int):
        ext = _pad_along(g, axis, start, total - start - lp.window)
    else:
        zeros_shape = list(g.shape)
        zeros_shape[axis] = total
        ext = lax.dynamic_update_slice_in_dim(jnp.zeros(zeros_shape, g.dtype), g, start, axis=axis)
    out = lax.slice_in_dim(ext, lp.halo_lo, lp.halo_lo + lp.x_block, axis=axis)
    if lp.halo_lo:  # what fell on the left neighbour's tail goes back to it
        back = _to_left(lax.slice_in_dim(ext, 0, lp.halo_lo, axis=axis), lp)
        out = out + _pad_along(back, axis, lp.x_block - lp.halo_lo, 0)
    if lp.halo_hi:  # and what fell on the right neighbour's head goes to it
        fwd = _to_right(lax.slice_in_dim(ext, lp.halo_lo + lp.x_block, total, axis=axis), lp)
        out = out + _pad_along(fwd, axis, 0, lp.x_block - lp.halo_hi)
    return out


# --------------------------------------------------------------------------------------------------------
# edges: convolve the block in place, correct the outputs at its ends


def _ceil_div(a, b):
    return -(-a // b)


@dataclasses.dataclass(frozen=True)
class ShardEdges:
    """One shard's static geometry in the edges program (positions relative to its block's first element)."""

    pad: tuple  # padding (negative: cropping) of the block's own convolution, so it yields y_block outputs
    lo: int  # how many of the left neighbour's last elements the window reads
    n_lo: int  # leading outputs that read them
    lo_window: int  # input window of those outputs: [halo | zeros]
    t_hi: int  # first output that reads the right neighbour's elements
    n_hi: int
    hi_window: int  # input window of outputs t_hi..: [zeros | halo]
    hi_zeros: int  # block positions at the start of that window (zeros: the block's part is already in y)
    hi_first: int  # the right neighbour's first element the window reads


def shard_edges(lp, stride: int, span: int, p: int) -> ShardEdges:
    start = p * lp.drift - lp.pad_lo
    end = start + lp.window  # one past the last position the window reads
    lo, hi = max(0, -start), max(0, end - lp.x_block)
    n_lo = min(lp.y_block, _ceil_div(lo, stride)) if lo else 0
    t_hi = max(0, _ceil_div(lp.x_block - start - span + 1, stride)) if hi else lp.y_block
    n_hi = lp.y_block - t_hi
    hi_window = (n_hi - 1) * stride + span if n_hi else 0
    first = start + t_hi * stride
    edges = ShardEdges(pad=(-start, end - lp.x_block), lo=lo, n_lo=n_lo,
                       lo_window=(n_lo - 1) * stride + span if n_lo else 0, t_hi=t_hi, n_hi=n_hi,
                       hi_window=hi_window, hi_zeros=min(hi_window, max(0, lp.x_block - first)),
                       hi_first=max(0, first - lp.x_block))
    assert lo <= lp.halo_lo and hi <= lp.halo_hi, (lp, edges)
    assert edges.hi_first + hi_window - edges.hi_zeros <= lp.halo_hi, (lp, edges)
    return edges


def _left_window(tail, e: ShardEdges, lp, axis):
    """[the left neighbour's elements the leading outputs read | zeros], from its last halo_lo elements."""
    used = min(e.lo, e.lo_window)
    part = lax.slice_in_dim(tail, lp.halo_lo - e.lo, lp.halo_lo - e.lo + used, axis=axis)
    return _pad_along(part, axis, 0, e.lo_window - used)


def _right_window(head, e: ShardEdges, axis):
    """[zeros | the right neighbour's elements the trailing outputs read], from its first halo_hi elements."""
    used = e.hi_window - e.hi_zeros
    part = lax.slice_in_dim(head, e.hi_first, e.hi_first + used, axis=axis)
    return _pad_along(part, axis, e.hi_zeros, 0)


def _left_send(g, e: ShardEdges, lp, axis):
    """The gradient of the left window's halo part, placed where it lands in the neighbour's last halo_lo."""
    used = min(e.lo, e.lo_window)
    part = lax.slice_in_dim(g, 0, used, axis=axis)
    return _pad_along(part, axis, lp.halo_lo - e.lo, e.lo - used)


def _right_send(g, e: ShardEdges, lp, axis):
    part = lax.slice_in_dim(g, e.hi_zeros, e.hi_window, axis=axis)
    return _pad_along(part, axis, e.hi_first, lp.halo_hi - e.hi_first - part.shape[axis])


def _per_shard(lp, stride, span, program, *operands):
    """program(edges, *operands) on every shard: statically when all shards share one geometry, else as the
    branch of a switch on the shard index."""
    if lp.drift == 0:
        return program(shard_edges(lp, stride, span, 0), *operands)
    branches = [functools.partial(program, shard_edges(lp, stride, span, p)) for p in range(lp.shards)]
    return lax.switch(lax.axis_index(lp.axes), branches, *operands)


def _span(cfg, kernel_size):
    return (kernel_size - 1) * cfg.dilation + 1


def _length_of(shape, axis, length):
    shape = list(shape)
    shape[axis] = length
    return tuple(shape)


def forward(inner, lp, cfg, x, w, bias, *, out_dtype):
    """This shard's output block (before any reduction over channel shards); `bias` may be empty."""
    axis = cfg.x_axes[2]
    tail = _from_left(x, axis, lp.halo_lo, lp) if lp.halo_lo else None
    head = _from_right(x, axis, lp.halo_hi, lp) if lp.halo_hi else None
    valid = dataclasses.replace(cfg, padding=(0, 0))

    def program(e, x, w, bias, tail, head):
        y = inner.bind(x, w, bias, cfg=dataclasses.replace(cfg, padding=e.pad), out_dtype=out_dtype)
        no_bias = jnp.zeros((0,), x.dtype)
        if e.n_lo:
            y = _add_at(y, inner.bind(_left_window(tail, e, lp, axis), w, no_bias, cfg=valid, out_dtype=out_dtype),
                        0, axis)
        if e.n_hi:
            y = _add_at(y, inner.bind(_right_window(head, e, axis), w, no_bias, cfg=valid, out_dtype=out_dtype),
                        e.t_hi, axis)
        return y

    return _per_shard(lp, cfg.stride, _span(cfg, w.shape[cfg.w_axes[2]]), program, x, w, bias, tail, head)


def _return_halo_gradients(dx, send_lo, send_hi, lp, axis):
    """Add what the neighbours computed for this block's first and last elements."""
    if lp.halo_lo:
        dx = _add_at(dx, _to_left(send_lo, lp), lp.x_block - lp.halo_lo, axis)
    if lp.halo_hi:
        dx = _add_at(dx, _to_right(send_hi, lp), 0, axis)
    return dx


def input_gradient(inner, lp, cfg, dy, w):
    """This shard's block of dx (before any reduction over output-channel shards)."""
    axis = cfg.x_axes[2]
    valid = dataclasses.replace(cfg, padding=(0, 0))

    def program(e, dy, w):
        dx = inner.bind(dy, w, cfg=dataclasses.replace(cfg, padding=e.pad), in_length=lp.x_block)
        send_lo = jnp.zeros(_length_of(dx.shape, axis, lp.halo_lo), dx.dtype)
        send_hi = jnp.zeros(_length_of(dx.shape, axis, lp.halo_hi), dx.dtype)
        if e.n_lo:
            g = inner.bind(lax.slice_in_dim(dy, 0, e.n_lo, axis=axis), w, cfg=valid, in_length=e.lo_window)
            send_lo = _left_send(g, e, lp, axis)
        if e.n_hi:
            g = inner.bind(lax.slice_in_dim(dy, e.t_hi, lp.y_block, axis=axis), w, cfg=valid,
                           in_length=e.hi_window)
            send_hi = _right_send(g, e, lp, axis)
        return dx, send_lo, send_hi

    dx, send_lo, send_hi = _per_shard(lp, cfg.stride, _span(cfg, w.shape[cfg.w_axes[2]]), program, dy, w)
    return _return_halo_gradients(dx, send_lo, send_hi, lp, axis)


def _sum_into(total, part):
    acc = jnp.promote_types(total.dtype, jnp.float32)
    return (total.astype(acc) + part.astype(acc)).astype(total.dtype)


def weight_gradient(inner, lp, cfg, x, dy, *, kernel_size):
    """This shard's part of dw (before the sum over shards)."""
    axis = cfg.x_axes[2]
    tail = _from_left(x, axis, lp.halo_lo, lp) if lp.halo_lo else None
    head = _from_right(x, axis, lp.halo_hi, lp) if lp.halo_hi else None
    valid = dataclasses.replace(cfg, padding=(0, 0))

    def program(e, x, dy, tail, head):
        dw = inner.bind(x, dy, cfg=dataclasses.replace(cfg, padding=e.pad), kernel_size=kernel_size)
        if e.n_lo:
            dw = _sum_into(dw, inner.bind(_left_window(tail, e, lp, axis), lax.slice_in_dim(dy, 0, e.n_lo, axis=axis),
                                          cfg=valid, kernel_size=kernel_size))
        if e.n_hi:
            dw = _sum_into(dw, inner.bind(_right_window(head, e, axis),
                                          lax.slice_in_dim(dy, e.t_hi, lp.y_block, axis=axis), cfg=valid,
                                          kernel_size=kernel_size))
        return dw

    return _per_shard(lp, cfg.stride, _span(cfg, kernel_size), program, x, dy, tail, head)


def backward(inner, lp, cfg, x, dy, w, *, want_dx, want_dw, want_db):
    """dx block, dw and db parts from one call on the block (plus the small calls at its ends)."""
    axis = cfg.x_axes[2]
    # x's halos only feed the weight gradient; the input gradient's corrections need dy and w alone
    tail = _from_left(x, axis, lp.halo_lo, lp) if lp.halo_lo and want_dw else None
    head = _from_right(x, axis, lp.halo_hi, lp) if lp.halo_hi and want_dw else None
    valid = dataclasses.replace(cfg, padding=(0, 0))

    def program(e, x, dy, w, tail, head):
        dx, dw, db = inner.bind(x, dy, w, cfg=dataclasses.replace(cfg, padding=e.pad), want_dx=want_dx,
                                want_dw=want_dw, want_db=want_db)
        sends = {"lo": jnp.zeros(_length_of(x.shape, axis, lp.halo_lo), x.dtype),
                 "hi": jnp.zeros(_length_of(x.shape, axis, lp.halo_hi), x.dtype)}
        for side, count in (("lo", e.n_lo), ("hi", e.n_hi)):
            if not count:
                continue
            first, size = (0, e.lo_window) if side == "lo" else (e.t_hi, e.hi_window)
            if want_dw:
                window_x = _left_window(tail, e, lp, axis) if side == "lo" else _right_window(head, e, axis)
            else:  # only dx is wanted: the small call's x is not read
                window_x = jnp.zeros(_length_of(x.shape, axis, size), x.dtype)
            g, dw_part, _ = inner.bind(window_x, lax.slice_in_dim(dy, first, first + count, axis=axis), w,
                                       cfg=valid, want_dx=want_dx, want_dw=want_dw, want_db=False)
            if want_dx:
                sends[side] = _left_send(g, e, lp, axis) if side == "lo" else _right_send(g, e, lp, axis)
            if want_dw:
                dw = _sum_into(dw, dw_part)
        return dx, dw, db, sends["lo"], sends["hi"]

    span = _span(cfg, w.shape[cfg.w_axes[2]])
    dx, dw, db, send_lo, send_hi = _per_shard(lp, cfg.stride, span, program, x, dy, w, tail, head)
    if want_dx:
        dx = _return_halo_gradients(dx, send_lo, send_hi, lp, axis)
    return dx, dw, db
