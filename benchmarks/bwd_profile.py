"""One call of each backward kernel on reduced headline and depthwise_tcn shapes, for Nsight Compute:

    ncu -k regex:"gemm_kernel|depthwise_kernel" -c 4 --section ... python3 benchmarks/bwd_profile.py [wavenet]

`wavenet`: the wavenet_dense layer instead (N4 slice of N16 C128 O256 K2 dilation 64 L65536 causal NWC).
"""

import sys

import jax
import jax.numpy as jnp

from jax_conv1d import dilated_conv1d

CASES = [  # N, C, O, L, K, stride, dilation, padding, groups, layout
    (4, 64, 128, 524280, 3, 3, 4, "VALID", 1, "NCW"),
    (2, 512, 512, 65536, 7, 1, 8, "SAME", 512, "NWC"),
]
if sys.argv[1:] == ["wavenet"]:
    CASES = [(4, 128, 256, 65536, 2, 1, 64, "CAUSAL", 1, "NWC")]

for n, c, o, length, k, s, d, pad, groups, layout in CASES:
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x_shape = (n, c, length) if layout == "NCW" else (n, length, c)
    w_shape = (o, c // groups, k) if layout == "NCW" else (k, c // groups, o)
    x = jax.random.normal(kx, x_shape, jnp.float32)
    w = jax.random.normal(kw, w_shape, jnp.float32)

    def f(x, w):
        return dilated_conv1d(x, w, stride=s, dilation=d, padding=pad, groups=groups, layout=layout)

    g = jax.random.normal(kg, jax.eval_shape(f, x, w).shape, jnp.float32)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: f(x, w), x)[1](g))
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: f(x, w), w)[1](g))
    jax.block_until_ready(dx(x, w, g))
    jax.block_until_ready(dw(x, w, g))
print("done")
