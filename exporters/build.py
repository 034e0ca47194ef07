"""Build one graph from a :class:`~edgelstm.exporters.plan.GraphPlan`: trace with the recurrent
proxies installed, clean, check (onnx checker, shape inference, onnxruntime), compare with PyTorch
(the parity and streaming checks of :mod:`edgelstm.exporters.checks`), complete and seal the
manifest; and write the files, all or none.

Imports: numpy, onnx, torch, :mod:`edgelstm.errors`, :mod:`edgelstm.manifest`,
:mod:`edgelstm.exporters.plan` / ``checks`` / ``graph`` / ``recurrent`` / ``spec``, and (inside
functions) the runtime's integrity check and interface, :mod:`edgelstm.fileio`. Imported by
:mod:`edgelstm.exporters.core` and :mod:`edgelstm.exporters.runs`.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np
import onnx
import torch

from edgelstm.errors import EdgeLSTMError as EdgeLSTMErrorTypes
from edgelstm.errors import ExportError, ManifestError, ModelDefinitionError, ModelFileError, UnsupportedError, UsageError
from edgelstm.exporters import checks, graph as graph_mod
from edgelstm.exporters.plan import (EXPORTER, MAX_OPSET, MIN_OPSET, ExportReport, GraphPlan, family_of,
                                     require_recurrent, run_forward, sizes_cases, to_torch)
from edgelstm.exporters.recurrent import RecurrentLayer, describe, find_recurrent, proxies_installed
from edgelstm.exporters.spec import make_inputs
from edgelstm.manifest import DEFAULT_OPSET, Manifest, StateSpec, TensorSpec
from edgelstm.runtime.integrity import set_manifest as _set_manifest  # the one manifest writer
from edgelstm.stats import FP32_RTOL_SCALE

log = logging.getLogger(__name__)


def _infer_output_axes(ref_a: dict[str, np.ndarray], ref_b: dict[str, np.ndarray], sizes_a: dict[str, int],
                       sizes_b: dict[str, int]) -> dict[str, dict[int, str]]:
    """Name each output dim that changes between two runs after the input axis that changed with it."""
    axes: dict[str, dict[int, str]] = {}
    for name, a in ref_a.items():
        b = ref_b[name]
        axes[name] = {}
        for i, (da, db) in enumerate(zip(a.shape, b.shape)):
            if da == db:
                continue
            match = [n for n in sizes_a if sizes_a[n] == da and sizes_b[n] == db]
            axes[name][i] = match[0] if match else f"{name}_dim{i}"
    return axes


def _raw_export(plan: GraphPlan, args: tuple[torch.Tensor, ...], output_axes: dict[str, dict[int, str]],
                opset: int, subject: str) -> onnx.ModelProto:
    names = [s.name for s in plan.inputs]
    dynamic_axes: dict[str, dict[int, str]] = {s.name: s.dynamic_axes for s in plan.inputs if s.dynamic_axes}
    dynamic_axes.update({k: v for k, v in output_axes.items() if v})
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(plan.wrapper, args, buf, dynamo=False, input_names=names,
                              output_names=plan.output_names, dynamic_axes=dynamic_axes or None,
                              opset_version=opset, do_constant_folding=True)
    except EdgeLSTMErrorTypes:
        raise
    except Exception as e:
        raise ExportError(subject, "torch.onnx.export failed", expected="a traceable forward",
                          got=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:400] if str(e) else ''}") from e
    return onnx.load_from_string(buf.getvalue())


def _wrapper_scopes(plan: GraphPlan) -> tuple[str, ...]:
    """Name prefixes the export wrapper adds: ``inner.`` (and ``inner.<attr>.`` for family calls)."""
    inner = plan.wrapper.inner
    subs = [name for name, child in inner.named_children() if child is plan.root]
    out: list[str] = []
    for sub in subs:
        out += [f"inner.{sub}.", f"/inner/{sub}/"]
    return tuple(out + ["inner.", "/inner/"])


def _recurrent_summary(model: onnx.ModelProto) -> list[dict[str, Any]]:
    out = []
    for n in model.graph.node:
        if n.op_type in graph_mod.RECURRENT_OPS:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            ins = list(n.input) + [""] * 8
            direction = attrs.get("direction", b"forward")
            out.append({"name": n.name, "op": n.op_type,
                        "direction": direction.decode() if isinstance(direction, bytes) else direction,
                        "hidden_size": int(attrs["hidden_size"]),
                        "linear_before_reset": int(attrs.get("linear_before_reset", 0)),
                        "sequence_lens": bool(ins[4]), "initial_h": bool(ins[5]),
                        "peepholes": n.op_type == "LSTM" and bool(ins[7])})
    return out


def _fix_io_shapes(model: onnx.ModelProto, plan: GraphPlan, output_axes: dict[str, dict[int, str]],
                   ref: dict[str, np.ndarray]) -> None:
    """Graph outputs get the symbolic shapes found by probing (fixed dims stay fixed)."""
    for o in model.graph.output:
        shape = list(ref[o.name].shape)
        axes = output_axes.get(o.name, {})
        o.type.tensor_type.ClearField("shape")
        for i, n in enumerate(shape):
            d = o.type.tensor_type.shape.dim.add()
            if i in axes:
                d.dim_param = axes[i]
            else:
                d.dim_value = int(n)


def build_graph(plan: GraphPlan, *, opset: int = DEFAULT_OPSET, verify: bool = True, subject: str = "export",
                parity_scale: float = FP32_RTOL_SCALE) -> tuple[onnx.ModelProto, ExportReport]:
    """Trace, clean, check and verify one graph. Nothing is written."""
    if not (MIN_OPSET <= opset <= MAX_OPSET):
        raise UsageError("--opset", "opset out of range", expected=f"{MIN_OPSET}..{MAX_OPSET}", got=opset)
    t0 = time.perf_counter()
    found = find_recurrent(plan.root) if plan.user is not None else require_recurrent(plan.root, subject)
    layers: list[RecurrentLayer] = [describe(m, p) for p, m in found]
    plan.wrapper.eval()
    rng = np.random.default_rng(0)
    names = [s.name for s in plan.inputs]
    cases = []
    for label, sizes in sizes_cases(plan):
        if label == "example" and plan.example is not None:
            feeds = {n: np.asarray(plan.example[n]) for n in names}
        else:
            feeds = make_inputs(plan.inputs, sizes, rng=rng, lengths_input=plan.lengths_input, int_high=plan.int_high,
                                sorted_lengths=plan.sorted_lengths)
        cases.append((label, sizes, feeds))

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        refs: dict[int, dict[str, np.ndarray]] = {}
        reference = plan.reference or (plan.user.unmodified if plan.user else None)
        if reference is not None:
            for k, (_, _, feeds) in enumerate(cases):
                refs[k] = run_forward(reference, (feeds,), subject, feeds)
        counts: list[dict[int, int]] = []
        with proxies_installed(plan.root, found, layers) as session:
            def eager(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                outs = run_forward(plan.wrapper, to_torch(feeds, names), subject, feeds)
                counts.append(dict(session.calls))
                if len(outs) != len(plan.output_names):
                    raise UsageError("output names", "count differs from the model's outputs",
                                     expected=len(outs), got=f"{len(plan.output_names)} {plan.output_names}")
                return {n: o.detach().cpu().numpy() for n, o in zip(plan.output_names, outs)}

            proxied = {k: eager(feeds) for k, (_, _, feeds) in enumerate(cases)}
            _refuse_loops_over_axes(layers, counts, cases, subject)
            called = set(session.calls)
            if reference is None:
                refs = proxied
            output_axes = plan.output_axes or _infer_output_axes(refs[0], refs[1], cases[0][1], cases[1][1])
            raw = _raw_export(plan, to_torch(cases[0][2], names), output_axes, opset, subject)
    finally:
        torch.set_num_threads(torch_threads)

    not_run = [layers[i].path for i in range(len(layers)) if i not in called]
    if not_run and plan.user is not None:
        log.warning("%s: recurrent module(s) %s are never called by the forward; they are not in the graph "
                    "or the manifest", subject, not_run)
        _drop_unused(plan.manifest, [layers[i] for i in sorted(called)])
    elif not_run:
        log.info("recurrent layer(s) %s not used by this graph", not_run)
    graph_inputs = [i.name for i in raw.graph.input if i.name not in {t.name for t in raw.graph.initializer}]
    missing = [n for n in names if n not in graph_inputs]
    if missing:
        raise ModelDefinitionError(subject, f"input(s) {missing} are not used by the model's forward",
                                   expected="every listed input to reach an output", got=f"graph inputs {graph_inputs}")

    nodes_before = graph_mod.op_counts(raw)
    model = raw
    prefixes = [f"{layers[i].path or 'rnn'}.l{k}" for i in sorted(called) for k in range(layers[i].num_layers)]
    if len(called) == 1:  # one module called in a loop: its nodes in call order (".callN" added when named)
        prefixes *= session.calls[next(iter(called))]
    stats = graph_mod.clean(model, prefixes, wrapper_scopes=_wrapper_scopes(plan))
    problems = graph_mod.check_fused(model)
    rec = _recurrent_summary(model)
    expected_nodes = sum(layers[i].num_layers * session.calls[i] for i in called)
    if len(rec) != expected_nodes:
        problems.append(f"{len(rec)} recurrent nodes where {expected_nodes} were expected")
    if problems:
        raise ExportError(subject, "the graph does not hold one fused recurrent node per layer",
                          expected="one LSTM/GRU/RNN node per layer, no Loop/Scan", got="; ".join(problems))
    _fix_io_shapes(model, plan, output_axes, refs[0])
    model.producer_name = "edgelstm"
    from edgelstm import __version__  # noqa: PLC0415

    model.producer_version = __version__
    manifest = _complete_manifest(plan, output_axes, refs[0], opset, model)
    _set_manifest(model, manifest)
    model = checks.check_graph(model, subject=subject)
    data = _seal(model, manifest, subject)
    parity: list[checks.ParityCase] = []
    sess = checks.ort_session(data, subject=subject)  # loads in onnxruntime even with verify=False
    if verify:
        ref_list = [refs[k] for k in range(len(cases))]
        lookup = {id(cases[k][2]): ref_list[k] for k in range(len(cases))}
        parity = checks.run_parity(sess, cases, lambda feeds: lookup[id(feeds)], subject=subject, scale=parity_scale)
        stream = _streaming_check(plan, sess, cases[1], output_axes, subject, parity_scale)
        if stream is not None:
            parity.append(stream)
    report = ExportReport(path="", opset=opset, exporter=EXPORTER, nodes_before=nodes_before,
                          nodes_after=graph_mod.op_counts(model), recurrent_nodes=rec, size_bytes=len(data),
                          inputs=[asdict(t) for t in manifest.inputs], outputs=[asdict(t) for t in manifest.outputs],
                          parity=[c.to_dict() for c in parity], clean_stats=stats,
                          seconds=time.perf_counter() - t0, verified=verify, manifest=json_loads(manifest.to_json()))
    return model, report


def _refuse_loops_over_axes(layers: list[RecurrentLayer], counts: list[dict[int, int]], cases, subject: str) -> None:
    """A module called a different number of times at different sizes runs in a Python loop over a
    dynamic axis: tracing unrolls the loop at the example's size, so the graph would be wrong."""
    for i, layer in enumerate(layers):
        seen = [c.get(i, 0) for c in counts]
        if len(set(seen)) <= 1:
            continue
        what = f"{layer.path or 'model'} ({'a cell' if layer.is_cell else layer.op})"
        at = "; ".join(f"{n} call(s) at {case[1]}" for n, case in zip(seen, cases))
        fix = ("export one step instead: a module whose forward runs the cell once, forward(x_t, state) -> "
               "state, with --input 'x:float32[batch,F]' --input 'state=(h:float32[batch,H],c:float32[batch,H])' "
               "(the state becomes state inputs/outputs the runtime feeds back); or run nn.LSTM / nn.GRU over the "
               "whole sequence" if layer.is_cell else
               "call the recurrent module once over the whole sequence (the fused node loops over time)")
        raise UnsupportedError(what, f"called a different number of times at different sizes ({at}): a Python loop "
                               "over a dynamic axis, which tracing unrolls at the example's size and freezes",
                               expected=fix, got=seen)


def _drop_unused(m: Manifest, used: list[RecurrentLayer]) -> None:
    """Describe only the recurrent modules the graph holds."""
    m.extra["recurrent_modules"] = [r for r in m.extra.get("recurrent_modules", [])
                                    if r["path"] in {layer.path for layer in used}]
    if used:
        m.family = family_of(used)
        m.layers = sum(layer.num_layers for layer in used)
        m.hidden_size = used[0].hidden_size
        m.directions = max(layer.directions for layer in used)
        m.streamable = m.streamable and m.directions == 1


def _streaming_check(plan: GraphPlan, sess, case, output_axes, subject: str, scale: float):
    """For streamable graphs with state: two chunks with carried state == the whole sequence."""
    m = plan.manifest
    if not (m.states and (m.streamable if plan.stream_check is None else plan.stream_check)):
        return None
    from edgelstm.exporters.spec import data_input  # noqa: PLC0415

    x_spec = data_input([s for s in plan.inputs if s.name not in {st.input for st in m.states}], plan.lengths_input)
    axis_name = next((d for d in x_spec.dims if isinstance(d, str) and d != "batch"), None) if x_spec else None
    if axis_name is None:  # a step module: no time axis to cut
        return None
    label, sizes, feeds = case
    if sizes.get(axis_name, 1) < 2:
        return None
    time_axes = {s.name: s.dims.index(axis_name) for s in plan.inputs if axis_name in s.dims}
    out_axes = {n: next(i for i, a in ax.items() if a == axis_name)
                for n, ax in output_axes.items() if axis_name in ax.values()}
    known = {d for s in plan.inputs for d in s.dims if isinstance(d, str)}
    # an output with an axis of its own (time * batch flattened) has no chunk-wise counterpart
    skip = {n for n, ax in output_axes.items() if n not in out_axes and set(ax.values()) - known}
    return checks.streaming_case(sess, feeds, time_axes=time_axes, output_time_axes=out_axes,
                                 states=[(s.input, s.output) for s in m.states], lengths_input=plan.lengths_input,
                                 sizes=sizes, subject=subject, scale=scale, skip=skip)


def json_loads(text: str) -> dict:
    import json  # noqa: PLC0415

    return json.loads(text)


def _complete_manifest(plan: GraphPlan, output_axes, ref, opset: int, model: onnx.ModelProto) -> Manifest:
    m = plan.manifest
    m.opset = opset
    m.inputs = [TensorSpec(s.name, s.dtype, list(s.dims), plan.input_meanings.get(s.name, "")) for s in plan.inputs]
    m.outputs = []
    for name in plan.output_names:
        arr = ref[name]
        axes = output_axes.get(name, {})
        shape = [axes.get(i, int(n)) for i, n in enumerate(arr.shape)]
        m.outputs.append(TensorSpec(name, str(arr.dtype), shape, plan.output_meanings.get(name, "")))
    m.producer = producer_versions()
    _describe_interface(plan, m, model)
    try:
        m.validate(source="export")
    except ManifestError as e:  # what would be written fails the schema every reader checks
        raise ExportError(e.subject, f"the manifest to be written is invalid: {e.problem}", expected=e.expected,
                          got=e.got) from None
    return m


def _describe_interface(plan: GraphPlan, m: Manifest, model: onnx.ModelProto) -> None:
    """Write the graph's interface (roles, axes, token ranges of the embeddings, the binding)
    into the manifest. State pairs the user named by the rule (``h_in`` argument -> ``h_out``
    output) become manifest states too, and a user graph with them streams when every recurrent
    module is unidirectional."""
    from edgelstm.runtime.interface import Interface, pair_states, token_ranges  # noqa: PLC0415

    known = {s.input for s in m.states}
    shapes = {t.name: t for t in m.inputs}
    added = [(a, b) for a, b in pair_states([t.name for t in m.inputs], [t.name for t in m.outputs]) if a not in known]
    for a, b in added:
        m.states.append(StateSpec(a, b, list(shapes[a].shape), shapes[a].dtype))
    binding = plan.user.binding if plan.user is not None else None
    if added and binding is not None:
        m.streamable = m.directions == 1
    iface = Interface.infer([(t.name, t.dtype, t.shape) for t in m.inputs],
                            [(t.name, t.dtype, t.shape) for t in m.outputs],
                            states=[(s.input, s.output) for s in m.states], lengths=plan.lengths_input,
                            token_ranges=token_ranges(model.graph), binding=binding)
    primary = iface.primary
    if primary is None or primary.time_axis is None:  # a stream steps one data input along its time axis
        m.streamable = False
    m.interface = iface.to_dict()


def producer_versions() -> dict[str, str]:
    import onnxruntime  # noqa: PLC0415

    from edgelstm import __version__  # noqa: PLC0415

    return {"edgelstm": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "exporter": EXPORTER}


def _seal(model: onnx.ModelProto, manifest: Manifest, subject: str) -> bytes:
    """Seal the graph and the manifest together (see :mod:`edgelstm.runtime.integrity`), so the
    runtime detects weights, nodes or manifest fields edited after export; returns the final bytes,
    checked by the runtime's own integrity check (seal and manifest schema)."""
    from edgelstm.runtime.integrity import seal_proto  # noqa: PLC0415 (stdlib only)

    manifest.extra.pop("graph_sha256", None)  # schema 1's graph-only digest
    _set_manifest(model, manifest)
    seal_proto(model)
    data = model.SerializeToString()
    check_written(data, subject)
    return data


def check_written(data: bytes, subject: str) -> None:
    """What export and quantize are about to write passes the check every reader runs."""
    from edgelstm.runtime.integrity import check_model_bytes  # noqa: PLC0415

    try:
        check_model_bytes(data, subject)
    except (ModelFileError, ManifestError) as e:
        raise ExportError(subject, "the file to be written fails the runtime's own integrity check",
                          expected="a sealed file with a valid manifest", got=str(e)) from None


def write_models(items: list[tuple[onnx.ModelProto, str | os.PathLike]]) -> None:
    """Write every model to a temp name, then rename all: nothing half-written, nothing left on failure."""
    from edgelstm.fileio import atomic_path  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        for model, path in items:
            tmp = stack.enter_context(atomic_path(path))
            onnx.save_model(model, str(tmp))
            check_written(tmp.read_bytes(), str(path))
