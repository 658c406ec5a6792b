"""Small versions of the suite's layers, each run twice, for Nsight Compute:

    XLA_PYTHON_CLIENT_PREALLOCATE=false ncu --kernel-name regex:conv1d_fwd --section SpeedOfLight \
        --section WarpStateStats python benchmarks/fwd_profile.py [case ...]

(Without XLA_PYTHON_CLIENT_PREALLOCATE=false, kernel replay backs up JAX's whole memory pool and crawls.)
Each case runs twice: the first call compiles and warms up.
"""

import sys


import jax
import jax.numpy as jnp

from jax_conv1d import dilated_conv1d

CASES = {
    # name: (x shape, w shape, kwargs, dtype)
    "headline_ncw_f32": ((4, 64, 524280), (128, 64, 3), dict(stride=3, dilation=4, layout="NCW"), jnp.float32),
    "headline_nwc_f32": ((4, 524280, 64), (3, 64, 128), dict(stride=3, dilation=4, layout="NWC"), jnp.float32),
    "wavenet_dense": ((2, 65536, 128), (2, 128, 256), dict(dilation=64, padding="CAUSAL", layout="NWC"), jnp.float32),
    "depthwise_tcn": ((2, 65536, 512), (7, 1, 512), dict(dilation=8, padding="SAME", groups=512, layout="NWC"),
                      jnp.float32),
    "mamba_dw_causal": ((8, 2048, 5120), (4, 1, 5120), dict(padding="CAUSAL", groups=5120, layout="NWC"),
                        jnp.bfloat16),
}


def main():
    key = jax.random.key(0)
    names = sys.argv[1:] or list(CASES)
    for name in names:
        xs, ws, kw, dt = CASES[name]
        x = jax.random.normal(key, xs, jnp.float32).astype(dt)
        w = jax.random.normal(key, ws, jnp.float32).astype(dt)
        f = jax.jit(lambda x, w: dilated_conv1d(x, w, **kw))
        for _ in range(2):
            f(x, w).block_until_ready()
        print("ran", name, flush=True)


if __name__ == "__main__":
    main()
