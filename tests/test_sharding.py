"""Sharding: the partitioning plans checked directly (no devices needed), and the device cases in
tests/sharding_cases.py run in a subprocess: on 8 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8
before jax is imported) everywhere, and on all GPUs of a machine that has two or more."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import gpu_device

from jax_conv1d._shapes import make_config, output_length
from jax_conv1d._sharding import length_plan, plan_bwd, plan_dgrad, plan_fwd, plan_wgrad

CASES_FILE = Path(__file__).with_name("sharding_cases.py")


# ---- the halo geometry, simulated in numpy --------------------------------------------------------------


def _conv_1ch(x, w, stride, dilation, lo, hi):
    """Single-channel cross-correlation with lax's padding rules (negative pads crop)."""
    xp = np.concatenate([np.zeros(max(lo, 0)), x[max(-lo, 0):len(x) - max(-hi, 0)], np.zeros(max(hi, 0))])
    n_out = output_length(len(x), len(w), stride, dilation, lo, hi)
    return np.array([sum(w[k] * xp[t * stride + k * dilation] for k in range(len(w))) for t in range(n_out)])


def _sharded_conv_1ch(x, w, cfg, lp):
    """What the partitioned forward computes: per shard, [left halo | block | right halo] with zeros past
    the global ends (what a non-cyclic collective permute delivers), then a VALID conv of the window."""
    blocks = x.reshape(lp.shards, lp.x_block)
    out = []
    for p in range(lp.shards):
        left = blocks[p - 1][lp.x_block - lp.halo_lo:] if p > 0 else np.zeros(lp.halo_lo)
        right = blocks[p + 1][:lp.halo_hi] if p < lp.shards - 1 else np.zeros(lp.halo_hi)
        ext = np.concatenate([left[:lp.halo_lo], blocks[p], right[:lp.halo_hi]])
        start = lp.halo_lo - lp.pad_lo + p * lp.drift
        window = ext[start:start + lp.window]
        assert start >= 0 and len(window) == lp.window
        out.append(_conv_1ch(window, w, cfg.stride, cfg.dilation, 0, 0))
    return np.concatenate(out)


_PADDINGS = ["VALID", "SAME", "SAME_LOWER", "CAUSAL", (2, 0), (0, 3), (-1, 2)]


@pytest.mark.parametrize("padding", _PADDINGS, ids=str)
def test_halo_windows_reproduce_the_global_convolution(padding):
    rng = np.random.default_rng(1)
    planned = 0
    for k, dilation, stride, shards, block in itertools.product((1, 2, 3, 5), (1, 2, 3), (1, 2, 3), (2, 4, 8),
                                                                (6, 12)):
        length = shards * block
        cfg, _ = make_config((1, 1, length), (1, 1, k), None, stride=stride, dilation=dilation, padding=padding,
                             groups=1, layout="NCW", precision=None)
        lp = length_plan(cfg, length, k, ("x",), shards)
        if lp is None:
            continue
        planned += 1
        assert max(lp.halo_lo, lp.halo_hi) <= min((k - 1) * dilation, block)
        x, w = rng.standard_normal(length), rng.standard_normal(k)
        np.testing.assert_allclose(_sharded_conv_1ch(x, w, cfg, lp), _conv_1ch(x, w, stride, dilation,
                                                                              *cfg.padding), rtol=1e-12, atol=1e-12)
    assert planned > 0


@pytest.mark.parametrize("padding", ["SAME", "CAUSAL"])
def test_same_and_causal_always_shard_the_length(padding):
    """Sequence parallelism's usual cases never fall back while the halo fits in a block."""
    for k, dilation, shards, block in itertools.product((1, 2, 3, 4, 7), (1, 2, 4), (2, 4, 8), (8, 16, 32)):
        if (k - 1) * dilation > block:
            continue
        length = shards * block
        cfg, _ = make_config((1, 1, length), (1, 1, k), None, stride=1, dilation=dilation, padding=padding,
                             groups=1, layout="NCW", precision=None)
        lp = length_plan(cfg, length, k, ("x",), shards)
        assert lp is not None and lp.drift == 0, (k, dilation, shards, block)
        assert lp.halo_lo + lp.halo_hi == (k - 1) * dilation


def test_uneven_or_oversized_halos_fall_back():
    cfg, _ = make_config((1, 1, 64), (1, 1, 3), None, stride=1, dilation=1, padding="VALID", groups=1,
                         layout="NCW", precision=None)
    assert length_plan(cfg, 64, 3, ("x",), 8) is None  # 62 outputs do not split in 8
    cfg, _ = make_config((1, 1, 64), (1, 1, 3), None, stride=1, dilation=8, padding="SAME", groups=1,
                         layout="NCW", precision=None)
    lp = length_plan(cfg, 64, 3, ("x",), 8)  # halos of 8 per side: a whole neighbouring block, still fine
    assert lp is not None and (lp.halo_lo, lp.halo_hi) == (8, 8)
    assert length_plan(cfg, 64, 3, ("x",), 16) is None  # blocks of 4 would need a neighbour's neighbour
    cfg, _ = make_config((1, 1, 64), (1, 1, 3), None, stride=1, dilation=1, padding=(6, 0), groups=1,
                         layout="NCW", precision=None)
    assert length_plan(cfg, 64, 3, ("x",), 4) is None  # 66 outputs; and 6 zeros of padding > (K-1)*dilation


# ---- plan decisions ------------------------------------------------------------------------------------


def _cfg(layout="NCW", groups=1, padding="VALID", c=8, o=8, length=64, k=3):
    x_shape = (4, c, length) if layout == "NCW" else (4, length, c)
    w_shape = (o, c // groups, k) if layout == "NCW" else (k, c // groups, o)
    cfg, y_shape = make_config(x_shape, w_shape, (o,), stride=1, dilation=1, padding=padding, groups=groups,
                               layout=layout, precision=None)
    return cfg, x_shape, w_shape, y_shape


MESH = {"data": 2, "model": 4}


def test_plan_batch_and_output_channels_are_local():
    cfg, xs, ws, _ = _cfg()
    plan = plan_fwd(cfg, MESH, (("data",), (), ()), (("model",), (), ()), xs, ws, has_bias=True)
    assert plan.result_spec == (("data",), ("model",), ())
    assert plan.psum_axes == () and plan.length is None
    assert plan.operand_specs[2] == (("model",),)


def test_plan_input_channels_reduce():
    cfg, xs, ws, _ = _cfg(layout="NWC")
    plan = plan_fwd(cfg, MESH, ((), (), ("model",)), ((), (), ()), xs, ws, has_bias=True)
    assert plan.psum_axes == ("model",)
    assert plan.operand_specs[1] == ((), ("model",), ())  # w (K, C, O): its C follows x's
    assert plan.result_spec == ((), (), ())


def test_plan_groups_local_only_along_group_boundaries():
    cfg, xs, ws, _ = _cfg(groups=4)
    plan = plan_fwd(cfg, MESH, ((), ("model",), ()), ((), (), ()), xs, ws, has_bias=False)
    assert plan.local_cfg.groups == 1 and plan.psum_axes == ()
    assert plan.result_spec == ((), ("model",), ())
    cfg, xs, ws, _ = _cfg(groups=2)  # 4 shards cannot each hold whole groups of 2
    plan = plan_fwd(cfg, MESH, ((), ("model",), ()), ((), (), ()), xs, ws, has_bias=False)
    assert plan.result_spec == ((), (), ()) and plan.operand_specs[0] == ((), (), ())


def test_plan_an_axis_shards_one_dimension_only():
    cfg, xs, ws, _ = _cfg()
    # x's batch and w's output channels both on "model": batch wins, w is gathered (weights only)
    plan = plan_fwd(cfg, MESH, (("model",), (), ()), (("model",), (), ()), xs, ws, has_bias=True)
    assert plan.result_spec == (("model",), (), ())
    assert plan.operand_specs[1] == ((), (), ())


def test_plan_gradients_mirror_the_forward():
    cfg, xs, ws, ys = _cfg(padding="SAME")
    dgrad = plan_dgrad(cfg, MESH, (("data",), ("model",), ()), ((), (), ()), ys, ws, in_length=64)
    assert dgrad.psum_axes == ("model",) and dgrad.result_spec == (("data",), (), ())
    wgrad = plan_wgrad(cfg, MESH, (("data",), (), ("model",)), (("data",), (), ("model",)), xs, ys, kernel_size=3)
    assert wgrad.psum_axes == ("data", "model") and wgrad.length is not None
    assert wgrad.result_spec == ((), (), ())


def _bwd_plan(cfg, xs, ws, ys, x_spec, dy_spec, w_spec):
    return plan_bwd(cfg, MESH, x_spec, dy_spec, w_spec, xs, ys, ws)


def test_plan_bwd_batch_and_output_channels():
    """dx reduced over the output-channel shards (as dgrad), dw and db over the batch shards (as wgrad)."""
    cfg, xs, ws, ys = _cfg()
    plan = _bwd_plan(cfg, xs, ws, ys, (("data",), (), ()), (("data",), ("model",), ()), (("model",), (), ()))
    assert plan.operand_specs == ((("data",), (), ()), (("data",), ("model",), ()), (("model",), (), ()))
    assert plan.dgrad.psum_axes == ("model",) and plan.wgrad.psum_axes == ("data",)
    assert plan.result_specs(True, True, True) == ((("data",), (), ()), (("model",), (), ()), (("model",),))
    assert plan.result_specs(False, True, True) == (((),), (("model",), (), ()), (("model",),))


def test_plan_bwd_takes_channel_axes_from_the_weights():
    """Nothing shards x or dy: w's shards decide the channel split of both (its input channels for x, its
    output channels for dy), so the gradients are computed where the weights live."""
    cfg, xs, ws, ys = _cfg(layout="NWC")
    plan = _bwd_plan(cfg, xs, ws, ys, ((), (), ()), ((), (), ()), ((), ("data",), ("model",)))
    assert plan.operand_specs == (((), (), ("data",)), ((), (), ("model",)), ((), ("data",), ("model",)))
    assert plan.dgrad.psum_axes == ("model",) and plan.wgrad.psum_axes == ()
    assert plan.result_specs(True, True, True) == (((), (), ("data",)), ((), ("data",), ("model",)), (("model",),))


def test_plan_bwd_length_shards_share_one_halo_plan():
    cfg, xs, ws, ys = _cfg(padding="SAME")
    plan = _bwd_plan(cfg, xs, ws, ys, (("data",), (), ("model",)), (("data",), (), ("model",)), ((), (), ()))
    assert plan.length is not None and plan.length == plan.dgrad.length
    assert plan.local_cfg.padding == (0, 0)
    assert plan.dgrad.psum_axes == () and plan.wgrad.psum_axes == ("data", "model")
    assert plan.result_specs(True, True, True)[0] == (("data",), (), ("model",))


def test_plan_bwd_grouped_and_depthwise_stay_local():
    cfg, xs, ws, ys = _cfg(groups=4)
    plan = _bwd_plan(cfg, xs, ws, ys, ((), ("model",), ()), ((), (), ()), ((), (), ()))
    assert plan.local_cfg.groups == 1 and plan.dgrad.psum_axes == () and plan.wgrad.psum_axes == ()
    assert plan.result_specs(True, True, True) == (((), ("model",), ()), (("model",), (), ()), (("model",),))
    cfg, xs, ws, ys = _cfg(groups=2)  # 4 shards cannot each hold whole groups of 2: replicated
    plan = _bwd_plan(cfg, xs, ws, ys, ((), ("model",), ()), ((), ("model",), ()), (("model",), (), ()))
    assert plan.operand_specs == (((), (), ()),) * 3


def test_plan_bwd_agrees_with_the_single_passes():
    """The combined plan's dx is dgrad's and its dw is wgrad's, for operands already split the same way."""
    for layout, groups, padding in (("NCW", 1, "VALID"), ("NWC", 4, "SAME"), ("NCW", 1, "CAUSAL")):
        cfg, xs, ws, ys = _cfg(layout=layout, groups=groups, padding=padding)
        for x_l, y_l, w_l in (((("data",), (), ()), (("data",), ("model",), ()), (("model",), (), ())),
                              (((), (), ("model",)), ((), (), ("model",)), ((), (), ()))):
            def lay(spec, kind):
                return spec if layout == "NCW" else ((spec[0], spec[2], spec[1]) if kind == "act"
                                                     else (spec[2], spec[1], spec[0]))
            x_spec, dy_spec, w_spec = lay(x_l, "act"), lay(y_l, "act"), lay(w_l, "w")
            plan = _bwd_plan(cfg, xs, ws, ys, x_spec, dy_spec, w_spec)
            dgrad = plan_dgrad(cfg, MESH, plan.operand_specs[1], plan.operand_specs[2], ys, ws, in_length=64)
            wgrad = plan_wgrad(cfg, MESH, plan.operand_specs[0], plan.operand_specs[1], xs, ys, kernel_size=3)
            assert plan.result_specs(True, True, True)[:2] == (dgrad.result_spec, wgrad.result_spec)
            assert (plan.dgrad.psum_axes, plan.wgrad.psum_axes) == (dgrad.psum_axes, wgrad.psum_axes)


def test_plan_ignores_axes_it_does_not_know():
    cfg, xs, ws, _ = _cfg()
    plan = plan_fwd(cfg, {}, (("data",), (), ()), ((), (), ()), xs, ws, has_bias=False)
    assert plan.result_spec == ((), (), ())


# ---- the 8-device cases ------------------------------------------------------------------------------


def _run_cases(tmp_path, env, select=None):
    # cwd outside the source tree, so the installed package (with its compiled module) is imported
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", str(CASES_FILE)]
    cmd += ["-k", select] if select else []
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert " passed" in out and "skipped" not in out.splitlines()[-1], out[-2000:]
    return out


def test_sharded_cases_on_8_cpu_devices(tmp_path):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"  # the last one wins
    _run_cases(tmp_path, dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu", JAX_CONV1D_SP_HALO="edges"))


def test_length_cases_in_window_mode(tmp_path):
    """The other way to run a length shard (JAX_CONV1D_SP_HALO=window: convolve [halo | block | halo])."""
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    _run_cases(tmp_path, dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu", JAX_CONV1D_SP_HALO="window"),
               "length and not not_copied")


def test_sharded_cases_on_the_gpus(tmp_path):
    """The same cases in float32 through the CUDA kernels, on every GPU of the machine (2, 4 or 8)."""
    if gpu_device() is None or len(jax.devices("gpu")) < 2:
        pytest.skip("needs two or more GPUs and jax_conv1d built with CUDA handlers")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    # this process may hold most of each GPU's memory already: the cases allocate as they go
    env.update(XLA_PYTHON_CLIENT_PREALLOCATE="false", NCCL_NVLS_ENABLE="0")
    _run_cases(tmp_path, env)
