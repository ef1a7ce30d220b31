"""The core is pure: no CLI/terminal/torch imports, no file I/O, no printing (STYLE.md #5)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).parent.parent / "planner_cli"
CORE_DIRS = ("workload", "perf", "sim", "optimize", "export")
CORE_FILES = ("specs/model.py", "specs/gpu.py", "specs/cascade.py", "specs/cluster.py",
              "plan.py")
# modules inside core folders that are allowed at the edge (the profiler imports torch lazily)
EDGE_EXCEPTIONS = {"perf/profiler.py", "export/writer.py"}
FORBIDDEN_IMPORTS = ("typer", "rich", "torch", "transformers", "click")
FORBIDDEN_CALLS = {"open", "print", "input"}
FORBIDDEN_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes", "open", "mkdir",
                     "unlink", "touch"}


def core_modules() -> list[Path]:
    files = [PKG / f for f in CORE_FILES if (PKG / f).exists()]
    for folder in CORE_DIRS:
        files += sorted((PKG / folder).glob("*.py")) if (PKG / folder).is_dir() else []
    return [f for f in files if f.relative_to(PKG).as_posix() not in EDGE_EXCEPTIONS]


def test_there_is_a_core():
    assert len(core_modules()) >= 8


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.relative_to(PKG).as_posix())
def test_core_module_is_pure(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN_IMPORTS, f"{path}: imports {name}"
                assert not name.startswith(("planner_cli.cli", "planner_cli.render",
                                            "planner_cli.io", "planner_cli.api")), name
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                assert func.id not in FORBIDDEN_CALLS, f"{path}:{node.lineno}: {func.id}()"
            if isinstance(func, ast.Attribute):
                assert func.attr not in FORBIDDEN_METHODS, f"{path}:{node.lineno}: .{func.attr}()"


def test_the_layering_test_catches_a_violation(tmp_path):
    bad = "import rich\n\ndef f(p):\n    return open(p).read()\n"
    tree = ast.parse(bad)
    names = [n.names[0].name for n in ast.walk(tree) if isinstance(n, ast.Import)]
    calls = [n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "rich" in names and "open" in calls
