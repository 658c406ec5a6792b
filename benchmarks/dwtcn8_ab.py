"""Depthwise A/B in one process (session 8, helper dwtcn8, issues 3 and 7).

    python benchmarks/dwtcn8_ab.py [--parts fwd ncw bwd] [--rounds 2] [--json out.json]

fwd: the NWC forward's switches (fwd_depthwise.cu, read per call): tile order (JAX_CONV1D_DW_ORDER), the ring
kernel (JAX_CONV1D_DW_RING), two output tiles (JAX_CONV1D_DW_OUT_BUFS), and, for reference, the same without
stores (JAX_CONV1D_DW_DIAG=4, wrong results) on depthwise_tcn, mamba_dw_causal and sweep/002. ncw: the NCW
depthwise sweep rows with 32- against 64-bit tile coordinates (JAX_CONV1D_DW_COORDS32). bwd: the fused backward's
launch order (JAX_CONV1D_DWBWD_ORDER) and tile plan (JAX_CONV1D_DWBWD_SMEM / _BT) on depthwise_tcn and
mamba_dw_causal. Every variant's outputs are compared bitwise with the first variant's before timing; each
round times every variant in the same order with bench.time_call (the bench's own timing) and a pipelined
figure (30 calls, one wait); rounds repeat the list so that drift shows as a difference between rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwbwd_ab import bits_equal, kernel_times, pipelined_ms  # noqa: E402

from jax_conv1d import bench  # noqa: E402

KNOBS = ("JAX_CONV1D_DW_ORDER", "JAX_CONV1D_DW_RING", "JAX_CONV1D_DW_RING_SLOTS", "JAX_CONV1D_DW_OUT_BUFS",
         "JAX_CONV1D_DW_DIAG", "JAX_CONV1D_DW_COORDS32", "JAX_CONV1D_DW_GRID", "JAX_CONV1D_DW_TILE", "JAX_CONV1D_DWBWD_ORDER",
         "JAX_CONV1D_DWBWD_SMEM", "JAX_CONV1D_DWBWD_BT")

FWD_VARIANTS = [
    ("default", {}),
    ("order 1 (blocked, channels fastest)", {"JAX_CONV1D_DW_ORDER": "1"}),
    ("order 2 (blocked, positions fastest)", {"JAX_CONV1D_DW_ORDER": "2"}),
    ("ring", {"JAX_CONV1D_DW_RING": "1"}),
    ("ring, 4 slots", {"JAX_CONV1D_DW_RING": "1", "JAX_CONV1D_DW_RING_SLOTS": "4"}),
    ("ring, 2 out buffers", {"JAX_CONV1D_DW_RING": "1", "JAX_CONV1D_DW_OUT_BUFS": "2"}),
    ("ring, grid 128", {"JAX_CONV1D_DW_RING": "1", "JAX_CONV1D_DW_GRID": "128"}),
    ("2 out buffers", {"JAX_CONV1D_DW_OUT_BUFS": "2"}),
    ("ring, no stores", {"JAX_CONV1D_DW_RING": "1", "JAX_CONV1D_DW_DIAG": "4"}),
    ("default, no stores", {"JAX_CONV1D_DW_DIAG": "4"}),
]
NCW_VARIANTS = [("32-bit coords", {}), ("64-bit coords", {"JAX_CONV1D_DW_COORDS32": "0"})]
BWD_VARIANTS = [
    ("default", {}),
    ("order 1 (channel blocks of a split together)", {"JAX_CONV1D_DWBWD_ORDER": "1"}),
    ("smem 227 bt 128", {"JAX_CONV1D_DWBWD_SMEM": "227", "JAX_CONV1D_DWBWD_BT": "128"}),
    ("smem 227 bt 128, order 1", {"JAX_CONV1D_DWBWD_SMEM": "227", "JAX_CONV1D_DWBWD_BT": "128",
                                  "JAX_CONV1D_DWBWD_ORDER": "1"}),
]


def set_env(env):
    for k in KNOBS:
        os.environ.pop(k, None)
    os.environ.update(env)


def find_case(name):
    for case in bench.model_cases() + bench.sweep_cases(48):
        if case.name == name:
            return case
    raise SystemExit(f"unknown case {name}")


def same_bits(a, b):
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return all(bits_equal(p, q) for p, q in zip(a, b))


def ab(case, fn, args, variants, rounds, floor_bytes, bw, log, results, trace=False):
    ref = None
    for label, env in variants:
        set_env(env)
        out = fn(*args)
        again = fn(*args)
        rep = same_bits(out, again)
        if ref is None:
            ref = out
            log(f"{case.name}: {label}: repeatable {rep}")
        elif "no stores" not in label:
            log(f"{case.name}: {label}: repeatable {rep}, bitwise equal to {variants[0][0]}: {same_bits(out, ref)}")
        del out, again
    del ref
    floor = floor_bytes / bw * 1e3
    for r in range(rounds):
        for label, env in variants:
            set_env(env)
            t = bench.time_call(fn, args) * 1e3
            pipe = pipelined_ms(fn, args)
            extra = ""
            if trace and r == 0:
                kern, spans = kernel_times(fn, args)
                extra = " kernels " + ", ".join(f"{k[:60]} {v:.4f}" for k, v in kern.items())
            log(f"{case.name:16s} r{r} {label:46s} bench {t:8.4f} ms ({floor / t * 100:5.1f}% of floor)  "
                f"pipelined {pipe:8.4f} ms{extra}")
            results.append(dict(case=case.name, round=r, variant=label, bench_ms=t, pipelined_ms=pipe,
                                floor_ms=floor))
    set_env({})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="*", default=["fwd", "ncw", "bwd"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fwd-cases", nargs="*", default=["depthwise_tcn", "mamba_dw_causal", "sweep/002"])
    ap.add_argument("--ncw-cases", nargs="*",
                    default=["sweep/006", "sweep/013", "sweep/017", "sweep/019", "sweep/021", "sweep/028"])
    ap.add_argument("--bwd-cases", nargs="*", default=["depthwise_tcn", "mamba_dw_causal"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    bw = bench.copy_bandwidth()
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"{jax.devices()[0].device_kind} jax {jax.__version__} copy bandwidth {bw / 1e12:.3f} TB/s")
    results = []

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(device=jax.devices()[0].device_kind, jax=jax.__version__, copy_bw=bw,
                               rows=results), f, indent=1)

    for part in args.parts:
        names = {"fwd": args.fwd_cases, "ncw": args.ncw_cases, "bwd": args.bwd_cases}[part]
        variants = {"fwd": FWD_VARIANTS, "ncw": NCW_VARIANTS, "bwd": BWD_VARIANTS}[part]
        for name in names:
            case = find_case(name)
            x, w, b, ky = bench.make_inputs(case, jax.random.key(0))
            ys = case.shapes()[2]
            y_bytes = int(jnp.prod(jnp.array(ys))) * jnp.dtype(case.dtype).itemsize
            nbytes = x.nbytes + w.nbytes + (0 if b is None else b.nbytes)
            if part == "bwd":
                dy = jax.random.normal(ky, ys, jnp.float32).astype(case.dtype)
                fn = jax.jit(bench.backward_of(bench.ours_forward(case)))
                # x, dy read; dx written (dw, db are small)
                ab(case, fn, (x, w, b, dy), variants, args.rounds, 2 * x.nbytes + y_bytes, bw, log, results,
                   trace=True)
                del dy
            else:
                fn = jax.jit(bench.ours_forward(case))
                ab(case, fn, (x, w, b), variants, args.rounds, nbytes + y_bytes, bw, log, results)
            save()
            del x, w, b


if __name__ == "__main__":
    main()
