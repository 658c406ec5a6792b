"""One process of the two-process data-parallel test (tests/test_distributed.py starts two of these).

On CPU each process owns 2 CPU devices (gloo collectives); on GPUs each owns the one GPU that
CUDA_VISIBLE_DEVICES shows it (NCCL). Each feeds half of a global batch to one jitted training step
(forward, gradients, SGD update) over the mesh of all devices, checks its updated parameters against the same
step run unsharded on one local device, checks the compiled step has no all-gather, and prints one RESULT line.
Usage: python distributed_worker.py PORT PROCESS_ID [cpu|gpu]
"""

import os
import sys

port, process_id = int(sys.argv[1]), int(sys.argv[2])
platform = sys.argv[3] if len(sys.argv) > 3 else "cpu"
if platform == "cpu":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
else:
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # no NVLink multicast on shared machines

import jax  # noqa: E402

if platform == "cpu":
    try:  # cross-process collectives on CPU; gloo is the default in some versions, the option may go away
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError, KeyError):
        pass
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                           initialization_timeout=60, heartbeat_timeout_seconds=30, shutdown_timeout_seconds=30)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jax_conv1d import dilated_conv1d  # noqa: E402

local_count = 2 if platform == "cpu" else 1
assert jax.process_count() == 2 and jax.device_count() == 2 * local_count, (jax.process_count(), jax.devices())
assert jax.default_backend() == platform, jax.default_backend()

rng = np.random.default_rng(0)  # the same global data in both processes; each feeds its own half
x_all = rng.standard_normal((8, 16, 4)).astype(np.float32)  # NWC: (N, L, C)
t_all = rng.standard_normal((8, 16, 6)).astype(np.float32)
params = {"w": (0.3 * rng.standard_normal((3, 4, 6))).astype(np.float32),  # (K, C, O)
          "b": (0.1 * rng.standard_normal((6,))).astype(np.float32)}


def loss_fn(p, x, t):
    y = dilated_conv1d(x, p["w"], p["b"], dilation=2, padding="CAUSAL", layout="NWC",
                       precision="highest")
    return jnp.mean((jnp.tanh(y) - t) ** 2)


def train_step(p, x, t):
    loss, g = jax.value_and_grad(loss_fn)(p, x, t)
    return loss, jax.tree.map(lambda a, da: a - 0.5 * da, p, g)


mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
batch = NamedSharding(mesh, P("data"))
half = slice(4 * process_id, 4 * process_id + 4)
x = jax.make_array_from_process_local_data(batch, x_all[half])
t = jax.make_array_from_process_local_data(batch, t_all[half])
p = jax.device_put(params, NamedSharding(mesh, P()))

step = jax.jit(train_step)
loss, new = step(p, x, t)
hlo = step.lower(p, x, t).compile().as_text()

local = jax.local_devices()[0]
ref_loss, ref_new = jax.jit(train_step)(*jax.device_put((params, x_all, t_all), local))

err = max(float(np.max(np.abs(np.asarray(new[k].addressable_data(0)) - np.asarray(ref_new[k])))) for k in params)
loss_err = abs(float(np.asarray(loss.addressable_data(0))) - float(ref_loss))
ours = 'custom_call_target="jax_conv1d_' in hlo  # the extension's kernels ran, not a lax fallback
ok = err < 1e-5 and loss_err < 1e-5 and "all-gather" not in hlo and "all-reduce" in hlo and ours
print(f"RESULT process={process_id} platform={platform} ok={ok} param_err={err:.3g} loss_err={loss_err:.3g} "
      f"all_gather={'all-gather' in hlo} all_reduce={'all-reduce' in hlo} custom_calls={ours}", flush=True)
jax.distributed.shutdown()
sys.exit(0 if ok else 1)
