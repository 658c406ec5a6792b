"""Device check of the CUDA forward kernels: every family against a float64 reference on random shapes.

    python benchmarks/fwd_check.py [--count 200] [--seed 0] [--sanitize]

For each random configuration (layout, groups incl. depthwise with multipliers, kernel size, stride, dilation,
padding incl. negative, lengths that break vector alignment, bias, dtype and output dtype, precision) it runs
the op with each applicable kernel family pinned through JAX_CONV1D_FWD_KERNEL, after poisoning the allocator
with a NaN buffer of the output's size, and checks:
  - no NaN/inf, relative error ||y - ref|| / ||ref|| and max-abs error / max |ref| within the dtype's tolerance
    (reference: lax in float64 on the CPU, from the same input values);
  - bitwise identical output on a second run.
--sanitize runs a handful of small shapes only (for compute-sanitizer).
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)
# The "auto" family is our dispatch's kernels: small strided dense 16-bit shapes would otherwise lower to XLA's
# own convolution (jax_conv1d/_xla_conv.py).
os.environ.setdefault("JAX_CONV1D_XLA_CONV", "0")
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from jax_conv1d import dilated_conv1d  # noqa: E402
from jax_conv1d._shapes import output_length, resolve_padding  # noqa: E402

# (input dtype, output dtype, precision) -> tolerance on the relative error (norm-wise); the max-abs check
# allows 8x that relative to max |ref|.
TOLERANCES = {
    ("float32", "float32", "default"): 1.5e-3,
    ("float32", "float32", "highest"): 1e-5,
    ("bfloat16", "bfloat16", "default"): 8e-3,
    ("bfloat16", "float32", "default"): 1e-5,
    ("float16", "float16", "default"): 2e-3,
    ("float16", "float32", "default"): 1e-5,
}


PLATFORM = "gpu"


def random_config(rng: random.Random, big: bool, kinds=("dense", "dense", "grouped", "depthwise")):
    layout = rng.choice(("NCW", "NWC"))
    kind = rng.choice(kinds)
    pick = lambda: rng.choice((1, 2, 3, 5, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160)) if big else rng.randint(1, 40)
    if kind == "depthwise":
        c = pick()
        groups, o = c, c * rng.choice((1, 1, 2, 3))
    elif kind == "grouped":
        groups = rng.choice((2, 3, 4, 8))
        c, o = groups * max(1, pick() // groups), groups * max(1, pick() // groups)
    else:
        groups, c, o = 1, pick(), pick()
    k, stride, dilation = rng.randint(1, 9), rng.randint(1, 4), rng.randint(1, 8)
    n = rng.randint(1, 3)
    length = rng.randint(1, 3000 if big else 700)
    padding = rng.choice(("VALID", "SAME", "CAUSAL", "pair"))
    if padding == "pair":
        padding = (rng.randint(-3, 12), rng.randint(-3, 12))
        if length + padding[0] < 0 or length + padding[1] < 0 or length + sum(padding) < 0:
            padding = "VALID"
    if kinds == ("grouped",) and rng.random() < 0.8:
        # Mostly the small-group family's domain: Og <= 32, Cg * K <= 64 (Cg >= 2: Cg = 1 is depthwise).
        groups = rng.choice((2, 3, 4, 6, 8, 16, 32))
        cg, og = rng.choice((2, 3, 4, 8)), rng.choice((1, 2, 3, 4, 5, 8, 16, 32))
        c, o, k = groups * cg, groups * og, rng.randint(1, 8)
    if kinds == ("depthwise",):
        # Mostly the sliding-window kernel's domain: stride 1, dilations dividing 16, K <= 8.
        stride = 1 if rng.random() < 0.75 else stride
        dilation = rng.choice((1, 2, 4, 8, 16, 1, 2, 8, 3, 5, 32))
        if rng.random() < 0.3:
            c = rng.choice((128, 256, 512, 520, 640))
            groups, o = c, c
    dt = rng.choice(list(TOLERANCES))
    return dict(n=n, c=c, o=o, k=k, length=length, stride=stride, dilation=dilation, padding=padding,
                groups=groups, layout=layout, dtypes=dt, bias=rng.random() < 0.5)


def fixed_configs():
    """Shapes that exercise multi-tile paths: several o-tiles, chunks, persistent tiles, long windows."""
    out = []
    for layout in ("NCW", "NWC"):
        for dt in TOLERANCES:
            out.append(dict(n=2, c=100, o=300, k=3, length=5000, stride=3, dilation=4, padding="VALID", groups=1,
                            layout=layout, dtypes=dt, bias=True))
        out += [
            dict(n=2, c=64, o=128, k=3, length=4096, stride=3, dilation=4, padding="VALID", groups=1, layout=layout,
                 dtypes=("float32", "float32", "default"), bias=False),
            dict(n=2, c=128, o=256, k=2, length=3000, stride=1, dilation=64, padding="CAUSAL", groups=1,
                 layout=layout, dtypes=("float32", "float32", "default"), bias=True),
            # taps further apart than a tile is long: gapped windows (NWC, one box per tap)
            dict(n=2, c=128, o=256, k=2, length=3000, stride=1, dilation=512, padding="CAUSAL", groups=1,
                 layout=layout, dtypes=("bfloat16", "bfloat16", "default"), bias=True),
            # the short 128 x 64 tile by default (NWC float32, stride >= 3, 64 < Og <= 128): three channel chunks
            # per step, a partial o-tile, SAME padding, bias
            dict(n=3, c=48, o=100, k=3, length=3001, stride=4, dilation=5, padding="SAME", groups=1,
                 layout=layout, dtypes=("float32", "float32", "default"), bias=True),
            dict(n=2, c=64, o=96, k=3, length=2000, stride=2, dilation=300, padding="SAME", groups=1,
                 layout=layout, dtypes=("float32", "float32", "default"), bias=False),
            dict(n=1, c=32, o=40, k=4, length=1500, stride=1, dilation=150, padding=(200, 30), groups=1,
                 layout=layout, dtypes=("float32", "float32", "highest"), bias=True),
            dict(n=2, c=512, o=512, k=7, length=1000, stride=1, dilation=8, padding="SAME", groups=512,
                 layout=layout, dtypes=("float32", "float32", "default"), bias=True),
            dict(n=2, c=640, o=640, k=4, length=600, stride=1, dilation=1, padding="CAUSAL", groups=640,
                 layout=layout, dtypes=("bfloat16", "bfloat16", "default"), bias=True),
            dict(n=1, c=1024, o=1024, k=9, length=300, stride=2, dilation=3, padding="SAME", groups=8,
                 layout=layout, dtypes=("float32", "float32", "highest"), bias=True),
        ]
        if layout == "NWC":  # for the wgmma kernel: one chunk (bf16) with negative padding; K = 1; float16
            out += [
                dict(n=3, c=32, o=200, k=5, length=2501, stride=1, dilation=3, padding=(7, -2), groups=1,
                     layout=layout, dtypes=("bfloat16", "float32", "default"), bias=True),
                dict(n=2, c=80, o=136, k=1, length=777, stride=2, dilation=1, padding="SAME", groups=1,
                     layout=layout, dtypes=("float32", "float32", "default"), bias=True),
                dict(n=2, c=64, o=64, k=3, length=4000, stride=3, dilation=4, padding="VALID", groups=1,
                     layout=layout, dtypes=("float16", "float16", "default"), bias=False),
            ]
        # 3xTF32 on long reductions (Cg*K = 1152 and 2304) in each tile height, at the accuracy goal
        # (2e-6 against float64) rather than the general 3xTF32 tolerance.
        for c, k, o in ((384, 3, 256), (256, 9, 64), (384, 3, 24)):
            out.append(dict(n=2, c=c, o=o, k=k, length=3000, stride=1, dilation=2, padding="SAME", groups=1,
                            layout=layout, dtypes=("float32", "float32", "highest"), bias=False, tol=2e-6))
    return out


def grouped_small_configs():
    """The small-group family (fwd_grouped_small.cu): the sweep shapes it was built for (shorter), Og that is
    not a power of two, NWC blocks whose last groups end early, unaligned rows, padding wider than a tile."""
    out = []
    for layout in ("NCW", "NWC"):
        for dt in TOLERANCES:
            out.append(dict(n=2, c=32, o=32, k=6, length=5000, stride=1, dilation=2, padding="CAUSAL", groups=8,
                            layout=layout, dtypes=dt, bias=True))
        out += [
            dict(n=2, c=16, o=16, k=8, length=9000, stride=3, dilation=3, padding="VALID", groups=8, layout=layout,
                 dtypes=("bfloat16", "bfloat16", "default"), bias=False),
            dict(n=2, c=64, o=128, k=3, length=3000, stride=1, dilation=8, padding="VALID", groups=8, layout=layout,
                 dtypes=("bfloat16", "bfloat16", "default"), bias=True),
            dict(n=1, c=16, o=256, k=6, length=4001, stride=2, dilation=4, padding="VALID", groups=8, layout=layout,
                 dtypes=("float32", "float32", "highest"), bias=False),
            dict(n=2, c=24, o=36, k=5, length=1003, stride=2, dilation=3, padding=(7, -2), groups=6, layout=layout,
                 dtypes=("float32", "float32", "default"), bias=True),
            dict(n=3, c=40, o=60, k=4, length=777, stride=4, dilation=1, padding="SAME", groups=20, layout=layout,
                 dtypes=("float16", "float16", "default"), bias=True),
            dict(n=1, c=48, o=24, k=3, length=2500, stride=1, dilation=700, padding=(900, 5), groups=12,
                 layout=layout, dtypes=("bfloat16", "float32", "default"), bias=False),
            dict(n=2, c=8, o=16, k=8, length=1500, stride=1, dilation=1, padding="SAME", groups=1, layout=layout,
                 dtypes=("float32", "float32", "default"), bias=True),
            dict(n=2, c=6, o=3, k=1, length=5, stride=5, dilation=1, padding="VALID", groups=3, layout=layout,
                 dtypes=("float32", "float32", "default"), bias=True),
        ]
    return out


def sanitize_configs():
    out = []
    for layout in ("NCW", "NWC"):
        for dt in (("float32", "float32", "default"), ("float32", "float32", "highest"),
                   ("bfloat16", "bfloat16", "default")):
            out.append(dict(n=2, c=20, o=40, k=3, length=301, stride=2, dilation=3, padding="SAME", groups=1,
                            layout=layout, dtypes=dt, bias=True))
            out.append(dict(n=2, c=16, o=32, k=5, length=256, stride=1, dilation=2, padding=(3, -1), groups=4,
                            layout=layout, dtypes=dt, bias=False))
            out.append(dict(n=2, c=24, o=48, k=4, length=200, stride=1, dilation=1, padding="CAUSAL", groups=24,
                            layout=layout, dtypes=dt, bias=True))
            # small groups: odd length, 3 groups (NWC: a block of 2 and a block of 1 whose vectors end early)
            out.append(dict(n=2, c=12, o=18, k=4, length=203, stride=2, dilation=3, padding=(5, -1), groups=3,
                            layout=layout, dtypes=dt, bias=True))
            out.append(dict(n=1, c=32, o=32, k=3, length=130, stride=1, dilation=5, padding="SAME", groups=32,
                            layout=layout, dtypes=dt, bias=False))
    return out


def grouped_small_fits(cfg):
    """Mirror of grouped_small_fits in fwd_grouped_small.cu (outside it, pinned "grouped" runs the direct kernel)."""
    return cfg["o"] // cfg["groups"] <= 32 and (cfg["c"] // cfg["groups"]) * cfg["k"] <= 1024


# Families that are a pinned implicit-GEMM tile rather than a JAX_CONV1D_FWD_KERNEL value: the 64 x 64 warp
# tiles and the short 128 x 64 tile (NWC, one MMA per product; the short tile also with two chunks per step
# and eight stages, its other measured plan). A pinned tile that does not fit the shape runs the direct kernel.
PINNED_TILES = {"igemm+w128x256": {"JAX_CONV1D_IGEMM_TILE": "128x256"},
                "igemm+w64x512": {"JAX_CONV1D_IGEMM_TILE": "64x512"},
                "igemm+s128x64": {"JAX_CONV1D_IGEMM_TILE": "128x64"},
                "igemm+s128x64/2x8": {"JAX_CONV1D_IGEMM_TILE": "128x64", "JAX_CONV1D_IGEMM_STEP_CHUNKS": "2",
                                      "JAX_CONV1D_IGEMM_STAGES": "8"},
                # the wgmma (sm_90a) kernel of fwd_wgmma.cuh, dense NWC only, both blocks
                "wgmma": {"JAX_CONV1D_WGMMA": "1"},
                "wgmma+128x128": {"JAX_CONV1D_WGMMA": "1", "JAX_CONV1D_WGMMA_TILE": "128x128"},
                "wgmma+128x64": {"JAX_CONV1D_WGMMA": "1", "JAX_CONV1D_WGMMA_TILE": "128x64"},
                "wgmma+128x64s": {"JAX_CONV1D_WGMMA": "1", "JAX_CONV1D_WGMMA_TILE": "128x64s"}}


ONLY_FAMILIES = None  # --families


def families(cfg):
    if cfg["groups"] == cfg["c"]:
        return ("auto", "depthwise", "igemm")
    wide = tuple(PINNED_TILES) if cfg["layout"] == "NWC" and cfg["dtypes"][2] != "highest" else ()
    if cfg["groups"] != 1:
        wide = tuple(f for f in wide if not f.startswith("wgmma"))
    if ONLY_FAMILIES is None:  # the wgmma blocks pinned one by one only when --families names them (run time)
        wide = tuple(f for f in wide if not f.startswith("wgmma+"))
    if grouped_small_fits(cfg):
        return ("auto", "igemm", "grouped") + wide
    return ("auto", "igemm") + wide


def make_inputs(cfg, rng_np):
    lo, hi = resolve_padding(cfg["padding"], cfg["length"], cfg["k"], cfg["stride"], cfg["dilation"])
    cg = cfg["c"] // cfg["groups"]
    if cfg["layout"] == "NCW":
        xs, ws = (cfg["n"], cfg["c"], cfg["length"]), (cfg["o"], cg, cfg["k"])
    else:
        xs, ws = (cfg["n"], cfg["length"], cfg["c"]), (cfg["k"], cg, cfg["o"])
    in_dt = cfg["dtypes"][0]
    x = rng_np.standard_normal(xs).astype(np.float32)
    w = (rng_np.standard_normal(ws) / np.sqrt(cg * cfg["k"])).astype(np.float32)
    b = rng_np.standard_normal((cfg["o"],)).astype(np.float32) if cfg["bias"] else None
    # round through the input dtype so the float64 reference sees exactly the values the kernel sees
    cast = lambda a: None if a is None else np.asarray(jnp.asarray(a, in_dt).astype(jnp.float64))
    return (lo, hi), x, w, b, cast(x), cast(w), cast(b)


def reference(cfg, pads, x64, w64, b64):
    """float64 y for the configuration. Grouped shapes go through numpy (one product per tap), since XLA:CPU's
    grouped convolution takes minutes at thousands of groups; dense ones through XLA:CPU at HIGHEST."""
    if cfg["groups"] > 1:
        return grouped_reference(cfg, pads, x64, w64, b64)
    cpu = jax.devices("cpu")[0]
    dn = ("NCH", "OIH", "NCH") if cfg["layout"] == "NCW" else ("NHC", "HIO", "NHC")
    with jax.default_device(cpu):
        y = lax.conv_general_dilated(jnp.asarray(x64), jnp.asarray(w64), (cfg["stride"],), [pads],
                                     rhs_dilation=(cfg["dilation"],), dimension_numbers=dn,
                                     feature_group_count=cfg["groups"], precision=lax.Precision.HIGHEST)
        if b64 is not None:
            y = y + (b64.reshape(1, -1, 1) if cfg["layout"] == "NCW" else b64.reshape(1, 1, -1))
        return np.asarray(y)


def grouped_reference(cfg, pads, x64, w64, b64):
    """The grouped convolution in float64 numpy, computed channels-first and returned in cfg's layout."""
    if cfg["layout"] == "NWC":
        x64, w64 = np.moveaxis(x64, 2, 1), np.transpose(w64, (2, 1, 0))  # (N, C, L), (O, Cg, K)
    n, c, length = x64.shape
    o, cg, k = w64.shape
    g, (lo, hi) = cfg["groups"], pads
    xp = x64[:, :, max(-lo, 0):length - max(-hi, 0)]
    xp = np.pad(xp, ((0, 0), (0, 0), (max(lo, 0), max(hi, 0))))
    out_len = output_length(length, k, cfg["stride"], cfg["dilation"], lo, hi)
    y = np.zeros((n, g, o // g, max(out_len, 0)))
    wg = w64.reshape(g, o // g, cg, k)
    span = (out_len - 1) * cfg["stride"] + 1
    for tap in range(k if out_len > 0 else 0):
        start = tap * cfg["dilation"]
        xs = xp[:, :, start:start + span:cfg["stride"]].reshape(n, g, cg, out_len)
        y += np.einsum("ngct,goc->ngot", xs, wg[..., tap], optimize=True)
    y = y.reshape(n, o, -1)
    if b64 is not None:
        y = y + b64.reshape(1, -1, 1)
    return np.moveaxis(y, 1, 2) if cfg["layout"] == "NWC" else y


def run_ours(cfg, pads, x, w, b, family):
    os.environ["JAX_CONV1D_FWD_KERNEL"] = "igemm" if family in PINNED_TILES else family
    if family in PINNED_TILES:
        os.environ.update(PINNED_TILES[family])
    in_dt, out_dt, prec = cfg["dtypes"]
    gpu = jax.devices(PLATFORM)[0]
    xd, wd = jax.device_put(jnp.asarray(x, in_dt), gpu), jax.device_put(jnp.asarray(w, in_dt), gpu)
    bd = None if b is None else jax.device_put(jnp.asarray(b, in_dt), gpu)
    lout = output_length(cfg["length"], cfg["k"], cfg["stride"], cfg["dilation"], *pads)
    out_shape = (cfg["n"], cfg["o"], lout) if cfg["layout"] == "NCW" else (cfg["n"], lout, cfg["o"])
    results = []
    for _ in range(2):
        poison = jax.device_put(jnp.full(out_shape, jnp.nan, out_dt), gpu)
        poison.block_until_ready()
        del poison
        y = dilated_conv1d(xd, wd, bd, stride=cfg["stride"], dilation=cfg["dilation"], padding=pads,
                           groups=cfg["groups"], layout=cfg["layout"], precision=prec,
                           preferred_element_type=out_dt)
        results.append(np.asarray(jnp.asarray(y).astype(jnp.float64)))
    os.environ["JAX_CONV1D_FWD_KERNEL"] = "auto"
    for k in ("JAX_CONV1D_IGEMM_TILE", "JAX_CONV1D_IGEMM_STEP_CHUNKS", "JAX_CONV1D_IGEMM_STAGES",
              "JAX_CONV1D_WGMMA", "JAX_CONV1D_WGMMA_TILE"):
        os.environ.pop(k, None)
    return results


def check(cfg, rng_np, verbose):
    pads, x, w, b, x64, w64, b64 = make_inputs(cfg, rng_np)
    ref = reference(cfg, pads, x64, w64, b64)
    tol = cfg.get("tol", TOLERANCES[tuple(cfg["dtypes"])])
    failures = []
    for fam in families(cfg):
        if ONLY_FAMILIES is not None and fam not in ONLY_FAMILIES:
            continue
        try:
            y1, y2 = run_ours(cfg, pads, x, w, b, fam)
        except Exception as err:  # a kernel fault surfaces here; report it and go on
            failures.append(f"{fam}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            continue
        if y1.shape != ref.shape:
            failures.append(f"{fam}: shape {y1.shape} != {ref.shape}")
            continue
        if ref.size == 0:
            continue
        if not np.all(np.isfinite(y1)):
            failures.append(f"{fam}: {np.count_nonzero(~np.isfinite(y1))} non-finite outputs")
            continue
        scale = max(np.linalg.norm(ref), 1e-30)
        rel = np.linalg.norm(y1 - ref) / scale
        mx = np.max(np.abs(y1 - ref)) / max(np.max(np.abs(ref)), 1e-30)
        same = np.array_equal(y1.view(np.uint64), y2.view(np.uint64))
        if rel > tol or mx > 8 * tol or not same:
            failures.append(f"{fam}: rel {rel:.2e} max {mx:.2e} (tol {tol:.0e}) deterministic={same}")
        elif verbose:
            print(f"   ok {fam:9s} rel {rel:.2e} max {mx:.2e}")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sanitize", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--platform", default="gpu", help="where the op runs (cpu checks this script itself)")
    ap.add_argument("--depthwise", action="store_true", help="random configurations are all depthwise")
    ap.add_argument("--grouped", action="store_true",
                    help="the small-group shapes, then random grouped configurations (mostly small groups)")
    ap.add_argument("--layout", default=None, help="only configurations of this layout (NCW or NWC)")
    ap.add_argument("--families", default=None, help="only these families, comma-separated (e.g. auto,igemm+s128x64)")
    args = ap.parse_args()
    global ONLY_FAMILIES
    ONLY_FAMILIES = None if args.families is None else set(args.families.split(","))
    rng = random.Random(args.seed)
    rng_np = np.random.default_rng(args.seed)
    if args.sanitize:
        configs = sanitize_configs()
    else:
        kinds = ("depthwise",) if args.depthwise else ("dense", "dense", "grouped", "depthwise")
        fixed = fixed_configs() + grouped_small_configs()
        if args.grouped:
            kinds, fixed = ("grouped",), grouped_small_configs()
        configs = fixed + [random_config(rng, big=i % 3 == 0, kinds=kinds) for i in range(args.count)]
    if args.layout is not None:
        configs = [c for c in configs if c["layout"] == args.layout]
    global PLATFORM
    PLATFORM = args.platform
    print(f"device: {jax.devices(PLATFORM)[0].device_kind}  jax {jax.__version__}  configs: {len(configs)}")
    bad = 0
    worst = {}
    for i, cfg in enumerate(configs):
        if i and i % 10 == 0:  # a run cut off by a time limit still says how far it got
            print(f"... {i}/{len(configs)} configurations checked, {bad} failed", flush=True)
        if args.verbose:
            print(f"#{i} {cfg['layout']} c{cfg['c']} o{cfg['o']} k{cfg['k']} g{cfg['groups']} {'/'.join(cfg['dtypes'])}")
        fails = check(cfg, rng_np, args.verbose)
        if fails:
            bad += 1
            desc = {k: v for k, v in cfg.items()}
            print(f"FAIL #{i} {desc}")
            for f in fails:
                print("   ", f)
    print(f"forward check: {len(configs) - bad}/{len(configs)} configurations passed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
