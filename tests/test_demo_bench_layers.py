"""The benchmark package and the demo: their arrows, and the structural limits of issue 15.

* ``edgelstm.bench`` imports numpy, onnxruntime, the standard library, the torch-free edgelstm
  modules and ``edgelstm.runtime``; torch, onnx and matplotlib only inside functions;
* neither the benchmark nor the demo imports ``edgelstm.cli`` (the demo calls the library);
* the files among them import each other without a cycle (function-level imports included);
* each benchmark module stays under 400 lines, and no function there takes more than 10 parameters.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = sorted((ROOT / "edgelstm" / "bench").glob("*.py"))
DEMO = [ROOT / "edgelstm" / f"{m}.py" for m in ("demo", "demo_common", "demo_stages", "demo_verify")]
BENCH_MAY_IMPORT = ("edgelstm.errors", "edgelstm.manifest", "edgelstm.fileio", "edgelstm.units", "edgelstm.extras",
                    "edgelstm.tokens",
                    "edgelstm.runtime", "edgelstm.bench")
LAZY_ONLY = ("torch", "onnx", "matplotlib", "edgelstm.checkpoint")


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _module_file(name: str) -> Path | None:
    """The file of an ``edgelstm.*`` module among the checked ones (package or module)."""
    rel = name.split(".")[1:]
    for cand in (ROOT.joinpath("edgelstm", *rel).with_suffix(".py"), ROOT.joinpath("edgelstm", *rel, "__init__.py")):
        if cand in BENCH + DEMO:
            return cand
    return None


@pytest.mark.parametrize("path", BENCH, ids=lambda p: p.name)
def test_bench_imports_only_the_device_floor(path):
    mods = _imports(path)
    bad = sorted(m for m in mods if m.startswith("edgelstm") and not m.startswith(BENCH_MAY_IMPORT)
                 and m not in LAZY_ONLY)
    assert not bad, f"edgelstm/bench/{path.name} imports {bad}"
    eager = sorted(m for m in _imports(path, top_level_only=True) if m.split(".")[0] in LAZY_ONLY or m in LAZY_ONLY)
    assert not eager, f"edgelstm/bench/{path.name} imports {eager} at module level"


@pytest.mark.parametrize("path", BENCH + DEMO, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_library_never_imports_the_cli(path):
    assert not sorted(m for m in _imports(path) if m.startswith("edgelstm.cli"))


def test_no_import_cycle_among_bench_and_demo_files():
    graph = {p: {f for m in _imports(p) if m.startswith("edgelstm.") and (f := _module_file(m)) and f != p}
             for p in BENCH + DEMO}
    state: dict[Path, int] = {}  # 1 = on the current path, 2 = done

    def visit(p: Path, path: list[Path]) -> None:
        state[p] = 1
        for q in graph[p]:
            assert state.get(q) != 1, "import cycle: " + " -> ".join(x.name for x in path + [p, q])
            if q not in state:
                visit(q, path + [p])
        state[p] = 2

    for p in graph:
        if p not in state:
            visit(p, [])
    assert graph[ROOT / "edgelstm" / "demo_verify.py"] == {ROOT / "edgelstm" / "demo_common.py"}


@pytest.mark.parametrize("path", BENCH, ids=lambda p: p.name)
def test_bench_modules_are_small_and_take_few_parameters(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 400
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
            n = len(params) + (a.vararg is not None) + (a.kwarg is not None)
            assert n <= 10, f"{path.name}: {node.name} takes {n} parameters"
