"""Where the forward implicit GEMM's time goes: the same call timed with parts of the kernel switched off.

    python benchmarks/fwd_diag.py [case ...]

JAX_CONV1D_IGEMM_DIAG drops parts of the kernel (1: MMA loop, 2: input copies, 4: output stores; results are
wrong while set), JAX_CONV1D_IGEMM_STAGES caps the pipeline depth, JAX_CONV1D_IGEMM_STEP_CHUNKS sets the
channel chunks per pipeline step (NWC with the copy engine), JAX_CONV1D_IGEMM_STAGED_STORES=0 stores from the
fragments, JAX_CONV1D_IGEMM_STORE_EVICT=normal drops the streaming hint and JAX_CONV1D_IGEMM_MAX_BM=64 takes the
64 x 256 tile; all are read per call, so every row
below runs the same compiled executable in one process. Medians of 15 calls after 2 warm-ups.
"""

import os
import sys

import jax
import jax.numpy as jnp

from jax_conv1d import dilated_conv1d
from jax_conv1d._timing import median_ms

CASES = {
    # name: (x shape, w shape, kwargs, dtype, bias)
    "headline_ncw_f32": ((64, 64, 524280), (128, 64, 3), dict(stride=3, dilation=4, layout="NCW"), jnp.float32, False),
    "headline_nwc_f32": ((64, 524280, 64), (3, 64, 128), dict(stride=3, dilation=4, layout="NWC"), jnp.float32, False),
    "headline_ncw_f32_highest": ((64, 64, 524280), (128, 64, 3),
                                 dict(stride=3, dilation=4, layout="NCW", precision="highest"), jnp.float32, False),
    "headline_ncw_bf16": ((64, 64, 524280), (128, 64, 3), dict(stride=3, dilation=4, layout="NCW"), jnp.bfloat16,
                          False),
    "wavenet_dense": ((16, 65536, 128), (2, 128, 256), dict(dilation=64, padding="CAUSAL", layout="NWC"), jnp.float32,
                      True),
}

CONFIGS = [
    ("full kernel", {}),
    ("no MMA", {"JAX_CONV1D_IGEMM_DIAG": "1"}),
    ("no copies", {"JAX_CONV1D_IGEMM_DIAG": "2"}),
    ("no stores", {"JAX_CONV1D_IGEMM_DIAG": "4"}),
    ("copies only", {"JAX_CONV1D_IGEMM_DIAG": "5"}),
    ("MMA only", {"JAX_CONV1D_IGEMM_DIAG": "6"}),
    ("stores only", {"JAX_CONV1D_IGEMM_DIAG": "3"}),
    ("nothing (barriers + fragments)", {"JAX_CONV1D_IGEMM_DIAG": "7"}),
    ("3 stages", {"JAX_CONV1D_IGEMM_STAGES": "3"}),
    ("unstaged stores", {"JAX_CONV1D_IGEMM_STAGED_STORES": "0"}),
    ("1 chunk per step", {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "1"}),
    ("2 chunks per step", {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "2"}),
    ("2 chunks per step; MMA only", {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "2", "JAX_CONV1D_IGEMM_DIAG": "6"}),
    ("2 chunks per step; nothing", {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "2", "JAX_CONV1D_IGEMM_DIAG": "7"}),
    ("evict-normal stores", {"JAX_CONV1D_IGEMM_STORE_EVICT": "normal"}),
    ("unstaged; evict-normal", {"JAX_CONV1D_IGEMM_STAGED_STORES": "0", "JAX_CONV1D_IGEMM_STORE_EVICT": "normal"}),
    ("stores only; unstaged", {"JAX_CONV1D_IGEMM_DIAG": "3", "JAX_CONV1D_IGEMM_STAGED_STORES": "0"}),
    ("stores only; evict-normal", {"JAX_CONV1D_IGEMM_DIAG": "3", "JAX_CONV1D_IGEMM_STORE_EVICT": "normal"}),
    ("BM 64 x BN 256", {"JAX_CONV1D_IGEMM_MAX_BM": "64"}),
    ("BM 64 x BN 256; evict-normal", {"JAX_CONV1D_IGEMM_MAX_BM": "64", "JAX_CONV1D_IGEMM_STORE_EVICT": "normal"}),
    ("BM 64 x BN 256; stores only", {"JAX_CONV1D_IGEMM_MAX_BM": "64", "JAX_CONV1D_IGEMM_DIAG": "3"}),
    ("evict-first stores", {"JAX_CONV1D_IGEMM_STORE_EVICT": "first"}),
    ("2 chunks per step; evict-first", {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "2", "JAX_CONV1D_IGEMM_STORE_EVICT": "first"}),
    ("full kernel (again)", {}),
]
KNOBS = ("JAX_CONV1D_IGEMM_DIAG", "JAX_CONV1D_IGEMM_STAGES", "JAX_CONV1D_IGEMM_STAGED_STORES", "JAX_CONV1D_FWD_BULK",
         "JAX_CONV1D_IGEMM_STEP_CHUNKS", "JAX_CONV1D_IGEMM_STORE_EVICT", "JAX_CONV1D_IGEMM_MAX_BM")


def main():
    # Arguments: case names, and optionally `--only LABEL,LABEL` to time a subset of the rows.
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = set(args[i + 1].split(","))
        del args[i:i + 2]
    names = args or ["headline_ncw_f32", "headline_nwc_f32", "wavenet_dense"]
    configs = [c for c in CONFIGS if only is None or c[0] in only or c[0] == "full kernel"]
    key = jax.random.key(0)
    print(jax.devices()[0].device_kind, "jax", jax.__version__, flush=True)
    for name in names:
        xs, ws, kw, dt, with_bias = CASES[name]
        x = jax.random.normal(key, xs, jnp.float32).astype(dt)
        w = jax.random.normal(jax.random.key(1), ws, jnp.float32).astype(dt)
        b = jax.random.normal(jax.random.key(2), (ws[0] if kw["layout"] == "NCW" else ws[-1],), dt) if with_bias else None
        f = jax.jit(lambda x, w, b: dilated_conv1d(x, w, b, **kw))
        base = None
        for label, env in configs:
            for k in KNOBS:
                os.environ.pop(k, None)
            os.environ.update(env)
            ms = median_ms(f, x, w, b, warmup=2, reps=15)
            base = base or ms
            print(f"{name:18s} {label:32s} {ms:8.3f} ms  ({ms / base:5.2f} of full)", flush=True)
        for k in KNOBS:
            os.environ.pop(k, None)
        del x, w, b


if __name__ == "__main__":
    main()
