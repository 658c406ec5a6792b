"""The WaveNet training step's variants (wavenet.Config switches) timed in one process, and where each
one's GPU time goes by kind of kernel:

    python benchmarks/step_variants.py [--variants base,pair,pair+skip,all] [--rounds 15] [--list DIR]

Every variant trains from the same parameters on the same batch; steps are timed round-robin (one step of
each variant per round, after two warm-up steps, each step waiting for its loss), and the table gives the
median wall time per step, the time per step of --pipe steps dispatched back to back with one wait at the end
(median of three such runs per variant, round-robin), the loss after all steps against the base variant's, and
the GPU time per step summed by kind from a jax.profiler trace of three further steps. --list writes each
variant's ordered kernel list (one step) to DIR/<variant>.txt.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import os
import re
import statistics
import tempfile
import time

VARIANTS = {
    "base": {"gate_keeps_input": False, "fused_pointwise": False, "skip_grad_once": False},
    "gate": {"gate_keeps_input": True, "fused_pointwise": False, "skip_grad_once": False},
    "pair": {"gate_keeps_input": False, "fused_pointwise": True, "skip_grad_once": False},
    "skip": {"gate_keeps_input": False, "fused_pointwise": False, "skip_grad_once": True},
    "gate+pair": {"gate_keeps_input": True, "fused_pointwise": True, "skip_grad_once": False},
    "gate+skip": {"gate_keeps_input": True, "fused_pointwise": False, "skip_grad_once": True},
    "pair+skip": {"gate_keeps_input": False, "fused_pointwise": True, "skip_grad_once": True},
    "all": {"gate_keeps_input": True, "fused_pointwise": True, "skip_grad_once": True},
    # kernel A/B switches (read by the CUDA host code on every call) on top of all three routes
    "all+t64": {"gate_keeps_input": True, "fused_pointwise": True, "skip_grad_once": True,
                "env": {"JAX_CONV1D_IGEMM_TILE": "64x256"}},
    # the defaults with session 5's wgrad loop (one block barrier per unit) instead of the stage releases
    "pair+skip+block": {"gate_keeps_input": False, "fused_pointwise": True, "skip_grad_once": True,
                        "env": {"JAX_CONV1D_WGRAD_RELEASE": "block"}},
    # the defaults with session 7's 128 x 128 wgrad tiles (one tap per block) instead of 128 x 256 (same bits)
    "pair+skip+narrow": {"gate_keeps_input": False, "fused_pointwise": True, "skip_grad_once": True,
                         "env": {"JAX_CONV1D_WGRAD_TILE": "narrow"}},
    # the defaults on one flat parameter vector (wavenet.make_flat_train_step): a few donated buffers per step
    # instead of ~3 per parameter leaf, to see how much of the host time per step is argument handling
    "pair+skip+flat": {"gate_keeps_input": False, "fused_pointwise": True, "skip_grad_once": True, "flat": True},
}
_NOT_CONFIG = ("env", "flat")


class _env:
    """Sets a variant's environment switches around its steps."""

    def __init__(self, values):
        self.values, self.saved = values, {}

    def __enter__(self):
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kind_of(name: str) -> str:
    """A kernel's kind, from its name: ours (forward implicit GEMM, which also runs stride-1 dgrad; wgrad),
    cuBLAS/CUTLASS GEMMs, Triton GEMM fusions, XLA's copies and transposes, reductions and other fusions."""
    n = name.lower()
    if "conv1d_fwd" in n:
        return "ours igemm (fwd + s1 dgrad)"
    if "wgrad" in n or "bias_grad" in n or "conv1d_" in n or "dgrad" in n:
        return "ours wgrad/other"
    if "triton" in n or "gemm_fusion" in n:
        return "triton gemm"
    if any(k in n for k in ("sm90", "cutlass", "xmma", "gemm", "gemv", "splitk", "cublas")):
        return "cublas"
    if "transpose" in n or n.startswith("copy") or "memcpy" in n or "memset" in n:
        return "copy/transpose"
    if "reduce" in n or "reduction" in n:
        return "xla reduce fusion"
    if "concatenate" in n:
        return "xla concatenate fusion"
    return "xla other fusion"


def gpu_events(run_steps):
    """[(name, start_ns, duration_ns)] of the GPU kernels run_steps() launches, from a jax.profiler trace."""
    import jax

    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            run_steps()
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
        events = []
        for plane in data.planes:
            if not plane.name.startswith("/device:GPU"):
                continue
            for line in plane.lines:
                if "stream" not in line.name.lower():
                    continue
                events += [(ev.name, ev.start_ns, ev.duration_ns) for ev in line.events]
    return sorted(events, key=lambda e: e[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="base,pair,gate+pair,pair+skip,all,all+t64")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--pipe", type=int, default=10, help="steps per back-to-back run (0: none)")
    ap.add_argument("--length", type=int, default=None, help="smaller smoke runs (default: the issue's 65536)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--list", default=None, help="folder for per-variant ordered kernel lists")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import optax

    from jax_conv1d import wavenet

    names = args.variants.split(",")
    base_cfg = wavenet.Config()
    base_cfg = dataclasses.replace(base_cfg, length=args.length or base_cfg.length, batch=args.batch or base_cfg.batch)
    params = wavenet.init_params(base_cfg)
    signal = jax.jit(wavenet.synthetic_batch, static_argnums=(1, 2))(jax.random.key(0), base_cfg.batch,
                                                                       base_cfg.length)
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}")
    state = {}
    for name in names:
        cfg = dataclasses.replace(base_cfg, **{k: v for k, v in VARIANTS[name].items() if k not in _NOT_CONFIG})
        tx = optax.adam(cfg.lr)
        model = wavenet.WaveNet(wavenet.BACKENDS["ours"], cfg)
        if VARIANTS[name].get("flat"):
            step, p, _ = wavenet.make_flat_train_step(model, tx, params)
        else:
            step = wavenet.make_train_step(model, tx)
            p = jax.tree.map(jnp.array, params)
        s = tx.init(p)
        with _env(VARIANTS[name].get("env", {})):
            t0 = time.perf_counter()
            p, s, loss = step(p, s, signal)
            float(loss)
            compile_s = time.perf_counter() - t0
            p, s, loss = step(p, s, signal)
            float(loss)
        state[name] = [step, p, s, loss, [], []]
        print(f"{name}: first step (compile) {compile_s:.1f} s", flush=True)

    for _ in range(args.rounds):
        for name in names:
            st = state[name]
            with _env(VARIANTS[name].get("env", {})):
                t0 = time.perf_counter()
                st[1], st[2], st[3] = st[0](st[1], st[2], signal)
                st[5].append(time.perf_counter() - t0)  # the call's return: host time before the step runs on
                float(st[3])
                st[4].append(time.perf_counter() - t0)

    pipe = {name: [] for name in names}
    for _ in range(3 if args.pipe else 0):
        for name in names:
            st = state[name]
            with _env(VARIANTS[name].get("env", {})):
                t0 = time.perf_counter()
                for _ in range(args.pipe):
                    st[1], st[2], st[3] = st[0](st[1], st[2], signal)
                jax.block_until_ready((st[1], st[2], st[3]))
                pipe[name].append((time.perf_counter() - t0) / args.pipe)

    report = []
    for name in names:
        st = state[name]

        def run_steps(st=st):
            for _ in range(args.profile_steps):
                st[1], st[2], st[3] = st[0](st[1], st[2], signal)
            float(st[3])

        with _env(VARIANTS[name].get("env", {})):
            events = gpu_events(run_steps)
        kinds = collections.defaultdict(float)
        for ev_name, _, dur in events:
            kinds[kind_of(ev_name)] += dur * 1e-6 / args.profile_steps
        if args.list and events:
            os.makedirs(args.list, exist_ok=True)
            per_step = len(events) // args.profile_steps
            with open(os.path.join(args.list, f"{name}.txt"), "w") as f:
                t_first = events[0][1]
                for ev_name, start, dur in events[:per_step]:
                    f.write(f"{(start - t_first) * 1e-6:9.3f} {dur * 1e-3:9.1f} us  {kind_of(ev_name):28s} "
                            f"{ev_name[:160]}\n")
        report.append((name, kinds, events))

    # Every variant has now taken the same number of steps from the same start: compare the losses.
    base_loss = float(state[names[0]][3])
    for name, kinds, events in report:
        st = state[name]
        total = sum(kinds.values())  # 0 without a GPU (no GPU planes in the trace)
        ms = statistics.median(st[4]) * 1e3
        pipe_s = f", back to back {statistics.median(pipe[name]) * 1e3:.2f} ms" if pipe[name] else ""
        pipe_s += f", call returns after {statistics.median(st[5]) * 1e3:.2f} ms"
        print(f"\n{name}: step {ms:.2f} ms median of {len(st[4])} (min {min(st[4]) * 1e3:.2f}){pipe_s}, GPU time "
              f"{total:.2f} ms/step, {len(events) // args.profile_steps} kernels/step; loss {float(st[3]):.7f} "
              f"(rel diff to {names[0]} {abs(float(st[3]) - base_loss) / abs(base_loss):.2e})")
        for kind, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print(f"   {v:8.3f} ms  {kind}")
        fam = collections.defaultdict(lambda: [0, 0.0])
        for ev_name, _, dur in events:
            key = re.sub(r"[<(].*", "", ev_name)[:60]
            fam[key][0] += 1
            fam[key][1] += dur * 1e-6
        for key, (count, v) in sorted(fam.items(), key=lambda kv: -kv[1][1])[:25]:
            print(f"      {v / args.profile_steps:8.3f} ms {count // args.profile_steps:4d}x  {key}")


if __name__ == "__main__":
    main()
