"""The NWC headline forward (N = 16 by default), ours and XLA's, for Nsight Compute with profiling limited to the
measured calls (compilation and XLA's autotuning stay outside):

    XLA_PYTHON_CLIENT_PREALLOCATE=false ncu --profile-from-start off --section MemoryWorkloadAnalysis ... \\
        python benchmarks/nwc_ncu.py [--n 16] [--dtypes f32,bf16] [--ours-env TILE=128x64,STEP_CHUNKS=4]

Each configuration is compiled and run twice first, then run once between cuProfilerStart and cuProfilerStop
(the driver API through ctypes, with the primary context made current on this thread).
"""

import argparse
import ctypes
import os

import jax

from jax_conv1d.bench import Case, make_inputs, ours_forward, xla_forward

_cuda = ctypes.CDLL("libcuda.so.1")


def _make_primary_current():
    dev = ctypes.c_int()
    ctx = ctypes.c_void_p()
    assert _cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert _cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
    assert _cuda.cuCtxSetCurrent(ctx) == 0


def profiled(fn, *args):
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    _make_primary_current()
    assert _cuda.cuProfilerStart() == 0
    jax.block_until_ready(fn(*args))
    assert _cuda.cuProfilerStop() == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--ours-env", action="append", default=[],
                    help="extra runs of ours with JAX_CONV1D_IGEMM_<K>=<V>,... set (repeatable)")
    args = ap.parse_args()
    for short in args.dtypes.split(","):
        dtype = "float32" if short == "f32" else "bfloat16"
        case = Case(f"headline/{short}/NWC", args.n, 64, 128, 3, 524280, stride=3, dilation=4, padding="VALID",
                    layout="NWC", dtype=dtype)
        x, w, _, _ = make_inputs(case, jax.random.key(0))
        print("profiling XLA", case.describe(), flush=True)
        profiled(jax.jit(xla_forward(case, "default")), x, w, None)
        ours = jax.jit(ours_forward(case))
        for extra in [""] + args.ours_env:
            env = dict(kv.split("=") for kv in extra.split(",") if kv)
            for k, v in env.items():
                os.environ["JAX_CONV1D_IGEMM_" + k] = v
            print("profiling ours", case.describe(), extra or "(default)", flush=True)
            profiled(ours, x, w, None)
            for k in env:
                os.environ.pop("JAX_CONV1D_IGEMM_" + k, None)
        del x, w


if __name__ == "__main__":
    main()
