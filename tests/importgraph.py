"""The one import walker of the tests: which modules each source file imports (function-level
imports too), and the file-level import graph of the installed layout (``edgelstm/``,
``exporters/`` as ``edgelstm.exporters``, ``runtime/`` as ``edgelstm.runtime``).

Pure ``ast`` reading, nothing imported. Used by tests/test_layers.py (the allowed arrows) and
tests/test_structure.py (no cycles, sizes).
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package name -> folder, as pyproject's [tool.setuptools.package-dir] maps them
PACKAGES = {"edgelstm": ROOT / "edgelstm", "edgelstm.exporters": ROOT / "exporters",
            "edgelstm.runtime": ROOT / "runtime"}


def _absolute(node: ast.ImportFrom, module: str | None, is_package: bool) -> str | None:
    """The absolute module an ``ImportFrom`` names (relative levels resolved against ``module``)."""
    if node.level == 0:
        return node.module
    if module is None:
        return None
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): a block that never runs."""
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node that can run: ``ast.walk`` without the bodies of ``if TYPE_CHECKING:`` blocks
    (imports for annotations only, which Python never executes; their ``else`` still counts)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _type_checking(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imports(path: Path, module: str | None = None) -> set[str]:
    """Every module an ``import`` / ``from ... import`` in ``path`` names (function-level ones
    too, ``if TYPE_CHECKING:`` blocks left out: they never run): for ``from a import b`` both
    ``a`` and ``a.b``. With ``module`` (the file's own dotted name) relative imports are
    resolved; without it they are left out."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            if base:
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return out


@lru_cache(maxsize=1)
def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` of the three source folders."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package,) + rel)
            if name.endswith(".__init__"):
                name = name[: -len(".__init__")]
            # exporters/ and runtime/ are their own roots, not edgelstm/exporters, edgelstm/runtime
            out.setdefault(name, path)
    return out


def edges(path: Path, module: str) -> set[str]:
    """The modules of this tree that ``path`` (module ``module``) imports, file by file:
    ``import a.b`` -> ``a.b``; ``from pkg import x`` -> ``pkg.x`` where that is a module, else
    ``pkg`` (its ``__init__``); relative imports resolved; function-level imports included,
    ``if TYPE_CHECKING:`` blocks left out (they never run)."""
    files = module_files()
    is_package = path.name == "__init__.py"
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in files)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for a in node.names:
                if base and f"{base}.{a.name}" in files:
                    out.add(f"{base}.{a.name}")
                elif base in files:
                    out.add(base)
    out.discard(module)
    return out


def graph() -> dict[str, set[str]]:
    """File-level import graph of the tree: module -> the modules it imports (:func:`edges`)."""
    return {name: edges(path, name) for name, path in module_files().items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def one_cycle(g: dict[str, set[str]], members: list[str]) -> list[str]:
    """A concrete cycle inside one component, as a path ``a -> b -> ... -> a`` (for the message)."""
    inside = set(members)
    start = members[0]
    path, seen = [start], {start}

    def walk(v: str) -> list[str] | None:
        for w in sorted(g[v] & inside):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                path.append(w)
                found = walk(w)
                if found:
                    return found
                path.pop()
        return None

    return walk(start) or members
