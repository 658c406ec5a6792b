"""Sweep rows timed again, several rounds in one process: spread against a real loss (session 8, issue 3).

    python benchmarks/sweep_rows.py [--rounds 4] [--variants default,fwdgemm0] [--passes fwd,bwd] \
        sweep/007 sweep/018:bwd sweep/027:fwd:default,t64x256 ...

Per case and variant: `bench.time_call` medians of ours and XLA for each pass, `--rounds` times in a row
(same compiled functions), then what each program runs: the custom-call targets and fusion kinds in the
optimized HLO (ours: our FFI targets or cuBLAS/cuDNN where a route lowers to XLA; XLA: cuDNN convolution or
cuBLAS GEMM, and its layout transposes). Variants set environment switches read at lowering time
(JAX_CONV1D_FWD_GEMM, JAX_CONV1D_BWD_GEMM, JAX_CONV1D_IGEMM_*), so each variant is a fresh jit.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import time

VARIANTS = {
    "default": {},
    "fwdgemm0": {"JAX_CONV1D_FWD_GEMM": "0"},
    "bwdgemm0": {"JAX_CONV1D_BWD_GEMM": "0"},
    "bwd_dx_gemm": {"JAX_CONV1D_BWD_GEMM": "gemm/gemm"},
    "bwd_ours_dw": {"JAX_CONV1D_BWD_GEMM": "ours/gemm"},
    "xlaconv0": {"JAX_CONV1D_XLA_CONV": "0"},  # session 6-7 dispatch: no XLA-convolution route
    # forward tile and store variants (read by the kernel on every call)
    "t128x256": {"JAX_CONV1D_IGEMM_TILE": "128x256"},
    "t64x512": {"JAX_CONV1D_IGEMM_TILE": "64x512"},
    "t64x256": {"JAX_CONV1D_IGEMM_TILE": "64x256"},
    "t128x64": {"JAX_CONV1D_IGEMM_TILE": "128x64"},
    "evict_normal": {"JAX_CONV1D_IGEMM_STORE_EVICT": "normal"},
    "unstaged": {"JAX_CONV1D_IGEMM_STAGED_STORES": "0"},
    "chunks1": {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "1"},
}
ENV_KEYS = tuple(sorted({k for v in VARIANTS.values() for k in v}))
# Switches read when a function is lowered (the others are read by the kernels on every call).
LOWERING_KEYS = ("JAX_CONV1D_FWD_GEMM", "JAX_CONV1D_BWD_GEMM", "JAX_CONV1D_XLA_CONV")


def set_env(env):
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(env)


def kernels_of(fn, args) -> str:
    """Custom-call targets and fusion kinds of the optimized program, with counts, and the cuDNN algorithms
    XLA's autotuner picked (algo_id of each convolution custom call)."""
    text = fn.lower(*args).compile().as_text()
    calls = collections.Counter(re.findall(r'custom_call_target="([^"]+)"', text))
    fusions = collections.Counter(re.findall(r"kind=(k\w+)", text))
    parts = [f"{k}x{v}" for k, v in sorted(calls.items())] + [f"{k}x{v}" for k, v in sorted(fusions.items())]
    algos = re.findall(r'"algo_id":"?(\d+)"?', text)
    return " ".join(parts) + (f" cudnn algo_id {','.join(algos)}" if algos else "")


def same_bits(fn, args) -> bool:
    """Two runs of the compiled function, the allocator poisoned with NaNs before each, give the same bits."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    outs = []
    for _ in range(2):
        jnp.full((64 << 20,), jnp.nan, jnp.float32).block_until_ready()
        res = jax.block_until_ready(fn(*args))
        leaves = jax.tree_util.tree_leaves(res)
        outs.append([np.asarray(a.astype(jnp.float32)).view(np.uint32) for a in leaves])
    return all(np.array_equal(a, b) for a, b in zip(*outs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--variants", default="default")
    ap.add_argument("--passes", default="fwd,bwd")
    ap.add_argument("--budget", type=float, default=1.0, help="time_call budget per timing, s")
    ap.add_argument("--no-hlo", action="store_true")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from jax_conv1d import bench

    cases = {c.name: c for c in bench.all_cases(48)}
    key = jax.random.key(0)
    print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}", flush=True)
    for spec in args.cases:  # "sweep/018", "sweep/018:bwd" or "sweep/018:fwd,bwd:default,xlaconv0"
        name, passes, variants = (spec.split(":") + ["", ""])[:3]
        passes = passes or args.passes
        variants = (variants or args.variants).split(",")
        case = cases[name]
        x, w, b, ky = bench.make_inputs(case, key)
        _, _, ys = case.shapes()
        dy = jax.random.normal(ky, ys, jnp.float32).astype(case.dtype)
        print(f"== {name}: {case.describe()}", flush=True)
        xla_f = jax.jit(bench.xla_forward(case, case.precision))
        xla_b = jax.jit(bench.backward_of(bench.xla_forward(case, case.precision)))
        for variant in variants:
            set_env(VARIANTS[variant])
            fns = {}
            if "fwd" in passes:
                fns["fwd"] = (jax.jit(bench.ours_forward(case)), xla_f, (x, w, b))
            if "bwd" in passes:
                fns["bwd"] = (jax.jit(bench.backward_of(bench.ours_forward(case))), xla_b, (x, w, b, dy))
            for pass_, (ours, xla, fargs) in fns.items():
                t0 = time.perf_counter()
                o, r = [], []
                for _ in range(args.rounds):
                    o.append(bench.time_call(ours, fargs, budget_s=args.budget) * 1e3)
                    r.append(bench.time_call(xla, fargs, budget_s=args.budget) * 1e3)
                om, rm = statistics.median(o), statistics.median(r)
                print(f"  {pass_} {variant:12s} ours {' '.join(f'{v:.4f}' for v in o)} | xla "
                      f"{' '.join(f'{v:.4f}' for v in r)} | median {om:.4f} vs {rm:.4f} = {rm / om:.2f}x "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
                lowering_switch = any(k in LOWERING_KEYS for k in VARIANTS[variant])
                if variant == variants[0] or lowering_switch:
                    print(f"    same bits in two runs: {same_bits(ours, fargs)}", flush=True)
                if not args.no_hlo and (variant == variants[0] or lowering_switch):
                    print(f"    ours: {kernels_of(ours, fargs)}", flush=True)
                    if variant == variants[0]:
                        print(f"    xla:  {kernels_of(xla, fargs)}", flush=True)
        set_env({})
        del x, w, b, dy


if __name__ == "__main__":
    main()
