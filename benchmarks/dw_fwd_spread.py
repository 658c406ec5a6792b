"""Where the depthwise forward's run-to-run spread comes from: the same executable timed after shifting the
allocator by a padding buffer (so the output lands elsewhere), with the output's offset from the input and the
GPU's SM clock, power and throttle reasons read beside each measurement.

    python benchmarks/dw_fwd_spread.py [case ...]

Per point: the median of single synchronous calls (each call's output freed before the next, so they reuse
one address) and bench.time_call's batched median.
"""

import statistics
import subprocess
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp

from jax_conv1d import dilated_conv1d
from jax_conv1d.bench import time_call

CASES = {
    "depthwise_tcn": ((16, 65536, 512), (7, 1, 512), dict(dilation=8, padding="SAME", groups=512), jnp.float32),
    "mamba_dw_causal": ((8, 2048, 5120), (4, 1, 5120), dict(padding="CAUSAL", groups=5120), jnp.bfloat16),
}
PADS_MIB = (0, 64, 128, 256, 512, 1024, 1536, 2048, 2304, 3072)


def gpu_state():
    q = "clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except Exception as err:  # the reading is a side note; never fail the timing over it
        out = f"({type(err).__name__})"
    return out


def main():
    names = sys.argv[1:] or list(CASES)
    print(jax.devices()[0].device_kind, "jax", jax.__version__, flush=True)
    for name in names:
        xs, ws, kw, dt = CASES[name]
        x = jax.random.normal(jax.random.key(0), xs, jnp.float32).astype(dt)
        w = (jax.random.normal(jax.random.key(1), ws, jnp.float32) / np.sqrt(ws[0])).astype(dt)
        b = jax.random.normal(jax.random.key(2), (ws[-1],), jnp.float32).astype(dt)
        f = jax.jit(lambda x, w, b: dilated_conv1d(x, w, b, layout="NWC", **kw))
        jax.block_until_ready(f(x, w, b))
        xp = x.unsafe_buffer_pointer()
        for rep in range(2):
            for mib in PADS_MIB if rep == 0 else PADS_MIB[::-1]:
                pad = jnp.zeros((mib << 18,), jnp.float32).block_until_ready() if mib else None
                singles, ptrs = [], set()
                for _ in range(9):
                    t0 = time.perf_counter()
                    y = f(x, w, b)
                    y.block_until_ready()
                    singles.append(time.perf_counter() - t0)
                    ptrs.add(y.unsafe_buffer_pointer())
                    del y
                batched = time_call(f, (x, w, b))
                offs = " ".join(f"{(p - xp) / 2**20:+.0f}" for p in sorted(ptrs))
                print(f"{name} rep {rep} pad {mib:5d} MiB: single {statistics.median(singles) * 1e3:.4f} ms, "
                      f"batched {batched * 1e3:.4f} ms, y - x [MiB] {offs}, y mod 1 GiB "
                      f"{' '.join(str((p % 2**30) >> 20) for p in sorted(ptrs))} MiB | {gpu_state()}", flush=True)
                del pad
        del x, w, b


if __name__ == "__main__":
    main()
