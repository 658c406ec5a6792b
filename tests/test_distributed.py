"""Two processes on one machine (jax.distributed on CPU, gloo collectives) run one data-parallel training
step through dilated_conv1d; each checks its result against an unsharded step (tests/distributed_worker.py)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_data_parallel_step(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"  # a CPU data-parallel step, also on a machine that has a GPU
    # cwd outside the source tree, so the installed package (with its compiled module) is imported
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), str(i)], cwd=tmp_path, env=env,
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
