"""Graph input specifications: ``NAME:DTYPE[DIM,...]`` as given to ``edgelstm export --input``.

Standard library and NumPy only. A dim is an integer (fixed) or a name (a dynamic axis). The
names ``batch`` and ``time`` are the usual ones; any other name is a dynamic axis too (for
example ``src_time``). The export checks feed sizes other than the example's on every named
axis, so a graph that froze one is caught.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgelstm.errors import UsageError

#: dtypes accepted in ``--input`` (numpy names) and their common aliases.
DTYPES: dict[str, str] = {
    "float32": "float32", "float": "float32", "f32": "float32",
    "float16": "float16", "half": "float16", "f16": "float16",
    "float64": "float64", "double": "float64", "f64": "float64",
    "int64": "int64", "long": "int64", "i64": "int64",
    "int32": "int32", "int": "int32", "i32": "int32",
    "bool": "bool",
}

#: Example size of each named axis when the graph is traced. Odd, distinct, small.
EXAMPLE_SIZES = {"batch": 2}
EXAMPLE_SIZE_DEFAULT = 6  # every other named axis (time-like)

_SPEC_RE = re.compile(r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*:\s*(?P<dtype>[A-Za-z0-9]+)\s*"
                      r"\[(?P<dims>[^\]]*)\]\s*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class InputSpec:
    """One graph input: name, numpy dtype name and dims (``int`` fixed, ``str`` dynamic)."""

    name: str
    dtype: str
    dims: tuple[Any, ...] = field(default_factory=tuple)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.dims) if isinstance(d, str)}

    def shape_for(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """Concrete shape with each named axis taken from ``sizes``."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.dims)

    def text(self) -> str:
        return f"{self.name}:{self.dtype}[{','.join(str(d) for d in self.dims)}]"


def parse_input_spec(text: str) -> InputSpec:
    """Parse ``NAME:DTYPE[DIM,...]``, e.g. ``x:float32[batch,time,8]``."""
    m = _SPEC_RE.match(text)
    if m is None:
        raise UsageError(f"--input {text!r}", "malformed input specification",
                         expected="NAME:DTYPE[DIM,...] such as x:float32[batch,time,8]", got=text)
    dtype = DTYPES.get(m["dtype"].lower())
    if dtype is None:
        raise UsageError(f"--input {text!r}", "unknown dtype",
                         expected=sorted(set(DTYPES.values())), got=m["dtype"])
    dims: list[Any] = []
    raw = m["dims"].strip()
    for part in ([] if raw == "" else raw.split(",")):
        part = part.strip()
        if re.fullmatch(r"\d+", part):
            value = int(part)
            if value <= 0:
                raise UsageError(f"--input {text!r}", "a fixed dim must be positive", expected="an integer >= 1",
                                 got=part)
            dims.append(value)
        elif _NAME_RE.match(part):
            dims.append(part)
        else:
            raise UsageError(f"--input {text!r}", "malformed dim",
                             expected="a positive integer or a name such as batch or time", got=part or "(empty)")
    return InputSpec(m["name"], dtype, tuple(dims))


def check_specs(specs: list[InputSpec]) -> None:
    """Names unique; at least one input."""
    if not specs:
        raise UsageError("--input", "no input given", expected="at least one NAME:DTYPE[DIM,...]", got="none")
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise UsageError(f"--input {s.name}", "input name given twice", expected="unique names", got=s.name)
        seen.add(s.name)


def time_axis_of(specs: list[InputSpec], lengths_input: str | None) -> str | None:
    """The axis a lengths input counts along: the first named axis other than ``batch``."""
    for s in specs:
        if s.name == lengths_input:
            continue
        for d in s.dims:
            if isinstance(d, str) and d != "batch":
                return d
    return None


def make_inputs(specs: list[InputSpec], sizes: dict[str, int], *, rng: np.random.Generator,
                lengths_input: str | None = None, int_high: int = 2,
                sorted_lengths: bool = False) -> dict[str, np.ndarray]:
    """Random inputs of the given sizes.

    Floats are standard normal. The lengths input (if any) holds valid lengths in
    ``[1, time]`` with at least one full-length sequence (longest first with ``sorted_lengths``). Other integers lie in ``[0, int_high)``
    (safe indices for any embedding table).
    """
    out: dict[str, np.ndarray] = {}
    time = sizes.get(time_axis_of(specs, lengths_input) or "", 1)
    for s in specs:
        shape = s.shape_for(sizes)
        if s.name == lengths_input:
            v = rng.integers(1, time + 1, size=shape)
            if v.size:
                v.flat[0] = time
            if sorted_lengths:  # a forward that packs with enforce_sorted=True: longest first
                v = -np.sort(-v, axis=None).reshape(v.shape)
            out[s.name] = v.astype(s.dtype)
        elif s.dtype.startswith("float"):
            out[s.name] = rng.standard_normal(shape).astype(s.dtype)
        elif s.dtype == "bool":
            out[s.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            out[s.name] = rng.integers(0, int_high, size=shape).astype(s.dtype)
    return out


def data_input(specs: list[InputSpec], lengths_input: str | None) -> InputSpec | None:
    """The sequence input the runtime calls ``x``: the one named ``x``, else the first non-lengths input."""
    cands = [s for s in specs if s.name != lengths_input]
    return next((s for s in cands if s.name == "x"), cands[0] if cands else None)


def check_streaming_layout(specs: list[InputSpec], lengths_input: str | None, *,
                           option: str = "--expose-state") -> None:
    """Refuse exposed state unless the data input has a named batch axis and a named time axis (any
    order: batch-major, time-major, channels-first), and a lengths input unless it is batch-major.

    Exposed state is ``[layers*directions, batch, hidden]`` whatever the layout; the export checks
    chunks cut along the named time axis. ``edgelstm run`` and ``Model.stream`` take ``x`` as
    ``[batch, time, ...]``, so only a batch-major graph is marked streamable for them. The runtime
    takes lengths as ``[x.shape[0]]``, hence the stricter rule for ``--lengths-input``. ``option``
    names the flag that needs the layout.
    """
    from edgelstm.errors import UnsupportedError  # noqa: PLC0415

    x = data_input(specs, lengths_input)
    if x is None:
        return
    if option == "--expose-state":
        named = [d for d in x.dims if isinstance(d, str)]
        if "batch" not in named or not [d for d in named if d != "batch"]:
            raise UnsupportedError(f"--input {x.text()}", f"{option} needs a named batch axis and a named time axis "
                                   "in the data input: the state is carried between chunks cut along the time axis",
                                   expected="dims naming batch and a time axis in any order, e.g. [batch,time,F], "
                                   "[time,batch,F] or [batch,F,time]", got=list(x.dims))
        return
    runtime = "the runtime takes x as [batch, time, ...] and lengths as [batch] (one per row of x)"
    fix = ("write the forward to take [batch, time, F] (e.g. nn.LSTM(..., batch_first=True), or transpose "
           f"inside forward) and export with --input {_batch_major_text(x)}, or export without {option}")
    if not is_batch_major(x):
        raise UnsupportedError(f"--input {x.text()}", f"{option} needs a batch-major input: {runtime}; {fix}",
                               expected="dims [batch, time, ...] (named batch first, then a named time axis)",
                               got=list(x.dims))
    for s in specs:
        if s.name != x.name and "batch" in s.dims and s.dims.index("batch") != 0:
            raise UnsupportedError(f"--input {s.text()}",
                                   f"{option} needs every input batch-major: the runtime batches along axis 0",
                                   expected="batch as the first dim", got=list(s.dims))


def is_batch_major(x: InputSpec | None) -> bool:
    """``[batch, time, ...]``: the layout ``edgelstm run`` and ``Model.stream`` take."""
    return x is not None and len(x.dims) >= 2 and x.dims[0] == "batch" and isinstance(x.dims[1], str) \
        and x.dims[1] != "batch"


def _batch_major_text(x: InputSpec) -> str:
    dims = list(x.dims)
    time = next((d for d in dims if isinstance(d, str) and d != "batch"), "time")
    rest = [d for d in dims if d != "batch" and d != time]
    return InputSpec(x.name, x.dtype, tuple(["batch", time] + rest)).text()


# ------------------------------------------------------------------------------ tuple arguments
@dataclass(frozen=True)
class TupleArg:
    """A forward argument that is a tuple of tensors (or of tuples): ``hidden=(h:...,c:...)``.

    Its leaves are graph inputs; the export rebuilds the tuple before calling the forward.
    """

    name: str
    parts: tuple[Any, ...]  # InputSpec | TupleArg

    def text(self) -> str:
        return f"{self.name}=(" + ",".join(p.text() for p in self.parts) + ")"


def _split_top(text: str, subject: str) -> list[str]:
    """Split at commas outside brackets and parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                break
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise UsageError(subject, "unbalanced parentheses or brackets",
                         expected="NAME=(a:float32[...],b:float32[...])", got=text)
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _parse_part(text: str, subject: str, default_name: str):
    text = text.strip()
    name, eq, rest = text.partition("=")
    if eq and _NAME_RE.match(name.strip()) and rest.strip().startswith("("):
        return _parse_tuple(name.strip(), rest.strip(), subject)
    if text.startswith("("):
        return _parse_tuple(default_name, text, subject)
    return parse_input_spec(text)


def _parse_tuple(name: str, text: str, subject: str) -> TupleArg:
    if not (text.startswith("(") and text.endswith(")")):
        raise UsageError(subject, "malformed tuple argument", expected="NAME=(a:float32[...],b:float32[...])",
                         got=text)
    items = _split_top(text[1:-1], subject)
    if not items or any(not i for i in items):
        raise UsageError(subject, "empty part in a tuple argument",
                         expected="NAME=(a:float32[...],b:float32[...])", got=text)
    return TupleArg(name, tuple(_parse_part(p, subject, f"{name}_{k}") for k, p in enumerate(items)))


def parse_argument(text: str):
    """``NAME:DTYPE[DIM,...]`` (one tensor) or ``NAME=(PART,PART,...)`` (a tuple argument whose parts
    are tensor specs or nested tuples): returns an :class:`InputSpec` or a :class:`TupleArg`."""
    subject = f"--input {text!r}"
    name, eq, rest = text.partition("=")
    if eq and ":" not in name:
        if not _NAME_RE.match(name.strip()):
            raise UsageError(subject, "malformed tuple argument name", expected="a Python identifier",
                             got=name.strip())
        return _parse_tuple(name.strip(), rest.strip(), subject)
    return parse_input_spec(text)


def leaves(args) -> list[InputSpec]:
    """The graph inputs of arguments (tuple arguments flattened in order)."""
    out: list[InputSpec] = []
    for a in (args if isinstance(args, (list, tuple)) else [args]):
        if isinstance(a, TupleArg):
            out.extend(leaves(list(a.parts)))
        else:
            out.append(a)
    return out


def structure(arg):
    """The names tree of an argument: a leaf's name, or a tuple of trees."""
    if isinstance(arg, TupleArg):
        return tuple(structure(p) for p in arg.parts)
    return arg.name


def parse_output_name(text: str) -> list[str]:
    """``NAME`` or ``NAME=(a,b,...)`` (nested allowed): the flat output names, in order."""
    subject = f"--output-name {text!r}"
    name, eq, rest = text.partition("=")
    body = rest.strip() if eq else text.strip()
    if not eq and not body.startswith("("):
        if not _NAME_RE.match(body):
            raise UsageError(subject, "malformed output name", expected="a name, or NAME=(a,b)", got=text)
        return [body]
    if not (body.startswith("(") and body.endswith(")")):
        raise UsageError(subject, "malformed tuple of output names", expected="NAME=(a,b)", got=text)
    names: list[str] = []
    for part in _split_top(body[1:-1], subject):
        names.extend(parse_output_name(part))
    return names


def _pair(text: str, option: str, value_re: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not eq or not _NAME_RE.match(name) or not re.fullmatch(value_re, value):
        form = "NAME=N" if value_re == r"\d+" else "IN=OUT"
        raise UsageError(f"{option} {text!r}", "malformed value", expected=form, got=text)
    return name, value


def parse_sizes(items, option: str) -> dict[str, int]:
    """``--min-size`` / ``--example-size``: ``NAME=N`` items -> {name: N} (N >= 1, each name once)."""
    out: dict[str, int] = {}
    for text in items:
        name, value = _pair(text, option, r"\d+")
        if int(value) < 1:
            raise UsageError(f"{option} {text!r}", "a size must be positive", expected="N >= 1", got=value)
        if name in out:
            raise UsageError(f"{option} {text!r}", "axis given twice", expected="each name once", got=name)
        out[name] = int(value)
    return out


def parse_states(items) -> list[tuple[str, str]]:
    """``--state IN=OUT`` items -> [(IN, OUT)]."""
    return [_pair(text, "--state", r"[A-Za-z_][A-Za-z0-9_]*") for text in items]
