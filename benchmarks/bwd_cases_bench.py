"""Backward-only timings of named jax_conv1d.bench cases: ours vs XLA in the same process, with the error
against XLA at HIGHEST in float32 and the memory floor (reads dy, x, w; writes dx, dw, db).

    python benchmarks/bwd_cases_bench.py sweep/017 depthwise_tcn ... [--budget 1.0] [--parts]

A shorter run than `python -m jax_conv1d.bench` (no forward rows, smaller timing budget) for device calls
with little time; the cases, inputs, timing loop and floor are bench.py's own. --parts also times dx alone
and dw alone (ours).
"""

from __future__ import annotations

import argparse
import gc

import jax
import jax.numpy as jnp

from jax_conv1d import bench


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timing per function")
    ap.add_argument("--parts", action="store_true", help="also time dx alone and dw alone (ours)")
    args = ap.parse_args()
    by_name = {c.name: c for c in bench.all_cases(48)}
    bandwidth = bench.copy_bandwidth(1 << 28)
    print(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}, copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    print(f"{'case':<18}{'ours ms':>9}{'xla ms':>9}{'xla/ours':>9}{'floor ms':>9}{'of floor':>9}{'rel err':>10}"
          f"{'dx ms':>8}{'dw ms':>8}  shape")
    key = jax.random.key(0)
    for name in args.cases:
        case = by_name[name]
        x, w, b, ky = bench.make_inputs(case, key)
        _, _, ys = case.shapes()
        dy = jax.random.normal(ky, ys, jnp.float32).astype(case.dtype)
        ours = jax.jit(bench.backward_of(bench.ours_forward(case)))
        xla = jax.jit(bench.backward_of(bench.xla_forward(case, case.precision)))
        ref = jax.jit(bench.backward_of(bench.xla_forward(case, "highest", jnp.float32)))
        bargs = (x, w, b, dy)
        # As bench.py: multi-GB cases compare against the reference on the first samples only.
        sub = max(1, case.n // 8) if bench._nbytes(x, dy) > (4 << 30) else case.n
        eargs = (x[:sub], w, b, dy[:sub])
        up = tuple(None if a is None else a.astype(jnp.float32) for a in eargs)
        err = max(bench.rel_err(o, r) for o, r in zip(ours(*eargs), ref(*up)) if r is not None)
        del eargs, up
        t_ours = bench.time_call(ours, bargs, budget_s=args.budget)
        t_xla = bench.time_call(xla, bargs, budget_s=args.budget)
        floor = (bench._nbytes(dy, x, w, b) + bench._nbytes(x, w, b)) / bandwidth
        parts = ""
        if args.parts:
            fwd = bench.ours_forward(case)
            dx_f = jax.jit(lambda x, w, b, dy: jax.vjp(lambda x_: fwd(x_, w, b), x)[1](dy)[0])
            dw_f = jax.jit(lambda x, w, b, dy: jax.vjp(lambda w_: fwd(x, w_, b), w)[1](dy)[0])
            parts = "".join(f"{bench.time_call(f, bargs, budget_s=args.budget / 2) * 1e3:>8.3f}" for f in (dx_f, dw_f))
        else:
            parts = f"{'':>8}{'':>8}"
        print(f"{name:<18}{t_ours * 1e3:>9.3f}{t_xla * 1e3:>9.3f}{t_xla / t_ours:>9.2f}{floor * 1e3:>9.3f}"
              f"{floor / t_ours:>9.2f}{err:>10.1e}{parts}  {case.describe()}", flush=True)
        del x, w, b, dy, bargs
        gc.collect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
