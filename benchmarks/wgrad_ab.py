"""Weight-gradient A/B: the dense wgrad implicit GEMM's copy and k-step variants, one process, same inputs.

    python benchmarks/wgrad_ab.py [--cases wavenet_d1,pointwise,...] [--reps 20] [--xla]

For each case it times dw(+db) alone (jax.vjp with respect to w and b only, so no dgrad runs) and the whole
backward dx+dw(+db) under each variant of JAX_CONV1D_WGRAD_LOADS / _STEPS / _SWIZZLE / _WAVES (read by the planner at
every call), checks each variant's bits against the first and run to run, and prints floor / time for the
memory floor of dw ((x + dy) bytes / 3.02 TB/s). --xla adds lax's dw(+db) in the same process and every variant's
error against lax's dw at HIGHEST (and db against a float32 sum of dy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_conv1d import dilated_conv1d

# name: (n, c, o, length, k, stride, dilation, padding, layout, bias)
CASES = {
    "wavenet_d1": (8, 128, 256, 65536, 2, 1, 1, "CAUSAL", "NWC", True),
    "wavenet_d16": (8, 128, 256, 65536, 2, 1, 16, "CAUSAL", "NWC", True),
    "wavenet_d32": (8, 128, 256, 65536, 2, 1, 32, "CAUSAL", "NWC", True),
    "wavenet_d64": (8, 128, 256, 65536, 2, 1, 64, "CAUSAL", "NWC", True),
    "wavenet_d512": (8, 128, 256, 65536, 2, 1, 512, "CAUSAL", "NWC", True),
    # NWC 1x1 layers lower to XLA's GEMM on CUDA (_pointwise.py), so no variant here changes this case: its
    # spread is the run-to-run noise of the measurement (session 5: 0.39-0.58 ms for the same GEMM).
    "pointwise": (8, 128, 128, 65536, 1, 1, 1, "VALID", "NWC", True),
    "headline_nwc": (64, 64, 128, 524280, 3, 3, 4, "VALID", "NWC", False),
    "headline_ncw": (64, 64, 128, 524280, 3, 3, 4, "VALID", "NCW", False),
}
_OFF = {"JAX_CONV1D_WGRAD_LOADS": None, "JAX_CONV1D_WGRAD_STEPS": None, "JAX_CONV1D_WGRAD_SWIZZLE": None,
        "JAX_CONV1D_WGRAD_WAVES": None, "JAX_CONV1D_WGRAD_RELEASE": None, "JAX_CONV1D_WGRAD_TILE": None}
VARIANTS = {
    # the session-3 kernel: padded tiles, load_window_fast copies, indexed 32-bit fragment loads
    "old": {**_OFF, "JAX_CONV1D_WGRAD_LOADS": "window", "JAX_CONV1D_WGRAD_STEPS": "indexed"},
    # session 4's default: padded tiles with per-thread row copies and pointer-stepped fragments (same bits)
    "rows": {**_OFF, "JAX_CONV1D_WGRAD_LOADS": "rows"},
    # the default (session 5): NWC float32 tiles as tensor-map boxes (wgrad_tma_kernel; same bits as rows)
    "new": dict(_OFF),
    # session 5's TMA loop: thread 0 loads, one block barrier per unit (same bits as the default's stage releases)
    "block": {**_OFF, "JAX_CONV1D_WGRAD_RELEASE": "block"},
    # session 7's default for WaveNet's layers: 128 x 128 tiles with the producer warp, one tap per block (the
    # default since session 8 takes both taps in a 128 x 256 tile; same splits, same bits)
    "narrow": {**_OFF, "JAX_CONV1D_WGRAD_TILE": "narrow"},
    # the default with 2 / 1 waves of splits instead of 4 (longer accumulation chains: other dw bits)
    "w2": {**_OFF, "JAX_CONV1D_WGRAD_WAVES": "2"},
    "w1": {**_OFF, "JAX_CONV1D_WGRAD_WAVES": "1"},
    # opt-in: swizzled unpadded dy tile, 64-bit A fragment loads, rounding per fragment (same dw bits)
    "frag": {**_OFF, "JAX_CONV1D_WGRAD_SWIZZLE": "fragments"},
    # opt-in: swizzled dy rounded to TF32 once in shared memory by its loading thread, which sums db
    "swz": {**_OFF, "JAX_CONV1D_WGRAD_SWIZZLE": "1"},
}
OTHER_BITS = {"frag", "swz", "w2", "w1"}
FLOOR_BW = 3.02e12


def set_env(env):
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def median_ms(fn, args, reps):
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bits_equal(a, b):
    return bool(jnp.all(lax.bitcast_convert_type(a, jnp.uint32) == lax.bitcast_convert_type(b, jnp.uint32)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(c for c in CASES if c != "pointwise"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--xla", action="store_true")
    ap.add_argument("--no-full", action="store_true", help="skip dx+dw timings")
    args = ap.parse_args()
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; medians of {args.reps} in ms", flush=True)
    for name in args.cases.split(","):
        n, c, o, length, k, s, d, padding, layout, bias = CASES[name]
        key = jax.random.key(3)
        kx, kw, kb, kg = jax.random.split(key, 4)
        x_shape = (n, c, length) if layout == "NCW" else (n, length, c)
        w_shape = (o, c, k) if layout == "NCW" else (k, c, o)
        x = jax.random.normal(kx, x_shape, jnp.float32)
        w = jax.random.normal(kw, w_shape, jnp.float32) / np.sqrt(c * k)
        b = jax.random.normal(kb, (o,), jnp.float32) if bias else None
        kwargs = dict(stride=s, dilation=d, padding=padding, layout=layout)
        t_len = (length - (k - 1) * d - 1) // s + 1 if padding == "VALID" else length
        y_shape = (n, o, t_len) if layout == "NCW" else (n, t_len, o)
        g = jax.random.normal(kg, y_shape, jnp.float32)

        def conv(x_, w_, b_):
            return dilated_conv1d(x_, w_, b_, **kwargs)

        def dw_only(x_, w_, b_, g_):
            _, vjp = jax.vjp(lambda w2, b2: conv(x_, w2, b2), w_, b_)
            return vjp(g_)

        def full(x_, w_, b_, g_):
            _, vjp = jax.vjp(conv, x_, w_, b_)
            return vjp(g_)

        dn = ("NCH", "OIH", "NCH") if layout == "NCW" else ("NHC", "HIO", "NHC")
        pad = [((k - 1) * d, 0)] if padding == "CAUSAL" else padding

        def xla_conv(x_, w_, b_, precision=None):
            y = lax.conv_general_dilated(x_, w_, (s,), pad, rhs_dilation=(d,), dimension_numbers=dn,
                                         precision=precision)
            if b_ is not None:
                y = y + (b_[None, :, None] if layout == "NCW" else b_)
            return y

        def xla_dw(x_, w_, b_, g_):
            _, vjp = jax.vjp(lambda w2, b2: xla_conv(x_, w2, b2), w_, b_)
            return vjp(g_)

        dw_ref = None
        if args.xla:  # dw at HIGHEST through XLA: the accuracy reference of every variant
            dw_ref = jax.jit(lambda x_, w_, g_: jax.vjp(
                lambda w2: xla_conv(x_, w2, None, lax.Precision.HIGHEST), w_)[1](g_)[0])(x, w, g)
            db_ref = None if b is None else jnp.sum(g, axis=(0, 2) if layout == "NCW" else (0, 1))

        fns = {"dw": jax.jit(dw_only)}
        if not args.no_full:
            fns["dx+dw"] = jax.jit(full)
        floor_ms = (x.size + g.size) * 4 / FLOOR_BW * 1e3
        ref = None
        line = [f"{name:14s} floor(dw) {floor_ms:.3f}"]
        print(line[0], flush=True)
        for vname in args.variants.split(","):
            set_env(VARIANTS[vname])
            out = fns["dw"](x, w, b, g)
            same = "-"
            if ref is None:
                ref = out
            else:
                same = "same" if all(bits_equal(p, q) for p, q in zip(out, ref) if p is not None) else "DIFF"
                if vname in OTHER_BITS:
                    err = float(jnp.linalg.norm(out[0] - ref[0]) / jnp.linalg.norm(ref[0]))
                    same += f"(rel diff {err:.1e})"
            again = fns["dw"](x, w, b, g)
            rep = all(bits_equal(p, q) for p, q in zip(out, again) if p is not None)
            if dw_ref is not None:
                same += f" dw err {float(jnp.linalg.norm(out[0] - dw_ref) / jnp.linalg.norm(dw_ref)):.2e}"
                if db_ref is not None:
                    same += f" db err {float(jnp.linalg.norm(out[1] - db_ref) / jnp.linalg.norm(db_ref)):.1e}"
            t = {part: median_ms(fn, (x, w, b, g), args.reps) for part, fn in fns.items()}
            line.append(f"{vname}: dw {t['dw']:.3f} ({floor_ms / t['dw']:.2f} of floor)"
                        + (f" dx+dw {t['dx+dw']:.3f}" if 'dx+dw' in t else "")
                        + f" bits {same} repeat {'ok' if rep else 'NOT REPEATABLE'}")
            print("  " + line[-1], flush=True)
            del out, again
        set_env(VARIANTS["new"])
        if args.xla:
            t_xla = median_ms(jax.jit(xla_dw), (x, w, b, g), max(3, args.reps // 4))
            print(f"  xla dw(+db) {t_xla:.3f}", flush=True)
        del x, g, ref


if __name__ == "__main__":
    main()
