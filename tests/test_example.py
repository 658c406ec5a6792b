"""examples/wavenet.py in a tiny configuration: both backends train, agree, and report step times."""

import importlib.util
import math
import pathlib
import sys

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("optax")

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "wavenet.py"


@pytest.fixture(scope="module")
def wavenet():
    spec = importlib.util.spec_from_file_location("wavenet_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


TINY = ["--layers", "3", "--channels", "8", "--skip-channels", "6", "--length", "128", "--batch", "2",
        "--steps", "6", "--lr", "1e-2"]


def test_both_backends_train_to_the_same_losses(wavenet, capsys):
    results = wavenet.main(TINY + ["--backend", "both"])
    ours, flax_ = results["ours"], results["flax"]
    assert len(ours.losses) == len(flax_.losses) == 6
    np.testing.assert_allclose(ours.losses, flax_.losses, rtol=1e-4)
    assert ours.losses[-1] < ours.losses[0]
    for r in (ours, flax_):
        assert len(r.step_times_s) == 5 and all(t > 0 for t in r.step_times_s)
        assert math.isfinite(r.median_step_s)
    out, err = capsys.readouterr()
    assert "ours: loss" in out and "flax: loss" in out and out.count("median step time") == 2
    assert "largest loss difference between backends" in out
    assert "ours" in err and "6/6" in err  # the progress bar (tqdm, or the plain stderr line)


def test_single_backend_and_bfloat16(wavenet, capsys):
    results = wavenet.main(TINY + ["--backend", "ours", "--dtype", "bfloat16", "--no-progress", "--steps", "2"])
    assert list(results) == ["ours"]
    assert all(math.isfinite(v) for v in results["ours"].losses)
    out, err = capsys.readouterr()
    assert "bfloat16" in out and err == ""


def test_the_model_is_causal(wavenet):
    import jax
    import jax.numpy as jnp

    cfg = wavenet.Config(layers=3, channels=4, skip_channels=4, length=64, batch=1)
    params = wavenet.init_params(cfg)
    model = wavenet.WaveNet(wavenet.Conv1D, cfg)
    signal = jax.random.normal(jax.random.key(0), (1, 64))
    changed = signal.at[:, 40].add(1.0)
    diff = jnp.abs(model.apply({"params": params}, changed) - model.apply({"params": params}, signal))
    assert float(jnp.max(diff[:, :40])) == 0.0  # nothing before the change moves
    assert float(jnp.max(diff[:, 40:])) > 0.0


def test_bad_steps(wavenet):
    with pytest.raises(SystemExit):
        wavenet.main(TINY + ["--steps", "0"])


def test_backends_use_the_convolution_they_name(wavenet):
    import jax

    cfg = wavenet.Config(layers=2, channels=4, skip_channels=4, length=32, batch=1)
    params = wavenet.init_params(cfg)
    signal = jax.numpy.zeros((1, 32))

    def primitives(backend):
        model = wavenet.WaveNet(wavenet.BACKENDS[backend], cfg)
        text = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, signal))(params))
        return "jax_conv1d_fwd" in text, "conv_general_dilated" in text

    assert primitives("ours") == (True, False)
    assert primitives("flax") == (False, True)
