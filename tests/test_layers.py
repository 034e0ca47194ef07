"""The allowed arrows between the packages (docs/DESIGN.md), checked on the source's imports.

* ``edgelstm.runtime`` (``runtime/``) imports no torch, no onnx and nothing of edgelstm but the
  torch-free modules it is built on (errors, manifest, fileio, units, tokens, the NumPy array
  loader) and itself:
  a device runs it without the extras;
* ``edgelstm.exporters`` never imports ``edgelstm.verify``: the producer does not lean on the
  checker (both use ``edgelstm.stats`` for their error statistics);
* no library module (anything but ``edgelstm/cli/`` and ``edgelstm/__main__.py``) imports
  ``edgelstm.cli``.

The import walker is tests/importgraph.py (shared with tests/test_structure.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from importgraph import PACKAGES, ROOT, imports

# the torch-free modules under the runtime; edgelstm.data.readers is the NumPy-only safe array loader
# (Stream.load_state); edgelstm.tokens holds the special token ids (the seq2seq decoder's bos/eos);
# test_scaffold.py imports the runtime with torch and onnx blocked
RUNTIME_MAY_IMPORT = ("edgelstm.errors", "edgelstm.manifest", "edgelstm.fileio", "edgelstm.runtime",
                      "edgelstm.data.readers", "edgelstm.units", "edgelstm.tokens")


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


# the library files whose import of the CLI other work in flight removes (emptied at merge)
LIBRARY_CLI_KNOWN: dict[str, str] = {}
LIBRARY = sorted(p for folder in PACKAGES.values() for p in folder.rglob("*.py")
                 if p.parent.name != "cli" and p.name != "__main__.py")


@pytest.mark.parametrize("path", [
    pytest.param(p, id=p.relative_to(ROOT).as_posix(),
                 marks=[pytest.mark.xfail(strict=False, reason=LIBRARY_CLI_KNOWN[p.relative_to(ROOT).as_posix()])]
                 if p.relative_to(ROOT).as_posix() in LIBRARY_CLI_KNOWN else [])
    for p in LIBRARY])
def test_no_library_module_imports_the_cli(path):
    """The CLI sits on the library, never under it (``python -m edgelstm`` is the one entry that may)."""
    bad = sorted(m for m in imports(path) if m == "edgelstm.cli" or m.startswith("edgelstm.cli."))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_check_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from edgelstm.verify.core import verify\n    import torch\n")
    assert {"edgelstm.verify.core", "torch"} <= imports(f)


def test_the_check_leaves_out_type_checking_blocks(tmp_path):
    """Imports for annotations only never run, so they are no edge; their ``else`` branch is."""
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\nimport typing\nif TYPE_CHECKING:\n    import torch\n"
                 "if typing.TYPE_CHECKING:\n    import onnx\nelse:\n    import json\n")
    got = imports(f)
    assert "torch" not in got and "onnx" not in got
    assert {"typing", "json"} <= got
