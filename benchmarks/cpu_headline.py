"""jax_conv1d vs XLA:CPU, in one process, on the CPU-scaled headline workload and two layers from real models.

Both sides run under jit after a warm-up; timings alternate (ours, XLA, ours, XLA, ...) so that load from
other processes on a shared machine hits both alike, and the report gives each side's median and the ratio.

    python benchmarks/cpu_headline.py                 # every case
    python benchmarks/cpu_headline.py --case headline --reps 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

jax.config.update("jax_platforms", "cpu")

import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from jax_conv1d import dilated_conv1d  # noqa: E402


def _lax_conv(x, w, *, stride, dilation, padding, groups, layout):
    dn = ("NCH", "OIH", "NCH") if layout == "NCW" else ("NHC", "HIO", "NHC")
    if padding == "CAUSAL":
        k = w.shape[2] if layout == "NCW" else w.shape[0]
        padding = [((k - 1) * dilation, 0)]
    return lax.conv_general_dilated(x, w, (stride,), padding, rhs_dilation=(dilation,),
                                    dimension_numbers=dn, feature_group_count=groups)


def _ours(x, w, **kw):
    return dilated_conv1d(x, w, **kw)


# name -> (x shape, w shape, conv kwargs); shapes follow the layout given in kwargs.
CASES = {
    "headline": [
        ((8, 64, 65535), (128, 64, 3), dict(stride=3, dilation=4, padding="VALID", groups=1, layout="NCW")),
        ((8, 65535, 64), (3, 64, 128), dict(stride=3, dilation=4, padding="VALID", groups=1, layout="NWC")),
    ],
    "depthwise": [
        ((2, 8192, 512), (7, 1, 512), dict(stride=1, dilation=8, padding="SAME", groups=512, layout="NWC")),
    ],
    "wavenet": [
        ((2, 8192, 128), (2, 128, 256), dict(stride=1, dilation=64, padding="CAUSAL", groups=1, layout="NWC")),
    ],
}


def _fns(conv, kw):
    """Forward, both gradients, and each gradient alone; all take (x, w, g)."""

    def loss(x, w, g):
        return jnp.sum(conv(x, w, **kw) * g)

    return {
        "fwd": jax.jit(lambda x, w, g: conv(x, w, **kw)),
        "bwd": jax.jit(jax.grad(loss, argnums=(0, 1))),
        "dx": jax.jit(jax.grad(loss, argnums=0)),
        "dw": jax.jit(jax.grad(loss, argnums=1)),
    }


LABELS = {"fwd": "forward", "bwd": "backward (dx+dw)", "dx": "input grad only", "dw": "weight grad only"}


def _time(fn, args):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) * 1e3


def _compare(label, ours, xla, args, reps):
    for f in (ours, xla):  # compile + warm up
        jax.block_until_ready(f(*args))
        jax.block_until_ready(f(*args))
    t_ours, t_xla = [], []
    for _ in range(reps):
        t_ours.append(_time(ours, args))
        t_xla.append(_time(xla, args))
    mo, mx = statistics.median(t_ours), statistics.median(t_xla)
    print(f"{label:34s} ours {mo:8.1f} ms   XLA {mx:8.1f} ms   ours/XLA {mo / mx:5.2f}", flush=True)
    return mo, mx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=sorted(CASES), action="append")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pass", dest="passes", choices=sorted(LABELS), action="append",
                    help="default: fwd and bwd")
    args = ap.parse_args()
    passes = args.passes or ["fwd", "bwd"]
    key = jax.random.PRNGKey(0)
    print(f"jax {jax.__version__}, devices {jax.devices()}")
    for case in args.case or list(CASES):
        for x_shape, w_shape, kw in CASES[case]:
            kx, kw_, kg = jax.random.split(jax.random.fold_in(key, hash(case) % 1000), 3)
            x = jax.random.normal(kx, x_shape, jnp.float32)
            w = jax.random.normal(kw_, w_shape, jnp.float32) * 0.1
            y_shape = jax.eval_shape(lambda a, b: _lax_conv(a, b, **kw), x, w).shape
            g = jax.random.normal(kg, y_shape, jnp.float32)
            ours, xla = _fns(_ours, kw), _fns(_lax_conv, kw)
            for name in passes:
                _compare(f"{case} {kw['layout']} {LABELS[name]}", ours[name], xla[name], (x, w, g), args.reps)


if __name__ == "__main__":
    main()
