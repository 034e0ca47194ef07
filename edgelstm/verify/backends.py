"""Backends: one object per way of computing a model, all with ``run(feeds) -> {output: array}``.

* ``torch``             the PyTorch original (a run directory or a user's module)
* ``ort:PROVIDER``      onnxruntime with one execution provider, on fp32 and quantized files
* ``reference``         ``onnx.reference.ReferenceEvaluator`` (fp32 graphs)
* ``numpy``             the NumPy interpreter of :mod:`edgelstm.verify.interp`, recurrent nodes
                        computed by :mod:`edgelstm.reference` (fp32 graphs), a third oracle

Feeds and outputs use the graph's own names (``x``, ``lengths``, ``h_in``... -> ``logits``/``y``,
``h_out``...), so every backend is interchangeable in the checks.

**Layouts.** The checks slice and concatenate along ``[batch, time, ...]``. A graph whose data
input or outputs lie otherwise (time-major token ids ``[time, batch]``, a channels-first series
``[batch, vars, time]``, an image whose width is time ``[batch, 1, H, W]``) is fed and read
through :meth:`GraphSpec.to_graph` / :meth:`GraphSpec.to_checks`, which move each tensor's
batch and time axes (from the graph's interface, :mod:`edgelstm.runtime.interface`) to the
front: :meth:`Backend.run` takes and returns that layout, ``run_graph`` the graph's own.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgelstm.errors import (InputError, ManifestError, ModelDefinitionError, ModelFileError,
                             UnsupportedError, UsageError)
from edgelstm.manifest import Manifest
from edgelstm.runtime.graphfacts import DTYPE_NAMES, guess_precision
from edgelstm.runtime.interface import Interface, state_input_for, state_output_for, token_ranges
from edgelstm.runtime.session import session_options


@dataclass
class IOSpec:
    name: str
    dtype: str
    shape: list[Any]


@dataclass
class GraphSpec:
    """What the harness needs to know about one ONNX file."""

    path: Path
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    states: list[tuple[str, str]]          # (input, output) pairs fed back when streaming
    precision: str
    manifest: Manifest | None
    ops: list[str] = field(default_factory=list)
    interface: Interface | None = None

    def __post_init__(self):
        if self.interface is None:
            self.interface = Interface.infer([(i.name, i.dtype, i.shape) for i in self.inputs],
                                             [(o.name, o.dtype, o.shape) for o in self.outputs], states=self.states)

    # -------------------------------------------------------------- layouts (see the module docstring)
    def _order(self, name: str) -> list[int] | None:
        info = self.interface.input(name) or self.interface.output(name)
        if info is None or info.role in ("state_in", "state_out") or info.batch_axis is None \
                or state_input_for(name) or state_output_for(name):  # a state by name (a seq2seq encoder's h_out)
            return None
        rest = [i for i in range(info.rank) if i not in (info.batch_axis, info.time_axis)]
        order = [info.batch_axis] + ([info.time_axis] if info.time_axis is not None else []) + rest
        return None if order == list(range(info.rank)) else order

    def to_checks(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph layout -> the checks' ``[batch, time, ...]`` layout."""
        out = {}
        for k, v in arrays.items():
            order = self._order(k)
            out[k] = v if order is None or np.ndim(v) != len(order) else np.transpose(v, order)
        return out

    def to_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The checks' layout -> the graph's own."""
        out = {}
        for k, v in feeds.items():
            order = self._order(k)
            out[k] = v if order is None or np.ndim(v) != len(order) else \
                np.ascontiguousarray(np.transpose(v, np.argsort(order)))
        return out

    @property
    def needs_layout(self) -> bool:
        return any(self._order(n) is not None for n in self.input_names + self.output_names)

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def x(self) -> str | None:
        """The one data (or token) input with a batch and a time axis, where there is one."""
        p = self.interface.primary
        return p.name if p is not None and p.batch_axis is not None and p.time_axis is not None else None

    @property
    def lengths(self) -> str | None:
        return self.interface.lengths

    @property
    def task(self) -> str:
        return self.manifest.task if self.manifest else "custom"

    @property
    def family(self) -> str:
        return self.manifest.family if self.manifest else "custom"

    @property
    def streamable(self) -> bool:
        if self.manifest is not None and not self.manifest.streamable:
            return False
        return bool(self.states) and self.x is not None

    @property
    def data_outputs(self) -> list[str]:
        state_out = {s[1] for s in self.states}
        return [o.name for o in self.outputs if o.name not in state_out]

    def spec(self, name: str) -> IOSpec:
        return next(i for i in self.inputs + self.outputs if i.name == name)


def _dims(t) -> list[Any]:
    dims = []
    for d in t.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def load_graph(path: str | os.PathLike, *, trust_modified: bool = False):
    """Read an ONNX file (through the runtime's integrity check: seal and manifest schema) and
    describe it. Raises ModelFileError / ManifestError."""
    import onnx

    from edgelstm.runtime.integrity import check_model_file

    p, data, manifest = check_model_file(path, trust_modified=trust_modified)
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # onnx raises DecodeError, ValueError... for a damaged file
        raise ModelFileError(str(p), "not a readable ONNX model", expected="an ONNX protobuf", got=f"{type(e).__name__}: {e}") from None
    if not model.graph.node:
        raise ModelFileError(str(p), "graph has no nodes", expected="a model graph", got="empty graph")
    inits = {t.name for t in model.graph.initializer}
    inputs = [IOSpec(i.name, DTYPE_NAMES.get(i.type.tensor_type.elem_type, "other"), _dims(i))
              for i in model.graph.input if i.name not in inits]
    outputs = [IOSpec(o.name, DTYPE_NAMES.get(o.type.tensor_type.elem_type, "other"), _dims(o)) for o in model.graph.output]
    in_names = [i.name for i in inputs]
    out_names = [o.name for o in outputs]
    if manifest is not None:
        states = [(s.input, s.output) for s in manifest.states]
        for a, b in states:
            if a not in in_names or b not in out_names:
                raise ManifestError(str(p), f"manifest state pair {a}->{b} is not in the graph",
                                    expected={"inputs": in_names, "outputs": out_names}, got=[a, b])
    else:  # convention: NAME_in -> NAME_out
        from edgelstm.runtime.interface import pair_states

        states = pair_states(in_names, out_names)
    ops = sorted({n.op_type for n in model.graph.node})
    if manifest is not None and manifest.interface is not None:
        iface = Interface.from_dict(manifest.interface, source=f"{p} manifest")
    else:
        iface = Interface.infer([(i.name, i.dtype, i.shape) for i in inputs], [(o.name, o.dtype, o.shape) for o in outputs],
                                states=states)
    iface = iface.with_token_ranges(token_ranges(model.graph))
    if manifest is not None and manifest.precision != "fp32":
        precision = manifest.precision
    else:  # the one precision rule for a file without a manifest (runtime.graphfacts)
        precision = guess_precision(ops, (t.data_type for t in model.graph.initializer))
    return model, GraphSpec(p, inputs, outputs, states, precision, manifest, ops, iface)


class Backend:
    """Base: ``name`` says what it is, ``run`` maps graph-named feeds to graph-named outputs."""

    name = "backend"
    slow = False  # a pure-Python oracle: kept out of the long drift run
    spec: GraphSpec

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds and outputs in the checks' ``[batch, time, ...]`` layout."""
        if not self.spec.needs_layout:
            return self.run_graph(feeds)
        return self.spec.to_checks(self.run_graph(self.spec.to_graph(feeds)))

    def run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        """Feeds and outputs in the graph's own layout."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------ onnxruntime
def resolve_provider(device: str) -> str:
    """Short device name -> the one onnxruntime provider it means. Unavailable -> error listing
    the available ones (verification never falls back silently)."""
    import onnxruntime as ort

    from edgelstm.runtime.providers import plan_providers

    plan = plan_providers(device, fallback=False)
    avail = ort.get_available_providers()
    if plan.primary not in avail:  # pragma: no cover - plan_providers raises first
        from edgelstm.errors import ProviderUnavailableError
        raise ProviderUnavailableError(device, "provider not available", expected=avail, got=plan.primary)
    return plan.primary


class OrtBackend(Backend):
    def __init__(self, spec: GraphSpec, provider: str, *, threads: int = 1,
                 provider_options: dict[str, Any] | None = None):
        import onnxruntime as ort

        self.spec = spec
        self.provider = provider
        self.threads = threads
        self.provider_options = dict(provider_options or {})  # for ``provider`` (e.g. CUDA's use_tf32)
        # int8 recurrent outputs depend on the intra-op thread count: fix it so runs compare.
        so = session_options(threads, inter_threads=1, record_placement=False)
        chain = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
        try:
            self.session = ort.InferenceSession(str(spec.path), so, providers=chain,
                                                provider_options=[self.provider_options] + [{}] * (len(chain) - 1))
        except Exception as e:
            raise ModelFileError(str(spec.path), f"onnxruntime cannot load the model with {provider}",
                                 expected="a model onnxruntime accepts", got=f"{type(e).__name__}: {e}") from None
        self.providers = self.session.get_providers()
        if provider not in self.providers:  # onnxruntime dropped it (e.g. CUDA libraries missing)
            from edgelstm.errors import ProviderUnavailableError
            raise ProviderUnavailableError(f"{spec.label} on {provider}", "onnxruntime created the session without "
                                           "the requested provider (verification never falls back silently)",
                                           expected=provider, got=self.providers)
        short = provider.replace("ExecutionProvider", "").lower()
        self.name = f"ort:{short}[{spec.label}]"

    def run_graph(self, feeds):
        outs = self.session.run(None, {k: v for k, v in feeds.items() if k in self.spec.input_names})
        return dict(zip(self.spec.output_names, outs))


# ------------------------------------------------------------------------------------ python oracles
class ReferenceBackend(Backend):
    """``onnx.reference.ReferenceEvaluator``.

    Its LSTM/GRU/RNN kernels ignore ``sequence_lens`` (onnx 1.23: the argument is unused), so a
    padded batch whose lengths are not all full is evaluated one sequence at a time, each cut to
    its own length, and reassembled (outputs past a length are zero, as the operator defines).
    The batch-invariance check is therefore meaningless for this backend and skips it.
    """

    slow = True
    ignores_sequence_lens = True

    def __init__(self, model, spec: GraphSpec):
        from onnx.reference import ReferenceEvaluator

        self.spec = spec
        self.evaluator = ReferenceEvaluator(model)
        self.name = f"reference[{spec.label}]"

    def _eval(self, feeds):
        with warnings.catch_warnings():
            # its sigmoid evaluates both branches of np.where(x > 0, 1 / (1 + exp(-x)), exp(x) / (1 + exp(x))):
            # for |x| above about 88 the discarded branch overflows (exp -> inf, inf / inf -> nan) while
            # the kept one is exact, so these two numpy warnings say nothing about the model
            warnings.filterwarnings("ignore", message="overflow encountered in exp", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message="invalid value encountered in divide", category=RuntimeWarning)
            outs = self.evaluator.run(None, {k: v for k, v in feeds.items() if k in self.spec.input_names})
        return dict(zip(self.spec.output_names, outs))

    def run_graph(self, feeds):
        spec = self.spec
        if not spec.lengths or spec.lengths not in feeds or spec.x is None or spec.needs_layout:
            return self._eval(feeds)
        x, lengths = feeds[spec.x], np.asarray(feeds[spec.lengths])
        T = x.shape[1]
        if np.all(lengths == T):
            return self._eval(feeds)
        state_in = {s[0] for s in spec.states}
        state_out = {s[1] for s in spec.states}
        parts = []
        for i, t in enumerate(lengths):
            one = {}
            for k, v in feeds.items():
                if k == spec.x:
                    one[k] = np.ascontiguousarray(v[i:i + 1, :int(t)])
                elif k == spec.lengths:
                    one[k] = np.ascontiguousarray(v[i:i + 1])
                elif k in state_in:
                    one[k] = np.ascontiguousarray(v[:, i:i + 1])
                else:
                    one[k] = v
            parts.append((int(t), self._eval(one)))
        out = {}
        for name in spec.output_names:
            if name in state_out:
                out[name] = np.concatenate([p[name] for _, p in parts], axis=1)
                continue
            arrs = []
            for t, p in parts:
                a = p[name]
                if a.ndim >= 2 and a.shape[1] == t and (spec.task in ("label", "regress", "forecast") or a.ndim >= 3):
                    pad = np.zeros((a.shape[0], T - t) + a.shape[2:], dtype=a.dtype)
                    a = np.concatenate([a, pad], axis=1)
                arrs.append(a)
            out[name] = np.concatenate(arrs, axis=0)
        return out


class NumpyBackend(Backend):
    slow = True

    def __init__(self, model, spec: GraphSpec):
        from edgelstm.verify.interp import NumpyGraph, _reference

        _reference()  # fail now, with a clear message, if the reference cells are missing
        self.spec = spec
        self.graph = NumpyGraph(model)
        self.name = f"numpy[{spec.label}]"

    def run_graph(self, feeds):
        return self.graph.run({k: v for k, v in feeds.items() if k in self.spec.input_names})


# ------------------------------------------------------------------------------------ torch
class TorchBackend(Backend):
    """The PyTorch original.

    * A module exported by ``edgelstm export --model`` is called exactly as export called it:
      the manifest's interface records the binding (the forward's arguments in order, the
      lengths input and the state exposed with ``--expose-state``), and where export bound
      lengths or state to the recurrent modules, the harness installs the same recurrent
      proxies (:mod:`edgelstm.exporters.recurrent`) around the same wrapper.
    * edgelstm's own families (no binding: ``forward(x, lengths=None, state=None) ->
      (out, state_out)``, see docs/DESIGN.md) are fed ``x``/``lengths``/``h_in``/``c_in`` by name.
    * Any other module is called with the graph inputs in graph order and its (flattened)
      outputs are matched to the graph outputs in order.
    """

    def __init__(self, module, spec: GraphSpec, *, label: str = "torch"):
        import torch

        self.torch = torch
        self.module = module.eval()
        self.spec = spec
        self.name = label
        self.binding = spec.interface.binding if spec.interface is not None else None
        self._proxied = None
        names = spec.input_names
        state_ins = [s[0] for s in spec.states]
        self.design = self.binding is None and (
            names[:1] == ["x"] and set(names) <= {"x", "lengths", "h_in", "c_in"} and set(state_ins) <= {"h_in", "c_in"})
        if self.design:
            order = [s for s in ("h_in", "c_in") if s in state_ins]
            self.state_pairs = [next(p for p in spec.states if p[0] == s) for s in order]
        elif self.binding is not None and (self.binding.get("lengths") or self.binding.get("state")):
            self._proxied = self._export_wrapper()

    def _export_wrapper(self):
        """The wrapper export traced, with the recurrent modules export found (same order)."""
        from edgelstm.exporters.plan import ExportOptions
        from edgelstm.exporters.recurrent import describe, find_recurrent
        from edgelstm.exporters.user_plan import plan_module

        by_name = {t.name: t for t in self.spec.interface.inputs}

        def spec(tree, i):  # the --input text export was given: a name, or a tuple argument of names
            if isinstance(tree, tuple):
                return f"arg{i}=(" + ",".join(spec(t, f"{i}_{j}") for j, t in enumerate(tree)) + ")"
            t = by_name[tree]
            return f"{tree}:{t.dtype}[{','.join(str(d) for d in t.shape)}]"

        specs = [spec(tree, i) for i, tree in enumerate(_arg_trees(self.binding))]
        plan = plan_module(self.module, None, ExportOptions(inputs=specs, lengths_input=self.binding.get("lengths"),
                                                            expose_state=bool(self.binding.get("state"))))
        found = find_recurrent(plan.root)
        return plan, found, [describe(m, p) for p, m in found]

    def run_graph(self, feeds):
        torch = self.torch
        with torch.inference_mode():
            if self.design:
                return self._run_design(feeds)
            if self._proxied is not None:
                from edgelstm.exporters.recurrent import proxies_installed

                plan, found, layers = self._proxied
                args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in plan.inputs]
                with proxies_installed(plan.root, found, layers):
                    outs = self._call(plan.wrapper, args, [s.name for s in plan.inputs])
            else:
                from edgelstm.exporters.plan import rebuild_argument

                trees = _arg_trees(self.binding) if self.binding is not None else list(self.spec.input_names)
                named = {n: torch.from_numpy(np.ascontiguousarray(np.asarray(v))) for n, v in feeds.items()}
                args = [rebuild_argument(t, named) for t in trees]  # tuple arguments rebuilt as export did
                outs = self._call(self.module, args, [str(t) for t in trees])
            flat = _flatten(outs)
            if len(flat) != len(self.spec.outputs):
                raise ModelDefinitionError(self.name, "module returns a different number of tensors than the graph",
                                           expected=self.spec.output_names, got=len(flat))
            return {o: t.detach().numpy() for o, t in zip(self.spec.output_names, flat)}

    def _call(self, fn, args, names):
        try:
            return fn(*args)
        except Exception as e:
            raise ModelDefinitionError(self.name, "forward raised on the graph inputs",
                                       expected=f"forward({', '.join(names)})",
                                       got=f"{type(e).__name__}: {e}") from None

    def _run_design(self, feeds):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(feeds["x"], dtype=np.float32))
        lengths = torch.from_numpy(np.asarray(feeds["lengths"], dtype=np.int64)) if "lengths" in feeds else None
        state = tuple(torch.from_numpy(np.ascontiguousarray(feeds[i], dtype=np.float32))
                      for i, _ in self.state_pairs) if self.state_pairs else None
        try:
            out, state_out = self.module(x, lengths, state)
        except Exception as e:
            raise ModelDefinitionError(self.name, "forward(x, lengths, state) raised",
                                       expected="(out, state_out)", got=f"{type(e).__name__}: {e}") from None
        result = {self.spec.data_outputs[0]: out.detach().numpy()}
        for (_, o), t in zip(self.state_pairs, state_out):
            result[o] = t.detach().numpy()
        return result


def _flatten(obj) -> list:
    if isinstance(obj, (tuple, list)):
        out = []
        for o in obj:
            out += _flatten(o)
        return out
    return [obj]


def load_torch_reference(reference=None, *, model: str | None = None, checkpoint: str | None = None):
    """Return ``(module, description)`` from a run directory, an nn.Module, or FILE.py:FACTORY + checkpoint."""
    if reference is not None and model is not None:
        raise UsageError("--reference", "give a run directory or --model FILE.py:FACTORY, not both",
                         expected="one of them", got="both")
    if reference is not None and not isinstance(reference, (str, os.PathLike)):
        return reference, type(reference).__name__
    if reference is not None:
        run_dir = Path(reference)
        if not run_dir.is_dir():
            raise UsageError("--reference", "run directory not found", expected="a directory from edgelstm train", got=str(run_dir))
        try:
            from edgelstm.checkpoint import load_run
        except ImportError as e:  # pragma: no cover - part of the package
            raise UnsupportedError("--reference", "edgelstm.checkpoint is not available", got=str(e)) from None
        module, _cfg = load_run(run_dir)
        return module, f"torch[{run_dir.name}]"
    if model is not None:
        return _load_user_module(model, checkpoint), f"torch[{model}]"
    return None, None


def _load_user_module(spec: str, checkpoint: str | None):
    """``FILE.py:FACTORY`` or ``package.module:FACTORY`` -> module, with weights from ``checkpoint``:
    export's own loader (:mod:`edgelstm.exporters.usermodel`), so verify takes the same models
    under the same rules."""
    from edgelstm.exporters.usermodel import build_user_model, load_user_checkpoint

    module = build_user_model(spec)
    if checkpoint is not None:
        load_user_checkpoint(module, checkpoint)
    return module


def check_feeds(spec: GraphSpec, feeds: dict[str, np.ndarray], source: str) -> None:
    """User-supplied feeds must name the graph's inputs with the right rank."""
    for i in spec.inputs:
        if i.name not in feeds:
            continue
        a = feeds[i.name]
        if a.ndim != len(i.shape):
            raise InputError(f"{source}:{i.name}", "wrong rank", expected=i.shape, got=list(a.shape))
        for k, (d, s) in enumerate(zip(i.shape, a.shape)):
            if isinstance(d, int) and d > 0 and d != s:
                raise InputError(f"{source}:{i.name}", f"wrong size of dimension {k}", expected=i.shape, got=list(a.shape))


def _arg_trees(binding: dict) -> list:
    """The forward's arguments as export bound them: a graph input name, or a tuple (nested) of
    names for a tuple argument (the manifest's JSON stores tuples as lists)."""
    def tree(t):
        return tuple(tree(x) for x in t) if isinstance(t, (list, tuple)) else t
    return [tree(t) for t in (binding.get("args") or [])]
