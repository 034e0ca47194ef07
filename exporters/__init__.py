"""edgelstm.exporters: PyTorch to ONNX, graph checks, quantization.

Importing the package imports nothing heavy; the names below load their module (and torch /
onnx) on first use:

* :func:`export` (module, example_inputs, path, ...) -> :class:`ExportReport`: a user's nn.Module;
* :func:`export_model` / :func:`export_run`: edgelstm's families (a model or a run directory);
* :func:`read_manifest`: the manifest of an exported file.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export": "edgelstm.exporters.core",
    "ExportOptions": "edgelstm.exporters.plan",
    "ExportReport": "edgelstm.exporters.plan",
    "read_manifest": "edgelstm.exporters.core",
    "DEFAULT_OPSET": "edgelstm.manifest",
    "export_model": "edgelstm.exporters.runs",
    "export_run": "edgelstm.exporters.runs",
    "InputSpec": "edgelstm.exporters.spec",
    "parse_input_spec": "edgelstm.exporters.spec",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'edgelstm.exporters' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value
