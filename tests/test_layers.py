"""The allowed arrows between the packages (docs/DESIGN.md), checked on the source's imports.

* ``edgelstm.runtime`` (``runtime/``) imports no torch, no onnx and nothing of edgelstm but the
  torch-free modules it is built on (errors, manifest, fileio, the NumPy array loader) and itself:
  a device runs it without the extras;
* ``edgelstm.exporters`` never imports ``edgelstm.verify``: the producer does not lean on the
  checker (both use ``edgelstm.stats`` for their error statistics);
* nothing in ``runtime/`` or ``exporters/`` imports ``edgelstm.cli``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edgelstm.runtime": ROOT / "runtime", "edgelstm.exporters": ROOT / "exporters"}
# the torch-free modules under the runtime; edgelstm.data.readers is the NumPy-only safe array loader
# (Stream.load_state); test_scaffold.py imports the runtime with torch and onnx blocked
RUNTIME_MAY_IMPORT = ("edgelstm.errors", "edgelstm.manifest", "edgelstm.fileio", "edgelstm.runtime",
                      "edgelstm.data.readers")


def imports(path: Path) -> set[str]:
    """Every module an ``import`` / ``from ... import`` in ``path`` names (function-level ones too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _files(package: str) -> list[Path]:
    return sorted(PACKAGES[package].glob("*.py"))


@pytest.mark.parametrize("path", _files("edgelstm.runtime"), ids=lambda p: p.name)
def test_runtime_imports_only_the_torch_free_floor(path):
    bad = sorted(m for m in imports(path) if m.split(".")[0] in ("torch", "onnx", "onnxscript")
                 or (m.startswith("edgelstm.") and not m.startswith(RUNTIME_MAY_IMPORT)))
    assert not bad, f"runtime/{path.name} imports {bad}"


@pytest.mark.parametrize("path", _files("edgelstm.exporters"), ids=lambda p: p.name)
def test_exporters_never_import_the_checker_or_the_cli(path):
    bad = sorted(m for m in imports(path) if m.startswith(("edgelstm.verify", "edgelstm.cli")))
    assert not bad, f"exporters/{path.name} imports {bad}"


def test_runtime_never_imports_the_cli():
    bad = {p.name: sorted(m for m in imports(p) if m.startswith("edgelstm.cli")) for p in _files("edgelstm.runtime")}
    assert not {k: v for k, v in bad.items() if v}


def test_the_check_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from edgelstm.verify.core import verify\n    import torch\n")
    assert {"edgelstm.verify.core", "torch"} <= imports(f)
