"""The benchmark's plumbing on tiny inputs: rows, JSON, the training-step row (timings are not checked)."""

import json

import jax
import numpy as np
import pytest

from jax_conv1d import bench


def test_sweep_rows_and_json(tmp_path):
    out = tmp_path / "rows.json"
    assert bench.main(["--cases", "sweep/000", "--sweep", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {r["pass_"]: r for r in data["rows"]}
    assert set(rows) == {"fwd", "bwd"}  # --cases leaves the training row out
    tol = 2e-2 if data["cases"]["sweep/000"]["dtype"] == "bfloat16" else 1e-3
    for r in rows.values():
        assert r["case"] == "sweep/000" and r["ours_ms"] > 0 and r["xla_ms"] > 0
        assert 0 <= r["rel_err"] < tol
        assert r["floor_ms"] > 0 and np.isclose(r["frac_floor"], r["floor_ms"] / r["ours_ms"])


def test_backward_row_includes_the_bias_gradient(monkeypatch):
    seen = []
    real = bench.backward_of

    def spy(forward):
        f = real(forward)

        def g(x, w, b, dy):
            out = f(x, w, b, dy)
            seen.append(out[2] is not None)
            return out

        return g

    monkeypatch.setattr(bench, "backward_of", spy)
    case = bench.Case("tiny", 2, 4, 6, 3, 40, stride=2, dilation=2, padding="SAME", layout="NWC", bias=True)
    rows = bench.run_case(case, 1e11, jax.random.key(0), backward=True, log=lambda s: None)
    assert [r.pass_ for r in rows] == ["fwd", "bwd"] and all(seen)
    assert rows[1].rel_err < 1e-3


def test_training_step_row():
    pytest.importorskip("flax")
    pytest.importorskip("optax")
    from jax_conv1d import wavenet

    cfg = wavenet.Config(layers=2, channels=4, skip_channels=4, length=64, batch=2)
    rows = bench.run_train_step(jax.random.key(0), log=lambda s: None, steps=3, config=cfg)
    assert [(r.case, r.pass_) for r in rows] == [(bench.TRAIN_CASE, "step"), (bench.TRAIN_CASE, "pipe")]
    for row in rows:
        assert row.ours_ms > 0 and row.xla_ms > 0 and row.speedup > 0
        assert row.rel_err < 1e-4  # same parameters, same batch, same number of updates
        assert np.isnan(row.floor_ms) and "-" in bench._format_row(row)


def test_list_names_the_training_row(capsys):
    assert bench.main(["--list", "--cases", "train/*"]) == 0
    assert bench.TRAIN_CASE in capsys.readouterr().out


def test_named_cases_and_training_step_run_before_the_sweep(monkeypatch, tmp_path):
    order = []
    monkeypatch.setattr(bench, "copy_bandwidth", lambda: 1e12)
    monkeypatch.setattr(bench, "run_case", lambda case, *a, **k: order.append(case.name) or [])
    monkeypatch.setattr(bench, "run_train_step", lambda *a, **k: order.append(bench.TRAIN_CASE) or [])
    out = tmp_path / "rows.json"
    assert bench.main(["--cases", "sweep/*", "mamba_dw_causal", "train/*", "--sweep", "2", "--json", str(out)]) == 0
    assert order == ["mamba_dw_causal", bench.TRAIN_CASE, "sweep/000", "sweep/001"]
    assert json.loads(out.read_text())["rows"] == []


def test_json_keeps_the_rows_of_a_run_cut_short(monkeypatch, tmp_path):
    """Every row is in the JSON as soon as it is measured: a time limit in the middle of a case (here after
    the second case's forward row) loses only what was not measured yet."""
    calls = []

    def run_case(case, *a, on_row=None, **k):
        calls.append(case.name)
        fwd = bench.Row(case.name, "fwd", "", 1.0, 2.0, 2.0, 0.5, 0.5, 0, 0, 0.0)
        on_row(fwd)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the time limit, before this case's backward row
        bwd = bench.Row(case.name, "bwd", "", 1.0, 2.0, 2.0, 0.5, 0.5, 0, 0, 0.0)
        on_row(bwd)
        return [fwd, bwd]

    monkeypatch.setattr(bench, "copy_bandwidth", lambda: 1e12)
    monkeypatch.setattr(bench, "run_case", run_case)
    out = tmp_path / "rows.json"
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--cases", "sweep/*", "--sweep", "3", "--json", str(out)])
    rows = [(r["case"], r["pass_"]) for r in json.loads(out.read_text())["rows"]]
    assert rows == [("sweep/000", "fwd"), ("sweep/000", "bwd"), ("sweep/001", "fwd")]


def test_a_failing_backward_keeps_the_forward_row(monkeypatch, tmp_path):
    def run_case(case, *a, on_row=None, **k):
        on_row(bench.Row(case.name, "fwd", "", 1.0, 2.0, 2.0, 0.5, 0.5, 0, 0, 0.0))
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")

    monkeypatch.setattr(bench, "copy_bandwidth", lambda: 1e12)
    monkeypatch.setattr(bench, "run_case", run_case)
    out = tmp_path / "rows.json"
    assert bench.main(["--cases", "sweep/*", "--sweep", "2", "--json", str(out)]) == 0
    rows = [(r["case"], r["pass_"]) for r in json.loads(out.read_text())["rows"]]
    assert rows == [("sweep/000", "fwd"), ("sweep/001", "fwd")]


def test_readme_table_from_bench_json(tmp_path):
    """benchmarks/readme_table.py fills rows from the JSON, prints "not run" for missing ones, last file wins."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "readme_table.py"
    spec = importlib.util.spec_from_file_location("readme_table", path)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)

    def row(case, pass_, ours, xla, floor):
        return dict(case=case, pass_=pass_, ours_ms=ours, xla_ms=xla, speedup=xla / ours, floor_ms=floor)

    first = {"device": "GPU", "jax": "0.11.2", "copy_bandwidth": 3e12,
             "rows": [row("mamba_dw_causal", "fwd", 0.2, 3.5, 0.11), row("train/wavenet", "step", 50.0, 700.0,
                                                                          float("nan"))],
             "sweep": {"fwd": {"count": 2, "worst": 0.5, "median": 2.0, "slower_than_xla": 1}}}
    second = {"device": "GPU", "jax": "0.11.2", "copy_bandwidth": 3e12,
              "rows": [row("mamba_dw_causal", "fwd", 0.148, 3.57, 0.113)]}
    paths = []
    for i, data in enumerate((first, second)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(data))
    lines = table.render(*table.load([str(p) for p in paths])[::2])
    text = "\n".join(lines)
    assert "| mamba_dw_causal forward (bf16) | 3.57 ms | 0.148 ms | 24.1x | 0.11 ms |" in text
    assert "| 10-layer WaveNet training step (`train/wavenet`) | 700.0 ms | 50.00 ms | 14.0x |  |" in text
    assert "| depthwise_tcn forward | not run | not run | | |" in text
    assert "0.50x / 2.00x, 1" in text
