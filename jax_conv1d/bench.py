"""Benchmark: jax-conv1d against XLA (lax.conv_general_dilated), per configuration, in one process.

    python -m jax_conv1d.bench                      # every suite (headline, models, sweep)
    python -m jax_conv1d.bench --cases 'headline/*' --json out.json --plot out.png
    python -m jax_conv1d.bench --quick              # headline + models + a 12-configuration sweep
    python -m jax_conv1d.bench --cases 'train/*'    # the WaveNet training step alone (needs flax, optax)
    python -m jax_conv1d.bench --list               # case names
    python -m jax_conv1d.bench --cases 'sweep/*' --no-scratch   # the 48-row sweep, ~255 s on an H100

For each configuration and pass (forward; backward = jax.vjp for x and w) it prints the median time of ours
and of XLA, the speedup, the fraction of the memory floor reached, the scratch memory XLA reserves for each
(compiled memory analysis), and the relative error ||ours - ref|| / ||ref|| against XLA at
precision=HIGHEST on the same inputs (upcast to float32 for 16-bit inputs); for backward cases whose x and dy
exceed 4 GB the error is taken on the first N/8 samples, since XLA's reference needs up to 36 GB of scratch.

Floor: bytes that must cross device memory (each input read once, each output written once; forward
x + w + y, backward dy + x + w + dx + dw) over the copy bandwidth measured at the start of the same run.

Timing: each jitted function is compiled and run once, then timed in batches of back-to-back calls (at least
three, and enough to fill ~20 ms, so host dispatch overlaps device work) with one synchronisation per batch;
the reported time is the median over batches of the per-call time.

The training-step rows (train/wavenet) time one jitted forward + backward + Adam step of a 10-layer
WaveNet-style model with our layers and with Flax's lax-backed Conv: pass "step" waits for each step's loss,
pass "pipe" dispatches the steps back to back and waits once (host dispatch then overlaps the GPU). They run
unless --no-backward is given or --cases leaves them out. Order: the named cases, the training step, then
the sweep; --json is rewritten after every row, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import gc
import json
import random
import statistics
import sys
import time
from typing import Callable

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

from . import dilated_conv1d
from ._shapes import output_length, resolve_padding
from ._timing import relative_error as rel_err

# ---- configurations --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    n: int
    c: int
    o: int
    k: int
    length: int
    stride: int = 1
    dilation: int = 1
    padding: str | tuple = "VALID"
    groups: int = 1
    layout: str = "NCW"
    dtype: str = "float32"
    precision: str = "default"  # "default" or "highest"
    bias: bool = False

    @property
    def pads(self) -> tuple[int, int]:
        return resolve_padding(self.padding, self.length, self.k, self.stride, self.dilation)

    @property
    def out_length(self) -> int:
        return output_length(self.length, self.k, self.stride, self.dilation, *self.pads)

    def shapes(self):
        cg = self.c // self.groups
        if self.layout == "NCW":
            return (self.n, self.c, self.length), (self.o, cg, self.k), (self.n, self.o, self.out_length)
        return (self.n, self.length, self.c), (self.k, cg, self.o), (self.n, self.out_length, self.o)

    def describe(self) -> str:
        return (f"N{self.n} C{self.c} O{self.o} K{self.k} L{self.length} s{self.stride} d{self.dilation} "
                f"g{self.groups} {self.padding if isinstance(self.padding, str) else 'pad'} {self.layout} "
                f"{self.dtype} {self.precision}{' bias' if self.bias else ''}")


def headline_cases():
    """KernelBench level 1 problem 76: x (64, 64, 524280), w (128, 64, 3), stride 3, dilation 4, VALID."""
    out = []
    for dtype, precisions in (("float32", ("default", "highest")), ("bfloat16", ("default",))):
        for precision in precisions:
            for layout in ("NCW", "NWC"):
                for bias in (False, True):
                    short = "f32" if dtype == "float32" else "bf16"
                    name = f"headline/{short}/{layout}/{precision}/{'bias' if bias else 'nobias'}"
                    out.append(Case(name, 64, 64, 128, 3, 524280, stride=3, dilation=4, padding="VALID",
                                    layout=layout, dtype=dtype, precision=precision, bias=bias))
    return out


def model_cases():
    """Layers from real models (NWC, with bias)."""
    return [
        Case("depthwise_tcn", 16, 512, 512, 7, 65536, dilation=8, padding="SAME", groups=512, layout="NWC",
             bias=True),
        Case("mamba_dw_causal", 8, 5120, 5120, 4, 2048, padding="CAUSAL", groups=5120, layout="NWC",
             dtype="bfloat16", bias=True),
        Case("wavenet_dense", 16, 128, 256, 2, 65536, dilation=64, padding="CAUSAL", layout="NWC", bias=True),
    ]


def sweep_cases(count: int, seed: int = 0):
    """Random layer shapes: C, O in 16..1024, K 1..9, stride 1..4, dilation 1..8, groups 1 / 8 / depthwise
    (channel multiplier 1 or 2), both layouts, float32 and bfloat16. The length is chosen so that x holds about
    2^23 elements (32 MiB in float32): large enough to fill the GPU, small enough to run many."""
    rng = random.Random(seed)
    widths = (16, 32, 64, 128, 256, 512, 1024)
    out = []
    for i in range(count):
        c = rng.choice(widths)
        kind = rng.choice(("dense", "grouped", "depthwise"))
        if kind == "depthwise":
            groups, o = c, c * rng.choice((1, 2))
        else:
            groups, o = (1 if kind == "dense" else 8), rng.choice(widths)
        k, stride, dilation = rng.randint(1, 9), rng.randint(1, 4), rng.randint(1, 8)
        n = 4
        length = max(64, (1 << 23) // (n * c))
        padding = rng.choice(("VALID", "SAME", "CAUSAL"))
        layout = rng.choice(("NCW", "NWC"))
        dtype = rng.choice(("float32", "bfloat16"))
        name = f"sweep/{i:03d}"
        out.append(Case(name, n, c, o, k, length, stride=stride, dilation=dilation, padding=padding, groups=groups,
                        layout=layout, dtype=dtype, bias=rng.random() < 0.5))
    return out


def all_cases(sweep_count: int):
    return headline_cases() + model_cases() + sweep_cases(sweep_count)


# ---- the two implementations -----------------------------------------------------------------------------


def _xla_dimension_numbers(layout):
    return ("NCH", "OIH", "NCH") if layout == "NCW" else ("NHC", "HIO", "NHC")


def xla_forward(case: Case, precision: str, out_dtype=None) -> Callable:
    prec = lax.Precision.HIGHEST if precision == "highest" else lax.Precision.DEFAULT

    def f(x, w, b):
        y = lax.conv_general_dilated(x, w, (case.stride,), [case.pads], rhs_dilation=(case.dilation,),
                                     dimension_numbers=_xla_dimension_numbers(case.layout),
                                     feature_group_count=case.groups, precision=prec,
                                     preferred_element_type=out_dtype)
        if b is not None:
            y = y + (b.reshape(1, -1, 1) if case.layout == "NCW" else b.reshape(1, 1, -1)).astype(y.dtype)
        return y

    return f


def ours_forward(case: Case) -> Callable:
    def f(x, w, b):
        return dilated_conv1d(x, w, b, stride=case.stride, dilation=case.dilation, padding=case.pads,
                              groups=case.groups, layout=case.layout, precision=case.precision)

    return f


def backward_of(forward: Callable) -> Callable:
    """(x, w, b, dy) -> (dx, dw, db) through jax.vjp (db is None without a bias); the unused primal output is
    removed by XLA."""

    def f(x, w, b, dy):
        if b is None:
            _, vjp = jax.vjp(lambda x_, w_: forward(x_, w_, None), x, w)
            return (*vjp(dy), None)
        _, vjp = jax.vjp(forward, x, w, b)
        return vjp(dy)

    return f


# ---- measurement -------------------------------------------------------------------------------------------


def time_call(fn, args, *, batch_s=20e-3, batches=7, budget_s=3.0, min_calls=3) -> float:
    """Median per-call seconds of a compiled function, timed in batches of back-to-back calls.

    A batch holds at least `min_calls` calls (fewer only where the budget cannot pay for them) and about
    `batch_s` of work: the host dispatches call i+1 while the GPU runs call i, as a training loop does, so
    one dispatch-and-wait (~0.24-0.38 ms on an H100 with jax 0.11, for XLA's programs and ours alike) is
    spread over the batch instead of charged to every call of a few milliseconds.
    """
    jax.block_until_ready(fn(*args))  # compile + first run
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    once = time.perf_counter() - t0
    per_batch = max(1, int(batch_s / max(once, 1e-7)))
    if once * min_calls * 2 <= budget_s:
        per_batch = max(per_batch, min_calls)
    batches = max(1, min(batches, int(budget_s / max(once * per_batch, 1e-9))))
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        out = None
        for _ in range(per_batch):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / per_batch)
    if not times:
        times = [once]
    return statistics.median(times)


def scratch_bytes(fn, args) -> int | None:
    try:
        analysis = fn.lower(*args).compile().memory_analysis()
        return int(analysis.temp_size_in_bytes)
    except Exception:  # memory analysis is best effort: not every backend reports it
        return None


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes read + written per second by an elementwise pass over an nbytes float32 array."""
    a = jnp.ones((nbytes // 4,), jnp.float32)
    neg = jax.jit(lambda v: -v)
    t = time_call(neg, (a,), batch_s=20e-3, batches=9)
    del a
    return 2 * nbytes / t


def make_inputs(case: Case, key):
    xs, ws, ys = case.shapes()
    dt = jnp.dtype(case.dtype)
    kx, kw, kb, ky = jax.random.split(key, 4)
    fan_in = (case.c // case.groups) * case.k
    x = jax.random.normal(kx, xs, jnp.float32).astype(dt)
    w = (jax.random.normal(kw, ws, jnp.float32) / np.sqrt(fan_in)).astype(dt)
    b = jax.random.normal(kb, (case.o,), jnp.float32).astype(dt) if case.bias else None
    return x, w, b, ky


def _nbytes(*arrays) -> int:
    return sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize for a in arrays if a is not None)


@dataclasses.dataclass
class Row:
    case: str
    pass_: str
    shape: str
    ours_ms: float
    xla_ms: float
    speedup: float
    floor_ms: float
    frac_floor: float
    ours_scratch: int | None
    xla_scratch: int | None
    rel_err: float


def run_case(case: Case, bandwidth: float, key, backward: bool, log=print, on_row=None,
             scratch: bool = True) -> list[Row]:
    """The case's forward (and backward) rows; on_row sees each row as soon as it is measured. scratch=False
    leaves the scratch columns empty (None): each takes one more compilation per program."""
    scratch_of = scratch_bytes if scratch else (lambda fn, args: None)
    rows = []
    x, w, b, ky = make_inputs(case, key)
    _, _, ys = case.shapes()
    f32_inputs = case.dtype != "float32"

    ours = jax.jit(ours_forward(case))
    xla = jax.jit(xla_forward(case, case.precision))
    ref_fn = jax.jit(xla_forward(case, "highest", jnp.float32))
    args = (x, w, b)

    ref = ref_fn(*((x.astype(jnp.float32), w.astype(jnp.float32), None if b is None else b.astype(jnp.float32))
                   if f32_inputs else args))
    y = ours(*args)
    err = rel_err(y, ref)
    y_bytes = int(np.prod(ys)) * jnp.dtype(case.dtype).itemsize
    del y, ref
    t_ours = time_call(ours, args)
    t_xla = time_call(xla, args)
    floor = (_nbytes(x, w, b) + y_bytes) / bandwidth
    rows.append(Row(case.name, "fwd", case.describe(), t_ours * 1e3, t_xla * 1e3, t_xla / t_ours, floor * 1e3,
                    floor / t_ours, scratch_of(ours, args), scratch_of(xla, args), err))
    log(_format_row(rows[-1]))
    if on_row:
        on_row(rows[-1])
    gc.collect()

    if backward:
        dy = jax.random.normal(ky, ys, jnp.float32).astype(case.dtype)
        ours_b = jax.jit(backward_of(ours_forward(case)))
        xla_b = jax.jit(backward_of(xla_forward(case, case.precision)))
        ref_b = jax.jit(backward_of(xla_forward(case, "highest", jnp.float32)))
        bargs = (x, w, b, dy)
        # The reference (XLA at HIGHEST, up to 36 GB of scratch on the headline) does not fit beside the
        # full-size tensors: multi-GB cases compare ours and the reference on the first samples only.
        sub = max(1, case.n // 8) if _nbytes(x, dy) > (4 << 30) else case.n
        eargs = (x[:sub], w, b, dy[:sub])
        up = tuple(None if a is None else a.astype(jnp.float32) for a in eargs) if f32_inputs else eargs
        refs = ref_b(*up)
        got = ours_b(*eargs)
        err = max(rel_err(o, r) for o, r in zip(got, refs) if r is not None)
        del refs, got, up, eargs
        t_ours = time_call(ours_b, bargs)
        t_xla = time_call(xla_b, bargs)
        floor = (_nbytes(dy, x, w, b) + _nbytes(x, w, b)) / bandwidth  # reads dy, x, w; writes dx, dw, db
        rows.append(Row(case.name, "bwd", case.describe(), t_ours * 1e3, t_xla * 1e3, t_xla / t_ours, floor * 1e3,
                        floor / t_ours, scratch_of(ours_b, bargs), scratch_of(xla_b, bargs), err))
        log(_format_row(rows[-1]))
        if on_row:
            on_row(rows[-1])
        del dy
    del x, w, b
    gc.collect()
    return rows


# ---- training step ---------------------------------------------------------------------------------------

TRAIN_CASE = "train/wavenet"


def run_train_step(key, log=print, steps: int = 6, config=None) -> list[Row]:
    """The issue's training-step rows: jax_conv1d.wavenet's 10-layer model (dilations 1..512, 128 channels,
    L 65536, batch 8, float32), one jitted forward + backward + Adam update, ours vs Flax's lax-backed Conv from
    the same parameters on the same batch. The error column is the relative difference of the two losses after
    `steps` updates; there is no floor (the step is many passes).

    Two rows: "step" waits for each step's loss before the next step is dispatched (the median of those
    waits, so host dispatch and the sync are in it), "pipe" dispatches `steps` more steps back to back, as a
    training loop that does not read the loss every step runs them, and waits once (total / steps)."""
    try:
        import optax

        from . import wavenet
    except ImportError:
        log(f"{TRAIN_CASE:40s} skipped: needs flax and optax")
        return []
    cfg = config or wavenet.Config()
    params = wavenet.init_params(cfg)
    signal = jax.jit(wavenet.synthetic_batch, static_argnums=(1, 2))(key, cfg.batch, cfg.length)
    step_ms, pipe_ms, losses, scratch = {}, {}, {}, {}
    for backend in ("ours", "flax"):
        tx = optax.adam(cfg.lr)
        step = wavenet.make_train_step(wavenet.WaveNet(wavenet.BACKENDS[backend], cfg), tx)
        p = jax.tree.map(jnp.array, params)  # a private copy: the step donates its arguments
        state = tx.init(p)
        scratch[backend] = scratch_bytes(step, (p, state, signal))
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            p, state, loss = step(p, state, signal)
            losses[backend] = float(loss)  # waits for the step
            times.append(time.perf_counter() - t0)
        step_ms[backend] = statistics.median(times[1:]) * 1e3  # the first step compiles
        t0 = time.perf_counter()
        for _ in range(steps):
            p, state, pipe_loss = step(p, state, signal)
        t_dispatch = time.perf_counter() - t0
        jax.block_until_ready((p, state, pipe_loss))
        pipe_ms[backend] = (time.perf_counter() - t0) / steps * 1e3
        log(f"{TRAIN_CASE:40s} {backend}: {step_ms[backend]:.3f} ms per step waiting on each loss, "
            f"{pipe_ms[backend]:.3f} back to back ({steps} steps, dispatch {t_dispatch / steps * 1e3:.3f} ms each)")
        del p, state, pipe_loss
        gc.collect()
    err = abs(losses["ours"] - losses["flax"]) / max(abs(losses["flax"]), 1e-30)
    shape = (f"{cfg.layers} layers d1..{cfg.dilations[-1]} C{cfg.channels} K{cfg.kernel_size} "
             f"L{cfg.length} N{cfg.batch} {cfg.dtype} adam")
    rows = [Row(TRAIN_CASE, pass_, shape, ms["ours"], ms["flax"], ms["flax"] / ms["ours"], float("nan"),
                float("nan"), scratch["ours"], scratch["flax"], err)
            for pass_, ms in (("step", step_ms), ("pipe", pipe_ms))]
    for row in rows:
        log(_format_row(row))
    return rows


# ---- reporting ---------------------------------------------------------------------------------------------

_HEADER = (f"{'case':40s} {'pass':4s} {'ours ms':>9s} {'xla ms':>9s} {'speedup':>8s} {'floor ms':>9s} "
           f"{'%floor':>7s} {'scr ours':>9s} {'scr xla':>9s} {'rel err':>9s}")


def _fmt_bytes(v):
    if v is None:
        return "?"
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if v >= scale:
            return f"{v / scale:.1f}{unit}"
    return str(v)


def _format_row(r: Row) -> str:
    floor = (f"{r.floor_ms:9.3f} {100 * r.frac_floor:6.1f}%" if np.isfinite(r.floor_ms) else f"{'-':>9s} {'-':>7s}")
    return (f"{r.case:40s} {r.pass_:4s} {r.ours_ms:9.3f} {r.xla_ms:9.3f} {r.speedup:8.2f} {floor} "
            f"{_fmt_bytes(r.ours_scratch):>9s} {_fmt_bytes(r.xla_scratch):>9s} {r.rel_err:9.2e}")


def summarize_sweep(rows: list[Row]) -> dict:
    out = {}
    for pass_ in ("fwd", "bwd"):
        s = [r.speedup for r in rows if r.case.startswith("sweep/") and r.pass_ == pass_]
        if s:
            out[pass_] = dict(count=len(s), worst=min(s), median=statistics.median(s),
                              slower_than_xla=sum(v < 1 for v in s))
    return out


def plot(rows: list[Row], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no plot written", file=sys.stderr)
        return False
    labels = [f"{r.case} {r.pass_}" for r in rows]
    pos = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(rows)), 6))
    ax.bar(pos - 0.2, [r.xla_ms for r in rows], 0.4, label="XLA")
    ax.bar(pos + 0.2, [r.ours_ms for r in rows], 0.4, label="jax-conv1d")
    ax.scatter(pos, [r.floor_ms for r in rows], marker="_", s=120, color="k", label="memory floor", zorder=3)
    ax.set_yscale("log")
    ax.set_ylabel("median time (ms)")
    ax.set_xticks(pos)
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_title(f"jax-conv1d vs XLA on {jax.devices()[0].device_kind}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _run_guarded(name: str, fn) -> list[Row]:
    """One case's rows; a failing case (e.g. out of memory) is reported and must not lose the others."""
    try:
        return fn()
    except Exception as err:
        print(f"{name:40s} FAILED: {type(err).__name__}: {str(err).splitlines()[0][:160]}", flush=True)
        gc.collect()
        return []


def write_json(path: str, dev, bandwidth: float, rows: list[Row], cases) -> None:
    with open(path, "w") as fh:
        json.dump(dict(device=dev.device_kind, jax=jax.__version__, copy_bandwidth=bandwidth,
                       rows=[dataclasses.asdict(r) for r in rows], sweep=summarize_sweep(rows),
                       cases={c.name: dataclasses.asdict(c) for c in cases}), fh, indent=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jax_conv1d.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="*", default=None, help="names or globs, e.g. 'headline/f32/*' 'sweep/*'")
    ap.add_argument("--quick", action="store_true", help="a 12-configuration sweep instead of 48")
    ap.add_argument("--sweep", type=int, default=None, help="number of sweep configurations")
    ap.add_argument("--seed", type=int, default=0, help="sweep seed")
    ap.add_argument("--no-backward", action="store_true", help="forward rows only")
    ap.add_argument("--json", metavar="PATH", help="write the rows and run metadata as JSON")
    ap.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (needs matplotlib)")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    ap.add_argument("--no-scratch", action="store_true",
                    help="leave the scratch columns empty (saves two compilations per row)")
    args = ap.parse_args(argv)

    sweep_count = args.sweep if args.sweep is not None else (12 if args.quick else 48)
    cases = all_cases(sweep_count)
    train = not args.no_backward
    if args.cases:
        cases = [c for c in cases if any(fnmatch.fnmatchcase(c.name, pat) for pat in args.cases)]
        train = train and any(fnmatch.fnmatchcase(TRAIN_CASE, pat) for pat in args.cases)
    if args.list:
        for c in cases:
            print(f"{c.name:40s} {c.describe()}")
        if train:
            print(f"{TRAIN_CASE:40s} WaveNet training step (forward + backward + adam), needs flax and optax")
        return 0
    if not cases and not train:
        print("no case matches", file=sys.stderr)
        return 2

    dev = jax.devices()[0]
    bandwidth = copy_bandwidth()
    print(f"device: {dev.device_kind}  jax {jax.__version__}  copy bandwidth {bandwidth / 1e12:.3f} TB/s")
    print(_HEADER)
    rows: list[Row] = []
    key = jax.random.key(args.seed)
    log = lambda s: print(s, flush=True)  # noqa: E731

    def save(extra=()):  # after every row, so a run stopped by a time limit still leaves what it measured
        if args.json:
            write_json(args.json, dev, bandwidth, rows + list(extra), cases)

    def case_rows(case, case_key):
        measured: list[Row] = []

        def on_row(row):
            measured.append(row)
            save(measured)

        # A backward that fails (e.g. out of memory) keeps the forward row measured before it.
        _run_guarded(case.name, lambda: run_case(case, bandwidth, case_key, backward=not args.no_backward,
                                                 log=log, on_row=on_row, scratch=not args.no_scratch))
        return measured

    # The named cases, then the training step, then the sweep: the sweep is the longest and the first to give
    # when a run has a time limit. None stands for the training step.
    plan = [(i, c) for i, c in enumerate(cases) if not c.name.startswith("sweep/")]
    plan += [(len(cases), None)] if train else []
    plan += [(i, c) for i, c in enumerate(cases) if c.name.startswith("sweep/")]
    for i, case in plan:
        case_key = jax.random.fold_in(key, i)
        if case is None:
            rows += _run_guarded(TRAIN_CASE, lambda: run_train_step(case_key, log=log))
        else:
            rows += case_rows(case, case_key)
        save()

    print("\n" + _HEADER)
    for r in rows:
        print(_format_row(r))
    for pass_, s in summarize_sweep(rows).items():
        print(f"sweep {pass_}: {s['count']} configurations, speedup over XLA worst {s['worst']:.2f}x, "
              f"median {s['median']:.2f}x, slower than XLA in {s['slower_than_xla']}")
    if args.plot and rows:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
