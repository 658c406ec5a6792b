"""Depthwise forward variants timed in one process: the sliding-window NWC kernel against the per-tap one,
pipeline plans, and parts switched off.

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
from jax_conv1d.bench import copy_bandwidth, time_call

CASES = {
    # name: (x shape, w shape, kwargs, dtype)
    "depthwise_tcn": ((16, 65536, 512), (7, 1, 512), dict(dilation=8, padding="SAME", groups=512), jnp.float32),
    "depthwise_tcn_d1": ((16, 65536, 512), (7, 1, 512), dict(dilation=1, padding="SAME", groups=512), jnp.float32),
    "mamba_dw_causal": ((8, 2048, 5120), (4, 1, 5120), dict(padding="CAUSAL", groups=5120), jnp.bfloat16),
}

CONFIGS = [
    ("per-tap kernel (v5)", {"JAX_CONV1D_DW_CHAIN": "0"}),
    ("sliding window, register stores", {"JAX_CONV1D_DW_TMA_STORE": "0"}),
    ("sliding window, tensor-map stores", {}),
    ("tensor-map stores, 3 stages", {"JAX_CONV1D_DW_STAGES": "3"}),
    ("tensor-map stores, no taps", {"JAX_CONV1D_DW_DIAG": "1"}),
    ("tensor-map stores, no stores", {"JAX_CONV1D_DW_DIAG": "4"}),
    ("register stores, no taps", {"JAX_CONV1D_DW_TMA_STORE": "0", "JAX_CONV1D_DW_DIAG": "1"}),
    ("per-tap kernel (again)", {"JAX_CONV1D_DW_CHAIN": "0"}),
    ("register stores (again)", {"JAX_CONV1D_DW_TMA_STORE": "0"}),
    ("tensor-map stores (again)", {}),
]
KNOBS = ("JAX_CONV1D_DW_CHAIN", "JAX_CONV1D_DW_BLOCKS", "JAX_CONV1D_DW_STAGES", "JAX_CONV1D_DW_DIAG",
         "JAX_CONV1D_DW_TMA_STORE")


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
        y_old = np.asarray(f(x, w, b).astype(jnp.float32))
        for label, env in (("register stores", {"JAX_CONV1D_DW_TMA_STORE": "0"}), ("tensor-map stores", {})):
            set_env(env)
            y_new = np.asarray(f(x, w, b).astype(jnp.float32))
            same = np.array_equal(y_old.view(np.uint32), y_new.view(np.uint32))
            print(f"{name}: sliding window, {label}, bitwise equal to per-tap: {same}", flush=True)
            del y_new
        del y_old
        floor = (x.size * x.dtype.itemsize * 2 + w.size * w.dtype.itemsize) / bw
        for label, env in CONFIGS:
            set_env(env)
            t = time_call(f, (x, w, b))
            print(f"{name:18s} {label:30s} {t * 1e3:8.4f} ms  {floor / t * 100:5.1f}% of floor", flush=True)
        set_env({})
        del x, w, b


if __name__ == "__main__":
    main()
