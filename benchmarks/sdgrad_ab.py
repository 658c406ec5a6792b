"""Strided input gradient (stride > 1): store paths and two-blocks-per-SM plans, in one process (A/B on the device).

    python benchmarks/sdgrad_ab.py [--skip-small] [--skip-headline] [--skip-sweep] [--variants a,b]

Variants are environment settings the C++ planner reads at every call:
  old      JAX_CONV1D_DGRAD_STORES=staged: the float32 staging tile at every stride > 1 (the kernel before);
  default  the planner's choice (at the two device calls of session 5: straight stores for NWC at any stride;
           since then: the staging tile unless it would shrink the plan);
  direct   JAX_CONV1D_DGRAD_STORES=direct: fragments straight to dx at every stride;
  sm2      JAX_CONV1D_DGRAD_SM_BLOCKS=2: 32 channels per block, two blocks per SM (default stores);
  sm2d     both of the last two.
1. Small shapes (strides 2-12, empty residues, several phase groups, ragged channels, negative pads, both
   layouts, f32 / bf16 / f16 / highest): dx of every variant against a float32 HIGHEST einsum, poisoned
   outputs, bitwise repeatable.
2. The headline (x 64x64x524280, w 128x64x3, stride 3, dilation 4), both layouts: dx per variant (bits compared
   with old: one tap per phase, so every plan sums in the same order), XLA's dx, and dx+dw under old / default.
3. The strided dense and grouped rows of the 48-shape sweep: dx per variant and XLA's; dw and dx+dw (with the
   bias where the row has one) for the rows the brief names.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bwd_check import _poison, einsum_reference, fingerprints  # noqa: E402

VARIANTS = {
    "old": {"JAX_CONV1D_DGRAD_STORES": "staged"},
    "default": {},
    "direct": {"JAX_CONV1D_DGRAD_STORES": "direct"},
    "sm2": {"JAX_CONV1D_DGRAD_SM_BLOCKS": "2"},
    "sm2d": {"JAX_CONV1D_DGRAD_SM_BLOCKS": "2", "JAX_CONV1D_DGRAD_STORES": "direct"},
}
ENV_KEYS = ("JAX_CONV1D_DGRAD_STORES", "JAX_CONV1D_DGRAD_SM_BLOCKS")

# (N, C, O, L, K, stride, dilation, (pad_lo, pad_hi), groups, layout, dtype, precision)
SMALL = [
    (3, 64, 128, 5003, 3, 3, 4, (0, 0), 1, "NWC", "float32", None),         # headline geometry
    (3, 64, 128, 5003, 3, 3, 4, (0, 0), 1, "NCW", "float32", None),
    (2, 1024, 512, 517, 1, 4, 2, (0, 0), 1, "NCW", "float32", None),        # sweep/015: 3 of 4 residues empty
    (2, 1024, 512, 517, 1, 4, 2, (0, 0), 1, "NWC", "float32", None),
    (2, 64, 96, 1001, 2, 4, 2, (3, 1), 1, "NWC", "float32", None),          # residues 0 and 2 only
    (2, 64, 96, 1001, 2, 4, 2, (3, 1), 1, "NCW", "bfloat16", None),
    (2, 30, 40, 777, 2, 3, 3, (2, -1), 1, "NWC", "float32", None),          # ragged channels, empty residues
    (2, 30, 40, 777, 2, 3, 3, (2, -1), 1, "NCW", "float16", None),
    (2, 48, 64, 2000, 12, 12, 1, (5, 6), 1, "NWC", "float32", None),        # 12 phases: two phase groups
    (2, 48, 64, 2000, 5, 12, 1, (5, 6), 1, "NCW", "float32", None),         # 7 empty residues
    (2, 64, 256, 4001, 8, 2, 1, (3, 4), 1, "NWC", "bfloat16", None),        # sweep/018
    (2, 32, 64, 6001, 6, 3, 1, (5, 0), 1, "NCW", "bfloat16", None),         # sweep/042
    (2, 256, 32, 3001, 7, 3, 1, (0, 0), 1, "NCW", "bfloat16", None),        # sweep/030
    (2, 96, 64, 2049, 5, 2, 3, (4, 4), 2, "NWC", "float32", None),          # groups
    (2, 96, 64, 2049, 5, 2, 3, (4, 4), 2, "NCW", "float32", None),
    (2, 64, 128, 3001, 3, 3, 4, (1, 2), 1, "NWC", "float32", "highest"),
    (2, 64, 128, 3001, 3, 2, 1, (-2, 3), 1, "NCW", "float32", "highest"),
    (2, 128, 128, 3001, 3, 2, 2, (2, 2), 1, "NWC", "float32", None),        # warps_m 2
]

BRIEF_ROWS = ("sweep/015", "sweep/018", "sweep/030", "sweep/042")


def set_variant(name):
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(VARIANTS[name])


def rel_err(a, ref):
    import jax.numpy as jnp

    a = a.astype(jnp.float32)
    return float(jnp.sqrt(jnp.sum(jnp.square(a - ref)) / jnp.maximum(jnp.sum(jnp.square(ref)), 1e-30)))


def small_checks(variants) -> bool:
    import jax
    import jax.numpy as jnp
    from jax_conv1d import dilated_conv1d

    ok = True
    for i, spec in enumerate(SMALL):
        n, c, o, length, k, s, d, pad, groups, layout, dtype_name, precision = spec
        dtype = jnp.dtype(dtype_name)
        kx, kw, kg = jax.random.split(jax.random.key(200 + i), 3)
        x = jax.random.normal(kx, (n, c, length) if layout == "NCW" else (n, length, c), dtype)
        w_shape = (o, c // groups, k) if layout == "NCW" else (k, c // groups, o)
        w = (jax.random.normal(kw, w_shape, jnp.float32) / np.sqrt(c // groups * k)).astype(dtype)
        kwargs = dict(stride=s, dilation=d, padding=pad, groups=groups, layout=layout, precision=precision)
        y = jax.eval_shape(lambda x, w: dilated_conv1d(x, w, **kwargs), x, w)
        g = jax.random.normal(kg, y.shape, dtype)
        dx_fn = jax.jit(lambda x, w, g: jax.vjp(lambda x: dilated_conv1d(x, w, **kwargs), x)[1](g)[0])
        ref, _ = jax.jit(lambda x, w, g: einsum_reference(x, w, g, stride=s, dilation=d, pad=pad, groups=groups,
                                                          layout=layout))(x, w, g)
        errs, fps, good = {}, {}, True
        for v in variants:
            set_variant(v)
            _poison()
            r = dx_fn(x, w, g)
            fps[v] = fingerprints([r])[0]
            errs[v] = rel_err(r, ref)
            del r
            _poison()
            good &= fingerprints([dx_fn(x, w, g)])[0] == fps[v]
        tol = {"float32": 2e-6 if precision == "highest" else 1e-3, "bfloat16": 1e-2, "float16": 2e-3}[dtype_name]
        good &= all(np.isfinite(e) and e < tol for e in errs.values())
        same = [v for v in variants if fps[v] == fps[variants[0]]]
        ok &= good
        print(f"small {i:2d} {spec}: err " + " ".join(f"{v} {e:.2e}" for v, e in errs.items())
              + f" | bits as {variants[0]}: {','.join(same)} | {'ok' if good else 'FAIL'}", flush=True)
    return ok


def timed(fn, args, budget_s=1.5):
    from jax_conv1d.bench import time_call

    return time_call(fn, args, batch_s=4e-3, batches=7, budget_s=budget_s) * 1e3


def part_fns(case, forward):
    """dx alone, dw (+db) alone, dx+dw (+db) of a bench Case through jax.vjp."""
    import jax

    def dx(x, w, b, g):
        return jax.vjp(lambda x_: forward(x_, w, b), x)[1](g)[0]

    def dw(x, w, b, g):
        if b is None:
            return jax.vjp(lambda w_: forward(x, w_, None), w)[1](g)
        return jax.vjp(lambda w_, b_: forward(x, w_, b_), w, b)[1](g)

    def dxdw(x, w, b, g):
        if b is None:
            return jax.vjp(lambda x_, w_: forward(x_, w_, None), x, w)[1](g)
        return jax.vjp(forward, x, w, b)[1](g)

    return {"dx": jax.jit(dx), "dw": jax.jit(dw), "dx+dw": jax.jit(dxdw)}


def run_case(case, variants, parts_for_all, floor_ms=None, budget_s=1.5):
    import jax
    import jax.numpy as jnp
    from jax_conv1d import bench

    x, w, b, ky = bench.make_inputs(case, jax.random.key(5))
    _, _, ys = case.shapes()
    g = jax.random.normal(ky, ys, jnp.float32).astype(case.dtype)
    args = (x, w, b, g)
    ours = part_fns(case, bench.ours_forward(case))
    xla = part_fns(case, bench.xla_forward(case, case.precision))
    line = [f"{case.name} [{case.describe()}]"]
    fp_old = None
    t = {}
    for v in variants:
        set_variant(v)
        _poison()
        r = ours["dx"](*args)
        fp = fingerprints([r])[0]
        del r
        rep = fingerprints([ours["dx"](*args)])[0] == fp
        fp_old = fp if fp_old is None else fp_old
        t[v] = timed(ours["dx"], args, budget_s)
        line.append(f"dx {v} {t[v]:.4f}{'' if rep else ' NOT-REPEATABLE'}{' =bits' if fp == fp_old else ' ~bits'}")
    t_xla = timed(xla["dx"], args, budget_s)
    line.append(f"dx XLA {t_xla:.4f}")
    best = min(t, key=t.get)
    line.append(f"| best {best} {t[best]:.4f}, XLA/best {t_xla / t[best]:.2f}x, XLA/old {t_xla / t['old']:.2f}x"
                + (f", best/floor {t[best] / floor_ms:.2f}x" if floor_ms else ""))
    print("  ".join(line), flush=True)
    for part in parts_for_all:
        line = [f"   {case.name} {part}:"]
        tp = {}
        for v in ("old", "default"):
            set_variant(v)
            tp[v] = timed(ours[part], args, budget_s)
            line.append(f"{v} {tp[v]:.4f}")
        tx = timed(xla[part], args, budget_s)
        line.append(f"XLA {tx:.4f}  XLA/default {tx / tp['default']:.2f}x")
        print("  ".join(line), flush=True)
    set_variant("default")
    del x, w, b, g, args
    gc.collect()


def main(argv=None) -> int:
    import jax
    from jax_conv1d import bench

    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--skip-headline", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--sweep-cases", default="", help="comma-separated sweep names (default: every strided dense)")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    print(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    ok = True
    if not args.skip_small:
        ok &= small_checks(variants)
    wanted = [n for n in args.sweep_cases.split(",") if n]
    sweep = {c.name: c for c in bench.sweep_cases(48) if c.stride > 1 and c.groups != c.c}
    names = wanted or list(sweep)
    # The rows the brief names first, then the headline, then the other strided rows (each printed as it
    # finishes, so a time limit still leaves the first ones).
    if not args.skip_sweep:
        for name in [n for n in names if n in BRIEF_ROWS]:
            run_case(sweep[name], variants, ("dw", "dx+dw"), budget_s=1.0)
    if not args.skip_headline:
        for case in bench.headline_cases():
            if case.precision == "default" and case.dtype == "float32" and not case.bias:
                run_case(case, variants, ("dx+dw",), floor_ms=4.74, budget_s=1.0)
    if not args.skip_sweep:
        for name in [n for n in names if n not in BRIEF_ROWS]:
            run_case(sweep[name], variants, (), budget_s=0.7)
    print("small checks:", "ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
