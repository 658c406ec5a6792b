"""Where the small-group forward family beats the implicit GEMM: both pinned, XLA beside them, one process.

    python benchmarks/grouped_small_ab.py [--profile]

Shapes near the sweep's grouped configurations, in both layouts, plus a few that probe the dispatch rule's
edges (Og 16 and 32 in NWC, Cg * K from 48 to 128). Prints per-call milliseconds (bench.time_call: median of
batches of back-to-back calls, so calls shorter than the host's dispatch time read as that time), the fraction
of the memory floor, and the relative difference between the two families' outputs.
--profile runs each shape twice with the default dispatch and nothing else (for ncu).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

from jax_conv1d import dilated_conv1d
from jax_conv1d.bench import time_call

# name: (n, c, o, k, length, stride, dilation, padding, groups, dtype)
SHAPES = {
    "038": (4, 32, 32, 6, 65536, 1, 2, "CAUSAL", 8, "bfloat16"),  # Cg 4, Og 4
    "044": (4, 16, 16, 8, 131072, 3, 3, "VALID", 8, "bfloat16"),  # Cg 2, Og 2
    "016": (4, 64, 128, 3, 32768, 1, 8, "VALID", 8, "bfloat16"),  # Cg 8, Og 16
    "011": (4, 16, 256, 6, 131072, 2, 4, "VALID", 8, "float32"),  # Cg 2, Og 32, 268 MB of output
    "043": (4, 32, 256, 5, 65536, 4, 2, "VALID", 8, "float32"),  # Cg 4, Og 32
    "og16": (4, 64, 128, 4, 32768, 1, 1, "CAUSAL", 8, "bfloat16"),  # Cg 8, Og 16
    "ck96": (4, 128, 32, 6, 32768, 1, 2, "SAME", 8, "bfloat16"),  # Cg 16, K 6: Cg * K = 96
    "ck128": (4, 128, 64, 8, 32768, 1, 1, "SAME", 8, "float32"),  # Cg 16, K 8: Cg * K = 128, Og 8
}


def inputs(shape, layout, key):
    n, c, o, k, length, stride, dilation, padding, groups, dtype = shape
    cg = c // groups
    xs, ws = ((n, c, length), (o, cg, k)) if layout == "NCW" else ((n, length, c), (k, cg, o))
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, xs, jnp.float32).astype(dtype)
    w = (jax.random.normal(kw, ws, jnp.float32) / np.sqrt(cg * k)).astype(dtype)
    kw_ = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, layout=layout)
    return x, w, kw_


def xla_fn(shape, layout):
    n, c, o, k, length, stride, dilation, padding, groups, dtype = shape
    dn = ("NCH", "OIH", "NCH") if layout == "NCW" else ("NHC", "HIO", "NHC")
    if padding == "CAUSAL":
        pads = [((k - 1) * dilation, 0)]
    else:
        pads = padding
    return jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (stride,), pads, rhs_dilation=(dilation,),
                                                         dimension_numbers=dn, feature_group_count=groups))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(f"device: {dev.device_kind}  jax {jax.__version__}")
    key = jax.random.key(0)
    names = args.names or list(SHAPES)
    print(f"{'shape':8s} {'layout':6s} {'grouped ms':>10s} {'igemm ms':>9s} {'xla ms':>8s} {'floor ms':>8s} "
          f"{'grp/floor':>9s} {'rel diff':>9s}")
    for name in names:
        shape = SHAPES[name]
        for layout in ("NCW", "NWC"):
            x, w, kw = inputs(shape, layout, key)
            ours = jax.jit(lambda x, w, kw=kw: dilated_conv1d(x, w, **kw))
            if args.profile:
                for _ in range(2):
                    ours(x, w).block_until_ready()
                print("ran", name, layout, flush=True)
                continue
            times, outs = {}, {}
            for family in ("grouped", "igemm"):
                os.environ["JAX_CONV1D_FWD_KERNEL"] = family
                outs[family] = np.asarray(ours(x, w).astype(jnp.float32))
                times[family] = time_call(ours, (x, w), budget_s=0.5)
            os.environ["JAX_CONV1D_FWD_KERNEL"] = "auto"
            t_xla = time_call(xla_fn(shape, layout), (x, w), budget_s=0.5)
            y = outs["grouped"]
            nbytes = x.size * x.dtype.itemsize + y.size * x.dtype.itemsize
            floor = nbytes / 3.02e12
            diff = np.linalg.norm(y - outs["igemm"]) / max(np.linalg.norm(outs["igemm"]), 1e-30)
            print(f"{name:8s} {layout:6s} {times['grouped'] * 1e3:10.3f} {times['igemm'] * 1e3:9.3f} "
                  f"{t_xla * 1e3:8.3f} {floor * 1e3:8.4f} {floor / times['grouped']:9.1%} {diff:9.2e}", flush=True)


if __name__ == "__main__":
    main()
