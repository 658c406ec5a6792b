"""Input gradient: the copy and store paths against the previous ones, in one process (A/B on the device).

    python benchmarks/dgrad_copies_ab.py [--reps N] [--xla] [--cases a,b]

For each case dx alone (jax.vjp with respect to x) runs under plans chosen through environment variables that
the C++ planner reads at every call:
  old       JAX_CONV1D_DGRAD_COPIES=checked, JAX_CONV1D_DGRAD_STORES=staged: the checked copy walks and the
            staging tile (the kernel before these changes, but for the rounding loop's unrolling);
  copies    unchecked copies of interior dy windows and whole weight chunks, staging tile kept;
  fast-bo16 unchecked copies, and at stride 1 fragments stored straight to dx;
  fast      the default: as fast-bo16, and streamed weights in 32-channel chunks in three stages where they fit
            (JAX_CONV1D_DGRAD_STREAM_BO=16 turns that off; it only changes streamed plans).
old and copies must give the same bits (same rounded operands, same accumulation order). fast-bo16 has the
same accumulation order where the plan keeps its chunking (the freed shared memory can change the plan); it and
fast are compared by relative error. Small random shapes (both layouts, strides, groups, bf16, f16,
highest) are checked against an HIGHEST-precision einsum first; then the full-size cases are timed (median of
--reps after warm-up; XLA in the same process with --xla), with dw+db (TF32 ties-away as before, JAX_CONV1D_WGRAD_TF32=rna, against ties-to-even, and ties-to-even with
units of 64 positions, JAX_CONV1D_WGRAD_BT=64) and dx+dw+db under old (with rna) and fast.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bwd_check import einsum_reference, fingerprints, median_ms  # noqa: E402

PLANS = {
    "old": {"JAX_CONV1D_DGRAD_COPIES": "checked", "JAX_CONV1D_DGRAD_STORES": "staged",
            "JAX_CONV1D_DGRAD_STREAM_BO": "16"},
    "copies": {"JAX_CONV1D_DGRAD_STORES": "staged", "JAX_CONV1D_DGRAD_STREAM_BO": "16"},
    "fast-bo16": {"JAX_CONV1D_DGRAD_STREAM_BO": "16"},
    "fast": {},
}
ENV_KEYS = ("JAX_CONV1D_DGRAD_COPIES", "JAX_CONV1D_DGRAD_STORES", "JAX_CONV1D_DGRAD_STREAM_BO")

# name: (N, C, O, L, K, stride, dilation, padding, groups, layout, dtype, precision)
SMALL = [
    (2, 128, 256, 3000, 2, 1, 64, "CAUSAL", 1, "NWC", "float32", None),     # streamed weights, edges
    (2, 128, 256, 3000, 2, 1, 64, "CAUSAL", 1, "NCW", "float32", None),
    (2, 128, 200, 1111, 2, 1, 8, "CAUSAL", 1, "NWC", "float32", None),     # ragged last weight chunk
    (3, 64, 128, 5003, 3, 3, 4, "VALID", 1, "NCW", "float32", None),       # headline geometry
    (3, 64, 128, 5003, 3, 3, 4, "VALID", 1, "NWC", "float32", None),
    (2, 96, 64, 2049, 5, 2, 3, "SAME", 2, "NWC", "float32", None),         # groups
    (2, 96, 64, 2049, 5, 2, 3, "SAME", 2, "NCW", "float32", None),
    (2, 128, 256, 3000, 2, 1, 64, "CAUSAL", 1, "NWC", "float32", "highest"),
    (2, 64, 128, 4001, 3, 1, 2, "SAME", 1, "NWC", "bfloat16", None),
    (2, 64, 128, 4001, 3, 1, 2, "SAME", 1, "NCW", "float16", None),
    (2, 128, 128, 4096, 1, 1, 1, "VALID", 1, "NWC", "float32", None),      # 1x1
    (2, 128, 128, 4099, 1, 1, 1, "VALID", 1, "NCW", "float32", None),
    (2, 64, 96, 1001, 3, 1, 2, (3, -2), 1, "NCW", "float32", None),       # negative pad, stride 1
    (2, 64, 96, 1001, 3, 1, 2, (-1, 4), 1, "NWC", "bfloat16", None),
]

# dx alone under each plan; then dw+db alone and dx+dw+db under old and fast.
BIG = {
    "wavenet_dense": (16, 128, 256, 65536, 2, 1, 64, "CAUSAL", 1, "NWC", "float32", None),
    "wavenet d1 N8": (8, 128, 256, 65536, 2, 1, 1, "CAUSAL", 1, "NWC", "float32", None),
    "wavenet d512 N8": (8, 128, 256, 65536, 2, 1, 512, "CAUSAL", 1, "NWC", "float32", None),
    "wavenet 1x1 N8": (8, 128, 128, 65536, 1, 1, 1, "VALID", 1, "NWC", "float32", None),
    "headline NWC f32": (64, 64, 128, 524280, 3, 3, 4, "VALID", 1, "NWC", "float32", None),
    "headline NCW f32": (64, 64, 128, 524280, 3, 3, 4, "VALID", 1, "NCW", "float32", None),
}


def set_plan(name):
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(PLANS[name])


def make_case(spec, seed):
    import jax
    import jax.numpy as jnp
    from jax_conv1d import dilated_conv1d

    n, c, o, length, k, s, d, padding, groups, layout, dtype_name, precision = spec
    dtype = jnp.dtype(dtype_name)
    kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
    x_shape = (n, c, length) if layout == "NCW" else (n, length, c)
    w_shape = (o, c // groups, k) if layout == "NCW" else (k, c // groups, o)
    x = jax.random.normal(kx, x_shape, dtype)
    w = (jax.random.normal(kw, w_shape, jnp.float32) / np.sqrt(c // groups * k)).astype(dtype)
    kwargs = dict(stride=s, dilation=d, padding=padding, groups=groups, layout=layout, precision=precision)
    y = jax.eval_shape(lambda x, w: dilated_conv1d(x, w, **kwargs), x, w)
    g = jax.random.normal(kg, y.shape, dtype)

    @jax.jit
    def dx_fn(x, w, g):
        return jax.vjp(lambda x: dilated_conv1d(x, w, **kwargs), x)[1](g)[0]

    return x, w, g, dx_fn


def make_bwd_fns(spec, x, w, g):
    """dw alone and dx+dw (with a bias and its gradient, as the models have) for the full-size timings."""
    import jax
    import jax.numpy as jnp
    from jax_conv1d import dilated_conv1d

    n, c, o, length, k, s, d, padding, groups, layout, dtype_name, precision = spec
    kwargs = dict(stride=s, dilation=d, padding=padding, groups=groups, layout=layout, precision=precision)
    b = jnp.zeros((o,), x.dtype)

    @jax.jit
    def dw_fn(x, w, g):
        return jax.vjp(lambda w, b: dilated_conv1d(x, w, b, **kwargs), w, b)[1](g)

    @jax.jit
    def dxdw_fn(x, w, g):
        return jax.vjp(lambda x, w, b: dilated_conv1d(x, w, b, **kwargs), x, w, b)[1](g)

    return dw_fn, dxdw_fn


def pad_pair(spec):
    n, c, o, length, k, s, d, padding, groups, layout, dtype_name, precision = spec
    if isinstance(padding, tuple):
        return padding
    if padding == "VALID":
        return (0, 0)
    if padding == "CAUSAL":
        return ((k - 1) * d, 0)
    total = (k - 1) * d
    return (total // 2, total - total // 2)


def rel_err(a, ref):
    import jax.numpy as jnp

    a = a.astype(jnp.float32)
    return float(jnp.sqrt(jnp.sum(jnp.square(a - ref)) / jnp.maximum(jnp.sum(jnp.square(ref)), 1e-30)))


def main(argv=None) -> int:
    import jax
    from jax import lax

    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--xla", action="store_true")
    ap.add_argument("--cases", default=",".join(BIG))
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--plans", default=",".join(PLANS), help="plans timed on the full-size cases")
    args = ap.parse_args(argv)
    print(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    ok = True

    for i, spec in enumerate([] if args.skip_small else SMALL):
        x, w, g, dx_fn = make_case(spec, 100 + i)
        outs = {}
        for plan in PLANS:
            set_plan(plan)
            outs[plan] = (fingerprints([dx_fn(x, w, g)])[0], fingerprints([dx_fn(x, w, g)])[0], dx_fn(x, w, g))
        n, c, o, length, k, s, d, padding, groups, layout, dtype_name, precision = spec
        ref, _ = jax.jit(lambda x, w, g: einsum_reference(x, w, g, stride=s, dilation=d, pad=pad_pair(spec),
                                                          groups=groups, layout=layout))(x, w, g)
        errs = {p: rel_err(v[2], ref) for p, v in outs.items()}
        same = outs["old"][0] == outs["copies"][0]
        same_fast = outs["old"][0] == outs["fast-bo16"][0]
        repeat = all(v[0] == v[1] for v in outs.values())
        tol = {"float32": 2e-6 if precision == "highest" else 1e-3, "bfloat16": 1e-2, "float16": 2e-3}[dtype_name]
        good = same and repeat and max(errs.values()) < tol
        ok &= good
        print(f"small {i} {spec}: old==copies {same}, old==fast-bo16 {same_fast}, repeatable {repeat}, err "
              + " ".join(f"{p} {e:.2e}" for p, e in errs.items()) + ("" if good else "  FAIL"), flush=True)

    for name in filter(None, args.cases.split(",")):
        spec = BIG[name]
        x, w, g, dx_fn = make_case(spec, 7)
        n, c, o, length, k, s, d, padding, groups, layout, dtype_name, precision = spec
        fps, times, res = {}, {}, {}
        plans = [p for p in PLANS if p in args.plans.split(",")]
        for plan in plans:
            set_plan(plan)
            r = dx_fn(x, w, g)
            fps[plan] = (fingerprints([r])[0], fingerprints([dx_fn(x, w, g)])[0])
            if plan in ("old", "fast"):  # the others are compared through their fingerprints
                res[plan] = r
            del r
            times[plan] = median_ms(dx_fn, x, w, g, reps=args.reps, max_seconds=20.0)
        set_plan("fast")
        diff32 = rel_err(res["fast"], res["old"].astype(np.float32))
        del res
        dw_fn, dxdw_fn = make_bwd_fns(spec, x, w, g)
        # Weight gradient: TF32 ties-away (JAX_CONV1D_WGRAD_TF32=rna, before) against ties-to-even (default).
        # rn-bt64: JAX_CONV1D_WGRAD_BT=64 (units of 64 positions, float32 TF32 only).
        t_dw, dws = {}, {}
        dw_env = {"rna": {"JAX_CONV1D_WGRAD_TF32": "rna"}, "rn": {}, "rn-bt64": {"JAX_CONV1D_WGRAD_BT": "64"}}
        for mode, env in dw_env.items():
            os.environ.update(env)
            dws[mode] = dw_fn(x, w, g)[0]
            t_dw[mode] = median_ms(dw_fn, x, w, g, reps=args.reps, max_seconds=20.0)
            if mode == "rn-bt64":
                dw_repeat64 = fingerprints([dw_fn(x, w, g)[0]]) == fingerprints([dws[mode]])
            for key in env:
                os.environ.pop(key, None)
        dw_diff = rel_err(dws["rn"], dws["rna"].astype(np.float32))
        dw_diff64 = rel_err(dws["rn-bt64"], dws["rna"].astype(np.float32))
        dw_repeat = fingerprints([dw_fn(x, w, g)[0]]) == fingerprints([dws["rn"]]) and dw_repeat64
        del dws
        t_both = {}
        for plan in ("old", "fast"):
            set_plan(plan)
            if plan == "old":
                os.environ["JAX_CONV1D_WGRAD_TF32"] = "rna"
            t_both[plan] = median_ms(dxdw_fn, x, w, g, reps=args.reps, max_seconds=20.0)
            os.environ.pop("JAX_CONV1D_WGRAD_TF32", None)
        set_plan("fast")
        ok &= dw_repeat
        del dw_fn, dxdw_fn
        t_xla = float("nan")
        if args.xla:
            dn = ("NCH", "OIH", "NCH") if layout == "NCW" else ("NHC", "HIO", "NHC")
            pad = [pad_pair(spec)]

            @jax.jit
            def xla_dx(x, w, g):
                f = lambda x: lax.conv_general_dilated(x, w, (s,), pad, rhs_dilation=(d,), dimension_numbers=dn,
                                                       feature_group_count=groups)
                return jax.vjp(f, x)[1](g)[0]

            t_xla = median_ms(xla_dx, x, w, g, warmup=1, reps=3, max_seconds=8.0)
        nbytes = (x.size + g.size) * x.dtype.itemsize
        flops = 2.0 * g.size * (c // groups) * k
        floor = max(nbytes / 3.02e12, flops / 400e12) * 1e3
        same = fps["old"][0] == fps["copies"][0] if "copies" in fps else None
        same_fast = fps["old"][0] == fps["fast-bo16"][0] if "fast-bo16" in fps else None
        repeat = all(a == b for a, b in fps.values())
        ok &= same is not False and repeat
        print(f"big {name}: " + " ".join(f"{p} {t:.3f} ms" for p, t in times.items())
              + f" | xla {t_xla:.3f} ms | floor {floor:.3f} ms | old==copies {same}, old==fast-bo16 {same_fast}, "
              f"repeatable {repeat}, fast vs old rel {diff32:.2e} | dw+db rna {t_dw['rna']:.3f} rn {t_dw['rn']:.3f} rn-bt64 {t_dw['rn-bt64']:.3f} ms (rel diff "
              f"vs rna {dw_diff:.1e} / {dw_diff64:.1e}, repeatable {dw_repeat}) | dx+dw+db old {t_both['old']:.3f} "
              f"fast {t_both['fast']:.3f} ms", flush=True)
        del x, w, g
    print("ALL OK" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
