"""Backward A/B on strided dense sweep shapes: our kernels, the product routes of jax_conv1d/_gemm_backward.py
(dx, dw or both, switched by JAX_CONV1D_BWD_GEMM at lowering time, so each variant is a fresh jit), and XLA's
convolution gradients, all in one process.

    python benchmarks/bwd_route_ab.py [--budget 0.3] [--retime 0] [sweep/015 ...]

Per variant: ms of the parts in PARTS (dx+dw(+db), dx alone, dw(+db) alone; bench.time_call medians), XLA's
time over the first (> 1: faster than XLA), the relative error of dx and dw against XLA's gradients at
precision=HIGHEST in float32, and whether two runs (outputs poisoned in between) gave the same bits.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bwd_check import _poison, fingerprints  # noqa: E402
from sdgrad_ab import part_fns, rel_err, timed  # noqa: E402

VARIANTS = {
    "ours": {"JAX_CONV1D_BWD_GEMM": "0"},
    "route dx": {"JAX_CONV1D_BWD_GEMM": "dx"},
    "route dw": {"JAX_CONV1D_BWD_GEMM": "dw"},
    "route both": {"JAX_CONV1D_BWD_GEMM": "both"},
    "dx fwd igemm": {"JAX_CONV1D_BWD_GEMM": "both", "JAX_CONV1D_FWD_GEMM": "0"},
    "default": {},
    # sdw6: our stride-1 kernels on the phase-reshaped problem (dx and/or dw), alone or beside the products
    "phase": {"JAX_CONV1D_BWD_GEMM": "phase"},
    "phase/gemm": {"JAX_CONV1D_BWD_GEMM": "phase/gemm"},
    "gemm/phase": {"JAX_CONV1D_BWD_GEMM": "gemm/phase"},
    "ours/phase": {"JAX_CONV1D_BWD_GEMM": "ours/phase"},
    "phase/ours": {"JAX_CONV1D_BWD_GEMM": "phase/ours"},
}
# The parts timed per variant; the first is also checked (error against HIGHEST, bits of two runs).
PARTS = {"ours": ("dx+dw", "dx", "dw"), "route both": ("dx+dw", "dx", "dw"), "dx fwd igemm": ("dx",),
         "default": ("dx+dw", "dx", "dw"), "phase": ("dx+dw", "dx", "dw")}
ENV_KEYS = ("JAX_CONV1D_BWD_GEMM", "JAX_CONV1D_FWD_GEMM")
DEFAULT_VARIANTS = "ours,route both,dx fwd igemm"
DEFAULT_CASES = ["sweep/015", "sweep/018", "sweep/030", "sweep/042", "sweep/014", "sweep/007", "sweep/039"]


def set_env(env):
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(env)


def same_lowering(names) -> bool:
    """The backward of each named bench case lowers to the same program with the routes on and off (the
    routes' predicate leaves these shapes on our kernels)."""
    import jax
    from jax_conv1d import bench

    cases = {c.name: c for c in bench.all_cases(48)}
    ok = True
    for name in names:
        case = cases[name]
        xs, ws, ys = case.shapes()
        args = [jax.ShapeDtypeStruct(s, case.dtype) for s in (xs, ws)]
        bias = jax.ShapeDtypeStruct((case.o,), case.dtype) if case.bias else None
        args += [bias, jax.ShapeDtypeStruct(ys, case.dtype)]
        texts = []
        for env in ({"JAX_CONV1D_BWD_GEMM": "0"}, {}):
            set_env(env)
            fn = bench.backward_of(bench.ours_forward(case))
            texts.append(jax.jit(lambda x, w, b, g: fn(x, w, b, g)).lower(*args).as_text())
        set_env({})
        same = texts[0] == texts[1]
        ok &= same
        print(f"  same program with and without the routes: {'yes' if same else 'NO'}  {name} {case.describe()}",
              flush=True)
    return ok


def ncw_dw_forms(names, budget) -> bool:
    """Channels-first dw through the columns, two ways: one GEMM per batch row summed over n (the route), or one
    GEMM over (n, t) with both operands transposed by XLA (cols written in the GEMM's layout by their fusion)."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax_conv1d import _gemm_backward, _gemm_forward, bench
    from jax_conv1d._shapes import PRECISION_DEFAULT, ConvConfig

    cases = {c.name: c for c in bench.sweep_cases(48)}
    ok = True
    for name in names:
        case = cases[name]
        cfg = ConvConfig(case.layout, case.stride, case.dilation, case.pads, 1, PRECISION_DEFAULT)
        x, _, _, ky = bench.make_inputs(case, jax.random.key(5))
        g = jax.random.normal(ky, case.shapes()[2], jnp.float32).astype(case.dtype)

        def flat(x, dy):
            cols = _gemm_forward.columns(x, cfg, case.k, case.out_length)
            dw = lax.dot_general(dy, cols, (((0, 2), (0, 2)), ((), ())), preferred_element_type=jnp.float32)
            return dw.reshape(case.o, case.c, case.k).astype(x.dtype)

        route = jax.jit(lambda x, dy: _gemm_backward.wgrad(x, dy, cfg=cfg, kernel_size=case.k))
        flat = jax.jit(flat)
        a, b = route(x, g), flat(x, g)
        err = rel_err(b, a.astype(jnp.float32))
        same = fingerprints([flat(x, g)]) == fingerprints([b])
        ok &= same
        print(f"  ncw dw {name}: per-row {timed(route, (x, g), budget):.4f}  flat {timed(flat, (x, g), budget):.4f} ms"
              f"  (flat vs per-row {err:.1e}, flat {'same bits' if same else 'NOT REPEATABLE'})", flush=True)
        del x, g
    return ok


def main(argv=None) -> int:
    import jax
    import jax.numpy as jnp
    from jax_conv1d import bench

    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=0.3)
    ap.add_argument("--retime", type=int, default=0, help="extra timings of `ours` dx+dw (sweep/015's question)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--spread", type=int, default=0, help="time `ours` dx and dw this many times one by one")
    ap.add_argument("--brief", action="store_true", help="time dx+dw(+db) only, for every variant and XLA")
    ap.add_argument("--ncw-dw", default="", help="sweep cases (NCW) for the dw formulation A/B")
    ap.add_argument("--same-hlo", default="", help="bench cases (comma separated) whose lowering must not change")
    ap.add_argument("cases", nargs="*")
    args = ap.parse_args(argv)
    if args.ncw_dw:
        ncw_dw_forms([c for c in args.ncw_dw.split(",") if c], args.budget)
    if args.same_hlo:
        ok = same_lowering([c for c in args.same_hlo.split(",") if c])
        print("same lowering:", "ok" if ok else "CHANGED", flush=True)
        if not args.cases:
            return 0 if ok else 1
    variants = [v for v in args.variants.split(",") if v]
    print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}", flush=True)
    by_name = {c.name: c for c in bench.sweep_cases(48)}
    ok = True
    for name in args.cases or DEFAULT_CASES:
        case = by_name[name]
        print(f"== {name} {case.describe()} T{case.out_length}", flush=True)
        x, w, b, ky = bench.make_inputs(case, jax.random.key(5))
        _, _, ys = case.shapes()
        g = jax.random.normal(ky, ys, jnp.float32).astype(case.dtype)
        call = (x, w, b, g)
        up = tuple(None if a is None else a.astype(jnp.float32) for a in call)
        ref = part_fns(case, bench.xla_forward(case, "highest", jnp.float32))["dx+dw"](*up)
        xla = part_fns(case, bench.xla_forward(case, case.precision))
        t_xla = {p: timed(f, call, args.budget) for p, f in xla.items() if p == "dx+dw" or not args.brief}
        fp = [fingerprints([a for a in xla["dx+dw"](*call) if a is not None]) for _ in range(2)]
        print(f"  {'xla':14s} " + "  ".join(f"{p} {t:7.4f}" for p, t in t_xla.items())
              + f"  | {'same bits' if fp[0] == fp[1] else 'NOT REPEATABLE'}", flush=True)
        for v in variants:
            if v == "dx fwd igemm" and case.k == 1:
                continue
            set_env(VARIANTS[v])
            parts = PARTS.get(v, ("dx+dw",))
            if args.brief and parts[0] == "dx+dw":
                parts = ("dx+dw",)
            try:
                fns = part_fns(case, bench.ours_forward(case))
                check = fns[parts[0]]
                pick = (lambda o: (o[0], o[1])) if parts[0] == "dx+dw" else (lambda o: (o,))
                _poison()
                out = pick(check(*call))
                refs = (ref[0], ref[1]) if parts[0] == "dx+dw" else (ref[0],)
                errs = [rel_err(a, r) for a, r in zip(out, refs)]
                first = fingerprints(list(out))
                del out
                _poison()
                same = fingerprints(list(pick(check(*call)))) == first
                tol = 1e-3 if case.dtype == "float32" else 1e-2
                good = same and all(e < tol for e in errs)
                ok &= good
                t = {p: timed(fns[p], call, args.budget) for p in parts}
                ratio = t_xla[parts[0]] / t[parts[0]]
                print(f"  {v:14s} " + "  ".join(f"{p} {t[p]:7.4f}" for p in parts)
                      + f"  | xla/this {ratio:5.2f}  err " + " ".join(f"{e:.1e}" for e in errs)
                      + f"  {'same bits' if same else 'NOT REPEATABLE'}{'' if good else ' FAIL'}", flush=True)
                if v == "ours" and args.spread:
                    import time

                    for p in ("dx", "dw"):
                        one = []
                        for _ in range(args.spread):
                            t0 = time.perf_counter()
                            jax.block_until_ready(fns[p](*call))
                            one.append((time.perf_counter() - t0) * 1e3)
                        one.sort()
                        print(f"  {'ours ' + p + ' one by one':14s} min {one[0]:.4f}  median {one[len(one) // 2]:.4f}  "
                              f"90% {one[int(len(one) * 0.9)]:.4f}  max {one[-1]:.4f} ms  ({len(one)} calls, "
                              f"host dispatch included)", flush=True)
                if v == "ours" and args.retime:
                    again = [timed(fns["dx+dw"], call, args.budget) for _ in range(args.retime)]
                    print(f"  {'ours again':14s} dx+dw " + " ".join(f"{a:.4f}" for a in again), flush=True)
            except Exception as e:  # a variant that fails is reported, not fatal
                ok = False
                print(f"  {v:14s} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            finally:
                set_env({})
        del x, w, b, g, call, up, ref
        gc.collect()
    print("route A/B:", "ok" if ok else "FAILURES", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
