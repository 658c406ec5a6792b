"""The environment-variable reference (docs/environment.md) names every variable the code reads, and nothing
the code no longer reads."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAME = re.compile(r"JAX_CONV1D_[A-Z0-9_]*[A-Z0-9]")
SOURCES = ["csrc", "jax_conv1d", "tests/conftest.py", "CMakeLists.txt", "pyproject.toml"]


def _names_in(paths):
    found = set()
    for rel in paths:
        path = ROOT / rel
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            if f.suffix in {".py", ".h", ".cc", ".cu", ".cuh", ".txt", ".toml"}:
                found |= set(NAME.findall(f.read_text(errors="replace")))
    return found


def test_environment_reference_matches_the_code():
    documented = set(NAME.findall((ROOT / "docs" / "environment.md").read_text()))
    read = _names_in(SOURCES)
    assert read, "no variables found: the source scan is broken"
    assert not read - documented, f"read by the code but not in docs/environment.md: {sorted(read - documented)}"
    assert not documented - read, f"in docs/environment.md but not read by the code: {sorted(documented - read)}"
