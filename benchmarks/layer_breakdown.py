"""The WaveNet training step's convolution layers one by one: ours vs XLA's convolution vs XLA's matmul.

    python benchmarks/layer_breakdown.py [--batch 8] [--length 65536]

The step (jax_conv1d.wavenet, NWC float32 with bias) has three layer shapes that matter: the dilated causal
C128 -> O256 K2 convolution of each block, and two pointwise (K = 1) C128 -> 128 convolutions per block. For
each it prints forward and backward (dx, dw, db) medians of ours and of lax.conv_general_dilated, and for the
pointwise layers also of the same layer written as a matmul (what cuBLAS does with it), in one process.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from jax_conv1d.bench import Case, backward_of, ours_forward, rel_err, time_call, xla_forward


def matmul_forward(x, w, b):  # K = 1, NWC: w is (1, C, O)
    return jnp.einsum("nlc,co->nlo", x, w[0]) + b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=65536)
    args = ap.parse_args()
    n, length = args.batch, args.length
    cases = [
        Case("dilated d1", n, 128, 256, 2, length, dilation=1, padding="CAUSAL", layout="NWC", bias=True),
        Case("dilated d64", n, 128, 256, 2, length, dilation=64, padding="CAUSAL", layout="NWC", bias=True),
        Case("dilated d512", n, 128, 256, 2, length, dilation=512, padding="CAUSAL", layout="NWC", bias=True),
        Case("pointwise", n, 128, 128, 1, length, layout="NWC", bias=True),
    ]
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; medians in ms")
    print(f"{'layer':14s} {'pass':4s} {'ours':>8s} {'xla conv':>9s} {'xla dot':>8s} {'err':>9s}")
    key = jax.random.key(0)
    for case in cases:
        kx, kw, kb, ky, key = jax.random.split(key, 5)
        xs, ws, ys = case.shapes()
        x = jax.random.normal(kx, xs, jnp.float32)
        w = jax.random.normal(kw, ws, jnp.float32) / (case.c * case.k) ** 0.5
        b = jax.random.normal(kb, (case.o,), jnp.float32)
        dy = jax.random.normal(ky, ys, jnp.float32)
        impls = {"ours": ours_forward(case), "conv": xla_forward(case, "default")}
        if case.k == 1:
            impls["dot"] = matmul_forward
        ref = jax.jit(xla_forward(case, "highest"))(x, w, b)
        for pass_ in ("fwd", "bwd"):
            times, err = {}, float("nan")
            for name, fwd in impls.items():
                fn = jax.jit(fwd if pass_ == "fwd" else backward_of(fwd))
                fargs = (x, w, b) if pass_ == "fwd" else (x, w, b, dy)
                if name == "ours" and pass_ == "fwd":
                    err = rel_err(fn(*fargs), ref)
                times[name] = time_call(fn, fargs) * 1e3
            dot = f"{times['dot']:8.3f}" if "dot" in times else f"{'':8s}"
            print(f"{case.name:14s} {pass_:4s} {times['ours']:8.3f} {times['conv']:9.3f} {dot} {err:9.2e}",
                  flush=True)
        del x, w, b, dy, ref


if __name__ == "__main__":
    main()
