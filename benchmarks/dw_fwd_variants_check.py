"""The depthwise forward's tile variants against float64, in one process: fwd_check.py's checks (poisoned
outputs, tolerance, bitwise repeat) on random depthwise configurations and a few full-width ones, with the
depthwise family pinned, once per variant of the sliding-window kernel's knobs (read per call).

    python benchmarks/dw_fwd_variants_check.py [--count 24] [--seed 7]
"""

import argparse
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fwd_check  # noqa: E402  (enables float64 before jax is used)

VARIANTS = [
    ("default", {}),
    ("64-bit coordinates", {"JAX_CONV1D_DW_COORDS32": "0"}),
    ("cyclic order", {"JAX_CONV1D_DW_ORDER": "0"}),
    ("streams", {"JAX_CONV1D_DW_ORDER": "2"}),
    ("streams, 2 out buffers", {"JAX_CONV1D_DW_ORDER": "2", "JAX_CONV1D_DW_OUT_BUFS": "2"}),
]
# Session 7's tile variants (measured correct then): ("tile 64", {"JAX_CONV1D_DW_TILE": "64"}), with
# "JAX_CONV1D_DW_OUT_BUFS": "2", and tile 128 with two output buffers. Session 8's call 1 also ran the ring
# kernel (commit d3321f8, removed) and order 1 (blocked, channels fastest; removed): 72/72.
KNOBS = ("JAX_CONV1D_DW_TILE", "JAX_CONV1D_DW_OUT_BUFS", "JAX_CONV1D_DW_COORDS32", "JAX_CONV1D_DW_ORDER")


def wide_configs():
    """Channel counts that fill the wide tiles, a partial last channel tile, multipliers, both layouts."""
    f32, bf16 = ("float32", "float32", "default"), ("bfloat16", "bfloat16", "default")
    return [
        dict(n=2, c=512, o=512, k=7, length=3000, stride=1, dilation=8, padding="SAME", groups=512, layout="NWC",
             dtypes=f32, bias=True),
        dict(n=1, c=5120, o=5120, k=4, length=300, stride=1, dilation=1, padding="CAUSAL", groups=5120,
             layout="NWC", dtypes=bf16, bias=True),
        dict(n=2, c=520, o=520, k=5, length=1100, stride=1, dilation=32, padding=(40, 100), groups=520,
             layout="NWC", dtypes=f32, bias=False),
        dict(n=2, c=264, o=264, k=8, length=900, stride=1, dilation=4, padding="SAME", groups=264, layout="NWC",
             dtypes=("bfloat16", "float32", "default"), bias=True),
        dict(n=1, c=96, o=192, k=3, length=800, stride=1, dilation=2, padding="SAME", groups=96, layout="NWC",
             dtypes=f32, bias=True),
        dict(n=2, c=256, o=256, k=7, length=2000, stride=1, dilation=8, padding="SAME", groups=256, layout="NCW",
             dtypes=f32, bias=True),
        # Many tiles per block (a block's range of streamed tiles crosses rows), K 8 at span 112.
        dict(n=2, c=256, o=256, k=7, length=20000, stride=1, dilation=8, padding="SAME", groups=256, layout="NWC",
             dtypes=f32, bias=True),
        dict(n=4, c=1280, o=1280, k=4, length=1000, stride=1, dilation=1, padding="CAUSAL", groups=1280,
             layout="NWC", dtypes=bf16, bias=True),
        dict(n=2, c=128, o=128, k=8, length=9000, stride=1, dilation=16, padding=(100, 12), groups=128,
             layout="NWC", dtypes=("float16", "float16", "default"), bias=False),
    ]


def depthwise_reference(cfg, pads, x64, w64, b64):
    """The depthwise convolution in float64 with numpy, tap by tap (XLA:CPU's grouped convolution takes minutes
    at thousands of groups)."""
    nwc = cfg["layout"] == "NWC"
    x = x64 if nwc else x64.transpose(0, 2, 1)  # (N, L, C)
    w = w64[:, 0, :] if nwc else w64[:, 0, :].T  # (K, O)
    lo, hi = pads
    length = x.shape[1]
    x = np.pad(x, ((0, 0), (max(lo, 0), max(hi, 0)), (0, 0)))[:, max(-lo, 0):x.shape[1] + max(lo, 0) + max(hi, 0)
                                                               - max(-hi, 0)]
    s, d, k = cfg["stride"], cfg["dilation"], cfg["k"]
    t = fwd_check.output_length(length, k, s, d, lo, hi)
    o = w.shape[1]
    x = x[:, :, np.arange(o) // (o // cfg["c"])]  # input channel of each output channel
    y = np.zeros((x.shape[0], max(t, 0), o))
    for tap in range(k):
        if t > 0:
            y += w[tap] * x[:, tap * d:tap * d + (t - 1) * s + 1:s]
    if b64 is not None:
        y += b64
    return y if nwc else y.transpose(0, 2, 1)


def compare(cfg, pads, x, w, b, ref, tol):
    """fwd_check.check's criteria for the pinned depthwise family: finite, within tolerance, bitwise repeat."""
    try:
        y1, y2 = fwd_check.run_ours(cfg, pads, x, w, b, "depthwise")
    except Exception as err:  # a kernel fault surfaces here
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    if y1.shape != ref.shape:
        return f"shape {y1.shape} != {ref.shape}"
    if ref.size == 0:
        return None
    if not np.all(np.isfinite(y1)):
        return f"{np.count_nonzero(~np.isfinite(y1))} non-finite outputs"
    rel = np.linalg.norm(y1 - ref) / max(np.linalg.norm(ref), 1e-30)
    mx = np.max(np.abs(y1 - ref)) / max(np.max(np.abs(ref)), 1e-30)
    same = np.array_equal(y1.view(np.uint64), y2.view(np.uint64))
    if rel > tol or mx > 8 * tol or not same:
        return f"rel {rel:.2e} max {mx:.2e} (tol {tol:.0e}) deterministic={same}"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--platform", default="gpu", help="cpu: a dry run of this script")
    args = ap.parse_args()
    fwd_check.PLATFORM = args.platform
    rng = random.Random(args.seed)
    rng_np = np.random.default_rng(args.seed)
    configs = wide_configs() + [fwd_check.random_config(rng, big=i % 3 == 0, kinds=("depthwise",))
                                for i in range(args.count)]
    print(f"{len(configs)} configurations x {len(VARIANTS)} variants", flush=True)
    bad = 0
    for i, cfg in enumerate(configs):
        pads, x, w, b, x64, w64, b64 = fwd_check.make_inputs(cfg, rng_np)
        ref = depthwise_reference(cfg, pads, x64, w64, b64)  # once per configuration, for every variant
        tol = fwd_check.TOLERANCES[tuple(cfg["dtypes"])]
        for label, env in VARIANTS:
            for k in KNOBS:
                os.environ.pop(k, None)
            os.environ.update(env)
            fails = compare(cfg, pads, x, w, b, ref, tol)
            if fails:
                bad += 1
                print(f"FAIL #{i} [{label}] {cfg}\n    {fails}")
        print(f"#{i} done", flush=True)
    print(f"depthwise variants check: {len(configs) * len(VARIANTS) - bad}/{len(configs) * len(VARIANTS)} passed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
