"""Where the WaveNet training step's time goes, kernel by kernel (jax.profiler, no Nsight needed):

    python benchmarks/step_profile.py [--backend ours|flax] [--steps 3]

The step is compiled and run twice, then `--steps` steps run under jax.profiler.trace; the GPU planes of the
trace are summed per kernel name (per step) and the largest families printed.
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile


def _family(name: str) -> str:
    base = re.sub(r"\(.*", "", name)
    base = re.sub(r"<.*", "", base).split("::")[-1].strip()
    return base[:70]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("ours", "flax"), default="ours")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import optax

    from jax_conv1d import wavenet

    cfg = wavenet.Config()
    params = wavenet.init_params(cfg)
    tx = optax.adam(cfg.lr)
    step = wavenet.make_train_step(wavenet.WaveNet(wavenet.BACKENDS[args.backend], cfg), tx)
    p = jax.tree.map(jnp.array, params)
    state = tx.init(p)
    signal = wavenet.synthetic_batch(jax.random.key(1), cfg.batch, cfg.length)
    for _ in range(2):
        p, state, loss = step(p, state, signal)
    jax.block_until_ready(loss)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            for _ in range(args.steps):
                p, state, loss = step(p, state, signal)
            jax.block_until_ready(loss)
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
        by = collections.defaultdict(lambda: [0, 0.0])
        for plane in data.planes:
            if not plane.name.startswith("/device:GPU"):
                continue
            for line in plane.lines:
                if "stream" not in line.name.lower():  # per-stream kernel lines only (not XLA op summaries)
                    continue
                for ev in line.events:
                    by[_family(ev.name)][0] += 1
                    by[_family(ev.name)][1] += ev.duration_ns * 1e-6
        if not by:  # a naming this script does not know: show what the trace holds
            for plane in data.planes:
                print(plane.name, [line.name for line in plane.lines])
            return
    total = sum(ms for _, ms in by.values()) / args.steps
    print(f"{args.backend}: {total:.2f} ms of GPU time per step (loss {float(loss):.6f})")
    for name, (count, ms) in sorted(by.items(), key=lambda kv: -kv[1][1])[:45]:
        print(f"{ms / args.steps:9.3f} ms {100 * ms / args.steps / total:5.1f}% {count // args.steps:5d}x  {name}")


if __name__ == "__main__":
    main()
