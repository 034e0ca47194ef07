"""The package skeleton: manifest schema, errors, CLI group, torch-free imports."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgelstm.errors import EdgeLSTMError, InputError, ManifestError, UsageError
from edgelstm.manifest import SCHEMA_VERSION, Manifest, StateSpec, TensorSpec


def _manifest(**kw) -> Manifest:
    base = dict(
        family="lstm", task="classify", layers=2, hidden_size=8, directions=1,
        inputs=[TensorSpec("x", "float32", ["batch", "time", 8]), TensorSpec("h_in", "float32", [2, "batch", 8])],
        outputs=[TensorSpec("logits", "float32", ["batch", 10]), TensorSpec("h_out", "float32", [2, "batch", 8])],
        states=[StateSpec("h_in", "h_out", [2, "batch", 8])], labels=[str(i) for i in range(10)],
    )
    base.update(kw)
    return Manifest(**base)


def test_manifest_round_trip():
    m = _manifest()
    again = Manifest.from_json(m.to_json())
    assert again == m
    assert json.loads(m.to_json())["schema_version"] == SCHEMA_VERSION


def test_manifest_unknown_schema_version():
    d = json.loads(_manifest().to_json())
    d["schema_version"] = 99
    with pytest.raises(ManifestError, match=r"unknown manifest schema version; expected one of \[1, 2\], got 99"):
        Manifest.from_dict(d, source="m.onnx")


@pytest.mark.parametrize("field,value,match", [
    ("family", "transformer", "unknown family"),
    ("precision", "int4", "unknown precision"),
    ("directions", 3, "directions out of range"),
], ids=["family", "precision", "directions"])
def test_manifest_rejects_bad_fields(field, value, match):
    d = json.loads(_manifest().to_json())
    d[field] = value
    with pytest.raises(ManifestError, match=match):
        Manifest.from_dict(d)


def test_manifest_state_must_name_graph_tensors():
    with pytest.raises(ManifestError, match="state input 'c_in' is not among the inputs"):
        _manifest(states=[StateSpec("c_in", "c_out", [2, "batch", 8])]).validate()


def test_manifest_not_json():
    with pytest.raises(ManifestError, match=re.escape("m.onnx | manifest is not valid JSON")):
        Manifest.from_json("{nope", source="m.onnx")


def test_error_message_shape_and_types():
    e = InputError("x", "wrong feature size", expected=8, got=5)
    assert str(e) == "x | wrong feature size; expected 8, got 5"
    assert isinstance(e, EdgeLSTMError) and isinstance(e, ValueError)
    assert UsageError("a", "b").exit_code == 2


def test_cli_version_and_help():
    from edgelstm.cli import cli
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "edgelstm, version" in r.output
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "train" in r.output


BLOCK_HEAVY = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'onnxscript'):
            raise ImportError('blocked import: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_runtime_imports_without_torch_or_onnx():
    code = BLOCK_HEAVY + "import edgelstm, edgelstm.runtime, edgelstm.manifest, edgelstm.errors\nprint('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
