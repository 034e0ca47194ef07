"""PyTorch module -> checked, cleaned ONNX graph with a manifest: :func:`export` (a user's
``nn.Module``) and :func:`read_manifest`, the public face of :mod:`edgelstm.exporters`.

The work is done by :mod:`~edgelstm.exporters.user_plan` (the plan of a user's module),
:mod:`~edgelstm.exporters.build` (trace, clean, check, parity, write) and
:mod:`~edgelstm.exporters.plan` (the plan and the options). edgelstm's own families go through
:mod:`~edgelstm.exporters.runs`.

Exporter choice (:data:`~edgelstm.exporters.plan.EXPORTER`): the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``). Measured when the choice was made (torch 2.x): the
dynamo exporter froze time axes of GRU graphs and broke bidirectional GRUs at other time
lengths; the TorchScript one runs at any batch / time and lets an autograd Function's
``symbolic`` emit the fused recurrent nodes exactly (see :mod:`edgelstm.exporters.recurrent`).
The test matrix over batch sizes and time lengths other than the example's is what keeps this
choice honest.

Imports: torch, :mod:`edgelstm.errors`, :mod:`edgelstm.manifest`, the modules above. Imported
by ``edgelstm export`` (:mod:`edgelstm.cli.export`) and, lazily, :mod:`edgelstm.exporters`.
"""
from __future__ import annotations

import os
from dataclasses import fields
from typing import Sequence

import torch
from torch import nn

from edgelstm.errors import ExportError
from edgelstm.exporters.build import build_graph, write_models
from edgelstm.exporters.plan import ExportOptions, ExportReport
from edgelstm.exporters.user_plan import coerce_specs, plan_module, probe_outputs
from edgelstm.manifest import MANIFEST_KEY, Manifest


def export(module: nn.Module, example_inputs: Sequence[torch.Tensor] | None, path: str | os.PathLike,
           options: ExportOptions | None = None, **keywords) -> ExportReport:
    """Export a user's ``nn.Module`` to ``path`` and return an :class:`ExportReport`.

    The options are an :class:`ExportOptions` or its fields as keywords: ``inputs`` are specs
    like ``"x:float32[batch,time,8]"`` (named dims are dynamic axes); without them every example
    tensor gets dims ``[batch, time, <fixed>...]``. ``example_inputs`` may be None when ``inputs``
    is given (random examples are made). ``lengths_input`` names the input wired to every
    recurrent node's ``sequence_lens``; ``expose_state`` adds ``h_in``/``c_in`` inputs and
    ``h_out``/``c_out`` outputs per recurrent module. With ``verify`` the graph is compared with
    PyTorch at the example's sizes and at other batch sizes and time lengths; max abs error must be
    ``<= atol_scale * max(1, max|ref|)``. On any failure nothing is written.
    """
    opts = _options(options, keywords)
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    plan = plan_module(module, example_inputs, opts)
    probe_outputs(plan, str(path), coerce_specs(opts.inputs, example_inputs))
    model, report = build_graph(plan, opset=opts.opset, verify=opts.verify, subject=str(path),
                                parity_scale=opts.atol_scale)
    write_models([(model, path)])
    report.path = str(path)
    return report


_OPTION_NAMES = frozenset(f.name for f in fields(ExportOptions))


def _options(options: ExportOptions | None, keywords: dict) -> ExportOptions:
    unknown = sorted(set(keywords) - _OPTION_NAMES)
    if unknown:
        raise TypeError(f"export() got unexpected keyword arguments {unknown}")
    if options is not None and keywords:
        raise TypeError(f"export() got option keywords {sorted(keywords)} beside an ExportOptions")
    return options if options is not None else ExportOptions(**keywords)


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of an exported file, through the readers' integrity check (seal and schema)."""
    from edgelstm.runtime.integrity import check_model_file  # noqa: PLC0415 (stdlib only)

    manifest = check_model_file(path)[2]
    if manifest is None:
        raise ExportError(str(path), "no edgelstm manifest in metadata_props", expected=f"key {MANIFEST_KEY!r}",
                          got="a foreign ONNX file")
    return manifest
