"""Depthwise forward variants timed in one process: the sliding-window NWC kernel's tiles (JAX_CONV1D_DW_TILE),
output buffers (JAX_CONV1D_DW_OUT_BUFS), tile coordinates (JAX_CONV1D_DW_COORDS32), parts switched off;
the default repeated with XLA in between (spread within one process) and the compiled program's ops.

    python benchmarks/dw_fwd_diag.py [case ...]

The knobs are read per call (csrc/cuda/fwd_depthwise.cu): JAX_CONV1D_DW_CHAIN=0 (per-tap kernel),
JAX_CONV1D_DW_BLOCKS (blocks per multiprocessor the pipeline is sized for), JAX_CONV1D_DW_STAGES (depth cap),
JAX_CONV1D_DW_DIAG (1: no taps, 4: no stores; wrong results), JAX_CONV1D_DW_TMA_STORE=0 (stores from
registers instead of through a shared-memory tile and the copy engine). Times are bench.time_call medians
(batches of back-to-back calls). Before timing, each case's outputs of the three variants are compared bitwise.
"""

import os
import sys

import numpy as np

import jax
import jax.numpy as jnp

from jax_conv1d import dilated_conv1d
from jax_conv1d._timing import median_ms
from jax_conv1d.bench import copy_bandwidth, time_call

REPEAT = {"mamba_dw_causal": 3, "depthwise_tcn": 1}


def lax_reference(x, w, b, kw):
    """XLA's convolution of the same layer (the bench's comparison)."""
    pad = kw["padding"]
    k, d = w.shape[0], kw.get("dilation", 1)
    if pad == "CAUSAL":
        pad = [((k - 1) * d, 0)]
    y = jax.lax.conv_general_dilated(x, w, (1,), pad, rhs_dilation=(d,), dimension_numbers=("NWC", "WIO", "NWC"),
                                     feature_group_count=kw["groups"])
    return y + b

CASES = {
    # name: (x shape, w shape, kwargs, dtype)
    "depthwise_tcn": ((16, 65536, 512), (7, 1, 512), dict(dilation=8, padding="SAME", groups=512), jnp.float32),
    "depthwise_tcn_d1": ((16, 65536, 512), (7, 1, 512), dict(dilation=1, padding="SAME", groups=512), jnp.float32),
    "mamba_dw_causal": ((8, 2048, 5120), (4, 1, 5120), dict(padding="CAUSAL", groups=5120), jnp.bfloat16),
}

S6 = {"JAX_CONV1D_DW_TILE": "128", "JAX_CONV1D_DW_COORDS32": "0"}
T64 = {"JAX_CONV1D_DW_TILE": "64"}
T64B = {"JAX_CONV1D_DW_TILE": "64", "JAX_CONV1D_DW_OUT_BUFS": "2"}
B2 = {"JAX_CONV1D_DW_OUT_BUFS": "2"}
# Two rounds in the same order, so a drift of the machine shows as a difference between the rounds.
CONFIGS = [
    ("s6 kernel (tile 128, 64-bit coords)", S6),
    ("default (tile 128, 32-bit coords)", {}),
    ("tile 64 (32 vectors, 512-byte rows)", T64),
    ("tile 64, 2 out buffers", T64B),
    ("tile 128, 2 out buffers", B2),
    ("tile 64, no stores", {**T64, "JAX_CONV1D_DW_DIAG": "4"}),
    ("tile 128, no stores", {"JAX_CONV1D_DW_DIAG": "4"}),
] * 2
# Variants whose outputs must be bitwise those of the per-tap kernel.
SAME_AS_PER_TAP = [("s6 kernel", S6), ("default", {}), ("tile 64", T64), ("tile 64, 2 out buffers", T64B),
                   ("tile 128, 2 out buffers", B2)]
KNOBS = ("JAX_CONV1D_DW_CHAIN", "JAX_CONV1D_DW_BLOCKS", "JAX_CONV1D_DW_STAGES", "JAX_CONV1D_DW_DIAG",
         "JAX_CONV1D_DW_TMA_STORE", "JAX_CONV1D_DW_TILE", "JAX_CONV1D_DW_OUT_BUFS",
         "JAX_CONV1D_DW_COORDS32")


@jax.jit
def bitwise_equal(a, b):
    bits = jnp.uint32 if a.dtype.itemsize == 4 else jnp.uint16
    return jnp.all(jax.lax.bitcast_convert_type(a, bits) == jax.lax.bitcast_convert_type(b, bits))


def set_env(env):
    for k in KNOBS:
        os.environ.pop(k, None)
    os.environ.update(env)


def main():
    names = sys.argv[1:] or list(CASES)
    bw = copy_bandwidth()
    print(jax.devices()[0].device_kind, "jax", jax.__version__, f"copy bandwidth {bw / 1e12:.3f} TB/s", flush=True)
    for name in names:
        xs, ws, kw, dt = CASES[name]
        x = jax.random.normal(jax.random.key(0), xs, jnp.float32).astype(dt)
        w = (jax.random.normal(jax.random.key(1), ws, jnp.float32) / np.sqrt(ws[0])).astype(dt)
        b = jax.random.normal(jax.random.key(2), (ws[-1],), jnp.float32).astype(dt)
        f = jax.jit(lambda x, w, b: dilated_conv1d(x, w, b, layout="NWC", **kw))
        set_env({"JAX_CONV1D_DW_CHAIN": "0"})
        y_old = f(x, w, b)
        for label, env in SAME_AS_PER_TAP:
            set_env(env)
            same = bool(bitwise_equal(y_old, f(x, w, b)))
            print(f"{name}: {label}, bitwise equal to per-tap: {same}", flush=True)
        del y_old
        floor = (x.size * x.dtype.itemsize * 2 + w.size * w.dtype.itemsize) / bw
        for label, env in CONFIGS:
            set_env(env)
            t = time_call(f, (x, w, b))
            print(f"{name:18s} {label:38s} {t * 1e3:8.4f} ms  {floor / t * 100:5.1f}% of floor", flush=True)
        if name in REPEAT:
            # Spread within one process: the default five more times, XLA between them, single-call medians.
            xla = jax.jit(lambda x, w, b: lax_reference(x, w, b, kw))
            for r in range(REPEAT[name]):
                set_env({})
                t = time_call(f, (x, w, b))
                tx = time_call(xla, (x, w, b))
                t1 = median_ms(f, x, w, b, reps=50)
                print(f"{name:18s} default, repeat {r}: batched {t * 1e3:.4f} ms ({floor / t * 100:.1f}% of floor), "
                      f"XLA {tx * 1e3:.4f} ms ({tx / t:.1f}x), single calls {t1:.4f} ms", flush=True)
            hlo = f.lower(x, w, b).compile().as_text()
            ops = [ln.strip()[:160] for ln in hlo.splitlines() if "custom-call" in ln or "fusion" in ln.split("=")[0]
                   or ln.strip().startswith("ROOT")]
            print(f"{name}: compiled program, {len(ops)} op lines:", *ops, sep="\n  ", flush=True)
        set_env({})
        del x, w, b


if __name__ == "__main__":
    main()
