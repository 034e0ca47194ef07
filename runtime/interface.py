"""The interface of an exported graph: every input and output, its axes and its role. One home.

Standard library + numpy + :mod:`edgelstm.errors` only (the torch-free runtime, ``quantize``,
``verify``, ``inspect`` and export all import it). It owns:

* **the state pairing rule**: graph input ``NAME_in`` is fed from graph output ``NAME_out`` of
  the previous call (:func:`state_output_for`, :func:`state_input_for`, :func:`pair_states`);
* **the roles**: ``data`` (a float input), ``tokens`` (integer ids, with the valid range
  ``[low, high)`` where known), ``lengths`` (valid steps per sequence), ``state_in`` /
  ``state_out`` (paired), ``output`` (a graph output that is not a state), ``other``;
* **the axes**: which axis is the batch and which (if any) is time, by the dimension's name
  where the graph names it (``batch``; ``time``, ``seq``, ...; else the first named axis that is
  not the batch, the rule export uses for the axis a lengths input counts along), by position
  otherwise (batch first; a state ``[layers*directions, batch, hidden]`` is batched on axis 1);
* **filling**: what a missing input is when a command is not given it (:meth:`Interface.fill`:
  zeros for a state, full lengths, and, where asked, random token ids in range and standard
  normal floats);
* **the binding**: how export called the user's module (recorded at export time, see
  :mod:`edgelstm.exporters.user_plan`), so ``verify --model`` calls it the same way.

Export writes :meth:`Interface.to_dict` into the manifest (``Manifest.interface``); for a file
edgelstm did not make, :meth:`Interface.infer` derives it from the graph's inputs and outputs
(and :func:`token_ranges` from its embedding tables where the caller holds the graph).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgelstm.errors import InputError, ManifestError

STATE_IN_SUFFIX = "_in"
STATE_OUT_SUFFIX = "_out"
ROLES = ("data", "tokens", "lengths", "state_in", "state_out", "output", "other")
BATCH_NAMES = ("batch", "batch_size", "n", "N", "B")
TIME_NAMES = ("time", "seq", "seq_len", "sequence", "steps", "T", "length", "frames", "src_time", "tgt_time")
LENGTHS_NAMES = ("lengths", "seq_lens", "sequence_lens", "src_lengths", "lens")


# ------------------------------------------------------------------------------ the state pairing rule
def state_output_for(name: str) -> str | None:
    """``h_in`` -> ``h_out``; None for a name that is not a state input name."""
    return name[: -len(STATE_IN_SUFFIX)] + STATE_OUT_SUFFIX if name.endswith(STATE_IN_SUFFIX) else None


def state_input_for(name: str) -> str | None:
    """``h_out`` -> ``h_in``; None for a name that is not a state output name."""
    return name[: -len(STATE_OUT_SUFFIX)] + STATE_IN_SUFFIX if name.endswith(STATE_OUT_SUFFIX) else None


def pair_states(inputs: Iterable[str], outputs: Iterable[str]) -> list[tuple[str, str]]:
    """``(input, output)`` state pairs by the naming rule, in input order."""
    outs = set(outputs)
    return [(n, state_output_for(n)) for n in inputs if state_output_for(n) in outs]


# ------------------------------------------------------------------------------ the seq2seq pair names
#: a seq2seq export ``X.onnx`` is written as ``X.encoder.onnx`` + ``X.decoder_step.onnx``
PAIR_SUFFIXES = ((".encoder.onnx", "encoder"), (".decoder_step.onnx", "decoder_step"))


def pair_stem(name: str) -> tuple[str, str | None]:
    """``X.encoder.onnx`` -> ``("X", "encoder")``; ``X.decoder_step.onnx`` -> ``("X",
    "decoder_step")``; ``X.onnx`` (or ``X``) -> ``("X", None)``."""
    for suffix, role in PAIR_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], role
    return (name[: -len(".onnx")] if name.endswith(".onnx") else name), None


def pair_paths(path: Any) -> tuple[Any, Any]:
    """The (encoder, decoder_step) paths of the pair that ``path`` (a ``pathlib.Path``: the stem
    ``X.onnx`` or either file of the pair) belongs to."""
    stem, _ = pair_stem(path.name)
    return tuple(path.with_name(f"{stem}{suffix}") for suffix, _ in PAIR_SUFFIXES)


# ------------------------------------------------------------------------------ one tensor
@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output. ``shape``: ints for fixed dims, names (or None) for symbolic ones."""

    name: str
    dtype: str                      # numpy dtype name
    shape: tuple
    role: str = "other"
    batch_axis: int | None = 0
    time_axis: int | None = None
    token_range: tuple[int, int] | None = None  # tokens: valid ids are low <= id < high
    pair: str | None = None          # a state's partner (output of a state input, input of a state output)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def axes(self) -> list[str]:
        """A name per axis: ``batch``, ``time``, the graph's own name, or the fixed size."""
        out = []
        for i, d in enumerate(self.shape):
            if i == self.batch_axis:
                out.append("batch")
            elif i == self.time_axis:
                out.append("time")
            else:
                out.append(str(d) if d is not None else f"d{i}")
        return out

    def layout(self, *, frame: bool = False) -> str:
        """``[batch, time, 8]`` (or the frame's ``[batch, 8]``) for messages; edgelstm's own float
        ``[batch, time, features]`` keeps those words."""
        if self.role == "data" and self.rank == 3 and self.batch_axis == 0 and self.time_axis == 1:
            return "[batch, features]" if frame else "[batch, time, features]"
        axes = [a for i, a in enumerate(self.axes) if not (frame and i == self.time_axis)]
        return "[" + ", ".join(axes) + "]"

    def frame_axis(self, axis: int | None) -> int | None:
        """Where ``axis`` of the full tensor lies in a frame (the tensor without its time axis)."""
        if axis is None or self.time_axis is None or axis < self.time_axis:
            return axis
        return None if axis == self.time_axis else axis - 1

    def fixed(self, axis: int) -> int | None:
        d = self.shape[axis]
        return d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "role": self.role,
                             "batch_axis": self.batch_axis, "time_axis": self.time_axis}
        if self.token_range is not None:
            d["token_range"] = list(self.token_range)
        if self.pair is not None:
            d["pair"] = self.pair
        return d

    @classmethod
    def from_dict(cls, d: Mapping, *, source: str = "interface") -> "TensorInfo":
        try:
            tr = d.get("token_range")
            info = cls(name=str(d["name"]), dtype=str(d["dtype"]), shape=tuple(d["shape"]), role=str(d["role"]),
                       batch_axis=_axis(d.get("batch_axis")), time_axis=_axis(d.get("time_axis")),
                       token_range=(int(tr[0]), int(tr[1])) if tr is not None else None, pair=d.get("pair"))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ManifestError(source, "interface entry is malformed",
                                expected="name, dtype, shape, role, batch_axis, time_axis", got=repr(e)[:200]) from None
        if info.role not in ROLES:
            raise ManifestError(source, f"unknown role of {info.name!r}", expected=list(ROLES), got=info.role)
        for what, axis in (("batch_axis", info.batch_axis), ("time_axis", info.time_axis)):
            if axis is not None and not 0 <= axis < info.rank:
                raise ManifestError(source, f"{what} of {info.name!r} is out of range",
                                    expected=f"0..{info.rank - 1} or null", got=axis)
        if info.token_range is not None and not 0 <= info.token_range[0] < info.token_range[1]:
            raise ManifestError(source, f"token_range of {info.name!r} is empty or negative",
                                expected="[low, high) with 0 <= low < high", got=list(info.token_range))
        return info


def _axis(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"axis {v!r} is not an integer")
    return v


def _named(shape: Sequence, names: tuple[str, ...]) -> int | None:
    return next((i for i, d in enumerate(shape) if isinstance(d, str) and d in names), None)


def _axes_of(shape: Sequence, role: str) -> tuple[int | None, int | None]:
    """(batch axis, time axis) of a tensor of ``role`` by the graph's dimension names, else by position."""
    rank = len(shape)
    if rank == 0:
        return None, None
    batch = _named(shape, BATCH_NAMES)
    if batch is None:
        batch = 1 if role in ("state_in", "state_out") and rank == 3 else 0
    if role in ("lengths", "state_in", "state_out"):
        return batch, None
    time = _named(shape, TIME_NAMES)
    if time is None:
        named = [i for i, d in enumerate(shape) if isinstance(d, str) and d and d != "?" and i != batch]
        if named:
            time = named[0]
        elif rank >= 2 and all(not isinstance(d, int) or d <= 0 for i, d in enumerate(shape[:2])):
            time = 1 if batch == 0 else 0  # unnamed [?, ?, ...]: batch-major sequence
    return batch, time


# ------------------------------------------------------------------------------ the whole graph
@dataclass(frozen=True)
class Interface:
    """Every input and output of one graph, with roles and axes; ``binding`` says how export
    called the user's module (None for edgelstm's own families and foreign files)."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    binding: dict | None = field(default=None, compare=False)

    # -------------------------------------------------------------- building
    @classmethod
    def infer(cls, inputs: Sequence[tuple[str, str, Sequence]], outputs: Sequence[tuple[str, str, Sequence]], *,
              states: Sequence[tuple[str, str]] | None = None, lengths: str | None = None,
              token_ranges: Mapping[str, tuple[int, int]] | None = None, binding: dict | None = None) -> "Interface":
        """From ``(name, dtype, shape)`` triples. ``states`` (a manifest's pairs) replaces the
        naming rule; ``lengths`` names the lengths input where it is not called ``lengths``."""
        pairs = list(states) if states is not None else pair_states([i[0] for i in inputs], [o[0] for o in outputs])
        s_in = {a: b for a, b in pairs}
        s_out = {b: a for a, b in pairs}
        ranges = dict(token_ranges or {})
        ins = []
        for name, dtype, shape in inputs:
            shape = tuple(shape)
            kind = np.dtype(dtype).kind if dtype in _NUMPY_NAMES else "O"
            if name in s_in:
                role = "state_in"
            elif (name == lengths or (lengths is None and name in LENGTHS_NAMES)) and kind in "iu" and len(shape) == 1:
                role = "lengths"
            elif kind in "iu":
                role = "tokens"
            elif kind == "f":
                role = "data"
            else:
                role = "other"
            batch, time = _axes_of(shape, role)
            ins.append(TensorInfo(name, dtype, shape, role, batch, time,
                                  ranges.get(name) if role == "tokens" else None, s_in.get(name)))
        outs = []
        for name, dtype, shape in outputs:
            shape = tuple(shape)
            role = "state_out" if name in s_out else "output"
            batch, time = _axes_of(shape, role)
            outs.append(TensorInfo(name, dtype, shape, role, batch, time, None, s_out.get(name)))
        return cls(tuple(ins), tuple(outs), binding)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}
        if self.binding is not None:
            d["binding"] = dict(self.binding)
        return d

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "manifest interface") -> "Interface":
        if not isinstance(d, Mapping) or not isinstance(d.get("inputs"), list) or not isinstance(d.get("outputs"), list):
            raise ManifestError(source, "interface is malformed", expected="an object with inputs and outputs lists",
                                got=type(d).__name__)
        binding = d.get("binding")
        if binding is not None and not isinstance(binding, Mapping):
            raise ManifestError(source, "interface binding is malformed", expected="an object",
                                got=type(binding).__name__)
        return cls(tuple(TensorInfo.from_dict(t, source=source) for t in d["inputs"]),
                   tuple(TensorInfo.from_dict(t, source=source) for t in d["outputs"]),
                   dict(binding) if binding is not None else None)

    def with_token_ranges(self, ranges: Mapping[str, tuple[int, int]]) -> "Interface":
        """The same interface with ``ranges`` filled in where a token input has none."""
        ins = tuple(replace(t, token_range=ranges[t.name]) if t.role == "tokens" and t.token_range is None
                    and t.name in ranges else t for t in self.inputs)
        return replace(self, inputs=ins)

    # -------------------------------------------------------------- queries
    def input(self, name: str) -> TensorInfo | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorInfo | None:
        return next((t for t in self.outputs if t.name == name), None)

    @property
    def states(self) -> list[tuple[str, str]]:
        return [(t.name, t.pair) for t in self.inputs if t.role == "state_in"]

    @property
    def min_time(self) -> int:
        """The least time length the graph's source module takes (export's ``--min-size`` on the
        data inputs' time axes, e.g. a conv front end's width); 1 when nothing was said."""
        sizes = (self.binding or {}).get("min_sizes") or {}
        names = [t.shape[t.time_axis] for t in self.data_inputs if t.time_axis is not None]
        return max([int(sizes[n]) for n in names if isinstance(n, str) and n in sizes] + [1])

    @property
    def lengths(self) -> str | None:
        return next((t.name for t in self.inputs if t.role == "lengths"), None)

    @property
    def data_inputs(self) -> list[TensorInfo]:
        """Inputs a caller must give (data, tokens, other): not state, not lengths."""
        return [t for t in self.inputs if t.role not in ("state_in", "lengths")]

    @property
    def primary(self) -> TensorInfo | None:
        """The one input a caller feeds (``model.run(x)``, ``stream().step(frame)``), when there is one."""
        data = self.data_inputs
        return data[0] if len(data) == 1 else None

    @property
    def data_outputs(self) -> list[TensorInfo]:
        return [t for t in self.outputs if t.role != "state_out"]

    def sizes(self, feeds: Mapping[str, Any]) -> tuple[int | None, int | None]:
        """(batch, time) read off the given feeds, each on its own axes (None where nothing says)."""
        batch = time = None
        for t in self.inputs:
            arr = feeds.get(t.name)
            shape = getattr(arr, "shape", None)
            if callable(shape):  # an onnxruntime OrtValue
                shape = tuple(shape())
            if shape is None or len(shape) != t.rank:
                continue
            if batch is None and t.batch_axis is not None:
                batch = int(shape[t.batch_axis])
            if time is None and t.time_axis is not None and t.role != "state_in":
                time = int(shape[t.time_axis])
        return batch, time

    # -------------------------------------------------------------- filling what is missing
    def concrete_shape(self, t: TensorInfo, batch: int, time: int | None,
                       defaults: Mapping[int, int] | None = None) -> tuple[int, ...]:
        """``t``'s shape at ``batch`` and ``time``; other symbolic dims from ``defaults`` (axis ->
        size) or an :class:`InputError` naming the input."""
        out = []
        for i, d in enumerate(t.shape):
            if i == t.batch_axis:
                out.append(batch)
            elif i == t.time_axis and time is not None:
                out.append(time)
            elif t.fixed(i) is not None:
                out.append(t.fixed(i))
            elif defaults and i in defaults:
                out.append(int(defaults[i]))
            else:
                raise InputError(t.name, f"cannot make this input: dimension {i} ({d!r}) has no size",
                                 expected=f"an array {t.layout()}", got="none given")
        return tuple(out)

    def fill(self, name: str, batch: int, time: int | None, *, rng: np.random.Generator | None = None,
             defaults: Mapping[int, int] | None = None) -> np.ndarray:
        """A stand-in for input ``name``: zeros for a state, full lengths; with ``rng`` also random
        token ids in range (``[0, 2)`` where the range is unknown) and standard normal floats.
        Without ``rng`` a data or token input cannot be made up: :class:`InputError`."""
        t = self.input(name)
        if t is None:
            raise InputError(name, "unknown input", expected=[i.name for i in self.inputs], got=name)
        dtype = np.dtype(t.dtype)
        if t.role == "lengths":
            if time is None:
                raise InputError(name, "cannot fill lengths: no input says how many steps there are",
                                 expected="a lengths array", got="none")
            return np.full(batch, time, dtype=dtype)
        shape = self.concrete_shape(t, batch, time, defaults)
        if t.role == "state_in":
            return np.zeros(shape, dtype=dtype)
        if rng is None:
            raise InputError(name, "missing input", expected=f"an array {t.layout()}",
                             got="none (only states (zeros) and lengths (full) are filled)")
        if t.role == "tokens":
            low, high = t.token_range or (0, 2)
            return rng.integers(low, high, size=shape).astype(dtype)
        if dtype.kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        if dtype.kind == "b":
            return np.zeros(shape, dtype=dtype)
        raise InputError(name, "cannot make random data of this dtype", expected="a float or integer input",
                         got=t.dtype)

    def complete(self, feeds: Mapping[str, Any], *, rng: np.random.Generator | None = None,
                 defaults: Mapping[str, Mapping[int, int]] | None = None) -> tuple[dict[str, Any], list[str]]:
        """``feeds`` with every missing input filled (see :meth:`fill`); also the names filled."""
        batch, time = self.sizes(feeds)
        if batch is None:
            batch = 1
        out = dict(feeds)
        filled = []
        for t in self.inputs:
            if t.name in out:
                continue
            out[t.name] = self.fill(t.name, batch, time, rng=rng, defaults=(defaults or {}).get(t.name))
            filled.append(t.name)
        return out, filled

    def random_feeds(self, batch: int, time: int, rng: np.random.Generator,
                     defaults: Mapping[str, Mapping[int, int]] | None = None) -> dict[str, np.ndarray]:
        """Every input made up: random data and tokens in range, full lengths, zero state."""
        return {t.name: self.fill(t.name, batch, time, rng=rng, defaults=(defaults or {}).get(t.name))
                for t in self.inputs}


_NUMPY_NAMES = ("float32", "float16", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                "uint64", "bool")


# ------------------------------------------------------------------------------ token ranges from a graph
_PASS_THROUGH = ("Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten")


def token_ranges(graph: Any) -> dict[str, tuple[int, int]]:
    """``{input: (0, vocab)}`` for integer graph inputs that index an embedding table: a
    ``Gather`` (axis 0) whose data is an initializer and whose indices come from the input
    (through casts and reshapes). ``graph`` is an ONNX ``GraphProto`` read by attribute only
    (no onnx import here)."""
    dims = {t.name: list(t.dims) for t in graph.initializer}
    source: dict[str, str] = {i.name: i.name for i in graph.input if i.name not in dims}
    ranges: dict[str, tuple[int, int]] = {}
    for node in graph.node:  # nodes are in topological order in a valid graph
        if node.op_type in _PASS_THROUGH and node.input and node.input[0] in source:
            for o in node.output:
                source[o] = source[node.input[0]]
        elif node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in source:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            table = dims.get(node.input[0])
            if axis == 0 and table:
                name = source[node.input[1]]
                vocab = int(table[0])
                low, high = ranges.get(name, (0, vocab))
                ranges[name] = (low, min(high, vocab))
    return ranges
