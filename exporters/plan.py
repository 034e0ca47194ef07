"""What one exported graph is made of: the :class:`GraphPlan` (module, wrapper, inputs, outputs,
manifest), the wrapper that binds graph inputs to the forward's arguments, the export options
and report, and the helpers every planner shares.

Imports: numpy, torch, :mod:`edgelstm.errors`, :mod:`edgelstm.manifest`, :mod:`edgelstm.stats`
(the fp32 tolerance), :mod:`edgelstm.units`, :mod:`edgelstm.exporters.recurrent` (the export
session) and :mod:`edgelstm.exporters.spec`. Imported by :mod:`edgelstm.exporters.build`,
:mod:`edgelstm.exporters.user_plan`, :mod:`edgelstm.exporters.runs`, :mod:`edgelstm.exporters.core`
and :mod:`edgelstm.verify.backends` (a user module run the way export bound it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from edgelstm.errors import EdgeLSTMError as EdgeLSTMErrorTypes
from edgelstm.errors import ModelDefinitionError, UsageError
from edgelstm.exporters.recurrent import RecurrentLayer, _session, find_recurrent
from edgelstm.exporters.spec import EXAMPLE_SIZE_DEFAULT, EXAMPLE_SIZES, InputSpec
from edgelstm.manifest import DEFAULT_OPSET, Manifest
from edgelstm.stats import FP32_RTOL_SCALE
from edgelstm.units import format_size

MIN_OPSET = 14  # LSTM/GRU/RNN-14 (the version with `layout`) and Reshape-14
MAX_OPSET = 20  # the TorchScript exporter's limit
#: The exporter (kept in this one place): the TorchScript exporter (``torch.onnx.export(...,
#: dynamo=False)``); see :mod:`edgelstm.exporters.core` for why.
EXPORTER = "torchscript"

#: Sizes fed to the graph besides the example's: other batch sizes and time lengths.
_OTHER_SIZES = (3, 11, 13, 17, 19)


@dataclass(frozen=True)
class ExportOptions:
    """What :func:`edgelstm.exporters.export` is asked for, beside the module and the path.

    The first group describes the user's module (:func:`~edgelstm.exporters.user_plan.plan_module`),
    the last three how the graph is built and checked (:func:`~edgelstm.exporters.build.build_graph`).
    """

    inputs: Sequence[Any] | None = None               # specs "x:float32[batch,time,8]" / InputSpec / TupleArg
    output_names: Sequence[str] | None = None         # default y, or y0, y1, ... (IN_out for a state pair)
    lengths_input: str | None = None                  # the input wired to every recurrent node's sequence_lens
    expose_state: bool = False                        # h_in/c_in inputs and h_out/c_out outputs per module
    checkpoint_sha256: str | None = None              # written to the manifest
    int_high: int = 2                                 # integer inputs are drawn from [0, int_high)
    states: Sequence[tuple[str, str]] = ()            # --state IN=OUT pairs
    example_sizes: dict[str, int] | None = None       # --example-size NAME=N
    min_sizes: dict[str, int] | None = None           # --min-size NAME=N
    opset: int = DEFAULT_OPSET
    verify: bool = True                               # the parity check against PyTorch
    atol_scale: float = FP32_RTOL_SCALE               # max abs error <= atol_scale * max(1, max|ref|)


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


def leaf_shapes(tree: Any) -> list[tuple[int, ...]]:
    if isinstance(tree, tuple):
        return [tree]
    if isinstance(tree, list):
        return [s for t in tree for s in leaf_shapes(t)]
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
class UserModule:
    """The parts of a :class:`GraphPlan` only a user's own module has (:mod:`edgelstm.exporters.user_plan`).

    A plan with one warns about recurrent modules its forward never calls (and leaves them out
    of the manifest; edgelstm's families leave modules out on purpose), and may hold no recurrent
    layer at all (a hand-written recurrence) when it has state inputs and outputs."""

    #: ``--example-size`` / ``--min-size``: the example's size of named axes, and the least size of
    #: every parity case (a conv front end that needs a width of 16 is never fed 1).
    example_sizes: dict[str, int] = field(default_factory=dict)
    min_sizes: dict[str, int] = field(default_factory=dict)
    #: the forward packs with enforce_sorted=True: generated lengths are sorted, longest first
    sorted_lengths: bool = False
    #: the unmodified module's outputs (no proxies, no packing mapped), for parity
    unmodified: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    #: ``--state IN=OUT``: a state input and the output fed back to it
    declared_states: list[tuple[str, str]] = field(default_factory=list)
    #: ``--expose-state``: the state outputs, appended after the model's own outputs
    state_output_names: list[str] = field(default_factory=list)
    #: how the wrapper calls the module (written to the manifest's interface, so ``verify
    #: --model`` calls it the same way)
    binding: dict[str, Any] = field(default_factory=dict)


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
    #: run the chunked streaming check (None: when the manifest says streamable)
    stream_check: bool | None = None
    #: a user's own module (None: one of edgelstm's families)
    user: UserModule | None = None

    @property
    def min_sizes(self) -> dict[str, int]:
        return self.user.min_sizes if self.user is not None else {}

    @property
    def sorted_lengths(self) -> bool:
        return self.user is not None and self.user.sorted_lengths


def sizes_cases(plan: GraphPlan) -> list[tuple[str, dict[str, int]]]:
    names: list[str] = []
    for s in plan.inputs:
        names.extend(d for d in s.dims if isinstance(d, str) and d not in names)
    low = {n: plan.min_sizes.get(n, 1) for n in names}
    example = {n: (plan.user.example_sizes if plan.user else {}).get(n, max(EXAMPLE_SIZES.get(n, EXAMPLE_SIZE_DEFAULT), low[n])) for n in names}
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
        raise no_recurrent(root, subject)
    return found


def to_torch(feeds: dict[str, np.ndarray], names: list[str]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names)


def no_recurrent(root: nn.Module, subject: str, why: str = "and no state declared") -> ModelDefinitionError:
    return ModelDefinitionError(subject, f"model has no recurrent layer {why}",
                                expected="an nn.LSTM / nn.GRU / nn.RNN / PeepholeLSTM / cell submodule, or a "
                                "hand-written recurrence step with its state declared: a tuple argument --input "
                                "'state=(h:float32[batch,H],c:float32[batch,H])' returned as a tuple of the same "
                                "shapes, or --state IN=OUT", got=type(root).__name__)


def family_of(layers: list[RecurrentLayer]) -> str:
    kinds = {layer.family for layer in layers}
    return kinds.pop() if len(kinds) == 1 else "custom"
