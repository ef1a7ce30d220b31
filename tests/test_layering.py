"""The core is pure: no CLI/terminal/torch imports, no file I/O, no printing (STYLE.md #5);
and no import cycle anywhere in the package, function-level imports included (STYLE.md #15)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).parent.parent / "planner_cli"
CORE_DIRS = ("workload", "perf", "sim", "optimize", "export")
CORE_FILES = ("specs/model.py", "specs/gpu.py", "specs/cascade.py", "specs/cluster.py",
              "plan.py", "problem.py", "summaries.py")
# modules inside core folders that are allowed at the edge (the profiler imports torch lazily)
# the profiler imports torch lazily; profiles.py is the profiles folder; measured.py runs
# aiconfigurator-core and writes the local config.json it reads
EDGE_EXCEPTIONS = {"perf/profiler.py", "perf/profiles.py", "perf/measured.py", "export/writer.py"}
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
                         "planner_cli.api", "planner_cli.perf_api")):
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


# ---------------------------------------------------------------- import cycles

def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the package modules it imports, at any depth of its code. `sources` maps a
    module name to (source text, is_package). `from a.b import c` names module a.b.c when
    that is a module, else a.b; package __init__ files are left out as targets (importing
    a.b.c runs a.b's __init__, which holds no imports here)."""
    graph: dict[str, set[str]] = {name: set() for name in sources}

    def target(name: str) -> str | None:
        while name and name not in sources:
            name = name.rpartition(".")[0]
        return name if name and not sources[name][1] else None

    for name, (text, is_package) in sources.items():
        base = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(text, name)):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    up = base.split(".")[: len(base.split(".")) - node.level + 1]
                    mod = ".".join(up + ([mod] if mod else []))
                found = [f"{mod}.{a.name}" for a in node.names] + [mod]
            for imported in found:
                t = target(imported)
                if t is not None and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(), p.name == "__init__.py")
            for p in sorted(PKG.rglob("*.py"))}


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph(package_sources())) == []


def test_the_cycle_check_catches_a_cycle_through_a_function_level_import():
    sources = {
        "pkg": ("", True),
        "pkg.a": ("from pkg.b import f\n", False),
        "pkg.b": ("def f():\n    from pkg import c\n    return c\n", False),
        "pkg.c": ("import pkg.a\n", False),
        "pkg.d": ("from pkg.a import x\n", False),
    }
    graph = import_graph(sources)
    assert graph["pkg.b"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    sources["pkg.c"] = ("", False)
    assert cycles(import_graph(sources)) == []
