"""Recurrent layers -> one fused ONNX ``LSTM`` / ``GRU`` / ``RNN`` node per layer.

During export every recurrent submodule (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``,
``edgelstm.models.PeepholeLSTM``) is swapped for a :class:`RecurrentProxy`. The proxy computes
its result with the original module (so PyTorch semantics are untouched) through a
``torch.autograd.Function`` whose ``symbolic`` emits exactly the ONNX nodes we want:

* one node per layer, ``layout=0`` (onnxruntime's CPU kernels reject ``layout=1``), with ``W``,
  ``R``, ``B`` (and ``P`` for peepholes) converted to ONNX gate order as constants;
* ``sequence_lens`` wired to the export's lengths input, when there is one;
* ``initial_h`` / ``initial_c`` sliced per layer from the ``[layers*directions, batch, hidden]``
  state, ``Y_h`` / ``Y_c`` concatenated back into that shape;
* ``batch_first`` handled by one transpose on the way in and one on the way out.

Gate orders: PyTorch LSTM ``i, f, g, o`` -> ONNX ``i, o, f, c``; PyTorch GRU ``r, z, n`` -> ONNX
``z, r, h`` (with ``linear_before_reset=1``, PyTorch's GRU); peepholes ``p_i, p_o, p_f``. The
conversions are :mod:`edgelstm.reference`'s (one implementation, shared with the NumPy oracle).
"""
from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils import rnn as rnn_utils
from torch.nn.utils.rnn import PackedSequence

# the originals, kept before any export session maps them (see packed_sequences_mapped)
_PACK = rnn_utils.pack_padded_sequence
_PAD = rnn_utils.pad_packed_sequence

from edgelstm import reference
from edgelstm.errors import UnsupportedError
from edgelstm.models.peephole import PeepholeLSTM


#: one-step cells: exported as one fused node with T = 1 (``<kind>_cell``)
_CELL_KINDS = ((nn.LSTMCell, "lstm_cell"), (nn.GRUCell, "gru_cell"), (nn.RNNCell, "rnn_cell"))


def recurrent_kind(module: nn.Module) -> str | None:
    """``lstm`` / ``gru`` / ``rnn`` / ``peephole`` for a supported layer, ``lstm_cell`` / ``gru_cell``
    / ``rnn_cell`` for a one-step cell, else None."""
    for cls, kind in _CELL_KINDS:
        if isinstance(module, cls):
            return kind
    if isinstance(module, PeepholeLSTM):
        return "peephole"
    if isinstance(module, nn.LSTM):
        return "lstm"
    if isinstance(module, nn.GRU):
        return "gru"
    if isinstance(module, nn.RNN):
        return "rnn"
    return None


@dataclass
class RecurrentLayer:
    """What the export needs to know about one recurrent submodule, weights in ONNX order."""

    path: str
    kind: str                 # lstm | gru | rnn | peephole
    op: str                   # LSTM | GRU | RNN
    input_size: int
    hidden_size: int
    num_layers: int
    directions: int
    batch_first: bool
    activation: str | None = None            # RNN only: Tanh | Relu
    weights: list[dict[str, np.ndarray]] = field(default_factory=list)  # per layer: W, R, B?, P?

    @property
    def has_cell(self) -> bool:
        return self.op == "LSTM"

    @property
    def is_cell(self) -> bool:
        """A one-step cell (nn.LSTMCell / nn.GRUCell / nn.RNNCell): x [batch, F] -> state [batch, H]."""
        return self.kind.endswith("_cell")

    @property
    def family(self) -> str:
        """The manifest family: a cell counts as its layer's family."""
        return self.kind.removesuffix("_cell")

    @property
    def state_size(self) -> int:
        return self.num_layers * self.directions


def _peephole_weights(module: nn.Module, layer: int, suffix: str, hidden: int) -> np.ndarray:
    """ONNX ``P = [p_i, p_o, p_f]`` (3*hidden) from PeepholeLSTM's ``weight_ci/co/cf`` vectors."""
    params = dict(module.named_parameters())
    names = [f"weight_ci_l{layer}{suffix}", f"weight_co_l{layer}{suffix}", f"weight_cf_l{layer}{suffix}"]
    missing = [n for n in names if n not in params]
    if missing:
        raise UnsupportedError(type(module).__name__, "cannot find the peephole weights",
                               expected=names, got=sorted(k for k in params if k.endswith(f"l{layer}{suffix}")))
    parts = [params[n].detach().to(torch.float32).cpu().numpy().reshape(-1) for n in names]
    for n, p in zip(names, parts):
        if p.shape[0] != hidden:
            raise UnsupportedError(f"{type(module).__name__}.{n}", "peephole vector of unexpected size",
                                   expected=hidden, got=p.shape[0])
    return np.concatenate(parts)


def describe(module: nn.Module, path: str) -> RecurrentLayer:
    """Read a supported recurrent module into a :class:`RecurrentLayer`; refuse what ONNX can't hold."""
    kind = recurrent_kind(module)
    if kind is None:
        raise UnsupportedError(path or type(module).__name__, "not a supported recurrent layer",
                               expected="nn.LSTM, nn.GRU, nn.RNN or PeepholeLSTM", got=type(module).__name__)
    where = f"{path or 'model'} ({type(module).__name__})"
    if kind.endswith("_cell"):
        return _describe_cell(module, path, kind, where)
    base = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}.get(kind)
    if base is not None and type(module).forward is not base.forward:
        raise UnsupportedError(where, f"a subclass of nn.{base.__name__} with its own forward cannot be mapped "
                               f"to the fused ONNX {base.__name__.upper()} operator",
                               expected=f"nn.{base.__name__}'s forward", got=f"{type(module).__qualname__}.forward")
    if getattr(module, "proj_size", 0):
        raise UnsupportedError(where, "nn.LSTM with proj_size > 0 has no ONNX LSTM equivalent "
                               "(the operator has no projection)", expected="proj_size=0", got=module.proj_size)
    op = {"lstm": "LSTM", "peephole": "LSTM", "gru": "GRU", "rnn": "RNN"}[kind]
    directions = 2 if module.bidirectional else 1
    hidden = int(module.hidden_size)
    activation = None
    if kind == "rnn":
        activation = {"tanh": "Tanh", "relu": "Relu"}.get(module.nonlinearity)
        if activation is None:
            raise UnsupportedError(where, "unknown nonlinearity", expected="tanh or relu", got=module.nonlinearity)
    params = {k: v.detach().to(torch.float32).cpu().numpy() for k, v in module.named_parameters()}
    layers = []
    for layer in range(int(module.num_layers)):
        Ws, Rs, Bs, Ps = [], [], [], []
        for d in range(directions):
            sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
            try:
                w_ih, w_hh = params["weight_ih" + sfx], params["weight_hh" + sfx]
            except KeyError as e:
                raise UnsupportedError(where, "missing weight parameter", expected=e.args[0],
                                       got=sorted(params)) from None
            b_ih, b_hh = params.get("bias_ih" + sfx), params.get("bias_hh" + sfx)
            if op == "LSTM":
                peep = None
                if kind == "peephole":
                    _peephole_weights(module, layer, sfx[len(f"_l{layer}"):], hidden)  # names + sizes checked
                    peep = tuple(params[f"{n}{sfx}"] for n in ("weight_ci", "weight_cf", "weight_co"))
                W, R, B, P = reference.torch_lstm_to_onnx(w_ih, w_hh, b_ih, b_hh, peep)
                if P is not None:
                    Ps.append(P)
            elif op == "GRU":
                W, R, B = reference.torch_gru_to_onnx(w_ih, w_hh, b_ih, b_hh)
            else:
                W, R, B = reference.torch_rnn_to_onnx(w_ih, w_hh, b_ih, b_hh)
            Ws.append(W)
            Rs.append(R)
            Bs.append(B)
        w = {"W": np.stack(Ws), "R": np.stack(Rs), "B": np.stack(Bs)}
        if Ps:
            w["P"] = np.stack(Ps)
        layers.append(w)
    return RecurrentLayer(path=path, kind=kind, op=op, input_size=int(module.input_size), hidden_size=hidden,
                          num_layers=int(module.num_layers), directions=directions,
                          batch_first=bool(module.batch_first), activation=activation, weights=layers)


def _describe_cell(module: nn.Module, path: str, kind: str, where: str) -> RecurrentLayer:
    """A cell is a one-layer, one-direction, time-major layer run for T = 1 step."""
    base = {"lstm_cell": nn.LSTMCell, "gru_cell": nn.GRUCell, "rnn_cell": nn.RNNCell}[kind]
    if type(module).forward is not base.forward:
        raise UnsupportedError(where, f"a subclass of nn.{base.__name__} with its own forward cannot be mapped to "
                               "a fused ONNX node", expected=f"nn.{base.__name__}'s forward",
                               got=f"{type(module).__qualname__}.forward")
    params = {k: v.detach().to(torch.float32).cpu().numpy() for k, v in module.named_parameters()}
    w_ih, w_hh = params["weight_ih"], params["weight_hh"]
    b_ih, b_hh = params.get("bias_ih"), params.get("bias_hh")
    activation = None
    if kind == "lstm_cell":
        W, R, B, _ = reference.torch_lstm_to_onnx(w_ih, w_hh, b_ih, b_hh, None)
        op = "LSTM"
    elif kind == "gru_cell":
        W, R, B = reference.torch_gru_to_onnx(w_ih, w_hh, b_ih, b_hh)
        op = "GRU"
    else:
        W, R, B = reference.torch_rnn_to_onnx(w_ih, w_hh, b_ih, b_hh)
        op = "RNN"
        activation = {"tanh": "Tanh", "relu": "Relu"}.get(module.nonlinearity)
        if activation is None:
            raise UnsupportedError(where, "unknown nonlinearity", expected="tanh or relu", got=module.nonlinearity)
    return RecurrentLayer(path=path, kind=kind, op=op, input_size=int(module.input_size),
                          hidden_size=int(module.hidden_size), num_layers=1, directions=1, batch_first=False,
                          activation=activation, weights=[{"W": W[None], "R": R[None], "B": B[None]}])


# ---------------------------------------------------------------------------- export session
@dataclass
class _Session:
    layers: list[RecurrentLayer]
    modules: list[nn.Module]
    lengths: torch.Tensor | None = None
    state_in: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    state_out: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    calls: dict[int, int] = field(default_factory=dict)
    lengths_input: str | None = None
    lengths_steps: int | None = None          # time steps the lengths input counts (this call)
    packed: list[bool] = field(default_factory=list)  # enforce_sorted of each pack_padded_sequence
    raw_lengths: bool = False                 # a module got the lengths input itself (not packed)


_LOCAL = threading.local()


def _session() -> _Session:
    s = getattr(_LOCAL, "session", None)
    if s is None:
        raise RuntimeError("RecurrentProxy used outside an export session")
    return s


@contextlib.contextmanager
def _tracing_disabled() -> Iterator[None]:
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


def run_module(module: nn.Module, layer: RecurrentLayer, x: torch.Tensor, h0: torch.Tensor | None,
               c0: torch.Tensor | None, lengths: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The original module's result, with ``lengths`` meaning what ONNX ``sequence_lens`` means."""
    hx: Any
    if layer.is_cell:  # x [1, B, F], state [1, B, H] -> one step of the cell
        state = module.forward(x[0], None if h0 is None else ((h0[0], c0[0]) if layer.has_cell else h0[0]))
        h1, c1 = (state if layer.has_cell else (state, None))
        if layer.has_cell:
            return h1[None], h1[None], c1[None]
        return h1[None], h1[None]
    if layer.has_cell:
        hx = None if h0 is None else (h0, c0)
    else:
        hx = h0
    if layer.kind == "peephole":  # masks itself with ONNX sequence_lens semantics
        y, state = module.forward(x, hx, lengths=lengths)
    elif lengths is None:
        y, state = module.forward(x, hx)
    else:
        total = x.shape[1 if layer.batch_first else 0]
        packed = _PACK(x, lengths.detach().to(torch.int64).cpu(), batch_first=layer.batch_first,
                       enforce_sorted=False)
        y_packed, state = module.forward(packed, hx)
        y, _ = _PAD(y_packed, batch_first=layer.batch_first, total_length=total)
    if layer.has_cell:
        return y, state[0], state[1]
    return y, state


class _RecurrentFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, lengths, index):  # noqa: ARG004
        s = _session()
        with _tracing_disabled(), torch.no_grad():
            return run_module(s.modules[index], s.layers[index], x, h0, c0, lengths)

    @staticmethod
    def symbolic(g, x, h0, c0, lengths, index):
        return emit_recurrent(g, _session().layers[index], x, h0, c0, lengths)


def _const(g, array: np.ndarray | list, dtype=None):
    return g.op("Constant", value_t=torch.as_tensor(np.asarray(array, dtype=dtype)))


def _missing(g):
    n = g.op("prim::Constant")
    n.setType(torch._C.OptionalType.ofTensor())
    return n


def _is_none(v) -> bool:
    return v is None or (hasattr(v, "node") and v.node().mustBeNone())


def emit_recurrent(g, layer: RecurrentLayer, x, h0, c0, lengths):
    """Emit the fused nodes of one recurrent module. Returns (y, h_n[, c_n]) as torch returns them."""
    H, D = layer.hidden_size, layer.directions
    direction = "bidirectional" if D == 2 else "forward"
    seq = _missing(g)
    if not _is_none(lengths):
        scalar = lengths.type().scalarType() if hasattr(lengths.type(), "scalarType") else None
        # ONNX sequence_lens is int32 (TensorProto.INT32 = 6); cast only what is not int32 already
        seq = lengths if scalar == "Int" else g.op("Cast", lengths, to_i=6)
    xin = g.op("Transpose", x, perm_i=[1, 0, 2]) if layer.batch_first else x  # [T, B, F]
    hs, cs = [], []
    y = None
    for idx, w in enumerate(layer.weights):
        init_h = init_c = _missing(g)
        if not _is_none(h0):
            init_h = h0 if layer.num_layers == 1 else g.op(
                "Slice", h0, _const(g, [idx * D], np.int64), _const(g, [(idx + 1) * D], np.int64),
                _const(g, [0], np.int64))
        if layer.has_cell and not _is_none(c0):
            init_c = c0 if layer.num_layers == 1 else g.op(
                "Slice", c0, _const(g, [idx * D], np.int64), _const(g, [(idx + 1) * D], np.int64),
                _const(g, [0], np.int64))
        B = _const(g, w["B"]) if "B" in w else _missing(g)
        attrs: dict[str, Any] = {"hidden_size_i": H, "direction_s": direction}
        if layer.op == "LSTM":
            inputs = [xin, _const(g, w["W"]), _const(g, w["R"]), B, seq, init_h, init_c]
            if "P" in w:
                inputs.append(_const(g, w["P"]))
            y, yh, yc = g.op("LSTM", *inputs, outputs=3, **attrs)
            cs.append(yc)
        else:
            if layer.op == "GRU":
                attrs["linear_before_reset_i"] = 1
            else:
                attrs["activations_s"] = [layer.activation] * D
            y, yh = g.op(layer.op, xin, _const(g, w["W"]), _const(g, w["R"]), B, seq, init_h, outputs=2, **attrs)
        hs.append(yh)
        if idx + 1 < layer.num_layers:  # Y [T, D, B, H] -> next layer's X [T, B, D*H]
            xin = _merge_directions(g, y, D, batch_first=False)
    out = _merge_directions(g, y, D, batch_first=layer.batch_first)
    h_n = hs[0] if len(hs) == 1 else g.op("Concat", *hs, axis_i=0)
    if layer.has_cell:
        c_n = cs[0] if len(cs) == 1 else g.op("Concat", *cs, axis_i=0)
        return out, h_n, c_n
    return out, h_n


def _merge_directions(g, y, D: int, *, batch_first: bool):
    """ONNX ``Y [T, D, B, H]`` -> ``[T, B, D*H]`` (or ``[B, T, D*H]``) with one transpose at most."""
    if D == 1:
        y = g.op("Squeeze", y, _const(g, [1], np.int64))
        return g.op("Transpose", y, perm_i=[1, 0, 2]) if batch_first else y
    y = g.op("Transpose", y, perm_i=[2, 0, 1, 3] if batch_first else [0, 2, 1, 3])
    return g.op("Reshape", y, _const(g, [0, 0, -1], np.int64))


class RecurrentProxy(nn.Module):
    """Stands in for a recurrent module during export; same call signature and results."""

    def __init__(self, original: nn.Module, index: int):
        super().__init__()
        self.original = original
        self.index = index
        for attr in ("input_size", "hidden_size", "num_layers", "batch_first", "bidirectional", "bias"):
            setattr(self, attr, getattr(original, attr, None))

    def forward(self, input, hx=None, *, lengths=None):  # noqa: A002 - nn.LSTM's own argument name
        """``lengths`` (PeepholeLSTM's keyword) overrides the session's lengths input."""
        s = _session()
        layer = s.layers[self.index]
        where = f"{layer.path} ({type(self.original).__name__})"
        packed = None
        if isinstance(input, MappedPacked):
            packed = input
            input = packed.padded if packed.batch_first == layer.batch_first else packed.padded.transpose(0, 1)
            lengths = packed.lengths
        elif isinstance(input, PackedSequence):
            raise UnsupportedError(where, "a PackedSequence built outside pack_padded_sequence (pack_sequence, or "
                                   "one made by hand) cannot be exported: its lengths are fixed Python values, "
                                   "so the graph would hold the example's lengths",
                                   expected="x = pack_padded_sequence(padded, lengths_tensor, batch_first=..., "
                                   "enforce_sorted=...) inside forward, with lengths a forward input given as "
                                   "--lengths-input", got="PackedSequence")
        if layer.is_cell:
            return self._step(input, hx, s, layer, where)
        if input.dim() != 3:
            raise UnsupportedError(where, "unbatched input", expected="a 3-D input tensor",
                                   got=f"{input.dim()}-D")
        s.calls[self.index] = s.calls.get(self.index, 0) + 1
        h0 = c0 = None
        if hx is not None:
            if layer.has_cell:
                h0, c0 = hx
            else:
                h0 = hx
        if self.index in s.state_in:
            if hx is not None:
                raise UnsupportedError(where, "the module passes its own initial state, so it cannot be exposed "
                                       "as a graph input", expected="a call without hx", got="hx given")
            if s.calls[self.index] > 1:
                raise UnsupportedError(where, "called more than once, so its state cannot be exposed",
                                       expected="one call per forward", got=f"{s.calls[self.index]} calls")
            state = s.state_in[self.index]
            h0 = state[0]
            c0 = state[1] if layer.has_cell else None
        seq = lengths
        if seq is None and s.lengths is not None:
            steps = int(input.shape[1 if layer.batch_first else 0])
            if s.lengths_steps is not None and steps != s.lengths_steps:
                raise UnsupportedError(
                    where, f"the lengths input counts {s.lengths_steps} steps but this module sees {steps}: the "
                    "model changes the time axis before it (downsampling, stacking), so --lengths-input would "
                    "wire the raw lengths to it", expected="pack the sequence inside forward with the lengths "
                    "transformed as the time axis is (pack_padded_sequence(y, (lengths + 1) // 2, ...)): the "
                    "export follows that computation", got=f"{steps} steps")
            seq = s.lengths
            s.raw_lengths = True  # the unmodified module never sees these lengths: parity uses the proxies
        result = _RecurrentFunction.apply(input, h0, c0, seq, self.index)
        s.state_out[self.index] = tuple(result[1:])
        y = result[0]
        if packed is not None:
            y = MappedPacked(y, packed.lengths, layer.batch_first)
        if layer.has_cell:
            return y, (result[1], result[2])
        return y, result[1]

    def _step(self, x, hx, s: "_Session", layer: RecurrentLayer, where: str):
        """One step of a cell as one fused node with T = 1: ``x [batch, F]`` -> ``h`` or ``(h, c)``."""
        if x.dim() != 2:
            raise UnsupportedError(where, "unbatched input to a cell", expected="x [batch, features]",
                                   got=f"{x.dim()}-D")
        s.calls[self.index] = s.calls.get(self.index, 0) + 1
        h0 = c0 = None
        if hx is not None:
            h0, c0 = (hx[0][None], hx[1][None]) if layer.has_cell else (hx[None], None)
        result = _RecurrentFunction.apply(x[None], h0, c0, None, self.index)
        s.state_out[self.index] = tuple(result[1:])
        if layer.has_cell:
            return result[1][0], result[2][0]
        return result[1][0]


class MappedPacked:
    """What ``pack_padded_sequence`` returns during an export: the padded tensor and its lengths.

    A proxied recurrent module runs it with ONNX ``sequence_lens`` (what packing computes);
    ``pad_packed_sequence`` gives the padded result back. Anything else done with it is refused.
    """

    def __init__(self, padded: torch.Tensor, lengths: torch.Tensor, batch_first: bool):
        self.padded = padded
        self.lengths = lengths
        self.batch_first = batch_first

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise UnsupportedError(f"PackedSequence.{name}", "the forward reads a field of a PackedSequence; only "
                               "pack_padded_sequence -> recurrent module -> pad_packed_sequence (or the final "
                               "state) is mapped to ONNX sequence_lens",
                               expected="pad_packed_sequence(output) before using the sequence", got=name)


def _mapped_pack(input, lengths, batch_first=False, enforce_sorted=True):  # noqa: A002 - torch's own name
    s = _session()
    if not isinstance(lengths, torch.Tensor):
        raise UnsupportedError("pack_padded_sequence(..., lengths)", "lengths given as Python values would be "
                               "frozen into the graph at the example's lengths",
                               expected="lengths as a tensor (a forward input, e.g. lengths.cpu())",
                               got=type(lengths).__name__)
    if s.lengths_input is None:
        raise UnsupportedError("pack_padded_sequence in forward", "the export does not know which input holds "
                               "the lengths, so its checks would feed random values that are not valid lengths",
                               expected="--lengths-input NAME (the forward input the lengths come from)",
                               got="no --lengths-input")
    s.packed.append(bool(enforce_sorted))
    return MappedPacked(input, lengths, bool(batch_first))


def _mapped_pad(sequence, batch_first=False, padding_value=0.0, total_length=None):
    if not isinstance(sequence, MappedPacked):
        return _PAD(sequence, batch_first=batch_first, padding_value=padding_value, total_length=total_length)
    if padding_value != 0.0:
        raise UnsupportedError("pad_packed_sequence(..., padding_value)", "ONNX recurrent nodes pad with zeros",
                               expected="padding_value=0.0", got=padding_value)
    y = sequence.padded if sequence.batch_first == batch_first else sequence.padded.transpose(0, 1)
    steps = int(y.shape[1 if batch_first else 0])
    if total_length is not None and total_length != steps:
        raise UnsupportedError("pad_packed_sequence(..., total_length)", "total_length differs from the padded "
                               "input's time length", expected=steps, got=total_length)
    lengths = sequence.lengths.to(torch.int64)
    if total_length is None:  # PyTorch pads to the longest sequence of the batch, not to the input's length
        y = y.index_select(1 if batch_first else 0, torch.arange(lengths.max()))
    return y, lengths


@contextlib.contextmanager
def packed_sequences_mapped() -> Iterator[None]:
    """While exporting, ``pack_padded_sequence`` / ``pad_packed_sequence`` in user code (called as
    ``nn.utils.rnn.X`` or imported by name) return / take :class:`MappedPacked`. edgelstm's own
    modules keep the originals (they route lengths themselves)."""
    swaps = {id(_PACK): _mapped_pack, id(_PAD): _mapped_pad}
    patched: list[tuple[Any, str, Any]] = []
    for name, mod in list(sys.modules.items()):
        if mod is None or name.startswith("edgelstm.") or name == "edgelstm":
            continue
        namespace = getattr(mod, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        # by identity, so `from torch.nn.utils.rnn import pack_padded_sequence as pack` is found too
        for attr, value in list(namespace.items()):
            if id(value) in swaps and (value is _PACK or value is _PAD):
                patched.append((mod, attr, value))
                namespace[attr] = swaps[id(value)]
    try:
        yield
    finally:
        for mod, attr, value in patched:
            mod.__dict__[attr] = value


def find_recurrent(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Supported recurrent submodules (outermost only), in registration order."""
    found: list[tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p + ".") for p, _ in found if p):
            continue
        if recurrent_kind(mod) is not None:
            found.append((name, mod))
    return found


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    if path == "":
        raise UnsupportedError("model", "the model itself is a bare recurrent layer",
                               expected="a module that contains the recurrent layer", got=type(root).__name__)
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, new)


@contextlib.contextmanager
def proxies_installed(model: nn.Module, found: list[tuple[str, nn.Module]],
                      layers: list[RecurrentLayer]) -> Iterator[_Session]:
    """Swap each recurrent submodule for a proxy for the duration of the block."""
    if getattr(_LOCAL, "session", None) is not None:
        raise RuntimeError("nested export sessions are not supported")
    session = _Session(layers=layers, modules=[m for _, m in found])
    _LOCAL.session = session
    swapped: list[tuple[str, nn.Module]] = []
    try:
        for i, (path, mod) in enumerate(found):
            _set_submodule(model, path, RecurrentProxy(mod, i))
            swapped.append((path, mod))
        with packed_sequences_mapped():
            yield session
    finally:
        for path, mod in swapped:
            _set_submodule(model, path, mod)
        _LOCAL.session = None
