"""Forward A/B on sweep shapes: our kernel (default dispatch, pinned implicit-GEMM tiles, pipeline knobs), the
GEMM route through XLA (jax_conv1d/_gemm_forward.py, called directly), and XLA's convolution, one process.

    python benchmarks/fwd_route_ab.py [--budget 0.3] [sweep/007 ...]

Per row: per-call ms (bench.time_call: median of batches of back-to-back calls; calls shorter than the host's
dispatch time, about 40 us, read as that time), XLA's time over it (> 1: faster than XLA), and the relative
error against XLA at precision=HIGHEST in float32 (a wrong variant shows up there).
JAX_CONV1D_* pins are read per call, so every kernel row runs the same compiled executable.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

from jax_conv1d import _gemm_forward
from jax_conv1d._shapes import PRECISION_DEFAULT, ConvConfig
from jax_conv1d._timing import relative_error
from jax_conv1d.bench import make_inputs, ours_forward, sweep_cases, time_call, xla_forward

TILES = ("128x128", "64x256", "32x256", "16x256")
KNOBS = {
    "2 chunks/step": {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "2"},
    "1 chunk/step": {"JAX_CONV1D_IGEMM_STEP_CHUNKS": "1"},
    "3 stages": {"JAX_CONV1D_IGEMM_STAGES": "3"},
    "unstaged stores": {"JAX_CONV1D_IGEMM_STAGED_STORES": "0"},
    "evict normal": {"JAX_CONV1D_IGEMM_STORE_EVICT": "normal"},
    "no bulk": {"JAX_CONV1D_FWD_BULK": "0"},
    "bulk always": {"JAX_CONV1D_FWD_BULK": "always"},
    "diag 7 (no mma/copy/store)": {"JAX_CONV1D_IGEMM_DIAG": "7"},
}
DEFAULT_CASES = ["sweep/007", "sweep/033", "sweep/027", "sweep/030", "sweep/015", "sweep/018", "sweep/036",
                 "sweep/026", "sweep/005", "sweep/004", "sweep/014", "sweep/012", "sweep/035", "sweep/039",
                 "sweep/040", "sweep/042", "sweep/008", "sweep/009", "sweep/031"]
# Extra kernel variants per case (tiles and knobs); every case also gets its default dispatch.
EXTRA = {
    "sweep/007": list(TILES) + ["2 chunks/step"],
    "sweep/033": list(TILES) + ["2 chunks/step", "3 stages", "unstaged stores", "evict normal"],
    "sweep/027": list(TILES) + ["1 chunk/step", "3 stages", "unstaged stores", "evict normal"],
    "sweep/030": list(TILES) + ["diag 7 (no mma/copy/store)", "no bulk", "bulk always"],
    "sweep/015": ["32x256", "16x256", "32x128"],
    "sweep/031": ["64x256"],
    "sweep/001": ["bulk always", "no bulk"],
}


def gemm_variant(case, out_16bit_product: bool):
    cfg = ConvConfig(case.layout, case.stride, case.dilation, case.pads, 1, PRECISION_DEFAULT)

    def f(x, w, b):
        bias = jnp.zeros((0,), x.dtype) if b is None else b
        if not out_16bit_product:
            return _gemm_forward.forward(x, w, bias, cfg=cfg, out_dtype=x.dtype)
        # The product rounded to the 16-bit type by the GEMM itself (no float32 y in memory).
        if case.layout == "NWC":
            k, c, o = w.shape
            cols = _gemm_forward.columns(x, cfg, k, case.out_length)
            y = jax.lax.dot_general(cols, w.reshape(k * c, o), (((2,), (0,)), ((), ())),
                                    preferred_element_type=x.dtype)
            return y if b is None else y + b.astype(x.dtype)
        o, c, k = w.shape
        cols = _gemm_forward.columns(x, cfg, k, case.out_length)
        y = jax.lax.dot_general(w.reshape(o, c * k), cols, (((1,), (1,)), ((), ())), preferred_element_type=x.dtype)
        y = jnp.transpose(y, (1, 0, 2))
        return y if b is None else y + b.astype(x.dtype).reshape(1, -1, 1)

    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=0.3)
    ap.add_argument("cases", nargs="*")
    args = ap.parse_args()
    print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}", flush=True)
    by_name = {c.name: c for c in sweep_cases(48)}
    key = jax.random.key(0)
    for name in args.cases or DEFAULT_CASES:
        case = by_name[name]
        print(f"== {name} {case.describe()} T{case.out_length}", flush=True)
        x, w, b, _ = make_inputs(case, key)
        f32 = case.dtype != "float32"
        up = (x.astype(jnp.float32), w.astype(jnp.float32), None if b is None else b.astype(jnp.float32))
        ref = jax.jit(xla_forward(case, "highest", jnp.float32))(*(up if f32 else (x, w, b)))
        xla = jax.jit(xla_forward(case, case.precision))
        t_xla = time_call(xla, (x, w, b), budget_s=args.budget)

        def row(label, fn, env=None):
            saved = {k: os.environ.get(k) for k in (env or {})}
            os.environ.update(env or {})
            try:
                err = relative_error(fn(x, w, b), ref)
                t = time_call(fn, (x, w, b), budget_s=args.budget)
                print(f"  {label:34s} {t * 1e3:8.3f} ms  xla/this {t_xla / t:5.2f}  err {err:.2e}", flush=True)
            except Exception as e:  # a variant that does not apply is reported, not fatal
                print(f"  {label:34s} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

        print(f"  {'xla':34s} {t_xla * 1e3:8.3f} ms", flush=True)
        ours = jax.jit(ours_forward(case))
        row("ours (default dispatch)", ours)
        for extra in EXTRA.get(name, []):
            env = KNOBS.get(extra, {"JAX_CONV1D_IGEMM_TILE": extra})
            row(f"ours {extra}", ours, env)
        if case.groups == 1:
            row("gemm route", jax.jit(gemm_variant(case, False)))
            if f32:
                row("gemm route, 16-bit product", jax.jit(gemm_variant(case, True)))
        del x, w, b, ref


if __name__ == "__main__":
    main()
