"""The wgmma (sm_90a) NWC forward against the current default, XLA in the same process (session 8).

    python benchmarks/wgmma_ab.py [--n 64] [--dtypes f32,bf16] [--rounds 2] [--wavenet]

Cases: the NWC headline (x (N, 524280, 64), w (3, 64, 128), stride 3, dilation 4, VALID) per dtype and, with
--wavenet, wavenet_dense's forward (N16, C128 -> O256, K 2, dilation 64, causal, bias). Rows: the default
(mma.sync, fwd_igemm), JAX_CONV1D_WGMMA=1 with each block (JAX_CONV1D_WGMMA_TILE=128x128 / 128x64s / 128x64),
stores straight from the accumulators (JAX_CONV1D_IGEMM_STAGED_STORES=0) and streaming stores, in rounds. Every full row's
output is compared with the default's and XLA's (relative error) and with its own first call (bitwise).
Times are bench.time_call's medians of batched back-to-back calls; knobs are read per call.
"""

import argparse
import os

import jax
import jax.numpy as jnp

from jax_conv1d.bench import Case, copy_bandwidth, make_inputs, ours_forward, time_call, xla_forward
from jax_conv1d._timing import relative_error

KNOBS = ("JAX_CONV1D_WGMMA", "JAX_CONV1D_WGMMA_TILE", "JAX_CONV1D_IGEMM_DIAG", "JAX_CONV1D_IGEMM_STAGED_STORES",
         "JAX_CONV1D_IGEMM_STORE_EVICT")
ROWS = [
    ("default (mma.sync)", {}),
    ("wgmma 128x128 (2 WG)", {"JAX_CONV1D_WGMMA": "1", "JAX_CONV1D_WGMMA_TILE": "128x128"}),
    ("wgmma 128x64s (2 WG split N)", {"JAX_CONV1D_WGMMA": "1", "JAX_CONV1D_WGMMA_TILE": "128x64s"}),
    ("wgmma 128x64 (1 WG)", {"JAX_CONV1D_WGMMA": "1", "JAX_CONV1D_WGMMA_TILE": "128x64"}),
    ("wgmma 128x128 unstaged", {"JAX_CONV1D_WGMMA": "1", "JAX_CONV1D_WGMMA_TILE": "128x128",
                                "JAX_CONV1D_IGEMM_STAGED_STORES": "0"}),
    ("wgmma 128x128 evict-first", {"JAX_CONV1D_WGMMA": "1", "JAX_CONV1D_WGMMA_TILE": "128x128",
                                   "JAX_CONV1D_IGEMM_STORE_EVICT": "first"}),
]


def set_knobs(env):
    for k in KNOBS:
        os.environ.pop(k, None)
    os.environ.update(env)


def run_case(case, rounds, bw):
    x, w, b, _ = make_inputs(case, jax.random.key(0))
    ours = jax.jit(ours_forward(case))
    xla = jax.jit(xla_forward(case, "default"))
    set_knobs({})
    y_xla = xla(x, w, b)
    item = jnp.dtype(case.dtype).itemsize
    nbytes = (x.size + y_xla.size) * item
    floor_ms = nbytes / bw * 1e3
    print(f"{case.name} {case.describe()}  moves {nbytes / 1e9:.2f} GB, floor {floor_ms:.3f} ms", flush=True)
    y_def = ours(x, w, b)
    print(f"  default vs XLA rel err {relative_error(y_def, y_xla):.2e}", flush=True)
    for r in range(rounds):
        t = time_call(xla, (x, w, b)) * 1e3
        print(f"  [{r}] {'XLA':26s} {t:8.3f} ms", flush=True)
        t_xla = t
        for label, env in ROWS:
            set_knobs(env)
            try:
                t = time_call(ours, (x, w, b)) * 1e3
            except Exception as e:
                print(f"  [{r}] {label:26s} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            note = ""
            if "JAX_CONV1D_IGEMM_DIAG" not in env and r == 0:
                y1, y2 = ours(x, w, b), ours(x, w, b)
                note = (f"rel err vs XLA {relative_error(y1, y_xla):.2e}, vs default {relative_error(y1, y_def):.2e}, "
                        f"bitwise = default: {bool(jnp.array_equal(y1, y_def))}, repeat bitwise: "
                        f"{bool(jnp.array_equal(y1, y2))}")
                del y1, y2
            print(f"  [{r}] {label:26s} {t:8.3f} ms  x{t_xla / t:5.3f} of XLA  {floor_ms / t * 100:5.1f}% floor  {note}",
                  flush=True)
        set_knobs({})
    del x, w, b, y_xla, y_def


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--wavenet", action="store_true")
    args = ap.parse_args()
    bw = copy_bandwidth()
    print(jax.devices()[0].device_kind, "jax", jax.__version__, f"copy {bw / 1e12:.3f} TB/s", flush=True)
    for short in args.dtypes.split(","):
        dtype = {"f32": "float32", "bf16": "bfloat16"}[short]
        run_case(Case(f"headline/{short}/NWC", args.n, 64, 128, 3, 524280, stride=3, dilation=4, padding="VALID",
                      layout="NWC", dtype=dtype), args.rounds, bw)
    if args.wavenet:
        run_case(Case("wavenet_dense", 16, 128, 256, 2, 65536, dilation=64, padding="CAUSAL", layout="NWC",
                      bias=True), args.rounds, bw)


if __name__ == "__main__":
    main()
