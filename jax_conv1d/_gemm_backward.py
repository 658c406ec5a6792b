"""Strided dense input and weight gradients as products XLA runs well, for the CUDA lowering.

Small strided dense layers (the 48-shape sweep's rows 015, 018, 030, 042: a few MB of x, stride 2-4) lose to
XLA in our implicit-GEMM backward kernels: the strided dgrad re-copies a weight that does not fit in shared
memory for every unit, or writes three zeros for every product (K = 1 at stride 4), and the wgrad kernel
gathers x at stride s for a handful of output channels. The same gradients written as products:

- Weight gradient, dw = dy x columns: the columns are those of the forward (_gemm_forward.columns: the K
  strided slices of x, K * T * C elements per batch row); the contraction over (n, t) is one cuBLAS GEMM
  (channels-last, where n and t are adjacent) or one batched GEMM per batch row summed over n
  (channels-first, so that XLA transposes neither operand). Products accumulate in float32; the sum over n
  adds N float32 partials in a fixed order.
- Input gradient at K = 1: dx is w^T dy at the positions t*s - pad_lo and zero elsewhere, so one GEMM and one
  fusion that writes dx (the product interleaved with zeros).
- Input gradient at K > 1: the stride-phase decomposition as one stride-1 forward convolution. With
  l = j*s + r (r in [0, s), l an index of dx), the taps that reach l are those with
  k*d = r + pad_lo (mod s), and they read dy[j + e] with e = (r + pad_lo - k*d) / s. So
  dx[j*s + r, c] = sum_e sum_o W2[e, o, (r, c)] dy[j + e, o]: a stride-1 correlation of dy (O channels in)
  with a weight of s*C output channels, each phase r one block of C (zero where no tap lands). Channels-last,
  the result (N, J, s*C) is dx (N, J*s, C) by a reshape; channels-first it is one transpose. The correlation
  runs through our forward kernels (the FFI target), so each dx element is one float32 sum over (tap, o),
  rounded once, as in our dgrad kernel. Our strided dgrad kernel keeps the whole weight slice in shared
  memory or streams it chunk by chunk with every unit of dy; the forward kernel does neither at stride 1.

A third route, PHASE, is forced only: both gradients from our stride-1 kernels on the problem reshaped to s*C
channels per step (PhasePlan). It measured slower than the products or our strided kernels on sweep/018 and
042 (our stride-1 bf16 wgrad runs ~85 TFLOPS, below the columns GEMM), and faster only for 030's dx, inside that
row's run-to-run spread (docs/notes/sdw6_session6.md); it stays for A/B and for when the stride-1 kernels move.

Which shapes take which product is decided from same-process A/B runs on an H100 (see _routes_by_shape and
docs/notes/bwdsweep6_session6.md). Default precision only: 3xTF32 (precision=highest) stays on our kernels.
JAX_CONV1D_BWD_GEMM=0 (read at lowering time) keeps every backward on our kernels.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _gemm_forward
from ._lax_impl import bias_grad
from ._shapes import PRECISION_DEFAULT, ConvConfig, output_length

_GEMM_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


# Route kinds per part: "" our strided kernels, GEMM the products above, PHASE our stride-1 kernels on the
# phase-reshaped problem (see phase_plan).
GEMM, PHASE = "gemm", "phase"
_PART_NAMES = {"ours": "", "gemm": GEMM, "phase": PHASE}
_ALIASES = {"dx": "gemm/ours", "dw": "ours/gemm", "both": "gemm/gemm", "phase": "phase/phase"}


def mode() -> str:
    """JAX_CONV1D_BWD_GEMM: 1 (default) the measured routes, 0 none. A forced mode names the route of dx and
    of dw for every strided dense default-precision shape, "<dx>/<dw>" with each ours, gemm or phase (A/B
    timing and tests); dx, dw, both and phase are short for gemm/ours, ours/gemm, gemm/gemm, phase/phase."""
    return os.environ.get("JAX_CONV1D_BWD_GEMM", "1")


def _forced() -> tuple[str, str] | None:
    parts = _ALIASES.get(mode(), mode()).split("/")
    if len(parts) == 2 and all(p in _PART_NAMES for p in parts):
        return _PART_NAMES[parts[0]], _PART_NAMES[parts[1]]
    return None


def enabled() -> bool:
    return mode() != "0"


def _dims(cfg: ConvConfig, x_shape, w_shape):
    n, c, length = (x_shape[a] for a in cfg.x_axes)
    o, _, k = (w_shape[a] for a in cfg.w_axes)
    return n, c, length, o, k


def _dot_f32(a, b, contract, batch=((), ())):
    return lax.dot_general(a, b, (contract, batch), precision=lax.Precision.DEFAULT,
                           preferred_element_type=jnp.float32)


# ---- weight gradient ---------------------------------------------------------------------------------------


def wgrad(x, dy, *, cfg: ConvConfig, kernel_size: int):
    """x, dy in cfg.layout (groups 1) -> dw, (O, C, K) for NCW or (K, C, O) for NWC, in x's dtype."""
    t = dy.shape[cfg.x_axes[2]]
    cols = _gemm_forward.columns(x, cfg, kernel_size, t)
    if cfg.layout == "NWC":
        # cols (N, T, K*C), index k*C + c; dy (N, T, O): (n, t) adjacent in both, one GEMM.
        c = x.shape[2]
        dw = _dot_f32(cols, dy, ((0, 1), (0, 1)))  # (K*C, O)
        return dw.reshape(kernel_size, c, -1).astype(x.dtype)
    # cols (N, C*K, T), index c*K + k; dy (N, O, T): one GEMM per batch row over t, partials summed over n.
    c = x.shape[1]
    per_row = _dot_f32(dy, cols, ((2,), (2,)), ((0,), (0,)))  # (N, O, C*K)
    return jnp.sum(per_row, axis=0).reshape(-1, c, kernel_size).astype(x.dtype)


# ---- input gradient ----------------------------------------------------------------------------------------


def _dgrad_pointwise(dy, w, *, cfg: ConvConfig, in_length: int):
    """K = 1: dx[l] = w^T dy[t] where l = t*s - pad_lo, zero elsewhere."""
    s, (lo, _) = cfg.stride, cfg.padding
    t = dy.shape[cfg.x_axes[2]]
    if cfg.layout == "NWC":
        z = lax.dot_general(dy, w[0], (((2,), (1,)), ((), ())), precision=lax.Precision.DEFAULT,
                            preferred_element_type=w.dtype)  # (N, T, C)
        axis = 1
    else:
        z = lax.dot_general(dy, w[:, :, 0], (((1,), (0,)), ((), ())), precision=lax.Precision.DEFAULT,
                            preferred_element_type=w.dtype)  # (N, T, C)
        z = jnp.transpose(z, (0, 2, 1))  # fused into the pad below: one pass writes dx
        axis = 2
    # Interior padding puts z[t] at t*s; the edges crop (negative) or extend to in_length.
    high = in_length - (-lo + (t - 1) * s + 1)
    config = [(0, 0, 0)] * 3
    config[axis] = (-lo, high, s - 1)
    return lax.pad(z, jnp.zeros((), z.dtype), config)


def phase_taps(cfg: ConvConfig, kernel_size: int):
    """For the phase decomposition: (e_min, e_max, table) with table[e - e_min][r] = the tap k that reaches
    l = j*s + r from dy[j + e], or -1."""
    s, d, lo = cfg.stride, cfg.dilation, cfg.padding[0]
    pairs = {}
    for r in range(s):
        for k in range(kernel_size):
            num = r + lo - k * d
            if num % s == 0:
                pairs[(num // s, r)] = k
    es = [e for e, _ in pairs]
    e_min, e_max = min(es), max(es)
    table = np.full((e_max - e_min + 1, s), -1, np.int64)
    for (e, r), k in pairs.items():
        table[e - e_min, r] = k
    return e_min, e_max, table


def phase_weight(w, cfg: ConvConfig, kernel_size: int):
    """The stride-1 correlation's weight: NWC (K', O, s*C) with channel r*C + c; NCW (C*s, O, K') with channel
    c*s + r. Zero blocks where no tap reaches a phase."""
    e_min, e_max, table = phase_taps(cfg, kernel_size)
    s = cfg.stride
    # Taps as (K, O, C), with one zero tap appended for the -1 entries of the table.
    w_koc = jnp.transpose(w, (0, 2, 1)) if cfg.layout == "NWC" else jnp.transpose(w, (2, 0, 1))
    w_koc = jnp.concatenate([w_koc, jnp.zeros((1,) + w_koc.shape[1:], w.dtype)], axis=0)
    index = np.where(table < 0, kernel_size, table)  # (K', s)
    blocks = w_koc[index]  # (K', s, O, C)
    kp, _, o, c = blocks.shape
    if cfg.layout == "NWC":
        return jnp.transpose(blocks, (0, 2, 1, 3)).reshape(kp, o, s * c)
    return jnp.transpose(blocks, (3, 1, 2, 0)).reshape(c * s, o, kp)


def _dgrad_phases(dy, w, *, cfg: ConvConfig, in_length: int, forward=None):
    """K > 1: dx as one stride-1 forward correlation of dy (see the module docstring). `forward(x, w, cfg)`
    runs it; by default our forward primitive."""
    if forward is None:
        forward = _our_forward
    k = w.shape[cfg.w_axes[2]]
    e_min, e_max, _ = phase_taps(cfg, k)
    s = cfg.stride
    t = dy.shape[cfg.x_axes[2]]
    j = -(-in_length // s)
    pads = (-e_min, j - 1 + e_max - (t - 1))
    inner = ConvConfig(layout=cfg.layout, stride=1, dilation=1, padding=pads, groups=1, precision=cfg.precision)
    y2 = forward(dy, phase_weight(w, cfg, k), inner)
    n = dy.shape[0]
    if cfg.layout == "NWC":
        dx = y2.reshape(n, j * s, -1)
        return dx if j * s == in_length else dx[:, :in_length]
    c = y2.shape[1] // s
    dx = jnp.transpose(y2.reshape(n, c, s, j), (0, 1, 3, 2)).reshape(n, c, j * s)
    return dx if j * s == in_length else dx[:, :, :in_length]


def _our_forward(x, w, cfg: ConvConfig):
    """Our forward kernels, called as the FFI target itself: the forward primitive's rule could send the
    correlation to _gemm_forward's im2col GEMM, which measured slower here (sweep/018's dx: 0.206 against
    0.117 ms on an H100)."""
    from ._primitives import _ffi_attrs, y_shape  # the primitives import this module

    out = jax.ShapeDtypeStruct(y_shape(cfg, x.shape, w.shape), x.dtype)
    return jax.ffi.ffi_call("jax_conv1d_fwd", out)(x, w, jnp.zeros((0,), x.dtype), **_ffi_attrs(cfg))


def dgrad(dy, w, *, cfg: ConvConfig, in_length: int):
    """dy, w in cfg.layout (groups 1) -> dx in w's dtype."""
    if w.shape[cfg.w_axes[2]] == 1:
        return _dgrad_pointwise(dy, w, cfg=cfg, in_length=in_length)
    return _dgrad_phases(dy, w, cfg=cfg, in_length=in_length)


# ---- the phase-reshaped stride-1 problem -------------------------------------------------------------------


class PhasePlan(NamedTuple):
    """A stride-s convolution as a stride-1 one over s*C channels. Tap k reads x[t*s + p_k], p_k = k*d - pad_lo;
    write p_k = q_k*s + r_k (r_k in [0, s)). With x2[j] = x[j*s : j*s + s] (the s phases of one step as one
    row of s*C channels), y[t] = sum_q x2[t + q] W2[q], where W2[q] holds tap k at phase r_k for the k with
    q_k = q and zeros elsewhere: a stride-1 convolution with `taps` = q_max - q_min + 1 taps and padding
    (-q_min, T - J + q_max), so its output length is T. Channels-last x2 is x reshaped (free when
    L % s == 0); channels-first it is one transpose. The stride-1 problem's gradients are the strided
    problem's: dx is dx2 reshaped back, dw is dw2's (taps*s) merged axis at index[k]."""

    taps: int
    index: tuple  # index[k]: tap k's place on the merged axis, (q_k - q_min)*s + r_k
    phase_rows: int  # J = ceil(L / s): rows of x2
    inner: ConvConfig  # the stride-1 problem


def phase_plan(cfg: ConvConfig, kernel_size: int, length: int, t: int) -> PhasePlan:
    s, d, lo = cfg.stride, cfg.dilation, cfg.padding[0]
    offsets = [k * d - lo for k in range(kernel_size)]
    q_min, q_max = offsets[0] // s, offsets[-1] // s
    j = -(-length // s)
    inner = ConvConfig(layout=cfg.layout, stride=1, dilation=1, padding=(-q_min, t - j + q_max), groups=1,
                       precision=cfg.precision)
    return PhasePlan(q_max - q_min + 1, tuple(p - q_min * s for p in offsets), j, inner)


def phase_input(x, cfg: ConvConfig, plan: PhasePlan):
    """x -> x2: NWC (N, J, s*C) with channel r*C + c; NCW (N, C*s, J) with channel c*s + r. Zeros past L."""
    s, j = cfg.stride, plan.phase_rows
    axis = cfg.x_axes[2]
    n, c, length = (x.shape[a] for a in cfg.x_axes)
    if j * s != length:
        pads = [(0, 0)] * 3
        pads[axis] = (0, j * s - length)
        x = jnp.pad(x, pads)
    if cfg.layout == "NWC":
        return x.reshape(n, j, s * c)
    return jnp.transpose(x.reshape(n, c, j, s), (0, 1, 3, 2)).reshape(n, c * s, j)


def phase_weight_stride1(w, cfg: ConvConfig, plan: PhasePlan):
    """w -> W2: NWC (taps, s*C, O); NCW (O, C*s, taps)."""
    s, k = cfg.stride, w.shape[cfg.w_axes[2]]
    order = np.full(plan.taps * s, k, np.int64)
    order[list(plan.index)] = np.arange(k)
    if cfg.layout == "NWC":
        _, c, o = w.shape
        w = jnp.concatenate([w, jnp.zeros((1, c, o), w.dtype)], axis=0)[order]  # (taps*s, C, O)
        return w.reshape(plan.taps, s * c, o)
    o, c, _ = w.shape
    w = jnp.concatenate([w, jnp.zeros((o, c, 1), w.dtype)], axis=2)[:, :, order]  # (O, C, taps*s)
    return jnp.transpose(w.reshape(o, c, plan.taps, s), (0, 1, 3, 2)).reshape(o, c * s, plan.taps)


def _phase_taps_of(merged, plan: PhasePlan, axis: int):
    """The real taps from the merged axis (a slice at dilation 1)."""
    index = plan.index
    if list(index) == list(range(index[0], index[0] + len(index))):
        return lax.slice_in_dim(merged, index[0], index[0] + len(index), axis=axis)
    return jnp.take(merged, np.asarray(index), axis=axis)


def phase_output_dx(dx2, cfg: ConvConfig, plan: PhasePlan, length: int):
    s, j = cfg.stride, plan.phase_rows
    n = dx2.shape[0]
    if cfg.layout == "NWC":
        dx = dx2.reshape(n, j * s, -1)
        return dx if j * s == length else dx[:, :length]
    c = dx2.shape[1] // s
    dx = jnp.transpose(dx2.reshape(n, c, s, j), (0, 1, 3, 2)).reshape(n, c, j * s)
    return dx if j * s == length else dx[:, :, :length]


def phase_output_dw(dw2, cfg: ConvConfig, plan: PhasePlan):
    s = cfg.stride
    if cfg.layout == "NWC":
        taps, sc, o = dw2.shape
        return _phase_taps_of(dw2.reshape(taps * s, sc // s, o), plan, 0)
    o, cs, taps = dw2.shape
    merged = jnp.transpose(dw2.reshape(o, cs // s, s, taps), (0, 1, 3, 2)).reshape(o, cs // s, taps * s)
    return _phase_taps_of(merged, plan, 2)


def phase_backward(x, dy, w, *, cfg: ConvConfig, want_dx, want_dw, want_db):
    """dx, dw (and db beside dw) of the strided problem from our stride-1 kernels on the phase-reshaped one:
    one call for all the parts wanted (dx alone: the dgrad primitive, which does not need x2)."""
    from ._primitives import conv1d_bwd_local_p, conv1d_dgrad_local_p  # the primitives import this module

    length = x.shape[cfg.x_axes[2]]
    plan = phase_plan(cfg, w.shape[cfg.w_axes[2]], length, dy.shape[cfg.x_axes[2]])
    w2 = phase_weight_stride1(w, cfg, plan)
    empty = jnp.zeros((0,), x.dtype)
    if want_dx and not want_dw and not want_db:
        dx2 = conv1d_dgrad_local_p.bind(dy, w2, cfg=plan.inner, in_length=plan.phase_rows)
        return phase_output_dx(dx2, cfg, plan, length), empty, empty
    x2 = phase_input(x, cfg, plan)
    dx2, dw2, db = conv1d_bwd_local_p.bind(x2, dy, w2, cfg=plan.inner, want_dx=want_dx, want_dw=want_dw,
                                           want_db=want_db)
    dx = phase_output_dx(dx2, cfg, plan, length) if want_dx else empty
    dw = phase_output_dw(dw2, cfg, plan) if want_dw else empty
    return dx, dw, db


# ---- which shapes ------------------------------------------------------------------------------------------


def routes(cfg: ConvConfig, x_shape, w_shape, dtype) -> tuple[str, str]:
    """(route of dx, route of dw) for this shape, each "" (our strided kernels), GEMM or PHASE; see
    _routes_by_shape."""
    dtype = jnp.dtype(dtype)
    if not (cfg.groups == 1 and cfg.stride > 1 and cfg.precision == PRECISION_DEFAULT and dtype in _GEMM_DTYPES
            and enabled()):
        return "", ""
    n, c, length, o, k = _dims(cfg, x_shape, w_shape)
    t = output_length(length, k, cfg.stride, cfg.dilation, *cfg.padding)
    if t < 1:
        return "", ""
    forced = _forced()
    if forced is not None:
        return forced
    return _routes_by_shape(cfg, n, c, length, o, k, t, dtype)


# From same-process A/B runs on an H100 (jax 0.11.2, two device calls; docs/notes/bwdsweep6_session6.md), one
# part alone, ms, ours -> product (call 1 / call 2 where both measured it):
# - dw: every strided dense row measured won: 015 0.351 / 0.181 -> 0.097 / 0.067, 018 0.201 / 0.195 -> 0.105 /
#   0.116, 030 0.165 / 0.156 -> 0.079 / 0.058, 042 0.111 / 0.112 -> 0.069 / 0.069, 014 0.136 -> 0.066, 007 0.658
#   -> 0.123, 039 (float32) 0.239 -> 0.159; columns of 2-78 MB. Whole backward with the default routes against
#   ours (call 2): float32 005 0.608 -> 0.583, 009 0.146 -> 0.133, 035 0.785 -> 0.729, 039 0.433 -> 0.336,
#   040 0.329 -> 0.353 (+7 %, inside the run-to-run noise of such rows). The bound keeps shapes whose columns
#   would be a large multiple of x (the headline: 8.6 GB) on our kernel.
# - dx at K = 1: 015 1.136 / 0.908 -> 0.065 / 0.046, 014 0.113 -> 0.071.
# - dx at K > 1 through the phase correlation: 018 0.566 / 0.323 -> 0.117 / 0.119 (our dgrad streams its 256 KB
#   weight with every unit). Where our dgrad keeps the weight resident it tied or lost: 030 0.114 / 0.065 ->
#   0.079-0.115 / 0.066, 042 0.106 / 0.112 -> 0.121-0.127 / 0.123; 039 0.375 -> 0.30-0.32 (3.9 times the taps,
#   one call). 007's dilation 8 makes 22 merged taps, 3 of them real per phase, past what the forward kernel
#   plans (113 ms). Through _gemm_forward's im2col GEMM instead of our forward kernel, 018's took 0.206.
# - PHASE (sdw6, one call; docs/notes/sdw6_session6.md), part alone, default route -> PHASE: 018 dx 0.131 ->
#   0.125, dw 0.115 -> 0.252; 042 dx 0.152 -> 0.142, dw 0.080 -> 0.167; 030 dx 0.151 -> 0.105 (dx+dw 0.162 ->
#   0.129 with dw on the GEMM, a single measurement inside 030's 0.065-0.151 spread of dx), dw 0.129 -> 0.287.
#   No default shape takes it.
_DW_MAX_COLUMN_BYTES = 256 << 20
_DX_STREAMED_WEIGHT_BYTES = 160 << 10  # K * min(C, 128) * O: our dgrad's weight slice per block, roughly
_DX_MAX_TAP_GROWTH = 2  # merged taps K' * s against the K real ones
_DX_MAX_FWD_WEIGHT_BYTES = 192 << 10  # a 64-row tile of the merged weight, resident in the forward kernel


def _routes_by_shape(cfg, n, c, length, o, k, t, dtype):
    size = dtype.itemsize
    route_dw = GEMM if n * t * k * c * size <= _DW_MAX_COLUMN_BYTES else ""
    if k == 1:
        return GEMM, route_dw
    e_min, e_max, _ = phase_taps(cfg, k)
    merged = e_max - e_min + 1
    route_dx = (k * min(c, 128) * o * size > _DX_STREAMED_WEIGHT_BYTES
                and merged * cfg.stride <= _DX_MAX_TAP_GROWTH * k
                and merged * o * 64 * size <= _DX_MAX_FWD_WEIGHT_BYTES)
    return GEMM if route_dx else "", route_dw


def backward(x, dy, w, *, cfg, want_dx, want_dw, want_db, ours=None):
    """The combined backward with each part on its route: products (GEMM), one call to our stride-1 kernels
    on the phase-reshaped problem (PHASE), and the rest through `ours(x, dy, w, want_dx, want_dw, want_db)`
    (our strided kernels). db rides with whichever of our calls computes dw, else bias_grad."""
    route_dx, route_dw = routes(cfg, x.shape, w.shape, x.dtype)
    want = {"": [False, False], GEMM: [False, False], PHASE: [False, False]}
    want[route_dx][0] = want_dx
    want[route_dw][1] = want_dw
    empty = jnp.zeros((0,), x.dtype)
    dx = dw = db = empty
    db_with = "" if want[""][1] else PHASE if want[PHASE][1] else None
    if any(want[""]):
        dx, dw, db = ours(x, dy, w, *want[""], want_db and db_with == "")
    if any(want[PHASE]):
        pdx, pdw, pdb = phase_backward(x, dy, w, cfg=cfg, want_dx=want[PHASE][0], want_dw=want[PHASE][1],
                                       want_db=want_db and db_with == PHASE)
        dx = pdx if want[PHASE][0] else dx
        dw = pdw if want[PHASE][1] else dw
        db = pdb if db_with == PHASE else db
    if want[GEMM][0]:
        dx = dgrad(dy, w, cfg=cfg, in_length=x.shape[cfg.x_axes[2]])
    if want[GEMM][1]:
        dw = wgrad(x, dy, cfg=cfg, kernel_size=w.shape[cfg.w_axes[2]])
    if want_db and db_with is None:
        db = bias_grad(dy, cfg)
    return dx, dw, db


def routed_dgrad(dy, w, *, cfg: ConvConfig, in_length: int):
    """The single-pass input gradient on its route (the lowering calls this only for a routed shape)."""
    from ._primitives import x_shape_from

    x_shape = x_shape_from(cfg, dy.shape, w.shape, in_length)
    if routes(cfg, x_shape, w.shape, w.dtype)[0] == PHASE:
        x = jax.ShapeDtypeStruct(x_shape, w.dtype)
        return phase_backward(x, dy, w, cfg=cfg, want_dx=True, want_dw=False, want_db=False)[0]
    return dgrad(dy, w, cfg=cfg, in_length=in_length)


def routed_wgrad(x, dy, *, cfg: ConvConfig, kernel_size: int):
    """The single-pass weight gradient on its route."""
    from ._primitives import w_shape_from

    w_shape = w_shape_from(cfg, x.shape, dy.shape, kernel_size)
    if routes(cfg, x.shape, w_shape, x.dtype)[1] == PHASE:
        w = jnp.zeros(w_shape, x.dtype)  # shapes only: the stride-1 weight gradient does not read it
        return phase_backward(x, dy, w, cfg=cfg, want_dx=False, want_dw=True, want_db=False)[1]
    return wgrad(x, dy, cfg=cfg, kernel_size=kernel_size)
