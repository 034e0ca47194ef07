"""Loading and running one exported recurrent model (torch-free: numpy + onnxruntime + stdlib).

The loaded :class:`Model` is shared and immutable; each :class:`~edgelstm.runtime.stream.Stream`
owns its recurrent state. ``Model.run`` is safe to call from several threads at once
(``InferenceSession.run`` is).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import onnxruntime as ort

from edgelstm.errors import InputError, ManifestError, UsageError
from edgelstm.manifest import Manifest
from edgelstm.runtime.inputs import InputChecks
from edgelstm.runtime.integrity import check_model_bytes
from edgelstm.runtime.interface import Interface, pair_states
from edgelstm.runtime.providers import CPU, CUDA, TRT, plan_providers
from edgelstm.runtime.result import NodePlacement, RunResult, StatePair, io_specs
from edgelstm.runtime.session import LoadOptions, create_session, session_options

if TYPE_CHECKING:  # annotations only (the stream modules import this one)
    from edgelstm.runtime.group import StreamGroup
    from edgelstm.runtime.stream import Stream

log = logging.getLogger("edgelstm.runtime")

OUTPUT_DEVICES = ("cpu", "cuda")


# ---------------------------------------------------------------------------------------- model
class Model(InputChecks):
    """A loaded model: use :meth:`run` for whole sequences, :meth:`stream` for step-by-step input.

    Attributes: ``manifest`` (None for a bare ONNX file), ``inputs`` / ``outputs``
    (:class:`IOSpec` lists), ``providers`` (those onnxruntime actually uses), ``states``
    (:class:`StatePair` list), ``x_name``, ``lengths_name``, ``labels``, ``streamable``.
    """

    def __init__(self, path: Path, data: bytes, options: LoadOptions | None = None, *, from_bytes: bool = False):
        """``options``: how to load (:class:`~edgelstm.runtime.session.LoadOptions`, checked there);
        ``from_bytes``: the session is made from ``data`` (``path`` only names the model)."""
        opts = options if options is not None else LoadOptions()
        threads = opts.threads
        self.path = path
        # the seal and the manifest's schema are checked before onnxruntime parses the file
        self.manifest = check_model_bytes(data, str(path), trust_modified=opts.trust_modified)
        self.nan = opts.nan
        self.threads = threads
        self._cast_warned: set[tuple[str, str]] = set()
        self._plan = plan_providers(opts.device, fallback=opts.fallback, provider_options=opts.provider_options)
        so = session_options(threads, base=opts.session_options, config=opts.session_config)
        self.session = create_session(path, self._plan, so, data if from_bytes else None)
        self.providers: list[str] = list(self.session.get_providers())
        self._check_active_provider(opts.fallback)
        self.inputs = io_specs(self.session.get_inputs())
        self.outputs = io_specs(self.session.get_outputs())
        self._in = {s.name: s for s in self.inputs}
        self._out = {s.name: s for s in self.outputs}
        if self.manifest is not None:
            self._from_manifest(self.manifest)
        else:
            self._infer_layout()
        self._placement: list[NodePlacement] | None = None
        # device-resident state when a GPU provider runs the graph
        self.state_device = "cuda" if self.providers[0] in (CUDA, TRT) else "cpu"

    # -------------------------------------------------------------- construction helpers
    def _check_active_provider(self, fallback: bool) -> None:
        primary = self._plan.primary
        if primary != CPU and primary in self._plan.providers and primary not in self.providers:
            if not fallback:
                raise _unavailable(primary, self.providers, "could not be initialised (missing libraries?)")
            log.warning("%s could not be initialised; running on %s", primary, self.providers)

    def _from_manifest(self, m: Manifest) -> None:
        src = f"{self.path} manifest"
        graph_in, graph_out = set(self._in), set(self._out)
        man_in, man_out = {t.name for t in m.inputs}, {t.name for t in m.outputs}
        if graph_in != man_in:
            raise ManifestError(src, "manifest inputs disagree with the graph",
                                expected=f"graph inputs {sorted(graph_in)}", got=sorted(man_in))
        if not man_out <= graph_out:
            raise ManifestError(src, "manifest outputs are not all in the graph",
                                expected=f"a subset of {sorted(graph_out)}", got=sorted(man_out))
        for t in list(m.inputs) + list(m.outputs):
            g = self._in.get(t.name) or self._out[t.name]
            if np.dtype(t.dtype) != g.dtype:
                raise ManifestError(src, f"dtype of {t.name!r} disagrees with the graph",
                                    expected=str(g.dtype), got=t.dtype)
            if len(t.shape) != g.rank:
                raise ManifestError(src, f"rank of {t.name!r} disagrees with the graph",
                                    expected=f"{g.rank} ({list(g.shape)})", got=f"{len(t.shape)} ({t.shape})")
            for axis, (md, gd) in enumerate(zip(t.shape, g.shape)):
                if isinstance(md, int) and isinstance(gd, int) and md != gd:
                    raise ManifestError(src, f"dimension {axis} of {t.name!r} disagrees with the graph",
                                        expected=gd, got=md)
        self._check_manifest_states(m, src)
        self.states = [StatePair(s.input, s.output, self._in[s.input]) for s in m.states]
        for s in self.states:
            ld, hidden = s.size
            if m.family != "custom" and m.graph == "model":
                if ld is not None and ld != m.layers * m.directions:
                    raise ManifestError(src, f"state {s.input!r} has the wrong first dimension",
                                        expected=f"layers*directions = {m.layers * m.directions}", got=ld)
                if hidden is not None and hidden != m.hidden_size:
                    raise ManifestError(src, f"state {s.input!r} has the wrong hidden size",
                                        expected=m.hidden_size, got=hidden)
        if m.directions == 2 and m.streamable:
            raise ManifestError(src, "a bidirectional model cannot be streamable", expected="streamable=false",
                                got="streamable=true")
        self.interface = self._graph_interface(m)
        self._set_io_names()
        self.streamable = bool(m.streamable) and bool(self.states) and self._primary_has_time()
        self.labels = list(m.labels) if m.labels else None
        self.label_output = self._guess_label_output()
        if self.labels is not None and self.label_output is not None:
            k = self._out[self.label_output].fixed(-1)
            if k is not None and k != len(self.labels):
                raise ManifestError(src, f"label count disagrees with {self.label_output!r}",
                                    expected=k, got=len(self.labels))
        self._set_normalization(m)

    def _check_manifest_states(self, m: Manifest, src: str) -> None:
        """Every state names a graph input and a graph output of the same dtype and shape, no two
        states share an input or an output, and every graph ``*_in`` input with a matching ``*_out``
        output is a declared state (otherwise a run would fail later blaming the caller)."""
        seen_in: dict[str, str] = {}
        seen_out: dict[str, str] = {}
        for st in m.states:
            gi, go = self._in.get(st.input), self._out.get(st.output)
            if gi is None:
                raise ManifestError(src, f"state {st.input!r}: its input is not a graph input",
                                    expected=f"one of {sorted(self._in)}", got=st.input)
            if go is None:
                raise ManifestError(src, f"state {st.input!r}: its output is not a graph output",
                                    expected=f"one of {sorted(self._out)}", got=st.output)
            if st.input in seen_in:
                raise ManifestError(src, f"state {st.input!r} is declared twice",
                                    expected="one state per input", got=[seen_in[st.input], st.output])
            if st.output in seen_out:
                raise ManifestError(src, f"state {st.input!r}: output {st.output!r} is already the output of "
                                    f"state {seen_out[st.output]!r}",
                                    expected="a distinct output per state (graph outputs "
                                    f"{sorted(n for n in self._out)})", got=st.output)
            seen_in[st.input], seen_out[st.output] = st.output, st.input
            same = gi.dtype == go.dtype and gi.rank == go.rank and all(
                not (isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0 and a != b)
                for a, b in zip(gi.shape, go.shape))
            if not same:
                raise ManifestError(src, f"state {st.input!r}: output {st.output!r} does not match the input's "
                                    "dtype and shape", expected=f"{gi.dtype.name} {list(gi.shape)}",
                                    got=f"{go.dtype.name} {list(go.shape)}")
        for name_in, name_out in pair_states(self._in, self._out):
            if name_in not in seen_in:
                raise ManifestError(src, f"graph state input {name_in!r} is not declared in the manifest's states",
                                    expected=f"a state {{input: {name_in!r}, output: {name_out!r}}}",
                                    got=f"states {[[st.input, st.output] for st in m.states]}")

    def _infer_layout(self) -> None:
        self.interface = self._graph_interface(None)
        self.states = [StatePair(a, b, self._in[a]) for a, b in self.interface.states]
        self._set_io_names()
        self.streamable = bool(self.states) and self._primary_has_time()
        self.labels = None
        self.label_output = self._guess_label_output()
        self._norm = None
        log.info("%s has no edgelstm manifest; inferred x=%s lengths=%s states=%s", self.path, self.x_name,
                 self.lengths_name, [s.input for s in self.states])

    def _graph_interface(self, m: Manifest | None) -> Interface:
        """The manifest's interface (checked against the graph), or one inferred from the graph."""
        triples_in = [(s.name, s.dtype.name if s.dtype.kind != "O" else "other", s.shape) for s in self.inputs]
        triples_out = [(s.name, s.dtype.name if s.dtype.kind != "O" else "other", s.shape) for s in self.outputs]
        if m is None or m.interface is None:
            states = [(s.input, s.output) for s in m.states] if m is not None else None
            return Interface.infer(triples_in, triples_out, states=states)
        src = f"{self.path} manifest"
        iface = Interface.from_dict(m.interface, source=src)
        if {t.name for t in iface.inputs} != set(self._in):
            raise ManifestError(src, "interface inputs disagree with the graph", expected=sorted(self._in),
                                got=sorted(t.name for t in iface.inputs))
        for t in iface.inputs + iface.outputs:
            g = self._in.get(t.name) or self._out.get(t.name)
            if g is None or np.dtype(t.dtype) != g.dtype or t.rank != g.rank:
                raise ManifestError(src, f"interface entry {t.name!r} disagrees with the graph",
                                    expected=f"{g.dtype.name} {list(g.shape)}" if g else sorted(self._out),
                                    got=f"{t.dtype} {list(t.shape)}")
        if set(iface.states) != {(s.input, s.output) for s in m.states}:
            raise ManifestError(src, "interface state pairs disagree with the manifest's states",
                                expected=[[s.input, s.output] for s in m.states], got=[list(p) for p in iface.states])
        return iface

    def _set_io_names(self) -> None:
        primary = self.interface.primary
        self.x_name = primary.name if primary is not None else None
        self.lengths_name = self.interface.lengths

    def _primary_has_time(self) -> bool:
        p = self.interface.primary
        return p is not None and p.time_axis is not None and p.batch_axis is not None

    def _guess_label_output(self) -> str | None:
        for name in ("logits", "y"):
            if name in self._out:
                return name if (self.manifest is None or self.manifest.task in ("classify", "label")) else None
        return None

    def _set_normalization(self, m: Manifest) -> None:
        self._norm = None
        if m.normalization is None:
            return
        if self.x_name is None:
            raise ManifestError(f"{self.path} manifest", "normalization given but the graph has no x input",
                                expected="an input named 'x'", got=[s.name for s in self.inputs])
        x = self._in[self.x_name]
        mean = np.asarray(m.normalization.mean, dtype=np.float64)
        std = np.asarray(m.normalization.std, dtype=np.float64)
        f = x.fixed(-1)
        if f is not None and mean.size != f:
            raise ManifestError(f"{self.path} manifest", "normalization length disagrees with the feature size",
                                expected=f, got=mean.size)
        if not np.all(np.isfinite(std)) or np.any(std <= 0):
            raise ManifestError(f"{self.path} manifest", "normalization std must be finite and > 0",
                                expected="std > 0", got=[float(s) for s in std if not (s > 0)][:3])
        # (x - mean) / std  ==  x * scale + offset, precomputed once
        self._norm = ((1.0 / std).astype(x.dtype), (-mean / std).astype(x.dtype))

    # -------------------------------------------------------------- public properties
    @property
    def family(self) -> str | None:
        return self.manifest.family if self.manifest else None

    @property
    def task(self) -> str | None:
        return self.manifest.task if self.manifest else None

    @property
    def features(self) -> int | None:
        return self._in[self.x_name].fixed(-1) if self.x_name else None

    @property
    def requested_providers(self) -> list[str]:
        return list(self._plan.requested)

    @property
    def node_placement(self) -> list[NodePlacement]:
        """Which execution provider runs each node, as onnxruntime assigned them (recorded with
        the session option ``session.record_ep_graph_assignment_info``). These are the nodes of
        the optimised graph, so fused nodes appear under their fused names."""
        if self._placement is None:
            self._placement = [NodePlacement(n.name, n.op_type, sub.ep_name)
                               for sub in self.session.get_provider_graph_assignment_info()
                               for n in sub.get_nodes()]
        return list(self._placement)

    @property
    def placement_summary(self) -> dict[str, dict[str, int]]:
        """provider -> {op_type: node count}."""
        out: dict[str, dict[str, int]] = {}
        for n in self.node_placement:
            ops = out.setdefault(n.provider, {})
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        return out

    @property
    def cpu_fallback_nodes(self) -> list[NodePlacement]:
        """Nodes that run on CPU although another provider was preferred (empty when CPU is first)."""
        if self.providers[0] == CPU:
            return []
        return [n for n in self.node_placement if n.provider == CPU]

    @property
    def mixed_devices(self) -> bool:
        """True when a GPU provider runs the graph and some nodes run on the CPU. onnxruntime copies
        an input bound on one device and read by a node on another *when it is bound*, so a state
        value on the GPU read by a CPU node must be bound again before every step
        (:class:`~edgelstm.runtime.stream.Stream` and greedy decoding do then). False on the CPU
        provider and when every node runs on the GPU: the state hand-over is then bound once."""
        if self.providers[0] == CPU:
            return False
        try:
            return bool(self.cpu_fallback_nodes)
        except Exception:  # noqa: BLE001 - no placement record: assume the worst, re-binding is always correct
            return True

    def describe(self) -> dict:
        """A JSON-ready summary: file, providers, I/O, states, manifest essentials."""
        return {
            "path": str(self.path), "providers": self.providers, "requested": self.requested_providers,
            "inputs": {s.name: [s.dtype.name, list(s.shape)] for s in self.inputs},
            "outputs": {s.name: [s.dtype.name, list(s.shape)] for s in self.outputs},
            "states": [[s.input, s.output] for s in self.states], "streamable": self.streamable,
            "family": self.family, "task": self.task, "labels": self.labels,
            "precision": self.manifest.precision if self.manifest else None,
            "placement": self.placement_summary,
        }

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, family={self.family}, task={self.task}, providers={self.providers})"

    # -------------------------------------------------------------- running
    def run(self, x: Any = None, lengths: Any = None, state: Mapping[str, Any] | None = None, *,
            inputs: Mapping[str, Any] | None = None, output_device: str | None = None) -> RunResult:
        """Run whole sequences. ``x``: the graph's one data input in its own layout (``[batch,
        time, features]``, token ids ``[time, batch]``, an image ``[batch, 1, H, W]``...; see
        ``model.interface``); ``lengths``: valid steps per sequence (None = all); ``state``:
        initial state by name (None = zeros). ``inputs`` feeds the graph's inputs by name (several
        inputs; the data input given there takes the same checks as ``x``). What is not given is
        filled (zero state, full lengths) and ``result.filled`` names it.

        Cost over a bare ``session.run``: a numpy ``x`` is checked for NaN/Inf in one pass
        (:func:`edgelstm.runtime.inputs.all_finite`; ``nan="pass"`` at load skips it for callers that guarantee finite
        input), cast only when its dtype differs, normalized into one new array when the manifest
        says so, and never copied otherwise (a C-contiguous input of the graph's dtype is fed
        as it is).

        Device-resident data: ``x`` may be an ``onnxruntime.OrtValue`` (on the CPU or, with a CUDA
        session, on the GPU: e.g. ``OrtValue.ortvalue_from_numpy(arr, "cuda", 0)``). It is fed
        through IO binding without a host round trip; only its shape and dtype are checked (no
        NaN/Inf scan, which would need a copy to the host), and a model whose manifest
        normalizes its input refuses it (normalize on the host and pass a numpy array).
        ``output_device`` (``"cpu"``, or ``"cuda"`` with a CUDA session) returns every output
        (and the state) as ``OrtValue`` on that device instead of numpy arrays: ``.numpy()``
        copies one to the host. ``result.state`` still converts to numpy on access."""
        if output_device is not None and output_device not in self._output_devices():
            raise UsageError("output_device", "outputs cannot be placed on this device with this session",
                             expected=self._output_devices(), got=output_device)
        feeds: dict[str, Any] = {}
        if inputs is not None:
            feeds.update(self._check_named_inputs(inputs))
        if x is not None:
            if self.x_name is None:
                raise InputError("x", "this graph has no single data input; pass inputs={name: array}",
                                 expected=[s.name for s in self.inputs], got="x")
            feeds[self.x_name] = self._check_ortvalue_x(x) if isinstance(x, ort.OrtValue) else self.prepare_x(x)
        if self.x_name is not None and self.x_name not in feeds:
            raise InputError(self.x_name, "missing input",
                             expected=f"an array {self.interface.input(self.x_name).layout()}", got=None)
        # every input on its own axes: lengths and state are filled where not given (full
        # lengths, zero state) and the result says which were
        lens = None
        filled: list[str] = []
        batch, time = self.interface.sizes(feeds)
        if self.lengths_name:
            given_lens = lengths if lengths is not None else feeds.get(self.lengths_name)
            if given_lens is None:
                filled.append(self.lengths_name)
            if batch is not None:
                lens = self.prepare_lengths(given_lens, batch, time)
                feeds[self.lengths_name] = lens
        elif lengths is not None:
            raise InputError("lengths", "this graph has no lengths input", expected=None, got="lengths")
        if self.states and batch is not None:
            state_in = {s.input for s in self.states}
            given = {k: v for k, v in feeds.items() if k in state_in}
            if state is None and not given:
                filled += [s.input for s in self.states]
            feeds.update(self.prepare_state(state if state is not None else (given or None), batch))
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise InputError(missing[0], "missing input", expected=[s.name for s in self.inputs], got=sorted(feeds))
        names = [s.name for s in self.outputs]
        if output_device is None and not any(isinstance(v, ort.OrtValue) for v in feeds.values()):
            values = self.session.run(names, feeds)
        else:
            values = self._run_bound(feeds, names, output_device)
        result = self._result(dict(zip(names, values)), lens)
        result.filled = filled
        return result

    def _output_devices(self) -> tuple[str, ...]:
        return OUTPUT_DEVICES if self.state_device == "cuda" else ("cpu",)

    def _run_bound(self, feeds: dict[str, Any], names: list[str], output_device: str | None) -> list:
        """One ``run_with_iobinding``: OrtValues bound where they are, outputs on ``output_device``
        (numpy arrays on the host when it is None)."""
        bnd = self.session.io_binding()
        for k, v in feeds.items():
            if isinstance(v, ort.OrtValue):
                bnd.bind_ortvalue_input(k, v)
            else:
                bnd.bind_cpu_input(k, v)
        for n in names:
            bnd.bind_output(n, output_device or "cpu")
        self.session.run_with_iobinding(bnd)
        outs = bnd.get_outputs()
        return [outs[i] for i in range(len(names))] if output_device else [v.numpy() for v in outs]

    def _result(self, values: dict[str, Any], lengths=None) -> RunResult:
        state = {s.input: values.pop(s.output) for s in self.states}
        return RunResult(values, state, self.labels, self.label_output, lengths)

    def stream(self, batch: int = 1, *, nan: str | None = None) -> "Stream":
        """A new independent stream with its own state (zeros)."""
        from edgelstm.runtime.stream import Stream

        return Stream(self, batch, nan=nan)

    def streams(self, n: int = 0, *, nan: str | None = None) -> "StreamGroup":
        """A group of ``n`` independent streams (zero state) stepped together by one batched call
        per step: ``group.step(frames [n, features])``; ``add()``, ``drop(i)``, ``reset(i)``."""
        from edgelstm.runtime.group import StreamGroup

        return StreamGroup(self, n, nan=nan)


def _unavailable(primary: str, active: list[str], why: str):
    from edgelstm.errors import ProviderUnavailableError

    return ProviderUnavailableError(primary, why, expected=f"one of the available providers "
                                    f"{ort.get_available_providers()}", got=f"session providers {active}")
