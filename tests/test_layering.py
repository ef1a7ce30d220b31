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
EDGE_EXCEPTIONS = {"perf/profiler.py", "perf/profiles.py", "export/writer.py"}
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


def violations(source: str, name: str) -> list[str]:
    """What a core module must not do: import the CLI, the terminal, torch or the edge
    modules; open, print or read and write files."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            for imported in names:
                if imported.split(".")[0] in FORBIDDEN_IMPORTS or imported.startswith(
                        ("planner_cli.cli", "planner_cli.render", "planner_cli.io",
                         "planner_cli.api")):
                    found.append(f"{name}:{node.lineno}: imports {imported}")
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{name}:{node.lineno}: {func.id}()")
            if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_METHODS:
                found.append(f"{name}:{node.lineno}: .{func.attr}()")
    return found


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.relative_to(PKG).as_posix())
def test_core_module_is_pure(path):
    assert violations(path.read_text(), str(path)) == []


def test_the_layering_test_catches_a_violation():
    bad = ("import rich\nfrom planner_cli.io import read_trace\n\n"
           "def f(p):\n    print(p.read_text())\n    return open(p).read()\n")
    found = violations(bad, "bad.py")
    assert any("imports rich" in v for v in found)
    assert any("imports planner_cli.io" in v for v in found)
    assert any("open()" in v for v in found) and any("print()" in v for v in found)
    assert any(".read_text()" in v for v in found)
    assert violations("def g(x):\n    return x + 1\n", "good.py") == []
