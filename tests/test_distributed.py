"""Two processes on one machine run one data-parallel training step through dilated_conv1d with
jax.distributed: on CPU devices (gloo collectives) everywhere, and on two GPUs (NCCL, one GPU per process)
where the machine has them. Each process checks its result against an unsharded step
(tests/distributed_worker.py)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from conftest import gpu_device

WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gpu_count() -> int:
    return len(jax.devices("gpu")) if gpu_device() is not None else 0


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_two_process_data_parallel_step(tmp_path, platform):
    if platform == "gpu" and _gpu_count() < 2:
        pytest.skip("needs two GPUs and jax_conv1d built with CUDA handlers")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES")}
    # this process may hold most of each GPU's memory already: the workers allocate as they go
    env.update(XLA_PYTHON_CLIENT_PREALLOCATE="false", NCCL_NVLS_ENABLE="0")
    # cwd outside the source tree, so the installed package (with its compiled module) is imported
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), str(i), platform], cwd=tmp_path,
                              env=dict(env, CUDA_VISIBLE_DEVICES=str(i)) if platform == "gpu" else env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT_S)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        result = [line for line in out.splitlines() if line.startswith("RESULT")]
        assert p.returncode == 0 and result and "ok=True" in result[0], f"process {i}:\n{out[-4000:]}"
