"""K = 2 stride-1 forward (WaveNet's layers): the 64 x 64 warp tiles against the tiles before, one process.

    python benchmarks/k2fwd_ab.py [--quick]

Variants are environment settings the C++ dispatcher reads at every call, so each row of a case runs the same
compiled executable:
  old      JAX_CONV1D_IGEMM_WIDE=0: the 64 x 32 warp tiles (128 x 128 for the forward, 64 x 256 for the dx);
  default  the dispatcher's choice (128 x 256 wide warp tiles for NWC float32 stride-1 K = 2 when its plan keeps
           two channel chunks per step and staged stores);
  w64x512, w128x256  JAX_CONV1D_IGEMM_TILE pinned; w128x256-1c: 128 x 256 with one channel chunk per step;
  *-mma    JAX_CONV1D_IGEMM_DIAG=6: the MMA loop and the barriers only (wrong results; what the loop costs).
Cases: wavenet_dense's forward (N16, the bench row), the training step's N8 layer (d1, d64, d128, d512) forward and
its input gradient alone (dx through jax.vjp in x only: the stride-1 dgrad runs the forward kernel), and the
headline NWC float32 forward (K = 3: must not change). Per row: median ms (bench.time_call), % of the byte
floor at the measured copy bandwidth, and the relative difference to the old variant's output (0 expected:
the wide tiles add in the same order).
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

from jax_conv1d import dilated_conv1d
from jax_conv1d.bench import Case, copy_bandwidth, make_inputs, ours_forward, time_call, xla_forward

VARIANTS = {
    "old": {"JAX_CONV1D_IGEMM_WIDE": "0"},
    "default": {},
    "w64x512": {"JAX_CONV1D_IGEMM_TILE": "64x512"},
    "w128x256": {"JAX_CONV1D_IGEMM_TILE": "128x256"},
    "w128x256-1c": {"JAX_CONV1D_IGEMM_TILE": "128x256", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "1"},
    "old-mma": {"JAX_CONV1D_IGEMM_WIDE": "0", "JAX_CONV1D_IGEMM_DIAG": "6"},
    "default-mma": {"JAX_CONV1D_IGEMM_DIAG": "6"},
}
KEYS = ("JAX_CONV1D_IGEMM_WIDE", "JAX_CONV1D_IGEMM_TILE", "JAX_CONV1D_IGEMM_STEP_CHUNKS", "JAX_CONV1D_IGEMM_DIAG")


def set_variant(name):
    for k in KEYS:
        os.environ.pop(k, None)
    os.environ.update(VARIANTS[name])


def dx_of(case):
    def f(x, w, b, dy):
        _, vjp = jax.vjp(lambda x_: dilated_conv1d(x_, w, b, stride=case.stride, dilation=case.dilation,
                                                   padding=case.pads, layout=case.layout), x)
        return vjp(dy)[0]

    return f


def nbytes(*arrays):
    return sum(a.size * a.dtype.itemsize for a in arrays if a is not None)


def run_case(case, passes, variants, bw, with_xla):
    x, w, b, ky = make_inputs(case, jax.random.key(0))
    for pass_ in passes:
        if pass_ == "fwd":
            fn = jax.jit(ours_forward(case))
            args = (x, w, b)
            floor_bytes = nbytes(x, w, b) + x.shape[0] * case.out_length * case.o * 4
        else:
            dy = jax.random.normal(ky, case.shapes()[2], jnp.float32)
            fn = jax.jit(dx_of(case))
            args = (x, w, b, dy)
            floor_bytes = nbytes(dy, w) + nbytes(x)
        floor_ms = floor_bytes / bw * 1e3
        ref = None
        for v in variants:
            set_variant(v)
            out = fn(*args)
            diff = float("nan")
            if not v.endswith("-mma"):
                if ref is None:
                    ref = out
                diff = float(jnp.max(jnp.abs(out - ref)))
            del out
            ms = time_call(fn, args, budget_s=1.5) * 1e3
            print(f"{case.name:16s} {pass_:3s} {v:12s} {ms:8.3f} ms  {100 * floor_ms / ms:5.1f} % of floor "
                  f"({floor_ms:.3f})  max|diff| vs first {diff:.1e}", flush=True)
        set_variant("default")
        del ref
        if with_xla and pass_ == "fwd":
            xf = jax.jit(xla_forward(case, "default"))
            ms = time_call(xf, args, budget_s=1.5) * 1e3
            print(f"{case.name:16s} fwd XLA          {ms:8.3f} ms", flush=True)
    del x, w, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="default and old only (wavenet_dense twice)")
    args = ap.parse_args()
    print(jax.devices()[0].device_kind, "jax", jax.__version__, flush=True)
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.3f} TB/s", flush=True)
    full = ["old", "default", "w64x512", "w128x256-1c", "old-mma", "default-mma"]
    two = ["old", "default"]
    wn = dict(padding="CAUSAL", layout="NWC", bias=True)
    run_case(Case("wavenet_dense", 16, 128, 256, 2, 65536, dilation=64, **wn), ["fwd"],
             two + two if args.quick else full, bw, True)
    for d in (64, 1, 128, 512):
        case = Case(f"layer N8 d{d}", 8, 128, 256, 2, 65536, dilation=d, **wn)
        fwd = two + ["w128x256"] if d == 128 else two
        run_case(case, ["fwd"], fwd if args.quick or d != 64 else full, bw, False)
        if d == 64 or not args.quick:
            # dx: o = 128 rows of weights over 256 channels only fit the 64-row tiles (64 x 256 stays the default)
            run_case(case, ["dx"], two + ["w64x512"] if args.quick or d != 64 else
                     ["old", "default", "w64x512", "old-mma", "default-mma"], bw, False)
    run_case(Case("headline NWC f32", 64, 64, 128, 3, 524280, stride=3, dilation=4, layout="NWC"), ["fwd"], two, bw,
             False)


if __name__ == "__main__":
    main()
