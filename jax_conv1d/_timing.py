"""Timing helpers shared by the main job and the benchmark: warm up, then the median of many runs.

jax.block_until_ready around each call measures device time plus dispatch; the calls are jitted and large
enough that dispatch is noise. Medians, not means, so one hiccup does not move the result.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp


def median_ms(fn, *args, warmup: int = 2, reps: int = 10, max_seconds: float | None = None) -> float:
    """Median wall time of fn(*args) in milliseconds; stops early once max_seconds of timed runs have passed."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    return statistics.median(times) * 1e3


def relative_error(a, b) -> float:
    """||a - b|| / ||b||, computed in float32 on the device (float64 when x64 is on).

    One fused reduction under jit, so a multi-GB pair needs no temporaries (the eager form materialised
    a - b and ran out of memory on the full-size headline gradients).
    """
    num, den = _squared_norms(a, b)
    return float(jnp.sqrt(num) / jnp.maximum(jnp.sqrt(den), 1e-30))


@jax.jit
def _squared_norms(a, b):
    dt = jnp.promote_types(jnp.float32, jnp.result_type(a, b))
    a = a.astype(dt)
    b = b.astype(dt)
    return jnp.sum(jnp.square(a - b)), jnp.sum(jnp.square(b))
