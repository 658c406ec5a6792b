"""Shared fixtures: float64 enabled (the exact reference needs it), seeded random sources, the lax reference,
and the `gpu` / `slow` markers.

The reference itself lives in conv_reference.py so that test modules can import it by name; the fixtures
below hand out the same functions for tests that prefer fixtures.
"""

from __future__ import annotations

import os
import zlib

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import conv_reference  # noqa: E402
import jax_conv1d  # noqa: E402


def gpu_device():
    """The first GPU when there is one and the package has CUDA handlers, else None."""
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        return None
    return gpus[0] if gpus and jax_conv1d.has_cuda_handlers() else None


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (or set JAX_CONV1D_RUN_SLOW=1)")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--run-slow") or os.environ.get("JAX_CONV1D_RUN_SLOW") == "1"
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU and jax_conv1d built with CUDA handlers")
    not_slow = pytest.mark.skip(reason="slow: pass --run-slow")
    have_gpu = gpu_device() is not None
    for item in items:
        if "gpu" in item.keywords and not have_gpu:
            item.add_marker(no_gpu)
        if "slow" in item.keywords and not run_slow:
            item.add_marker(not_slow)


def _seed_for(request) -> int:
    # Stable across runs and processes (unlike hash()), different for every test and parameter set.
    return zlib.crc32(request.node.nodeid.encode())


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(_seed_for(request))


@pytest.fixture
def key(request):
    return jax.random.key(_seed_for(request))


@pytest.fixture
def lax_conv():
    """lax.conv_general_dilated with dilated_conv1d's signature (both layouts, bias, CAUSAL)."""
    return conv_reference.lax_conv1d


@pytest.fixture
def ref64():
    """The float64 lax result on the CPU for given inputs and dilated_conv1d keyword arguments."""
    return conv_reference.float64_reference


@pytest.fixture(scope="session")
def gpu():
    device = gpu_device()
    if device is None:
        pytest.skip("needs a CUDA GPU and jax_conv1d built with CUDA handlers")
    return device


@pytest.fixture(autouse=True)
def float32_matmuls_off_the_gpu_tests(request):
    """The tests not marked `gpu` compare against lax at float32 tolerances. When they run on a GPU (the default
    device there), precision=None would let both us and cuDNN use TF32, each rounding differently, so they run
    with float32 matmul precision; the `gpu` tests cover the TF32 default with TF32 tolerances."""
    if jax.default_backend() != "gpu" or "gpu" in request.keywords:
        yield
        return
    with jax.default_matmul_precision("float32"):
        yield
