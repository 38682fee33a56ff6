"""Every llmcycle name a bench script imports (at the top or inside a function) still exists: the benches import
lazily, so a module moved in the package would otherwise only show when someone runs the bench."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def llmcycle_imports() -> list[tuple[str, str, str]]:
    found = []
    for script in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("llmcycle"):
                found += [(script.name, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(script.name, alias.name, "") for alias in node.names if alias.name.startswith("llmcycle")]
    return found


@pytest.mark.parametrize("script,module,name", llmcycle_imports())
def test_bench_import_resolves(script, module, name):
    imported = importlib.import_module(module)
    if name:
        assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}") is not None, \
            f"{script}: from {module} import {name}"
