"""Backward kernels: correctness sweep, determinism, and timings against XLA.

    python benchmarks/bwd_check.py [--sweep] [--bench] [--xla] [--reps N] [--quick]

--sweep   random shapes (strides, dilations, paddings incl. negative, groups, depthwise, both layouts;
          float32 default and highest, bfloat16, float16) against a float64 NumPy reference; every case runs
          twice and must be bitwise identical; the SWEEP_BIAS cases also take a bias and check its gradient.
--bench   the issue's backward cases (headline, depthwise_tcn, mamba_dw_causal, wavenet_dense): dx+dw, dx only,
          dw only; --xla also times lax on the same inputs in the same process.

Inputs are fresh random normals for every case; before each case a large NaN buffer is allocated and freed so
that an output element a kernel forgets to write shows up as NaN.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

# The checks are of our kernels: small strided dense 16-bit shapes would otherwise lower to XLA's own
# convolution (jax_conv1d/_xla_conv.py). JAX_CONV1D_XLA_CONV=1 checks the default dispatch instead.
os.environ.setdefault("JAX_CONV1D_XLA_CONV", "0")

import numpy as np


# ---- float64 reference ---------------------------------------------------------------------------------


def ref_grads(x, w, dy, *, stride, dilation, pad_lo, groups, layout):
    """dx and dw of lax's conv (cross-correlation) in float64; arrays in the op's layout."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    dy = np.asarray(dy, np.float64)
    if layout == "NWC":  # to NCW / OIW
        x = x.transpose(0, 2, 1)
        w = w.transpose(2, 1, 0)
        dy = dy.transpose(0, 2, 1)
    n, c, length = x.shape
    o, cg, k_size = w.shape
    t_len = dy.shape[2]
    og = o // groups
    xg = x.reshape(n, groups, cg, length)
    wg = w.reshape(groups, og, cg, k_size)
    dyg = dy.reshape(n, groups, og, t_len)
    dx = np.zeros_like(xg)
    dw = np.zeros_like(wg)
    ts = np.arange(t_len)
    for k in range(k_size):
        ls = ts * stride + k * dilation - pad_lo
        ok = (ls >= 0) & (ls < length)
        tk, lk = ts[ok], ls[ok]
        if tk.size == 0:
            continue
        dw[..., k] = np.einsum("ngot,ngct->goc", dyg[..., tk], xg[..., lk])
        dx[..., lk] += np.einsum("goc,ngot->ngct", wg[..., k], dyg[..., tk])
    dx = dx.reshape(n, c, length)
    dw = dw.reshape(o, cg, k_size)
    if layout == "NWC":
        dx = dx.transpose(0, 2, 1)
        dw = dw.transpose(2, 1, 0)
    return dx, dw


def out_length(length, k, stride, dilation, lo, hi):
    span = (k - 1) * dilation + 1
    padded = length + lo + hi
    return 0 if padded < span else (padded - span) // stride + 1


# ---- correctness sweep -----------------------------------------------------------------------------------

# (N, C, O, L, K, stride, dilation, (lo, hi), groups)
SWEEP = [
    (2, 16, 32, 97, 3, 1, 1, (0, 0), 1),
    (2, 64, 128, 300, 3, 3, 4, (0, 0), 1),        # headline geometry, small
    (3, 64, 128, 301, 3, 3, 4, (2, 5), 1),
    (2, 24, 40, 257, 5, 2, 3, (4, 1), 1),
    (1, 8, 16, 130, 7, 4, 2, (3, 3), 1),
    (2, 32, 48, 211, 2, 1, 64, (64, 0), 1),       # wavenet-like, causal
    (2, 128, 256, 200, 2, 1, 16, (16, 0), 1),
    (2, 12, 20, 150, 4, 5, 7, (-3, 2), 1),        # negative pad
    (2, 16, 16, 64, 3, 1, 1, (-5, -4), 1),
    (1, 40, 24, 333, 1, 1, 1, (0, 0), 1),         # pointwise
    (2, 6, 10, 90, 3, 2, 1, (1, 1), 1),           # tiny channels
    (2, 32, 64, 180, 3, 8, 1, (0, 0), 1),         # stride > K: empty phases
    (2, 16, 24, 120, 6, 4, 2, (5, 5), 1),         # stride 4, dilation 2: taps share phases
    (2, 64, 64, 160, 3, 1, 2, (2, 2), 4),         # grouped
    (2, 96, 48, 140, 5, 2, 3, (6, 6), 3),
    (2, 8, 8, 400, 9, 1, 5, (20, 20), 8),         # depthwise
    (2, 64, 64, 300, 7, 1, 8, (24, 24), 64),      # depthwise_tcn-like
    (3, 40, 40, 131, 4, 1, 1, (3, 0), 40),        # depthwise causal (mamba-like)
    (2, 16, 16, 77, 5, 3, 2, (4, -2), 16),        # depthwise strided, negative pad
    (2, 10, 10, 400, 3, 2, 70, (0, 0), 10),       # depthwise, dilation beyond the tile
    (2, 20, 20, 333, 2, 1, 200, (200, 0), 20),
    (2, 16, 32, 600, 3, 1, 150, (300, 0), 1),     # dense, distant taps (segments)
    (1, 33, 65, 123, 3, 2, 2, (1, 1), 1),         # odd channel counts (unaligned copies)
    (1, 7, 9, 31, 3, 1, 1, (1, 1), 1),
    (1, 16, 1030, 60, 3, 1, 1, (1, 1), 1),        # long dgrad reduction (3xTF32 accumulation error)
    (4, 8, 16, 200000, 3, 3, 4, (0, 0), 1),       # long wgrad reduction (266K terms per weight)
    # depthwise with channel multiplier 2 (O = 2C, groups = C): the fused depthwise backward's virtual channels
    (2, 8, 16, 400, 9, 1, 5, (20, 20), 8),        # 26: K 9 (16-tap kernel, no sliding window)
    (2, 64, 128, 300, 7, 1, 8, (24, 24), 64),     # depthwise_tcn-like
    (3, 40, 80, 131, 4, 1, 1, (3, 0), 40),        # causal (mamba-like)
    (2, 16, 32, 77, 5, 3, 2, (4, -2), 16),        # strided, negative pad
    (2, 10, 20, 400, 3, 2, 70, (0, 0), 10),       # dilation beyond the tile; 20 channels: narrow NWC vectors
    (1, 7, 14, 123, 3, 2, 2, (1, 1), 7),          # odd channel count
    (4, 16, 32, 20000, 8, 3, 6, (0, 0), 16),      # long reduction (sweep/034-like)
    (2, 96, 192, 500, 1, 2, 8, (0, 0), 96),       # K 1, several channel blocks (sweep/023-like)
    (2, 8, 24, 100, 3, 1, 1, (1, 1), 8),          # 34: multiplier 3, which the depthwise kernels decline
]
# Cases also run at HIGHEST, bfloat16 and float16 (indices into SWEEP).
SWEEP_PRECISION = [0, 1, 2, 5, 7, 13, 16, 17, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33]
# Cases that also take a bias, whose gradient is checked too.
SWEEP_BIAS = [1, 2, 5, 6, 13, 16, 17, 19, 22, 24, 27, 28, 30, 31, 32, 33, 34]


def _poison():
    import jax.numpy as jnp

    jnp.full((64 << 20,), jnp.nan, jnp.float32).block_until_ready()


def _grads_fn(case_kwargs, with_bias=False):
    """jit of (x, w, b, g) -> (dx, dw, db or None)."""
    import jax
    from jax_conv1d import dilated_conv1d

    if with_bias:
        def fwd_b(x, w, b):
            return dilated_conv1d(x, w, b, **case_kwargs)

        return jax.jit(lambda x, w, b, g: jax.vjp(fwd_b, x, w, b)[1](g))

    def fwd(x, w):
        return dilated_conv1d(x, w, **case_kwargs)

    return jax.jit(lambda x, w, b, g: (*jax.vjp(fwd, x, w)[1](g), None))


def run_sweep(quick: bool, only=frozenset(), checks=frozenset()) -> bool:
    """`checks`: when not empty, only the checks named "<layout> <dtype>" (e.g. "NCW bf16", "NCW f32/hi"), so
    that a sanitizer run can take one check per process."""
    import jax
    import jax.numpy as jnp

    modes = [("float32", "default")]
    rows = []
    ok_all = True
    key = jax.random.key(0)
    for idx, case in enumerate(SWEEP):
        if only and idx not in only:
            continue
        case_modes = list(modes)
        if idx in SWEEP_PRECISION:
            case_modes += [("float32", "highest"), ("bfloat16", "default"), ("float16", "default")]
        for layout in ("NCW", "NWC"):
            for dtype_name, precision in case_modes:
                if quick and (layout == "NWC" and precision == "highest"):
                    continue
                n, c, o, length, k, s, d, (lo, hi), groups = case
                dtype = jnp.dtype(dtype_name)
                key, kx, kw, kg = jax.random.split(key, 4)  # before the filter: the data of the full sweep
                short = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}[dtype_name]
                name = f"{layout} {short}{'/hi' if precision == 'highest' else ''}"
                if checks and name not in checks:
                    continue
                x_shape = (n, c, length) if layout == "NCW" else (n, length, c)
                w_shape = (o, c // groups, k) if layout == "NCW" else (k, c // groups, o)
                t_len = out_length(length, k, s, d, lo, hi)
                y_shape = (n, o, t_len) if layout == "NCW" else (n, t_len, o)
                x = jax.random.normal(kx, x_shape, jnp.float32).astype(dtype)
                w = jax.random.normal(kw, w_shape, jnp.float32).astype(dtype)
                g = jax.random.normal(kg, y_shape, jnp.float32).astype(dtype)
                with_bias = idx in SWEEP_BIAS
                b = jnp.linspace(-1.0, 1.0, o, dtype=jnp.float32).astype(dtype) if with_bias else None
                kwargs = dict(stride=s, dilation=d, padding=(lo, hi), groups=groups, layout=layout,
                              precision=precision)
                label = f"{idx:2d} {name}"
                print(f"  running {label} {case}", flush=True)
                try:
                    fn = _grads_fn(kwargs, with_bias)
                    _poison()
                    dx1, dw1, db1 = fn(x, w, b, g)
                    _poison()
                    dx2, dw2, db2 = fn(x, w, b, g)
                    dx1, dw1, dx2, dw2 = (np.asarray(a.astype(jnp.float32)) for a in (dx1, dw1, dx2, dw2))
                    if with_bias:
                        db1, db2 = (np.asarray(a.astype(jnp.float32)) for a in (db1, db2))
                except Exception as err:  # noqa: BLE001 - report and go on
                    rows.append((label, case, float("nan"), float("nan"), False, f"ERROR {err}"))
                    print(f"    ERROR {err}", flush=True)
                    ok_all = False
                    continue
                rdx, rdw = ref_grads(np.asarray(x.astype(jnp.float32)), np.asarray(w.astype(jnp.float32)),
                                     np.asarray(g.astype(jnp.float32)), stride=s, dilation=d, pad_lo=lo,
                                     groups=groups, layout=layout)
                ex = rel_err(dx1, rdx)
                ew = rel_err(dw1, rdw)
                same = np.array_equal(dx1, dx2, equal_nan=True) and np.array_equal(dw1, dw2, equal_nan=True)
                if with_bias:  # db is reported in the dw column: the larger of the two errors
                    g64 = np.asarray(g.astype(jnp.float32), np.float64)
                    rdb = g64.sum(axis=(0, 2) if layout == "NCW" else (0, 1))
                    ew = max(ew, rel_err(db1, rdb))
                    same = same and np.array_equal(db1, db2, equal_nan=True)
                    label += "+b"
                tol = {"float32": 1e-3 if precision == "default" else 2e-6, "bfloat16": 1e-2,
                       "float16": 2e-3}[dtype_name]
                good = ex <= tol and ew <= tol and same
                ok_all &= good
                rows.append((label, case, ex, ew, same, "ok" if good else "FAIL"))
                # also as it happens: a run stopped by a time limit keeps the verdicts it reached
                verdict = "ok" if good else "FAIL"
                print(f"    {verdict}  dx {ex:.1e}  dw {ew:.1e}  det {'yes' if same else 'NO'}", flush=True)
    print(f"\n{'case':<18}{'dx err':>10}{'dw err':>10}  {'det':<5} result  shape (N,C,O,L,K,s,d,pad,g)")
    for label, case, ex, ew, same, res in rows:
        print(f"{label:<18}{ex:>10.1e}{ew:>10.1e}  {'yes' if same else 'NO':<5} {res:<6} {case}")
    print(f"sweep: {sum(r[5] == 'ok' for r in rows)}/{len(rows)} ok")
    return ok_all


def rel_err(a, ref):
    a = np.asarray(a, np.float64)
    if not np.all(np.isfinite(a)):
        return float("inf")
    den = np.linalg.norm(ref.ravel())
    return float(np.linalg.norm((a - ref).ravel()) / (den if den > 0 else 1.0))


# ---- timings -------------------------------------------------------------------------------------------

BENCH = {
    # name: (N, C, O, L, K, stride, dilation, padding, groups, layout, dtype, bias)
    "headline NCW f32": (64, 64, 128, 524280, 3, 3, 4, "VALID", 1, "NCW", "float32", False),
    "headline NWC f32": (64, 64, 128, 524280, 3, 3, 4, "VALID", 1, "NWC", "float32", False),
    "headline NWC bf16": (64, 64, 128, 524280, 3, 3, 4, "VALID", 1, "NWC", "bfloat16", False),
    "depthwise_tcn": (16, 512, 512, 65536, 7, 1, 8, "SAME", 512, "NWC", "float32", True),
    "mamba_dw_causal": (8, 5120, 5120, 2048, 4, 1, 1, "CAUSAL", 5120, "NWC", "bfloat16", True),
    "wavenet_dense": (16, 128, 256, 65536, 2, 1, 64, "CAUSAL", 1, "NWC", "float32", True),
}


def median_ms(fn, *args, warmup=2, reps=10, max_seconds=20.0):
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    return statistics.median(times) * 1e3


def einsum_reference(x, w, g, *, stride, dilation, pad, groups, layout, dtype=None):
    """dx and dw in float32 (or `dtype`, e.g. float64 with jax_enable_x64) at HIGHEST precision through
    strided slices and einsums (XLA dots, no convolution), for the full-size cases; inputs upcast."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    hp = lax.Precision.HIGHEST
    dtype = jnp.float32 if dtype is None else dtype
    x, w, g = (a.astype(dtype) for a in (x, w, g))
    if layout == "NWC":
        x, w, g = x.transpose(0, 2, 1), w.transpose(2, 1, 0), g.transpose(0, 2, 1)
    n, c, length = x.shape
    o, cg, k_size = w.shape
    t_len = g.shape[2]
    og = o // groups
    lo, hi = pad
    xp = lax.pad(x, 0.0, [(0, 0, 0), (0, 0, 0), (lo, hi, 0)])
    xg = xp.reshape(n, groups, cg, -1)
    gg = g.reshape(n, groups, og, t_len)
    wg = w.reshape(groups, og, cg, k_size)
    dxp = jnp.zeros_like(xg)
    dws = []
    for k in range(k_size):
        sl = (Ellipsis, slice(k * dilation, k * dilation + (t_len - 1) * stride + 1, stride))
        dws.append(jnp.einsum("ngot,ngct->goc", gg, xg[sl], precision=hp))
        dxp = dxp.at[sl].add(jnp.einsum("goc,ngot->ngct", wg[..., k], gg, precision=hp))
    dw = jnp.stack(dws, -1).reshape(o, cg, k_size)
    dx = lax.pad(dxp.reshape(n, c, -1), 0.0, [(0, 0, 0), (0, 0, 0), (-lo, -hi, 0)])
    if layout == "NWC":
        dx, dw = dx.transpose(0, 2, 1), dw.transpose(2, 1, 0)
    return dx, dw


@functools.lru_cache(maxsize=None)
def _jitted_metrics():
    import jax
    import jax.numpy as jnp
    from jax import lax

    @jax.jit
    def rel_err(a, ref):
        a = a.astype(jnp.float32)
        return jnp.sqrt(jnp.sum(jnp.square(a - ref)) / jnp.maximum(jnp.sum(jnp.square(ref)), 1e-30))

    @jax.jit
    def fingerprint(a):
        # Sum and xor of the raw bits: equal fingerprints of two runs mean (with overwhelming odds) equal bits,
        # without holding both results in memory.
        bits = lax.bitcast_convert_type(a.astype(jnp.float32), jnp.uint32).ravel()
        return jnp.sum(bits, dtype=jnp.uint32), lax.reduce(bits, jnp.uint32(0), lax.bitwise_xor, (0,))

    return rel_err, fingerprint


def device_rel_err(a, ref):
    return float(_jitted_metrics()[0](a, ref))


def fingerprints(arrays):
    fp = _jitted_metrics()[1]
    return [tuple(int(v) for v in fp(a)) for a in arrays]


def run_bench(names, with_xla: bool, reps: int, parts, max_seconds: float, xla_parts) -> list:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax_conv1d import dilated_conv1d

    rows = []
    for name in names:
        n, c, o, length, k, s, d, padding, groups, layout, dtype_name, bias = BENCH[name]
        dtype = jnp.dtype(dtype_name)
        key = jax.random.key(1)
        kx, kw, kb, kg = jax.random.split(key, 4)
        x_shape = (n, c, length) if layout == "NCW" else (n, length, c)
        w_shape = (o, c // groups, k) if layout == "NCW" else (k, c // groups, o)
        x = jax.random.normal(kx, x_shape, dtype)
        w = (jax.random.normal(kw, w_shape, jnp.float32) / np.sqrt(c // groups * k)).astype(dtype)
        b = jax.random.normal(kb, (o,), dtype) if bias else None
        kwargs = dict(stride=s, dilation=d, padding=padding, groups=groups, layout=layout)

        def ours_f(x, w, b):
            return dilated_conv1d(x, w, b, **kwargs)

        dn = ("NCH", "OIH", "NCH") if layout == "NCW" else ("NHC", "HIO", "NHC")
        pad = padding
        if padding == "CAUSAL":
            pad = [((k - 1) * d, 0)]

        def xla_f(x, w, b):
            y = lax.conv_general_dilated(x, w, (s,), pad, rhs_dilation=(d,), dimension_numbers=dn,
                                         feature_group_count=groups)
            if b is not None:
                y = y + (b[None, :, None] if layout == "NCW" else b[None, None, :])
            return y

        y = jax.eval_shape(ours_f, x, w, b)
        g = jax.random.normal(kg, y.shape, dtype)
        if padding == "VALID":
            pair = (0, 0)
        elif padding == "CAUSAL":
            pair = ((k - 1) * d, 0)
        else:  # SAME, stride 1
            total = (k - 1) * d
            pair = (total // 2, total - total // 2)
        ref = jax.jit(functools.partial(einsum_reference, stride=s, dilation=d, pad=pair, groups=groups,
                                        layout=layout))
        print(f"  reference {name}", flush=True)
        rdx, rdw = ref(x, w, g)
        errs = {}
        flops = 2.0 * n * y.shape[1 if layout == "NCW" else 2] * y.shape[2 if layout == "NCW" else 1] * (c // groups) * k
        sz = dtype.itemsize
        x_bytes, y_bytes = n * c * length * sz, float(np.prod(y.shape)) * sz
        def part_setup(part):
            if part == "dx+dw":
                return ((0, 1, 2) if bias else (0, 1)), 2 * x_bytes + y_bytes, 2 * flops
            if part == "dx":
                return (0,), x_bytes + y_bytes, flops
            return (1,), x_bytes + y_bytes, flops

        def make(f, argn):
            def grads(x, w, b, g):
                def fa(*a):
                    full = [x, w, b]
                    for i, v in zip(argn, a):
                        full[i] = v
                    return f(*full)

                prim = [(x, w, b)[i] for i in argn]
                return jax.vjp(fa, *prim)[1](g)

            return jax.jit(grads)

        # Correctness and determinism first (the references are freed before anything is timed).
        checks = {}
        for part in parts:
            argn, _, _ = part_setup(part)
            ours = make(ours_f, argn)
            print(f"  checking {name} {part}", flush=True)
            r = ours(x, w, b, g)
            refs = {0: rdx, 1: rdw}
            if bias:
                refs[2] = jnp.sum(g.astype(jnp.float32), axis=(0, 2) if layout == "NCW" else (0, 1))
            err = max(device_rel_err(a, refs[i]) for a, i in zip(r, argn) if i in refs)
            fp1 = fingerprints(r)
            del r
            r = ours(x, w, b, g)
            fp2 = fingerprints(r)
            del r
            checks[part] = (err, fp1 == fp2)
        del rdx, rdw
        for part in parts:
            argn, floor_bytes, nflops = part_setup(part)
            ours = make(ours_f, argn)
            print(f"  timing {name} {part}", flush=True)
            t_ours = median_ms(ours, x, w, b, g, reps=reps, max_seconds=max_seconds)
            t_xla = float("nan")
            if with_xla and part in xla_parts:
                xla = make(xla_f, argn)
                t_xla = median_ms(xla, x, w, b, g, warmup=1, reps=3, max_seconds=8.0)
                del xla
            floor_ms = max(floor_bytes / 3.02e12, nflops / (400e12 if dtype_name == "float32" else 777e12)) * 1e3
            err, same = checks[part]
            rows.append((name, part, t_ours, t_xla, floor_ms, same, err))
        del x, w, b, g
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--xla", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--cases", default=",".join(BENCH))
    ap.add_argument("--parts", default="dx+dw,dx,dw")
    ap.add_argument("--max-seconds", type=float, default=20.0)
    ap.add_argument("--xla-parts", default="dx+dw,dx,dw")
    ap.add_argument("--only", default="", help="sweep case indices, comma separated")
    ap.add_argument("--check", default="", help='sweep checks by name, comma separated: "NCW bf16,NWC f32"')
    args = ap.parse_args(argv)

    import jax

    dev = jax.devices()[0]
    print(f"jax {jax.__version__} on {dev.device_kind}", flush=True)
    ok = True
    if args.sweep:
        only = {int(i) for i in args.only.split(",") if i}
        checks = {c.strip() for c in args.check.split(",") if c.strip()}
        ok &= run_sweep(args.quick, only, checks)
    if args.bench:
        rows = run_bench([c for c in args.cases.split(",") if c], args.xla, args.reps, args.parts.split(","), args.max_seconds,
                         args.xla_parts.split(","))
        print(f"\n{'case':<20}{'part':<7}{'ours ms':>9}{'xla ms':>9}{'floor':>8}{'speedup':>9}{'/floor':>8}"
              f"  det  rel err")
        for name, part, t, tx, fl, same, err in rows:
            print(f"{name:<20}{part:<7}{t:>9.3f}{tx:>9.2f}{fl:>8.3f}{tx / t:>8.1f}x{t / fl:>7.2f}x  "
                  f"{'yes' if same else 'NO ':<4} {err:.1e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
