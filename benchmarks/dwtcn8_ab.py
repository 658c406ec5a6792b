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

KNOBS = ("JAX_CONV1D_DW_ORDER", "JAX_CONV1D_DW_OUT_BUFS", "JAX_CONV1D_DW_DIAG", "JAX_CONV1D_DW_COORDS32",
         "JAX_CONV1D_DW_TILE", "JAX_CONV1D_DWBWD_ORDER", "JAX_CONV1D_DWBWD_DEEP", "JAX_CONV1D_DWBWD_SMEM",
         "JAX_CONV1D_DWBWD_BT")

# Call 1 also timed order 1 (blocked, channels fastest), the ring kernel (each input row loaded once per run;
# removed after call 1, commit d3321f8) and a grid of 128; see docs/notes/dwtcn8_session8.md.
FWD_VARIANTS = [
    ("default", {}),
    ("cyclic order (session 7)", {"JAX_CONV1D_DW_ORDER": "0"}),
    ("streams", {"JAX_CONV1D_DW_ORDER": "2"}),
    ("2 out buffers", {"JAX_CONV1D_DW_OUT_BUFS": "2"}),
    ("default, no stores", {"JAX_CONV1D_DW_DIAG": "4"}),
]
NCW_VARIANTS = [("32-bit coords", {}), ("64-bit coords", {"JAX_CONV1D_DW_COORDS32": "0"})]
BWD_VARIANTS = [
    ("default", {}),
    ("session 7 plan (split-fastest, 2 stages)", {"JAX_CONV1D_DWBWD_ORDER": "0", "JAX_CONV1D_DWBWD_DEEP": "0"}),
    ("split-fastest, 3 stages", {"JAX_CONV1D_DWBWD_ORDER": "0"}),
    ("channels-fastest, 2 stages", {"JAX_CONV1D_DWBWD_DEEP": "0"}),
]
# Model cases beyond the bench's: depthwise_tcn at dilation 1 and at smaller batches (tiles per block 248, 124, 62).
EXTRA_CASES = [
    bench.Case("depthwise_tcn_d1", 16, 512, 512, 7, 65536, dilation=1, padding="SAME", groups=512, layout="NWC",
               bias=True),
    bench.Case("depthwise_tcn_n8", 8, 512, 512, 7, 65536, dilation=8, padding="SAME", groups=512, layout="NWC",
               bias=True),
    bench.Case("depthwise_tcn_n4", 4, 512, 512, 7, 65536, dilation=8, padding="SAME", groups=512, layout="NWC",
               bias=True),
    bench.Case("depthwise_tcn_n2", 2, 512, 512, 7, 65536, dilation=8, padding="SAME", groups=512, layout="NWC",
               bias=True),
]


def set_env(env):
    for k in KNOBS:
        os.environ.pop(k, None)
    os.environ.update(env)


def find_case(name):
    for case in bench.model_cases() + EXTRA_CASES + bench.sweep_cases(48):
        if case.name == name:
            return case
    raise SystemExit(f"unknown case {name}")


def same_bits(a, b):
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return all(bits_equal(p, q) for p, q in zip(a, b))


def ab(part, case, fn, args, variants, rounds, floor_bytes, bw, log, results, trace=False, xla=None):
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
            results.append(dict(part=part, case=case.name, round=r, variant=label, bench_ms=t, pipelined_ms=pipe,
                                floor_ms=floor))
    set_env({})
    if xla is not None:
        t = bench.time_call(xla, args) * 1e3
        ours = min(r["bench_ms"] for r in results
                   if r["case"] == case.name and r["variant"] == variants[0][0] and r["part"] == part)
        log(f"{case.name:16s} XLA bench {t:8.4f} ms; ours (default, best round) {ours:.4f} ms: {t / ours:.1f}x")
        results.append(dict(part=part, case=case.name, variant="XLA", bench_ms=t))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="*", default=["fwd", "ncw", "bwd"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fwd-cases", nargs="*", default=["depthwise_tcn", "mamba_dw_causal", "depthwise_tcn_d1",
                                                        "depthwise_tcn_n8", "depthwise_tcn_n4", "depthwise_tcn_n2"])
    ap.add_argument("--xla", nargs="*", default=["fwd:depthwise_tcn", "fwd:mamba_dw_causal", "bwd:depthwise_tcn"],
                    help="PART:CASE rows that also time XLA's program (after the variants)")
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
                xla = None
                if f"bwd:{name}" in args.xla:
                    xla = jax.jit(bench.backward_of(bench.xla_forward(case, case.precision)))
                ab(part, case, fn, (x, w, b, dy), variants, args.rounds, 2 * x.nbytes + y_bytes, bw, log, results,
                   trace=True, xla=xla)
                del dy
            else:
                fn = jax.jit(bench.ours_forward(case))
                xla = jax.jit(bench.xla_forward(case, case.precision)) if f"{part}:{name}" in args.xla else None
                ab(part, case, fn, (x, w, b), variants, args.rounds, nbytes + y_bytes, bw, log, results, xla=xla)
            save()
            del x, w, b


if __name__ == "__main__":
    main()
