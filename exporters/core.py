"""PyTorch module -> checked, cleaned ONNX graph with a manifest. The engine behind
:func:`edgelstm.exporters.export` and ``edgelstm export``.

Exporter choice (kept in this one place, :data:`EXPORTER`): the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``). Measured here (docs FINDINGS): the dynamo exporter froze
time axes of GRU graphs and broke bidirectional GRUs at other time lengths; the TorchScript one
runs at any batch / time and lets an autograd Function's ``symbolic`` emit the fused recurrent
nodes exactly (see :mod:`edgelstm.exporters.recurrent`). The test matrix over batch sizes and time
lengths other than the example's is what keeps this choice honest.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from edgelstm.errors import EdgeLSTMError as EdgeLSTMErrorTypes
from edgelstm.errors import (ExportError, ManifestError, ModelDefinitionError, ModelFileError, UnsupportedError,
                             UsageError)
from edgelstm.exporters import checks, graph as graph_mod
from edgelstm.exporters.recurrent import (RecurrentLayer, describe, find_recurrent,
                                          proxies_installed, recurrent_kind, _session)
from edgelstm.exporters.spec import (EXAMPLE_SIZES, EXAMPLE_SIZE_DEFAULT, InputSpec, TupleArg, leaves, make_inputs,
                                     parse_argument, structure, time_axis_of)
from edgelstm.manifest import MANIFEST_KEY, Manifest, StateSpec, TensorSpec
from edgelstm.units import format_size

log = logging.getLogger(__name__)

#: Default ONNX opset. 17 holds every op we emit (LSTM/GRU/RNN-14, Squeeze/Slice with tensor
#: axes); it is the newest opset the TorchScript exporter fully covers AND is run by every
#: onnxruntime release since 1.11 (2022), which matters on edge devices with older builds.
DEFAULT_OPSET = 17
MIN_OPSET = 14  # LSTM/GRU/RNN-14 (the version with `layout`) and Reshape-14
MAX_OPSET = 20  # the TorchScript exporter's limit
EXPORTER = "torchscript"

#: Sizes fed to the graph besides the example's: other batch sizes and time lengths.
_OTHER_SIZES = (3, 11, 13, 17, 19)


@dataclass
class ExportReport:
    """What an export did: graph sizes before/after cleaning, recurrent nodes, parity figures."""

    path: str
    opset: int
    exporter: str
    nodes_before: dict[str, int]
    nodes_after: dict[str, int]
    recurrent_nodes: list[dict[str, Any]]
    size_bytes: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parity: list[dict[str, Any]] = field(default_factory=list)
    clean_stats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    verified: bool = True
    manifest: dict[str, Any] = field(default_factory=dict)
    companions: list["ExportReport"] = field(default_factory=list)

    @property
    def node_count_before(self) -> int:
        return sum(self.nodes_before.values())

    @property
    def node_count_after(self) -> int:
        return sum(self.nodes_after.values())

    @property
    def max_abs_error(self) -> float:
        return max((c["max_abs_error"] for c in self.parity), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["node_count_before"] = self.node_count_before
        d["node_count_after"] = self.node_count_after
        d["max_abs_error"] = self.max_abs_error
        return d

    def summary(self) -> str:
        rec = ", ".join(f"{n['op']}({n['direction']}, hidden {n['hidden_size']})" for n in self.recurrent_nodes)
        lines = [f"wrote {self.path} ({format_size(self.size_bytes)}, opset {self.opset})",
                 f"  nodes: {self.node_count_before} before cleaning -> {self.node_count_after} after "
                 f"({', '.join(f'{k} {v}' for k, v in self.nodes_after.items())})",
                 f"  recurrent: {rec or 'none (plain operators)'}"]
        if self.parity:
            cases = "; ".join(f"{c['label']} {c['sizes']}: {c['max_abs_error']:.2e}" for c in self.parity)
            lines.append(f"  parity vs PyTorch (max abs error): {cases}")
        else:
            lines.append("  parity: not checked (--no-verify)")
        for c in self.companions:
            lines.append(c.summary())
        return "\n".join(lines)


# ------------------------------------------------------------------------------ graph plans
@dataclass
class StateBinding:
    """Recurrent layer ``index`` takes its initial state from inputs and exposes its final state."""

    index: int
    h_in: str
    h_out: str
    c_in: str | None = None
    c_out: str | None = None
    path: str = ""


class GraphWrapper(nn.Module):
    """``forward(*graph inputs) -> flat tuple of graph outputs`` around ``inner``.

    Binds the lengths input and state inputs to the recurrent proxies of the current session.
    """

    def __init__(self, inner: nn.Module, input_names: Sequence[str], user_inputs: Sequence[Any],
                 lengths_input: str | None, states: Sequence[StateBinding], call: str = "forward",
                 lengths_axis: tuple[str, int] | None = None):
        super().__init__()
        self.inner = inner
        self.input_names = list(input_names)
        self.user_inputs = list(user_inputs)  # a name, or a tuple of names (nested) for a tuple argument
        self.lengths_input = lengths_input
        self.lengths_axis = lengths_axis      # (data input, its time axis): what the lengths count
        self.states = list(states)
        self.call = call
        self.last_output: Any = None          # the forward's last result, tensors replaced by their shapes

    def forward(self, *args):
        named = dict(zip(self.input_names, args))
        s = _session()
        s.calls.clear()
        s.state_out.clear()
        s.lengths = named[self.lengths_input] if self.lengths_input else None
        s.lengths_input = self.lengths_input
        s.lengths_steps = (int(named[self.lengths_axis[0]].shape[self.lengths_axis[1]])
                           if self.lengths_axis and self.lengths_input else None)
        s.state_in = {b.index: (named[b.h_in],) + ((named[b.c_in],) if b.c_in else ()) for b in self.states}
        fn = self.inner if self.call == "forward" else getattr(self.inner, self.call)
        out = fn(*[rebuild_argument(n, named) for n in self.user_inputs])
        self.last_output = _shapes_tree(out)
        flat = flatten_outputs(out)
        for b in self.states:
            if b.index not in s.state_out:
                what = f"recurrent module {b.path!r}" if b.path else "the recurrent layer"
                raise ModelDefinitionError(
                    b.h_in, f"{what} is never called by the forward, so its state cannot be exposed",
                    expected="a forward that calls every recurrent module (remove unused ones, or export "
                    "without --expose-state)", got="no call")
            flat.extend(s.state_out[b.index])
        return tuple(flat)


def rebuild_argument(tree: Any, named: dict[str, Any]) -> Any:
    """A forward argument from graph inputs: a name, or a tuple of names (nested)."""
    if isinstance(tree, tuple):
        return tuple(rebuild_argument(t, named) for t in tree)
    return named[tree]


def _shapes_tree(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return [_shapes_tree(o) for o in out]
    if isinstance(out, dict):
        return [_shapes_tree(o) for o in out.values()]
    return None


def _leaf_shapes(tree: Any) -> list[tuple[int, ...]]:
    if isinstance(tree, tuple):
        return [tree]
    if isinstance(tree, list):
        return [s for t in tree for s in _leaf_shapes(t)]
    return []


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        flat: list[torch.Tensor] = []
        for o in out:
            flat.extend(flatten_outputs(o))
        return flat
    if isinstance(out, dict):
        return flatten_outputs(list(out.values()))
    if out is None:
        return []
    raise ModelDefinitionError("model output", "unsupported output type",
                               expected="a tensor or a tuple/list/dict of tensors", got=type(out).__name__)


@dataclass
class GraphPlan:
    """Everything one ONNX file needs. ``reference`` (optional) maps feeds to expected outputs
    computed WITHOUT the proxies (an independent check); by default the wrapped module runs eagerly.
    """

    root: nn.Module                 # holds the recurrent submodules
    wrapper: GraphWrapper
    inputs: list[InputSpec]
    output_names: list[str]
    manifest: Manifest
    lengths_input: str | None = None
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    output_axes: dict[str, dict[int, str]] | None = None
    example: dict[str, np.ndarray] | None = None
    int_high: int = 2
    input_meanings: dict[str, str] = field(default_factory=dict)
    output_meanings: dict[str, str] = field(default_factory=dict)
    state_output_names: list[str] = field(default_factory=list)  # appended after the model's own outputs
    #: user modules: a recurrent module the forward never calls is warned about and left out of
    #: the manifest (family graphs such as a seq2seq encoder leave modules out on purpose).
    warn_unused: bool = False
    #: ``--example-size`` / ``--min-size``: the example's size of named axes, and the least size of
    #: every parity case (a conv front end that needs a width of 16 is never fed 1).
    example_sizes: dict[str, int] = field(default_factory=dict)
    min_sizes: dict[str, int] = field(default_factory=dict)
    #: the forward packs with enforce_sorted=True: generated lengths are sorted, longest first
    sorted_lengths: bool = False
    #: user modules: a graph without any recurrent layer (a hand-written recurrence) is allowed
    #: when it has state inputs and outputs
    allow_plain: bool = False
    #: user modules: the unmodified module's outputs (no proxies, no packing mapped), for parity
    unmodified: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    #: run the chunked streaming check (None: when the manifest says streamable)
    stream_check: bool | None = None
    #: ``--state IN=OUT``: a state input and the output fed back to it
    declared_states: list[tuple[str, str]] = field(default_factory=list)
    #: user modules: how the wrapper calls the module (written to the manifest's interface, so
    #: ``verify --model`` calls it the same way); None for edgelstm's own families
    binding: dict[str, Any] | None = None


def _sizes_cases(plan: GraphPlan) -> list[tuple[str, dict[str, int]]]:
    names: list[str] = []
    for s in plan.inputs:
        names.extend(d for d in s.dims if isinstance(d, str) and d not in names)
    low = {n: plan.min_sizes.get(n, 1) for n in names}
    example = {n: plan.example_sizes.get(n, max(EXAMPLE_SIZES.get(n, EXAMPLE_SIZE_DEFAULT), low[n])) for n in names}
    if plan.example is not None:
        example = sizes_of(plan.inputs, plan.example)
    other = {}
    for i, n in enumerate(names):
        size = _OTHER_SIZES[i % len(_OTHER_SIZES)]
        size = size if size >= low[n] else low[n] + size
        other[n] = size + 2 if size == example[n] else size
    single = {n: low[n] for n in names}
    return [("example", example), ("other", other), ("single" if not plan.min_sizes else "minimum", single)]


def sizes_of(specs: list[InputSpec], feeds: dict[str, np.ndarray]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for s in specs:
        a = feeds[s.name]
        if a.ndim != len(s.dims):
            raise UsageError(f"example input {s.name}", "rank differs from its specification",
                             expected=f"{len(s.dims)} dims {s.text()}", got=list(a.shape))
        for d, n in zip(s.dims, a.shape):
            if isinstance(d, str):
                if sizes.setdefault(d, n) != n:
                    raise UsageError(f"example input {s.name}", f"axis {d!r} has two sizes",
                                     expected=sizes[d], got=n)
            elif d != n:
                raise UsageError(f"example input {s.name}", "fixed dim differs", expected=d, got=n)
    return sizes


def run_forward(fn: Callable, args: tuple, subject: str, feeds: dict[str, np.ndarray]):
    """Call the model; its own failures become a ModelDefinitionError naming the input shapes."""
    try:
        with torch.no_grad():
            return fn(*args)
    except EdgeLSTMErrorTypes:
        raise
    except Exception as e:
        shapes = {k: f"{v.dtype}{list(v.shape)}" for k, v in feeds.items()}
        raise ModelDefinitionError(subject, f"the model's forward raised on inputs {shapes}",
                                   expected="a forward that runs on the listed inputs (a named axis too small for "
                                   "the model, e.g. a width under a conv front end: set --min-size NAME=N)",
                                   got=f"{type(e).__name__}: {str(e).strip()[:300]}") from None


def require_recurrent(root: nn.Module, subject: str) -> list[tuple[str, nn.Module]]:
    found = find_recurrent(root)
    if not found:
        raise _no_recurrent(root, subject)
    return found


def _to_torch(feeds: dict[str, np.ndarray], names: list[str]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names)


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
                parity_scale: float = checks.FP32_RTOL_SCALE) -> tuple[onnx.ModelProto, ExportReport]:
    """Trace, clean, check and verify one graph. Nothing is written."""
    if not (MIN_OPSET <= opset <= MAX_OPSET):
        raise UsageError("--opset", "opset out of range", expected=f"{MIN_OPSET}..{MAX_OPSET}", got=opset)
    t0 = time.perf_counter()
    found = find_recurrent(plan.root) if plan.allow_plain else require_recurrent(plan.root, subject)
    layers: list[RecurrentLayer] = [describe(m, p) for p, m in found]
    plan.wrapper.eval()
    rng = np.random.default_rng(0)
    names = [s.name for s in plan.inputs]
    cases = []
    for label, sizes in _sizes_cases(plan):
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
        reference = plan.reference or plan.unmodified
        if reference is not None:
            for k, (_, _, feeds) in enumerate(cases):
                refs[k] = run_forward(reference, (feeds,), subject, feeds)
        counts: list[dict[int, int]] = []
        with proxies_installed(plan.root, found, layers) as session:
            def eager(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                outs = run_forward(plan.wrapper, _to_torch(feeds, names), subject, feeds)
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
            raw = _raw_export(plan, _to_torch(cases[0][2], names), output_axes, opset, subject)
    finally:
        torch.set_num_threads(torch_threads)

    not_run = [layers[i].path for i in range(len(layers)) if i not in called]
    if not_run and plan.warn_unused:
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
        m.family = _family_of(used)
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


# ------------------------------------------------------------------------------ the interface (issue 10)
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
    if added and plan.binding is not None:
        m.streamable = m.directions == 1
    iface = Interface.infer([(t.name, t.dtype, t.shape) for t in m.inputs],
                            [(t.name, t.dtype, t.shape) for t in m.outputs],
                            states=[(s.input, s.output) for s in m.states], lengths=plan.lengths_input,
                            token_ranges=token_ranges(model.graph), binding=plan.binding)
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


def _set_manifest(model: onnx.ModelProto, manifest: Manifest) -> None:
    from edgelstm.runtime.integrity import set_manifest  # noqa: PLC0415

    set_manifest(model, manifest)


def write_models(items: list[tuple[onnx.ModelProto, str | os.PathLike]]) -> None:
    """Write every model to a temp name, then rename all: nothing half-written, nothing left on failure."""
    from edgelstm.fileio import atomic_path  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        for model, path in items:
            tmp = stack.enter_context(atomic_path(path))
            onnx.save_model(model, str(tmp))
            check_written(tmp.read_bytes(), str(path))


# ------------------------------------------------------------------------------ public API
def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of an exported file, through the readers' integrity check (seal and schema)."""
    from edgelstm.runtime.integrity import check_model_file  # noqa: PLC0415 (stdlib only)

    manifest = check_model_file(path)[2]
    if manifest is None:
        raise ExportError(str(path), "no edgelstm manifest in metadata_props", expected=f"key {MANIFEST_KEY!r}",
                          got="a foreign ONNX file")
    return manifest


class _Bare(nn.Module):
    """Container for a bare recurrent module, so it can be swapped for its proxy."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, *args):
        return self.rnn(*args)


def _coerce_specs(inputs: Sequence[Any] | None, example: Sequence[torch.Tensor] | None) -> list[Any]:
    """The forward's arguments: :class:`InputSpec` (one tensor) or :class:`TupleArg` (a tuple)."""
    if inputs is not None:
        args = [parse_argument(s) if isinstance(s, str) else s for s in inputs]
    else:
        if not example:
            raise UsageError("export", "neither inputs nor example_inputs given",
                             expected="input specs such as 'x:float32[batch,time,8]' or example tensors", got=None)
        args = []
        for i, t in enumerate(example):
            name = "x" if len(example) == 1 else f"input_{i}"
            dims: list[Any] = list(t.shape)
            if len(dims) >= 1:
                dims[0] = "batch"
            if len(dims) >= 2:
                dims[1] = "time"
            args.append(InputSpec(name, str(t.detach().cpu().numpy().dtype), tuple(dims)))
    from edgelstm.exporters.spec import check_specs  # noqa: PLC0415

    check_specs(leaves(args))
    return args


def _family_of(layers: list[RecurrentLayer]) -> str:
    kinds = {layer.family for layer in layers}
    return kinds.pop() if len(kinds) == 1 else "custom"


def _check_axis_sizes(specs: list[InputSpec], sizes: dict[str, int], option: str) -> None:
    names = {d for sp in specs for d in sp.dims if isinstance(d, str)}
    for name, n in sizes.items():
        if name not in names:
            raise UsageError(f"{option} {name}={n}", "not a named axis of the inputs", expected=sorted(names), got=name)
        if not isinstance(n, int) or n < 1:
            raise UsageError(f"{option} {name}={n}", "a size must be a positive integer", expected=">= 1", got=n)


def plan_module(module: nn.Module, *, inputs: Sequence[Any] | None = None,
                example_inputs: Sequence[torch.Tensor] | None = None, output_names: Sequence[str] | None = None,
                lengths_input: str | None = None, expose_state: bool = False,
                checkpoint_sha256: str | None = None, int_high: int = 2,
                states: Sequence[tuple[str, str]] = (), example_sizes: dict[str, int] | None = None,
                min_sizes: dict[str, int] | None = None) -> GraphPlan:
    """A :class:`GraphPlan` for a user's own module (forward takes the listed arguments in order;
    a :class:`TupleArg` is rebuilt from its graph inputs). ``states`` pairs a state input with the
    output that is fed back to it (tuple arguments are paired with a tuple output of the same
    shapes by themselves, see :func:`probe_outputs`)."""
    if not isinstance(module, nn.Module):
        raise ModelDefinitionError("model", "not a torch.nn.Module", expected="nn.Module", got=type(module).__name__)
    root = _Bare(module) if recurrent_kind(module) is not None else module
    root.eval()
    args = _coerce_specs(inputs, example_inputs)
    specs = leaves(args)
    example_sizes, min_sizes = dict(example_sizes or {}), dict(min_sizes or {})
    _check_axis_sizes(specs, example_sizes, "--example-size")
    _check_axis_sizes(specs, min_sizes, "--min-size")
    low = [f"{n}={example_sizes[n]} < --min-size {m}" for n, m in min_sizes.items() if example_sizes.get(n, m) < m]
    if low:
        raise UsageError("--example-size", "below the minimum size", expected="--example-size >= --min-size", got=low)
    from edgelstm.exporters.spec import check_streaming_layout, data_input, is_batch_major  # noqa: PLC0415

    if lengths_input is not None:
        spec = next((s for s in specs if s.name == lengths_input), None)
        if spec is None:
            raise UsageError("--lengths-input", "not one of the inputs", expected=[s.name for s in specs],
                             got=lengths_input)
        if not spec.dtype.startswith("int") or len(spec.dims) != 1:
            raise UsageError(f"input {lengths_input}", "lengths must be a 1-D integer tensor",
                             expected="int32[batch] or int64[batch]", got=spec.text())
        check_streaming_layout(specs, lengths_input, option="--lengths-input")
    found = find_recurrent(root)
    if not found and not states and not any(isinstance(a, TupleArg) for a in args):
        raise _no_recurrent(root, "model")
    layers = [describe(m, p) for p, m in found]
    user_names = [structure(a) for a in args]
    bindings: list[StateBinding] = []
    state_specs: list[InputSpec] = []
    manifest_states: list[StateSpec] = []
    if expose_state:
        check_streaming_layout(specs, lengths_input)
        cells = [layer.path for layer in layers if layer.is_cell]
        if cells or not layers:
            raise UnsupportedError("--expose-state", "a step module's state is its own forward argument",
                                   expected="the state declared as inputs: --input 'state=(h:float32[batch,H],"
                                   "c:float32[batch,H])' (paired with the output tuple by itself) or --state IN=OUT",
                                   got=f"cells {cells}" if cells else "no recurrent layer")
        for i, layer in enumerate(layers):
            sfx = "" if len(layers) == 1 else f"_{i}"
            b = StateBinding(i, f"h_in{sfx}", f"h_out{sfx}",
                             f"c_in{sfx}" if layer.has_cell else None, f"c_out{sfx}" if layer.has_cell else None,
                             path=layer.path)
            bindings.append(b)
            shape = (layer.state_size, "batch", layer.hidden_size)
            for n_in, n_out in ((b.h_in, b.h_out), (b.c_in, b.c_out)):
                if n_in:
                    state_specs.append(InputSpec(n_in, "float32", shape))
                    manifest_states.append(StateSpec(n_in, n_out, list(shape)))
    all_specs = specs + state_specs
    from edgelstm.exporters.spec import check_specs  # noqa: PLC0415

    check_specs(all_specs)
    example = None
    if example_inputs is not None:
        if len(example_inputs) != len(specs) or any(isinstance(a, TupleArg) for a in args):
            raise UsageError("example_inputs", "count differs from the inputs (give one tensor per graph input)",
                             expected=len(specs), got=len(example_inputs))
        example = {s.name: t.detach().cpu().numpy() for s, t in zip(specs, example_inputs)}
        if state_specs:
            sizes = sizes_of(specs, example)
            batch = sizes.get("batch", 1)
            for s in state_specs:
                example[s.name] = np.zeros(s.shape_for({"batch": batch}), np.float32)
    x = data_input(specs, lengths_input)
    time_axis = time_axis_of(specs, lengths_input)
    lengths_axis = (x.name, x.dims.index(time_axis)) if x is not None and time_axis in x.dims else None
    wrapper = GraphWrapper(root, [s.name for s in all_specs], user_names, lengths_input, bindings,
                           lengths_axis=lengths_axis)
    names = list(output_names) if output_names else []
    state_out_names = [n for b in bindings for n in (b.h_out, b.c_out) if n]
    meanings = {}
    for b in bindings:
        path = layers[b.index].path or "model"
        meanings[b.h_in] = f"initial hidden state of {path}"
        meanings[b.h_out] = f"final hidden state of {path}"
        if b.c_in:
            meanings[b.c_in] = f"initial cell state of {path}"
            meanings[b.c_out] = f"final cell state of {path}"
    if lengths_input:
        meanings[lengths_input] = "valid steps per sequence (ONNX sequence_lens of every recurrent node)"
    first = layers[0] if layers else None
    unidirectional = all(layer.directions == 1 for layer in layers)
    manifest = Manifest(
        family=_family_of(layers) if layers else "custom", task="custom",
        layers=max(1, sum(layer.num_layers for layer in layers)), hidden_size=first.hidden_size if first else 1,
        directions=max((layer.directions for layer in layers), default=1), inputs=[], outputs=[],
        states=manifest_states, streamable=bool(expose_state) and unidirectional and is_batch_major(x),
        checkpoint_sha256=checkpoint_sha256,
        extra={"recurrent_modules": [{"path": layer.path, "kind": layer.kind, "layers": layer.num_layers,
                                      "hidden_size": layer.hidden_size, "directions": layer.directions,
                                      "batch_first": layer.batch_first} for layer in layers]})
    plan = GraphPlan(root=root, wrapper=wrapper, inputs=all_specs, output_names=names, manifest=manifest,
                     lengths_input=lengths_input, example=example, int_high=int_high,
                     input_meanings={k: v for k, v in meanings.items() if k in {s.name for s in all_specs}},
                     output_meanings=meanings, warn_unused=True, example_sizes=example_sizes, min_sizes=min_sizes,
                     allow_plain=True, stream_check=bool(expose_state) and unidirectional)
    plan.state_output_names = state_out_names
    plan.declared_states = [tuple(p) for p in states]
    if not expose_state:
        plan.unmodified = _unmodified_reference(module, user_names, plan)
    plan.binding = {"call": "forward", "args": user_names, "lengths": lengths_input,
                    "state": "recurrent modules" if expose_state else None}
    if min_sizes:  # --min-size: what the module cannot take less of, for verify's and quantize's data
        plan.binding["min_sizes"] = dict(min_sizes)
    return plan


def _no_recurrent(root: nn.Module, subject: str, why: str = "and no state declared") -> ModelDefinitionError:
    return ModelDefinitionError(subject, f"model has no recurrent layer {why}",
                                expected="an nn.LSTM / nn.GRU / nn.RNN / PeepholeLSTM / cell submodule, or a "
                                "hand-written recurrence step with its state declared: a tuple argument --input "
                                "'state=(h:float32[batch,H],c:float32[batch,H])' returned as a tuple of the same "
                                "shapes, or --state IN=OUT", got=type(root).__name__)


def _unmodified_reference(module: nn.Module, user_names: list[Any], plan: GraphPlan):
    """The user's module as it is (no proxies, packing done by PyTorch): the parity reference."""
    def reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        named = {n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in feeds.items()}
        with torch.no_grad():
            out = module(*[rebuild_argument(t, named) for t in user_names])
        return {n: t.detach().cpu().numpy() for n, t in zip(plan.output_names, flatten_outputs(out))}
    return reference


def _state_name(name: str) -> str:
    """The output fed back to state input ``name``: the pairing rule's (``h_in`` -> ``h_out``), else ``NAME_out``."""
    from edgelstm.runtime.interface import state_output_for

    return state_output_for(name) or f"{name}_out"


def probe_outputs(plan: GraphPlan, subject: str, args: list[Any]) -> None:
    """Run the forward once (proxies installed): count and name its outputs, pair state arguments
    with the outputs fed back to them, note how the forward packs sequences.

    A tuple argument is paired with the output (a top-level element of the result) that is a tuple
    of tensors of the same shapes; ``plan.declared_states`` (``--state IN=OUT``) pair by name.
    """
    state_names = plan.state_output_names
    user_given = list(plan.output_names)
    found = find_recurrent(plan.root)
    layers = [describe(m, p) for p, m in found]
    names = [s.name for s in plan.inputs]
    sizes = _sizes_cases(plan)[0][1]
    feeds = plan.example or make_inputs(plan.inputs, sizes, rng=np.random.default_rng(0),
                                        lengths_input=plan.lengths_input, int_high=plan.int_high)
    with proxies_installed(plan.root, found, layers) as session:
        outs = run_forward(plan.wrapper, _to_torch(feeds, names), subject, feeds)
        plan.sorted_lengths = any(session.packed)
        if session.raw_lengths:
            plan.unmodified = None  # --lengths-input wires lengths the unmodified module never sees
    n_user = len(outs) - len(state_names)
    tree = plan.wrapper.last_output
    # tuple argument <-> output tuple of the same shapes
    pairs: dict[int, str] = {}  # flat output index -> state input name
    tops = tree if isinstance(tree, list) else [tree]
    offsets, k = [], 0
    for t in tops:
        offsets.append(k)
        k += len(_leaf_shapes(t))
    shape_of = {s.name: tuple(feeds[s.name].shape) for s in plan.inputs}
    for a in args:
        if not isinstance(a, TupleArg):
            continue
        want = [shape_of[s.name] for s in leaves(a)]
        for t, off in [(tree, 0)] + list(zip(tops, offsets)):  # the whole result, or one element of it
            if isinstance(t, list) and _leaf_shapes(t) == want and not any(off + i in pairs for i in range(len(want))):
                pairs.update({off + i: s.name for i, s in enumerate(leaves(a))})
                break
    if user_given:
        if len(user_given) != n_user:
            raise UsageError("--output-name", "count differs from the model's outputs", expected=n_user,
                             got=f"{len(user_given)} {user_given}")
        plan.output_names = user_given + state_names
    else:
        rest = [i for i in range(n_user) if i not in pairs]
        default = {i: ("y" if len(rest) == 1 else f"y{j}") for j, i in enumerate(rest)}
        default.update({i: _state_name(n) for i, n in pairs.items()})
        plan.output_names = [default[i] for i in range(n_user)] + state_names
    declared = [(n, plan.output_names[i]) for i, n in sorted(pairs.items())] + list(plan.declared_states)
    out_shapes = {n: tuple(o.shape) for n, o in zip(plan.output_names, outs)}
    by_name = {s.name: s for s in plan.inputs}
    taken = {st.input for st in plan.manifest.states}
    for n_in, n_out in declared:
        if n_in not in by_name or n_out not in out_shapes:
            raise UsageError(f"--state {n_in}={n_out}", "not a graph input and output",
                             expected=f"an input of {sorted(by_name)} and an output of {plan.output_names}",
                             got=f"{n_in}={n_out}")
        if n_in in taken:
            continue
        if shape_of[n_in] != out_shapes[n_out]:
            raise UsageError(f"--state {n_in}={n_out}", "the output fed back has another shape than the input",
                             expected=list(shape_of[n_in]), got=list(out_shapes[n_out]))
        taken.add(n_in)
        plan.manifest.states.append(StateSpec(n_in, n_out, list(by_name[n_in].dims), by_name[n_in].dtype))
        plan.input_meanings.setdefault(n_in, "state fed back from " + n_out + " (zeros to start)")
        plan.output_meanings.setdefault(n_out, "next " + n_in)
    if not layers:
        if not plan.manifest.states:
            raise _no_recurrent(plan.root, subject, "and no state input is fed back from an output")
        last = plan.manifest.states[0].shape[-1] if plan.manifest.states[0].shape else 1
        plan.manifest.hidden_size = last if isinstance(last, int) else 1
    if plan.manifest.states and not plan.state_output_names:  # declared states, fed back by the caller
        from edgelstm.exporters.spec import data_input, is_batch_major  # noqa: PLC0415

        plan.stream_check = all(layer.directions == 1 for layer in layers)
        # `edgelstm run` / Model.stream take x as [batch, time, ...]: other layouts (a time-major
        # x, a one-step module) carry their state through the manifest's pairs, not marked streamable
        x = data_input([s for s in plan.inputs if s.name not in taken], plan.lengths_input)
        plan.manifest.streamable = plan.stream_check and is_batch_major(x)


def export(module: nn.Module, example_inputs: Sequence[torch.Tensor] | None, path: str | os.PathLike, *,
           inputs: Sequence[str | InputSpec] | None = None, output_names: Sequence[str] | None = None,
           opset: int = DEFAULT_OPSET, verify: bool = True, atol_scale: float = checks.FP32_RTOL_SCALE,
           lengths_input: str | None = None, expose_state: bool = False,
           checkpoint_sha256: str | None = None, int_high: int = 2, states: Sequence[tuple[str, str]] = (),
           example_sizes: dict[str, int] | None = None, min_sizes: dict[str, int] | None = None) -> ExportReport:
    """Export a user's ``nn.Module`` to ``path`` and return an :class:`ExportReport`.

    ``inputs`` are specs like ``"x:float32[batch,time,8]"`` (named dims are dynamic axes); without
    them every example tensor gets dims ``[batch, time, <fixed>...]``. ``example_inputs`` may be None
    when ``inputs`` is given (random examples are made). ``lengths_input`` names the input wired to
    every recurrent node's ``sequence_lens``; ``expose_state`` adds ``h_in``/``c_in`` inputs and
    ``h_out``/``c_out`` outputs per recurrent module. With ``verify`` the graph is compared with
    PyTorch at the example's sizes and at other batch sizes and time lengths; max abs error must be
    ``<= atol_scale * max(1, max|ref|)``. On any failure nothing is written.
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    plan = plan_module(module, inputs=inputs, example_inputs=example_inputs, output_names=output_names,
                       lengths_input=lengths_input, expose_state=expose_state,
                       checkpoint_sha256=checkpoint_sha256, int_high=int_high, states=states,
                       example_sizes=example_sizes, min_sizes=min_sizes)
    probe_outputs(plan, str(path), _coerce_specs(inputs, example_inputs))
    model, report = build_graph(plan, opset=opset, verify=verify, subject=str(path), parity_scale=atol_scale)
    write_models([(model, path)])
    report.path = str(path)
    return report
