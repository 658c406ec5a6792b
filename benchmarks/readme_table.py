"""Print the README's "Measured" table from `python -m jax_conv1d.bench --json` files.

    python benchmarks/readme_table.py run1.json [run2.json ...]

Rows are looked up by case name and pass; when several files hold the same row, the last file wins (so a
re-run of some cases can be laid over a full run). A row that no file holds is printed with "not run", never
left out or filled in.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

# (label, [(case, pass), ...]): several cases in one row are joined with " / ".
ROWS = [
    ("headline forward f32, NCW / NWC", [("headline/f32/NCW/default/nobias", "fwd"),
                                         ("headline/f32/NWC/default/nobias", "fwd")]),
    ("headline forward f32, precision highest, NCW", [("headline/f32/NCW/highest/nobias", "fwd")]),
    ("headline forward bf16, NCW / NWC", [("headline/bf16/NCW/default/nobias", "fwd"),
                                          ("headline/bf16/NWC/default/nobias", "fwd")]),
    ("depthwise_tcn forward", [("depthwise_tcn", "fwd")]),
    ("mamba_dw_causal forward (bf16)", [("mamba_dw_causal", "fwd")]),
    ("wavenet_dense forward", [("wavenet_dense", "fwd")]),
    ("headline backward dx+dw f32, NCW / NWC", [("headline/f32/NCW/default/nobias", "bwd"),
                                                ("headline/f32/NWC/default/nobias", "bwd")]),
    ("headline backward dx+dw f32, highest, NCW", [("headline/f32/NCW/highest/nobias", "bwd")]),
    ("headline backward dx+dw bf16, NCW / NWC", [("headline/bf16/NCW/default/nobias", "bwd"),
                                                 ("headline/bf16/NWC/default/nobias", "bwd")]),
    ("depthwise_tcn backward (dx, dw, db)", [("depthwise_tcn", "bwd")]),
    ("mamba_dw_causal backward (dx, dw, db)", [("mamba_dw_causal", "bwd")]),
    ("wavenet_dense backward (dx, dw, db)", [("wavenet_dense", "bwd")]),
    ("10-layer WaveNet training step (`train/wavenet`)", [("train/wavenet", "step")]),
]


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def load(paths):
    rows, meta, sweep = {}, [], None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        meta.append(f"{data.get('device', '?')}, jax {data.get('jax', '?')}, copy bandwidth "
                    f"{data.get('copy_bandwidth', 0) / 1e12:.3f} TB/s ({path})")
        for r in data["rows"]:
            rows[(r["case"], r["pass_"])] = r
        sweep = data.get("sweep") or sweep
    return rows, meta, sweep


def render(rows, sweep=None) -> list[str]:
    out = ["| workload | XLA | ours | ratio | memory floor |", "| --- | --- | --- | --- | --- |"]
    for label, keys in ROWS:
        found = [rows.get(k) for k in keys]
        if any(r is None for r in found):
            out.append(f"| {label} | not run | not run | | |")
            continue
        xla = " / ".join(_ms(r["xla_ms"]) for r in found) + " ms"
        ours = " / ".join(_ms(r["ours_ms"]) for r in found) + " ms"
        ratio = " / ".join(f"{r['speedup']:.2f}x" if r["speedup"] < 10 else f"{r['speedup']:.1f}x" for r in found)
        floors = {round(r["floor_ms"], 2) for r in found if math.isfinite(r.get("floor_ms") or math.nan)}
        floor = " / ".join(f"{f:.2f} ms" for f in sorted(floors)) if floors else ""
        out.append(f"| {label} | {xla} | {ours} | {ratio} | {floor} |")
    for pass_, s in sorted((sweep or {}).items()):
        if s.get("count"):
            out.append(f"| sweep {pass_} ({s['count']} shapes): worst / median ratio, slower than XLA in | | | "
                       f"{s['worst']:.2f}x / {s['median']:.2f}x, {s['slower_than_xla']} | |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+")
    args = ap.parse_args(argv)
    rows, meta, sweep = load(args.json)
    for line in meta:
        print(f"<!-- {line} -->")
    print("\n".join(render(rows, sweep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
