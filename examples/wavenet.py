"""Train a WaveNet-style model on a synthetic signal, with jax_conv1d's layers or Flax's lax-backed Conv.

The model is a stack of residual blocks: a causal dilated convolution to 2 x channels, a gated activation
(tanh x sigmoid), then 1x1 convolutions for the residual and the skip path; the summed skips go through two
more 1x1 convolutions to predict the next sample of the signal. Training is optax Adam in one jit-compiled
step (forward, backward and update).

Both backends build the same parameter tree (jax_conv1d.linen.Conv1D is a drop-in for flax.linen.Conv), so
they start from the same parameters and see the same batches; their losses should agree to float tolerance.

    python examples/wavenet.py --backend both --steps 20                         # the 10-layer config
    python examples/wavenet.py --backend ours --length 4096 --channels 32 --steps 50
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from jax_conv1d.linen import Conv1D  # noqa: F401 (re-exported for callers of this script)
from jax_conv1d.wavenet import BACKENDS, Config, WaveNet, init_params, make_train_step, synthetic_batch  # noqa: F401


class _Progress:
    """tqdm when it is installed, else one self-overwriting line on stderr."""

    def __init__(self, total: int, desc: str):
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self._bar = tqdm(total=total, desc=desc, file=sys.stderr) if tqdm is not None else None
        self._total, self._desc, self._done = total, desc, 0

    def update(self, loss: float, step_s: float):
        self._done += 1
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.5f}", step=f"{step_s * 1e3:.1f} ms", refresh=False)
            self._bar.update(1)
        else:
            print(f"\r{self._desc}: {self._done}/{self._total}  loss {loss:.5f}  step {step_s * 1e3:.1f} ms",
                  end="", file=sys.stderr, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
        else:
            print(file=sys.stderr)


@dataclasses.dataclass
class RunResult:
    backend: str
    losses: list[float]
    step_times_s: list[float]  # every step after the first, which includes compilation
    first_step_s: float

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.step_times_s) if self.step_times_s else float("nan")


def train(backend: str, cfg: Config, params, progress: bool = True) -> RunResult:
    model = WaveNet(BACKENDS[backend], cfg)
    tx = optax.adam(cfg.lr)
    params = jax.tree.map(jnp.array, params)  # a private copy: the step donates its arguments
    opt_state = tx.init(params)
    step = make_train_step(model, tx)
    make_batch = jax.jit(synthetic_batch, static_argnums=(1, 2))
    data_key = jax.random.key(cfg.seed + 1)
    bar = _Progress(cfg.steps, backend) if progress else None
    losses, times = [], []
    first = float("nan")
    for i in range(cfg.steps):
        signal = make_batch(jax.random.fold_in(data_key, i), cfg.batch, cfg.length).block_until_ready()
        start = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, signal)
        loss = float(loss)  # waits for the step
        elapsed = time.perf_counter() - start
        if i == 0:
            first = elapsed
        else:
            times.append(elapsed)
        losses.append(loss)
        if bar is not None:
            bar.update(loss, elapsed)
    if bar is not None:
        bar.close()
    return RunResult(backend, losses, times, first)


def main(argv: Sequence[str] | None = None) -> dict[str, RunResult]:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("ours", "flax", "both"), default="both")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps (the first compiles)")
    parser.add_argument("--layers", type=int, default=defaults.layers, help="residual blocks, dilations 1..2**(n-1)")
    parser.add_argument("--channels", type=int, default=defaults.channels)
    parser.add_argument("--skip-channels", type=int, default=None, help="defaults to --channels")
    parser.add_argument("--kernel-size", type=int, default=defaults.kernel_size)
    parser.add_argument("--length", type=int, default=defaults.length)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=defaults.dtype,
                        help="computation dtype; parameters stay float32")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    cfg = Config(layers=args.layers, channels=args.channels, skip_channels=args.skip_channels or args.channels,
                 kernel_size=args.kernel_size, length=args.length, batch=args.batch, dtype=args.dtype,
                 steps=args.steps, lr=args.lr, seed=args.seed)

    device = jax.devices()[0]
    print(f"device: {device.platform} {getattr(device, 'device_kind', '')}, jax {jax.__version__}")
    print(f"config: {cfg.layers} layers (dilations 1..{cfg.dilations[-1]}), {cfg.channels} channels, "
          f"kernel {cfg.kernel_size}, batch {cfg.batch}, length {cfg.length}, {cfg.dtype}, {cfg.steps} steps")
    params = init_params(cfg)
    results = {}
    for backend in (("ours", "flax") if args.backend == "both" else (args.backend,)):
        r = train(backend, cfg, params, progress=not args.no_progress)
        results[backend] = r
        print(f"{backend:>4}: loss {r.losses[0]:.6f} -> {r.losses[-1]:.6f}, first step (with compile) "
              f"{r.first_step_s:.2f} s, median step time {r.median_step_s * 1e3:.2f} ms "
              f"over {len(r.step_times_s)} steps")
    if len(results) == 2:
        ours, flax_ = results["ours"], results["flax"]
        diff = max(abs(a - b) for a, b in zip(ours.losses, flax_.losses))
        print(f"largest loss difference between backends: {diff:.3g}")
        if ours.step_times_s:
            print(f"speed-up of ours over flax (median step): {flax_.median_step_s / ours.median_step_s:.2f}x")
    return results


if __name__ == "__main__":
    main()
