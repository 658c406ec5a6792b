"""Fused depthwise backward A/B in one process (session 7, issue 7).

For each case: the bench's own timing (jax_conv1d.bench.time_call on the same jitted backward the bench builds),
a pipelined timing (many calls, one wait: GPU time without the per-call dispatch and wait), the GPU kernels of
one call from a jax.profiler trace, and a bitwise comparison of every variant's (dx, dw, db) with the first
variant's. Variants are settings of the fused kernel's switches (bwd_depthwise_fused.cu), which it reads on
every call, so all variants run the same compiled program.

    python benchmarks/dwbwd_ab.py [--cases depthwise_tcn mamba_dw_causal] [--rounds 2] [--xla] [--bits-only]
                                  [--variant NAME:VAR=V,VAR=V ...] [--json out.json]

VAR is the part after JAX_CONV1D_DWBWD_ (ROWS, EXACT, RUN, FILL).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jax_conv1d import bench

DEFAULT_VARIANTS = [
    "base:ROWS=0,EXACT=0,RUN=4,FILL=0",
    "rows:ROWS=1,EXACT=0,RUN=4,FILL=0",
    "exact:ROWS=1,EXACT=1,RUN=4,FILL=0",
    "run8:ROWS=1,EXACT=1,RUN=8,FILL=0",
    "fill1:ROWS=1,EXACT=1,RUN=4,FILL=1",
    "fill3:ROWS=1,EXACT=1,RUN=4,FILL=3",
]

# Extra depthwise shapes (NWC, bias) checked for bits only: (name, N, C, O, K, L, dilation, padding, dtype).
BITS_CASES = [
    ("mamba_f16_ragged", 3, 320, 320, 4, 1000, 1, "CAUSAL", "float16"),
    ("mamba_f32", 2, 256, 256, 4, 2048, 1, "CAUSAL", "float32"),
    ("k8_d2_bf16", 2, 128, 128, 8, 3000, 2, "SAME", "bfloat16"),
    ("tcn_mult2", 2, 64, 128, 7, 4096, 8, "SAME", "float32"),
    ("k3_c40_f32", 2, 40, 40, 3, 5000, 1, (2, -1), "float32"),
    ("k4_c200_bf16", 2, 200, 200, 4, 3333, 1, (5, 5), "bfloat16"),
]


def parse_variant(text):
    name, _, settings = text.partition(":")
    env = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        env[f"JAX_CONV1D_DWBWD_{key}"] = value
    return name, env


def apply_env(env):
    for key, value in env.items():
        os.environ[key] = value


def bits_equal(a, b):
    if a is None or b is None:
        return a is None and b is None
    ia = jax.lax.bitcast_convert_type(a, jnp.int32 if a.dtype.itemsize == 4 else jnp.int16)
    ib = jax.lax.bitcast_convert_type(b, jnp.int32 if b.dtype.itemsize == 4 else jnp.int16)
    return bool(jnp.all(ia == ib))


def pipelined_ms(fn, args, calls=30):
    jax.block_until_ready(fn(*args))
    best = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = None
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        best.append((time.perf_counter() - t0) / calls * 1e3)
    return statistics.median(best)


def kernel_times(fn, args, calls=3):
    """{kernel name: mean GPU ms per call} and the mean span (first kernel start to last kernel end) per call."""
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            for _ in range(calls):
                jax.block_until_ready(fn(*args))
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
        events = []
        for plane in data.planes:
            if not plane.name.startswith("/device:GPU"):
                continue
            for line in plane.lines:
                if "stream" not in line.name.lower():
                    continue
                events += [(ev.name, ev.start_ns, ev.duration_ns) for ev in line.events]
    events.sort(key=lambda e: e[1])
    by = collections.defaultdict(float)
    for name, _, dur in events:
        short = name.replace("(anonymous namespace)::", "").split("(")[0].replace("void ", "").replace("jax_conv1d::cuda::", "")[:90]
        by[short] += dur / 1e6 / calls
    # Calls are separated by the host wait: split the event list where the gap exceeds 20 us.
    spans, start, end = [], None, None
    for _, st, dur in events:
        if start is not None and st - end > 20_000:
            spans.append((end - start) / 1e6)
            start = None
        if start is None:
            start = st
        end = max(end or 0, st + dur)
    if start is not None:
        spans.append((end - start) / 1e6)
    return dict(by), spans


def single_call_ms(fn, args, calls=15):
    """Median wall time of one call and its wait, back to back (what bench.time_call measures when a call
    takes more than half its 4 ms batch)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def latency_report(case, log):
    """Where a single call's wall time goes beyond its kernels: ours (dx, dw, db), ours dx only (no FFI scratch),
    and an XLA elementwise op over the same tensors (x + dy: same reads, one output of dx's size)."""
    x, w, b, ky = bench.make_inputs(case, jax.random.key(0))
    dy = jax.random.normal(ky, case.shapes()[2], jnp.float32).astype(case.dtype)
    fwd = bench.ours_forward(case)
    fns = {
        "ours dx+dw+db": (jax.jit(bench.backward_of(fwd)), (x, w, b, dy)),
        "ours dx only": (jax.jit(lambda x, w, b, dy: jax.vjp(lambda x_: fwd(x_, w, b), x)[1](dy)), (x, w, b, dy)),
        "xla x * 2": (jax.jit(lambda x: x * 2), (x,)),
    }
    if x.shape == dy.shape:
        fns["xla x + dy"] = (jax.jit(lambda x, dy: x + dy), (x, dy))
    rows = {}
    for name, (fn, args) in fns.items():
        single = single_call_ms(fn, args)
        pipe = pipelined_ms(fn, args)
        bench_ms = bench.time_call(fn, args) * 1e3
        kern, spans = kernel_times(fn, args)
        span = statistics.median(spans) if spans else float("nan")
        rows[name] = dict(single_ms=single, pipelined_ms=pipe, bench_ms=bench_ms, span_ms=span, kernels_ms=kern)
        log(f"  latency {case.name:16s} {name:14s} single {single:.4f} bench {bench_ms:.4f} pipelined {pipe:.4f} "
            f"GPU span {span:.4f} -> single - span {single - span:.4f} ms")
    return rows


def make_case(name):
    for case in bench.model_cases():
        if case.name == name:
            return case
    for cname, n, c, o, k, length, d, pad, dtype in BITS_CASES:
        if cname == name:
            return bench.Case(cname, n, c, o, k, length, dilation=d, padding=pad, groups=c, layout="NWC",
                              dtype=dtype, bias=True)
    raise SystemExit(f"unknown case {name}")


def rel_diff(a, b):
    a = np.asarray(a.astype(jnp.float32), np.float64)
    b = np.asarray(b.astype(jnp.float32), np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run_case(case, variants, rounds, xla, bits_only, log):
    x, w, b, ky = bench.make_inputs(case, jax.random.key(0))
    dy = jax.random.normal(ky, case.shapes()[2], jnp.float32).astype(case.dtype)
    fn = jax.jit(bench.backward_of(bench.ours_forward(case)))
    args = (x, w, b, dy)
    res = {"case": case.name, "shape": case.describe(), "variants": {}}
    ref = None
    for name, env in variants:
        apply_env(env)
        out = fn(*args)
        jax.block_until_ready(out)
        again = fn(*args)
        row = {"repeatable": all(bits_equal(p, q) for p, q in zip(out, again))}
        if ref is None:
            ref = out
            row["same_bits_as_first"] = True
        else:
            row["same_bits_as_first"] = all(bits_equal(p, q) for p, q in zip(out, ref))
            row["rel_diff"] = [None if p is None else rel_diff(p, q) for p, q in zip(out, ref)]
        res["variants"][name] = row
        del out, again
    log(f"{case.name}: " + ", ".join(f"{n} repeatable={r['repeatable']} same={r['same_bits_as_first']}"
                                     + (f" diff={['%.1e' % v for v in r['rel_diff'] if v is not None]}"
                                        if "rel_diff" in r and not r["same_bits_as_first"] else "")
                                     for n, r in res["variants"].items()))
    if bits_only:
        return res
    for rnd in range(rounds):
        for name, env in variants:
            apply_env(env)
            row = res["variants"][name]
            row.setdefault("bench_ms", []).append(bench.time_call(fn, args) * 1e3)
            row.setdefault("pipelined_ms", []).append(pipelined_ms(fn, args))
            if rnd == 0:
                row["kernels_ms"], row["spans_ms"] = kernel_times(fn, args)
    for name, row in res["variants"].items():
        kern = ", ".join(f"{k} {v:.4f}" for k, v in sorted(row["kernels_ms"].items(), key=lambda kv: -kv[1]))
        log(f"  {case.name:16s} {name:6s} bench {' '.join('%.4f' % v for v in row['bench_ms'])} ms | pipelined "
            f"{' '.join('%.4f' % v for v in row['pipelined_ms'])} | spans {' '.join('%.4f' % v for v in row['spans_ms'])}"
            f" | {kern}")
    if xla:
        xfn = jax.jit(bench.backward_of(bench.xla_forward(case, case.precision)))
        res["xla_ms"] = bench.time_call(xfn, args) * 1e3
        log(f"  {case.name:16s} XLA bench {res['xla_ms']:.4f} ms")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=["depthwise_tcn", "mamba_dw_causal"])
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--xla", action="store_true")
    ap.add_argument("--bits-only", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--latency", action="store_true", help="only the single-call overhead report")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    dev = jax.devices()[0]
    print(f"device {dev.device_kind}, jax {jax.__version__}", flush=True)
    results = []
    for name in args.cases:
        if args.latency:
            results.append({"case": name, "latency": latency_report(make_case(name), lambda s: print(s, flush=True))})
            continue
        results.append(run_case(make_case(name), variants, args.rounds, args.xla, args.bits_only,
                                lambda s: print(s, flush=True)))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": dev.device_kind, "jax": jax.__version__, "results": results}, f, indent=1)
    for key in {k for _, env in variants for k in env}:
        os.environ.pop(key, None)


if __name__ == "__main__":
    main()
