"""The tree's structural limits (issue 15), read from the source with ``ast``, nothing imported:

* no import cycle between files: the file-level graph over ``edgelstm/``, ``exporters/`` (as
  ``edgelstm.exporters``) and ``runtime/`` (as ``edgelstm.runtime``), function-level imports
  included, relative imports resolved, ``from pkg import mod`` pointing at the module's file;
* no module over :data:`MAX_LINES` lines;
* no function with more than :data:`MAX_PARAMS` parameters (``self``/``cls`` not counted,
  ``*args`` and ``**kwargs`` one each), except the reference cells of ``edgelstm/reference.py``,
  which mirror the ONNX operators' inputs and attributes;
* the special token ids and the label padding spelled once, in ``edgelstm/tokens.py``.

The places other work in flight is fixing are listed in :data:`KNOWN` (xfail, not strict); the
list is emptied when that work lands, and then every entry must pass.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from importgraph import ROOT, cycles, graph, module_files, one_cycle

MAX_LINES = 600
MAX_PARAMS = 10
EXEMPT_PARAMS = {"edgelstm/reference.py"}  # the ONNX reference cells: one argument per operator input

# what is known to fail on this branch, and whose work fixes it (emptied at merge)
KNOWN = {
}


def _known(key: str):
    reason = KNOWN.get(key)
    return [pytest.mark.xfail(strict=False, reason=reason)] if reason else []


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


SOURCES = sorted(set(module_files().values()))
GRAPH = graph()
CYCLES = cycles(GRAPH)


# ------------------------------------------------------------------------------------ cycles
def test_the_graph_covers_the_three_folders():
    folders = {_rel(p).split("/")[0] for p in SOURCES}
    assert folders == {"edgelstm", "exporters", "runtime"}
    # the package-dir mapping applied: runtime/ and exporters/ files are edgelstm.* modules
    assert module_files()["edgelstm.runtime.integrity"] == ROOT / "runtime" / "integrity.py"
    assert module_files()["edgelstm.exporters"] == ROOT / "exporters" / "__init__.py"
    # a function-level import is an edge: verify.core reaches the seq2seq harness only inside verify()
    assert "edgelstm.verify.seq2seq" in GRAPH["edgelstm.verify.core"]


@pytest.mark.parametrize("members", [pytest.param(c, id=c[0], marks=_known(f"cycle:{c[0]}")) for c in CYCLES]
                         or [pytest.param([], id="none")])
def test_no_import_cycle(members):
    assert not members, "import cycle: " + " -> ".join(one_cycle(GRAPH, members))


@pytest.mark.parametrize("source, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
], ids=["three-cycle", "acyclic"])
def test_the_cycle_finder(source, expected):
    assert cycles(source) == expected
    for c in expected:
        path = one_cycle(source, c)
        assert path[0] == path[-1] and set(path) == set(c)


def test_relative_and_from_imports_resolve_to_files(tmp_path, monkeypatch):
    import importgraph

    pkg = tmp_path / "edgelstm"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "a.py").write_text("from .b import f\nfrom edgelstm.sub import g\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..top import h\n")
    (pkg / "top.py").write_text("")
    monkeypatch.setattr(importgraph, "PACKAGES", {"edgelstm": pkg})
    importgraph.module_files.cache_clear()
    try:
        g = importgraph.graph()
    finally:
        importgraph.module_files.cache_clear()
    assert g["edgelstm.sub.a"] == {"edgelstm.sub.b", "edgelstm.sub"}  # g is a name in sub/__init__
    assert g["edgelstm.sub"] == {"edgelstm.sub.b"}
    assert g["edgelstm.sub.b"] == {"edgelstm.top"}


# ------------------------------------------------------------------------------------ sizes
@pytest.mark.parametrize("path", [pytest.param(p, id=_rel(p), marks=_known(f"lines:{_rel(p)}")) for p in SOURCES])
def test_module_is_not_over_the_line_limit(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_rel(path)}: {lines} lines > {MAX_LINES}"


def parameter_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Parameters as a caller sees them: ``self``/``cls`` left out, ``*args``/``**kwargs`` one each."""
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    own = 1 if names and names[0] in ("self", "cls") else 0
    return len(names) - own + (a.vararg is not None) + (a.kwarg is not None)


def too_many_parameters(path: Path) -> list[str]:
    return [f"{fn.name} (line {fn.lineno}): {parameter_count(fn)}"
            for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and parameter_count(fn) > MAX_PARAMS]


@pytest.mark.parametrize("path", [pytest.param(p, id=_rel(p), marks=_known(f"params:{_rel(p)}"))
                                  for p in SOURCES if _rel(p) not in EXEMPT_PARAMS])
def test_no_function_takes_more_than_ten_parameters(path):
    bad = too_many_parameters(path)
    assert not bad, f"{_rel(path)}: more than {MAX_PARAMS} parameters: {bad}"


@pytest.mark.parametrize("signature, count", [
    ("def f(self, a, b): pass", 2),
    ("def f(cls, *args, **kwargs): pass", 2),
    ("def f(a, /, b, *, c, d=1, **kw): pass", 5),
    ("def f(**options): pass", 1),
], ids=["self", "cls-varargs", "kinds", "kwargs-only"])
def test_parameter_count(signature, count):
    assert parameter_count(ast.parse(signature).body[0]) == count


# ------------------------------------------------------------------------------------ constants
TOKENS_HOME = "edgelstm/tokens.py"
TOKEN_NAMES = {"PAD", "BOS", "EOS", "IGNORE_INDEX", "IGNORE_LABEL", "SPECIAL_TOKENS"}


def token_spellings(source: str) -> list[str]:
    """Where ``source`` spells a special token id or the label padding itself instead of
    importing it: an assignment to one of :data:`TOKEN_NAMES` from literals, a ``{"pad": 0, ...}``
    literal, or the number -100 (comments and docstrings do not count)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and not isinstance(node.value, (ast.Name, ast.Attribute)):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            names |= {e.id for t in node.targets if isinstance(t, ast.Tuple) for e in t.elts if isinstance(e, ast.Name)}
            out += [f"line {node.lineno}: {n} =" for n in sorted(names & TOKEN_NAMES)]
        elif isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if {"pad", "bos", "eos"} & keys and any(isinstance(v, ast.Constant) and isinstance(v.value, int)
                                                     for v in node.values):
                out.append(f"line {node.lineno}: a literal special_tokens dict")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
                and isinstance(node.operand, ast.Constant) and node.operand.value == 100:
            out.append(f"line {node.lineno}: -100")
    return out


@pytest.mark.parametrize("path", [pytest.param(p, id=_rel(p), marks=_known(f"tokens:{_rel(p)}"))
                                  for p in SOURCES if _rel(p) != TOKENS_HOME])
def test_special_token_ids_are_spelled_once(path):
    """PAD/BOS/EOS, their manifest dict and IGNORE_INDEX live in edgelstm/tokens.py only."""
    bad = token_spellings(path.read_text(encoding="utf-8"))
    assert not bad, f"{_rel(path)} spells a token id (import it from edgelstm.tokens): {bad}"


@pytest.mark.parametrize("source, found", [
    ("PAD, BOS, EOS = 0, 1, 2", ["line 1: BOS =", "line 1: EOS =", "line 1: PAD ="]),
    ("sp = {'pad': 0, 'bos': 1}", ["line 1: a literal special_tokens dict"]),
    ("keep = y != -100", ["line 1: -100"]),
    ('from edgelstm.tokens import BOS\nPAD = tokens.PAD\n"""-100 in a docstring"""', []),
], ids=["assignment", "dict", "number", "imports-and-text"])
def test_token_spellings(source, found):
    assert token_spellings(source) == found


def test_the_home_defines_them():
    assert len(token_spellings((ROOT / TOKENS_HOME).read_text(encoding="utf-8"))) >= 3


def test_the_known_list_names_only_real_places():
    """An entry for a file that no longer exists (or a cycle that is gone) is stale: remove it."""
    places = {f"{kind}:{_rel(p)}" for p in SOURCES for kind in ("lines", "params", "tokens")}
    places |= {f"cycle:{c[0]}" for c in CYCLES}
    stale = sorted(k for k in KNOWN if k not in places)
    assert not stale, f"stale KNOWN entries (the work landed): {stale}"
