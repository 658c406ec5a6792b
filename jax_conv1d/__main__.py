"""Main job: self-check and benchmark of the headline workload against lax.

    python -m jax_conv1d [--layout NCW|NWC|both] [--dtype float32|bfloat16] [--reps N] [--size auto|full|small]

Headline workload (KernelBench level 1, problem 76): x (64, 64, 524280), w (128, 64, 3), stride 3,
dilation 4, VALID. It runs at full size on a GPU with enough memory; elsewhere it is scaled down (N and L),
and the output says so. For each layout it checks that ours and lax agree (forward and both gradients,
against lax at HIGHEST precision), then prints forward and backward times and speedups.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import dilated_conv1d, has_cuda_handlers
from ._timing import median_ms, relative_error

FULL = dict(n=64, c=64, o=128, k=3, length=524280, stride=3, dilation=4)
SMALL = dict(n=8, c=64, o=128, k=3, length=65535, stride=3, dilation=4)  # the CPU anchors' scaling
# x + y + dx + dy + dw plus XLA's backward scratch (~26 GB at full size) must fit.
FULL_SIZE_BYTES_NEEDED = 60e9


def _device_memory_bytes() -> float | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # backends without memory stats
        return None
    return stats.get("bytes_limit") if stats else None


def _choose_size(requested: str):
    if requested == "full":
        return FULL, "full size"
    if requested == "small":
        return SMALL, "scaled down (N=8, L=65535)"
    mem = _device_memory_bytes()
    if jax.default_backend() == "gpu" and mem is not None and mem >= FULL_SIZE_BYTES_NEEDED:
        return FULL, "full size"
    why = "no GPU" if jax.default_backend() != "gpu" else f"{(mem or 0) / 1e9:.0f} GB of device memory"
    return SMALL, f"scaled down to N=8, L=65535 ({why})"


def _lax_conv(layout, stride, dilation, precision):
    dn = ("NCH", "OIH", "NCH") if layout == "NCW" else ("NHC", "HIO", "NHC")

    def f(x, w):
        return lax.conv_general_dilated(x, w, (stride,), "VALID", rhs_dilation=(dilation,),
                                        dimension_numbers=dn, precision=precision)

    return f


def run_layout(layout: str, dtype, size: dict, reps: int, key) -> list[tuple]:
    n, c, o, k, length = size["n"], size["c"], size["o"], size["k"], size["length"]
    s, d = size["stride"], size["dilation"]
    kx, kw, kg = jax.random.split(key, 3)
    x_shape = (n, c, length) if layout == "NCW" else (n, length, c)
    w_shape = (o, c, k) if layout == "NCW" else (k, c, o)
    x = jax.random.normal(kx, x_shape, dtype)
    w = jax.random.normal(kw, w_shape, dtype) / np.sqrt(c * k)

    ours = jax.jit(lambda x, w: dilated_conv1d(x, w, stride=s, dilation=d, layout=layout))
    xla = jax.jit(_lax_conv(layout, s, d, None))
    ref = jax.jit(_lax_conv(layout, s, d, lax.Precision.HIGHEST))

    y = ours(x, w)
    y_ref = ref(x, w)
    g = jax.random.normal(kg, y.shape, dtype)  # a fixed random cotangent
    err_y = relative_error(y, y_ref)
    del y, y_ref  # at full size every array held here is 5-9 GB

    def vjp_of(f):
        # g is an argument, not a closure: a closed-over array is embedded in the program as a constant
        # (5.7 GB at full size), which makes compilation crawl.
        jitted = jax.jit(lambda x, w, g: jax.vjp(f, x, w)[1](g))
        return lambda x, w: jitted(x, w, g)

    grads = vjp_of(lambda x, w: dilated_conv1d(x, w, stride=s, dilation=d, layout=layout))
    grads_xla = vjp_of(_lax_conv(layout, s, d, None))
    grads_ref = vjp_of(_lax_conv(layout, s, d, lax.Precision.HIGHEST))

    dx, dw = grads(x, w)
    dx_ref, dw_ref = grads_ref(x, w)
    errors = (err_y, relative_error(dx, dx_ref), relative_error(dw, dw_ref))
    del dx, dw, dx_ref, dw_ref

    t_ours = median_ms(ours, x, w, reps=reps, max_seconds=20)
    t_xla = median_ms(xla, x, w, reps=reps, max_seconds=20)
    tb_ours = median_ms(grads, x, w, reps=reps, max_seconds=30)
    tb_xla = median_ms(grads_xla, x, w, reps=reps, max_seconds=30)
    return [(f"forward {layout}", t_ours, t_xla, errors[0]),
            (f"backward {layout} (dx+dw)", tb_ours, tb_xla, max(errors[1:]))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jax_conv1d", description=__doc__.split("\n")[0])
    p.add_argument("--layout", choices=["NCW", "NWC", "both"], default="both")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--size", choices=["auto", "full", "small"], default="auto")
    args = p.parse_args(argv)

    dtype = jnp.dtype(args.dtype)
    size, size_note = _choose_size(args.size)
    dev = jax.devices()[0]
    native = "native CUDA kernels" if (dev.platform == "gpu" and has_cuda_handlers()) else (
        "native CPU kernels" if dev.platform == "cpu" else "lax fallback (no native handlers for this platform)")
    print(f"jax {jax.__version__} on {dev.device_kind} ({dev.platform}); jax_conv1d uses {native}")
    print(f"headline workload, {size_note}: x ({size['n']}, {size['c']}, {size['length']}) "
          f"w ({size['o']}, {size['c']}, {size['k']}) stride {size['stride']} dilation {size['dilation']} "
          f"{args.dtype}")
    # Default precision: TF32 on GPU for float32; bf16 inputs are compared at bf16 resolution.
    tol = 2e-2 if dtype == jnp.bfloat16 else (2e-3 if dev.platform == "gpu" else 1e-5)

    rows = []
    layouts = ["NCW", "NWC"] if args.layout == "both" else [args.layout]
    for i, layout in enumerate(layouts):
        rows += run_layout(layout, dtype, size, args.reps, jax.random.key(i))

    print(f"\n{'case':<26}{'ours ms':>10}{'lax ms':>10}{'speedup':>9}{'rel err':>10}  check")
    ok = True
    for name, t_ours, t_xla, err in rows:
        good = err <= tol and np.isfinite(err)
        ok &= good
        print(f"{name:<26}{t_ours:>10.2f}{t_xla:>10.2f}{t_xla / t_ours:>8.2f}x{err:>10.1e}  "
              f"{'ok' if good else 'MISMATCH'}")
    print(f"\nerrors are relative to lax at precision HIGHEST (tolerance {tol:.0e}); times are medians.")
    if not ok:
        print("self-check FAILED: ours and lax disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
