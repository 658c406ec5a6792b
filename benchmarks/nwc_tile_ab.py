"""The NWC headline forward (x (N, 524280, 64), w (3, 64, 128), stride 3, dilation 4) under tile and pipeline
knobs, with XLA in the same process (session 7, docs/notes/nwcfwd7_session7.md).

    python benchmarks/nwc_tile_ab.py [--n 64] [--dtypes f32,bf16] [--rows LABEL,LABEL]

Every row runs the same compiled executable: the knobs (JAX_CONV1D_IGEMM_TILE, _STEP_CHUNKS, _STAGES, _DIAG)
are read per call. Times are bench.time_call's medians of batched back-to-back calls. For each full-kernel row
the output is compared with the first row's bit for bit (the tiles and step sizes keep each output's
accumulation order, so any difference is a bug) and with XLA's (relative error).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from jax_conv1d.bench import Case, copy_bandwidth, make_inputs, ours_forward, time_call, xla_forward
from jax_conv1d._timing import relative_error

KNOBS = ("JAX_CONV1D_IGEMM_TILE", "JAX_CONV1D_IGEMM_STEP_CHUNKS", "JAX_CONV1D_IGEMM_STAGES",
         "JAX_CONV1D_IGEMM_DIAG", "JAX_CONV1D_IGEMM_STORE_EVICT")

ROWS = [
    # label, env; DIAG rows (4: no stores, 5: copies only) give wrong results and are not compared
    ("default", {}),
    ("128x128 step1", {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "1"}),
    ("128x128 step2", {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "2"}),
    ("128x64 step4", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "4"}),
    ("128x64 step2", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "2"}),
    ("128x64 step2 8st", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "2",
                          "JAX_CONV1D_IGEMM_STAGES": "8"}),
    ("128x64 step1", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "1"}),
    ("128x64 step1 8st", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "1",
                          "JAX_CONV1D_IGEMM_STAGES": "8"}),
    ("128x256", {"JAX_CONV1D_IGEMM_TILE": "128x256"}),
    ("128x256 step2", {"JAX_CONV1D_IGEMM_TILE": "128x256", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "2"}),
    ("default normal-evict", {"JAX_CONV1D_IGEMM_STORE_EVICT": "normal"}),
    ("128x64 step4 normal-evict", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "4",
                                   "JAX_CONV1D_IGEMM_STORE_EVICT": "normal"}),
    ("default no-stores", {"JAX_CONV1D_IGEMM_DIAG": "4"}),
    ("default copies-only", {"JAX_CONV1D_IGEMM_DIAG": "5"}),
    ("128x64 step4 no-stores", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "4",
                                "JAX_CONV1D_IGEMM_DIAG": "4"}),
    ("128x64 step4 copies-only", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "4",
                                  "JAX_CONV1D_IGEMM_DIAG": "5"}),
    ("128x64 step2 no-stores", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "2",
                                "JAX_CONV1D_IGEMM_DIAG": "4"}),
    ("default again", {}),
]

# After the short tile became the default for the f32 headline: it against the session-6 plan and its
# neighbours, in rounds (the spread between repeated rows of one process was 3 % in the first call).
OLD_F32 = {"JAX_CONV1D_IGEMM_TILE": "128x128", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "2", "JAX_CONV1D_IGEMM_STORE_EVICT": "first"}
ROWS_FINAL = {
    "f32": [
        ("default (short, step4, normal)", {}),
        ("session-6 plan (128x128 step2 first)", OLD_F32),
        ("short step4 evict-first", {"JAX_CONV1D_IGEMM_STORE_EVICT": "first"}),
        ("short step2 8st normal", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "2",
                                    "JAX_CONV1D_IGEMM_STAGES": "8"}),
        ("short step2 8st first", {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "2",
                                   "JAX_CONV1D_IGEMM_STAGES": "8", "JAX_CONV1D_IGEMM_STORE_EVICT": "first"}),
    ],
    "bf16": [
        ("default (128x128 step1)", {}),
        ("128x128 step2", {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "2"}),
    ],
}


def set_knobs(env):
    for k in KNOBS:
        os.environ.pop(k, None)
    os.environ.update(env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--rows", default=None, help="comma-separated labels (default: all)")
    ap.add_argument("--final", type=int, default=0, help="ROWS_FINAL in this many rounds instead of ROWS")
    ap.add_argument("--others", action="store_true", help="also time wavenet_dense and the NCW f32 headline")
    args = ap.parse_args()
    rows = ROWS if args.rows is None else [r for r in ROWS if r[0] in args.rows.split(",")]
    bw = copy_bandwidth()
    print(jax.devices()[0].device_kind, "jax", jax.__version__, f"copy {bw / 1e12:.3f} TB/s", flush=True)
    for short in args.dtypes.split(","):
        dtype = "float32" if short == "f32" else "bfloat16"
        case = Case(f"headline/{short}/NWC", args.n, 64, 128, 3, 524280, stride=3, dilation=4, padding="VALID",
                    layout="NWC", dtype=dtype)
        x, w, _, _ = make_inputs(case, jax.random.key(0))
        ours = jax.jit(ours_forward(case))
        xla = jax.jit(xla_forward(case, "default"))
        set_knobs({})
        y_xla = xla(x, w, None)
        item = jnp.dtype(dtype).itemsize
        nbytes = (x.size + y_xla.size) * item
        floor_ms = nbytes / bw * 1e3
        t_xla = time_call(xla, (x, w, None)) * 1e3
        print(f"{case.name} {case.describe()}  moves {nbytes / 1e9:.2f} GB, floor {floor_ms:.3f} ms", flush=True)
        print(f"  {'XLA':28s} {t_xla:8.3f} ms  {nbytes / t_xla / 1e9:6.3f} TB/s", flush=True)
        y_ref = None
        dtype_rows = rows
        if args.final:
            dtype_rows = []
            for r in range(args.final):
                dtype_rows += [(f"{label} [{r}]", env) for label, env in ROWS_FINAL[short]] + [("XLA", None)]
        for label, env in dtype_rows:
            if env is None:
                set_knobs({})
                t = time_call(xla, (x, w, None)) * 1e3
                print(f"  {label:28s} {t:8.3f} ms", flush=True)
                continue
            set_knobs(env)
            try:
                t = time_call(ours, (x, w, None)) * 1e3
            except Exception as e:  # a pinned tile that does not fit falls back; anything else is reported
                print(f"  {label:28s} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
            note = ""
            if "JAX_CONV1D_IGEMM_DIAG" not in env:
                y = ours(x, w, None)
                if y_ref is None:
                    y_ref = y
                    note = f"rel err vs XLA {relative_error(y, y_xla):.2e}"
                else:
                    same = bool(jnp.array_equal(y, y_ref))
                    note = "bitwise = default" if same else (
                        f"DIFFERS from default (max {float(jnp.max(jnp.abs(y.astype(jnp.float32) - y_ref.astype(jnp.float32)))):.3e})")
                del y
            print(f"  {label:28s} {t:8.3f} ms  {nbytes / t / 1e9:6.3f} TB/s  x{t_xla / t:5.3f} of XLA  "
                  f"{floor_ms / t * 100:5.1f}% floor  {note}", flush=True)
        set_knobs({})
        t_xla2 = time_call(xla, (x, w, None)) * 1e3
        print(f"  {'XLA again':28s} {t_xla2:8.3f} ms", flush=True)
        del x, w, y_xla, y_ref
    if args.others:
        set_knobs({})
        for case in (Case("wavenet_dense", 16, 128, 256, 2, 65536, dilation=64, padding="CAUSAL", layout="NWC",
                          bias=True),
                     Case("headline/f32/NCW", 64, 64, 128, 3, 524280, stride=3, dilation=4, padding="VALID",
                          layout="NCW")):
            x, w, b, _ = make_inputs(case, jax.random.key(0))
            t = time_call(jax.jit(ours_forward(case)), (x, w, b)) * 1e3
            print(f"{case.name} {case.describe()}  ours {t:8.3f} ms", flush=True)
            del x, w, b


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
