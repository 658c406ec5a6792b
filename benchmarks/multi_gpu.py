"""Scale-out on one host (issue 6): the headline convolution and the WaveNet training step on one GPU and on
all GPUs of the machine, data parallel (batch sharded) and sequence parallel (length sharded).

Per workload and mode it prints and writes (--json):
- the median time per call or per training step; on one GPU the arrays live on device 0, unsharded;
- the scaling efficiency t(1 GPU) / (P * t(P GPUs)) for the same global problem;
- the sharded result's relative error against the one-GPU result (forward output, dx and dw, or the
  parameters and loss after the same training steps on the same data);
- how many concatenates the compiled program has ("cat": window-mode sequence parallelism copies each
  block into [halo | block | halo]; the default edges mode should have none of block size);
- the collectives of the compiled sharded program (kind, count, largest result in bytes), and whether any
  all-gather appears at all (the plans exchange halos and reduce weight gradients; an all-gather of an
  activation would mean the partitioner fell back to gathering).

Run on a machine with several GPUs:  python benchmarks/multi_gpu.py --json multi_gpu.json
On a CPU (a smoke test of the same code, timings meaningless):
  XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu python benchmarks/multi_gpu.py --small
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
import time

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off on shared machines

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jax_conv1d import dilated_conv1d  # noqa: E402
from jax_conv1d._shapes import output_length  # noqa: E402
from jax_conv1d._timing import relative_error  # noqa: E402

ITEMSIZE = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s64": 8, "pred": 1, "u8": 1, "s8": 1}


# ---- what the compiled program communicates ------------------------------------------------------------


def collectives(hlo: str) -> dict:
    """{kind: {"count": n, "max_bytes": largest result}} over the compiled module's collective ops."""
    out: dict = {}
    pattern = (r"=\s*(\(?[a-z0-9]+\[[^=]*?)\s+(all-gather|all-reduce|collective-permute|all-to-all|"
               r"reduce-scatter)(-start)?\(")
    for line in hlo.splitlines():
        m = re.search(pattern, re.sub(r"/\*.*?\*/", "", line))  # tuples carry /*index=5*/ comments
        if not m:
            continue
        nbytes = 0
        for dtype, dims in re.findall(r"([a-z]+[0-9]*)\[([0-9,]*)\]", m.group(1)):
            nbytes = max(nbytes, ITEMSIZE.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d])))
        entry = out.setdefault(m.group(2), {"count": 0, "max_bytes": 0})
        entry["count"] += 1
        entry["max_bytes"] = max(entry["max_bytes"], nbytes)
    return out


def _rel_err(sharded, reference):
    """Relative error of a sharded result against the one-GPU one, computed where the shards live."""
    return relative_error(sharded, jax.device_put(reference, sharded.sharding))


# ---- timing -----------------------------------------------------------------------------------------------


def median_seconds(fn, args, *, calls=5, batches=5):
    """Median seconds per call over batches of back-to-back calls, after a warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        out = None
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


@dataclasses.dataclass
class Row:
    workload: str
    mode: str  # "1 GPU", "data parallel", "sequence parallel"
    devices: int
    shape: str
    ms: float
    efficiency: float | None
    rel_err: float | None
    collectives: dict
    all_gather: bool
    concatenates: int = 0


def _print(row: Row):
    eff = "" if row.efficiency is None else f"{100 * row.efficiency:6.1f}%"
    err = "" if row.rel_err is None else f"{row.rel_err:9.2e}"
    comm = ", ".join(f"{k} x{v['count']} (<= {v['max_bytes'] / 2**20:.2f} MiB)" for k, v in row.collectives.items())
    print(f"{row.workload:26s} {row.mode:28s} {row.devices:2d} {row.ms:10.3f} {eff:>8s} {err:>10s} "
          f"{row.concatenates:4d}  {comm or 'none'}", flush=True)


# ---- the headline convolution -----------------------------------------------------------------------------


def _divisible_length(target, k, stride, dilation, parts):
    """The largest length <= target whose input and (VALID) output both split into `parts` equal blocks."""
    length = target
    while length > 0:
        if length % parts == 0 and output_length(length, k, stride, dilation, 0, 0) % parts == 0:
            return length
        length -= 1
    raise ValueError("no length splits evenly")


def _modes(length_axis, sp_modes):
    """(label, sharded dimension, JAX_CONV1D_SP_HALO) for data parallel and each sequence-parallel mode."""
    out = [("data parallel", 0, "edges")]
    for halo in sp_modes:
        out.append(("sequence parallel" + ("" if halo == "edges" else f" ({halo})"), length_axis, halo))
    return out


def _copies(hlo: str) -> int:
    """Concatenates in the compiled program (window mode builds [halo | block | halo] with one)."""
    return len(re.findall(r"\sconcatenate\(", hlo))


def headline(mesh, layout, small, rows, sp_modes):
    parts = mesh.size
    n, c, o, k, stride, dilation = (4, 64, 128, 3, 3, 4) if small else (64, 64, 128, 3, 3, 4)
    length = _divisible_length(24 * 1024 if small else 524280, k, stride, dilation, parts)
    x_shape = (n, c, length) if layout == "NCW" else (n, length, c)
    w_shape = (o, c, k) if layout == "NCW" else (k, c, o)
    kx, kw, ky = jax.random.split(jax.random.key(0), 3)
    dev0 = jax.devices()[0]
    x = jax.device_put(jax.random.normal(kx, x_shape, jnp.float32), dev0)
    w = jax.device_put(jax.random.normal(kw, w_shape, jnp.float32) / np.sqrt(c * k), dev0)

    def functions():
        """New function objects each time, so each halo mode is traced and compiled afresh."""
        def fwd(x, w):
            return dilated_conv1d(x, w, stride=stride, dilation=dilation, padding="VALID", layout=layout)

        def bwd(x, w, dy):
            _, vjp = jax.vjp(fwd, x, w)
            return vjp(dy)

        return fwd, bwd

    fwd, bwd = functions()

    y_shape = jax.eval_shape(fwd, x, w).shape
    dy = jax.device_put(jax.random.normal(ky, y_shape, jnp.float32), dev0)
    shape = f"x {x_shape} w {w_shape} s{stride} d{dilation} VALID {layout} f32"
    name = f"headline/{layout}"
    length_axis = 2 if layout == "NCW" else 1

    fwd_j, bwd_j = jax.jit(fwd), jax.jit(bwd)
    y1 = fwd_j(x, w)
    t_fwd1 = median_seconds(fwd_j, (x, w))
    g1 = bwd_j(x, w, dy)
    t_bwd1 = median_seconds(bwd_j, (x, w, dy))
    rows.append(Row(name + " fwd", "1 GPU", 1, shape, 1e3 * t_fwd1, None, None, {}, False))
    rows.append(Row(name + " bwd dx+dw", "1 GPU", 1, shape, 1e3 * t_bwd1, None, None, {}, False))
    for r in rows[-2:]:
        _print(r)

    for mode, dim, halo in _modes(length_axis, sp_modes):
        os.environ["JAX_CONV1D_SP_HALO"] = halo
        fwd, bwd = functions()
        spec = [None, None, None]
        spec[dim] = "dev"
        act = NamedSharding(mesh, P(*spec))
        xs, dys = jax.device_put(x, act), jax.device_put(dy, act)
        ws = jax.device_put(w, NamedSharding(mesh, P()))
        f = jax.jit(fwd).lower(xs, ws).compile()
        ys = f(xs, ws)
        t = median_seconds(f, (xs, ws))
        comm = collectives(f.as_text())
        rows.append(Row(name + " fwd", mode, parts, shape, 1e3 * t, t_fwd1 / (parts * t), _rel_err(ys, y1),
                        comm, "all-gather" in comm, _copies(f.as_text())))
        _print(rows[-1])
        del ys
        b = jax.jit(bwd).lower(xs, ws, dys).compile()
        gs = b(xs, ws, dys)
        t = median_seconds(b, (xs, ws, dys))
        comm = collectives(b.as_text())
        err = max(_rel_err(gs[0], g1[0]), _rel_err(gs[1], g1[1]))
        rows.append(Row(name + " bwd dx+dw", mode, parts, shape, 1e3 * t, t_bwd1 / (parts * t), err, comm,
                        "all-gather" in comm, _copies(b.as_text())))
        _print(rows[-1])
        del gs, xs, dys, f, b
    del x, w, dy, y1, g1


# ---- the WaveNet training step --------------------------------------------------------------------------


def train_step_rows(mesh, small, rows, with_xla, sp_modes):
    import optax

    from jax_conv1d import wavenet

    parts = mesh.size
    cfg = wavenet.Config(layers=3, channels=32, skip_channels=32, length=4096, batch=2 * parts) if small \
        else wavenet.Config()
    params0 = jax.tree.map(np.asarray, wavenet.init_params(cfg))  # on the host: each run places a fresh copy
    dev0 = jax.devices()[0]
    signal = jax.jit(wavenet.synthetic_batch, static_argnums=(1, 2))(jax.random.key(1), cfg.batch, cfg.length)
    # The next-sample target, shifted once here: inside the step a shift of a length-sharded array would
    # move data between shards for reasons that have nothing to do with the convolutions. The last position
    # predicts itself (one of L terms of the loss).
    target = jnp.concatenate([signal[:, 1:], signal[:, -1:]], axis=1)
    shape = (f"{cfg.layers} layers d1..{cfg.dilations[-1]} C{cfg.channels} K{cfg.kernel_size} L{cfg.length} "
             f"N{cfg.batch} {cfg.dtype} adam")
    # Flax/lax takes ~0.7 s a step on one GPU: fewer of them
    step_counts = {"ours": (3, 3) if small else (5, 3), "flax": (2, 2)}

    def make_step(backend):
        model = wavenet.WaveNet(wavenet.BACKENDS[backend], cfg)
        tx = optax.adam(cfg.lr)

        def loss_fn(p, signal, target):
            return jnp.mean((model.apply({"params": p}, signal) - target) ** 2)

        def step(p, state, signal, target):
            loss, grads = jax.value_and_grad(loss_fn)(p, signal, target)
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state, loss

        return jax.jit(step, donate_argnums=(0, 1)), tx

    def run(backend, placement):
        steps, timed_batches = step_counts[backend]
        """Per-step seconds (median over batches of `steps` steps), final params and loss, collectives."""
        step, tx = make_step(backend)
        p = jax.device_put(params0, placement["params"])
        state = jax.device_put(tx.init(params0), placement["params"])
        sig, tgt = jax.device_put(signal, placement["data"]), jax.device_put(target, placement["data"])
        text = step.lower(p, state, sig, tgt).compile().as_text()
        comm = collectives(text)
        p, state, loss = step(p, state, sig, tgt)  # compiles
        jax.block_until_ready(loss)
        times = []
        for _ in range(timed_batches):
            t0 = time.perf_counter()
            for _ in range(steps):
                p, state, loss = step(p, state, sig, tgt)
            jax.block_until_ready(loss)
            times.append((time.perf_counter() - t0) / steps)
        return statistics.median(times), p, float(loss), comm, _copies(text)

    one = {"params": dev0, "data": dev0}
    backends = ("ours", "flax") if with_xla else ("ours",)
    for backend in backends:
        name = "wavenet_train_step" + ("" if backend == "ours" else " (flax/lax)")
        t1, p1, loss1, _, _ = run(backend, one)
        rows.append(Row(name, "1 GPU", 1, shape, 1e3 * t1, None, None, {}, False))
        _print(rows[-1])
        for mode, dim, halo in _modes(1, sp_modes) if backend == "ours" else _modes(1, ())[:1]:
            os.environ["JAX_CONV1D_SP_HALO"] = halo
            spec = P("dev", None) if dim == 0 else P(None, "dev")
            placement = {"params": NamedSharding(mesh, P()), "data": NamedSharding(mesh, spec)}
            t, p, loss, comm, copies = run(backend, placement)
            flat = lambda tree: jnp.concatenate([a.ravel() for a in jax.tree.leaves(tree)])  # noqa: E731
            err = max(_rel_err(flat(p), flat(p1)),
                      abs(loss - loss1) / max(abs(loss1), 1e-30))
            rows.append(Row(name, mode, parts, shape, 1e3 * t, t1 / (parts * t), err, comm, "all-gather" in comm,
                            copies))
            _print(rows[-1])
            del p
        del p1


# ---- main -----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small shapes (a smoke test, e.g. on CPU devices)")
    ap.add_argument("--json", help="write the rows, devices and versions to this file")
    ap.add_argument("--layouts", nargs="+", default=["NCW", "NWC"])
    ap.add_argument("--skip-headline", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--sp-modes", nargs="+", default=["edges"], choices=["edges", "window"],
                    help="JAX_CONV1D_SP_HALO modes to time sequence parallelism in")
    ap.add_argument("--with-xla", action="store_true", help="also the Flax/lax training step (1 GPU and data "
                    "parallel), for comparison")
    args = ap.parse_args(argv)

    devices = jax.devices()
    if len(devices) < 2:
        print(f"needs two or more devices, found {len(devices)}", file=sys.stderr)
        return 2
    mesh = jax.make_mesh((len(devices),), ("dev",), axis_types=(AxisType.Auto,))
    info = {"devices": [d.device_kind for d in devices], "jax": jax.__version__,
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
            "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE")}
    print(f"{len(devices)} x {devices[0].device_kind}, jax {jax.__version__}", flush=True)
    print(f"{'workload':26s} {'mode':28s} {'P':>2s} {'ms':>10s} {'eff':>8s} {'rel err':>10s} {'cat':>4s}  "
          "collectives",
          flush=True)
    rows: list[Row] = []
    try:
        if not args.skip_headline:
            for layout in args.layouts:
                headline(mesh, layout, args.small, rows, args.sp_modes)
        if not args.skip_train:
            train_step_rows(mesh, args.small, rows, args.with_xla, args.sp_modes)
    finally:
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"info": info, "rows": [dataclasses.asdict(r) for r in rows]}, f, indent=1)
    gathered = [f"{r.workload} ({r.mode})" for r in rows if r.all_gather]
    print("all-gathers in sharded programs: " + (", ".join(gathered) if gathered else "none"), flush=True)
    return 1 if gathered else 0


if __name__ == "__main__":
    sys.exit(main())
