"""A small NumPy interpreter for the fp32 ONNX graphs edgelstm exports.

It walks the graph node by node. Recurrent nodes (``LSTM``, ``GRU``, ``RNN``) are delegated to
:mod:`edgelstm.reference`, the pure-NumPy cells written from the ONNX spec, so this backend is an
oracle independent of onnxruntime and of ``onnx.reference``. The other operators are the plumbing
an export produces around them (MatMul, Gemm, Add, Squeeze, Transpose, Gather, Concat, Slice,
Reshape, Softmax, ...). An operator it does not know raises :class:`UnsupportedError` naming it:
nothing is skipped silently.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from edgelstm.errors import InputError, MissingExtraError, UnsupportedError

try:  # onnx is needed to read graphs, not to evaluate them
    import onnx
    from onnx import helper, numpy_helper
except ImportError:  # pragma: no cover - onnx is part of the export extra
    onnx = None

OPS: dict[str, Callable] = {}


def op(*names: str):
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def _attrs(node) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode() for x in v]
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        out[a.name] = v
    return out


# ---------------------------------------------------------------------------------- elementwise
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Pow": np.power,
           "Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
           "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or}
_UNARY = {"Neg": np.negative, "Exp": np.exp, "Log": np.log, "Sqrt": np.sqrt, "Abs": np.abs,
          "Tanh": np.tanh, "Not": np.logical_not, "Reciprocal": np.reciprocal, "Floor": np.floor,
          "Ceil": np.ceil, "Sign": np.sign}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


for _n, _f in _BINARY.items():
    OPS[_n] = (lambda f: lambda ins, at, ctx: [f(ins[0], ins[1]).astype(np.result_type(ins[0], ins[1])) if f not in
               (np.equal, np.less, np.greater, np.less_equal, np.greater_equal, np.logical_and, np.logical_or)
               else f(ins[0], ins[1])])(_f)
for _n, _f in _UNARY.items():
    OPS[_n] = (lambda f: lambda ins, at, ctx: [np.asarray(f(ins[0])).astype(ins[0].dtype) if f is not np.logical_not
               else f(ins[0])])(_f)


@op("Div")
def _div(ins, at, ctx):
    a, b = ins
    if np.issubdtype(a.dtype, np.integer):
        return [np.trunc(a / b).astype(a.dtype)]
    return [(a / b).astype(a.dtype)]


@op("Sigmoid")
def _sig(ins, at, ctx):
    return [_sigmoid(ins[0]).astype(ins[0].dtype)]


@op("Relu")
def _relu(ins, at, ctx):
    return [np.maximum(ins[0], 0).astype(ins[0].dtype)]


@op("LeakyRelu")
def _lrelu(ins, at, ctx):
    a = at.get("alpha", 0.01)
    return [np.where(ins[0] >= 0, ins[0], a * ins[0]).astype(ins[0].dtype)]


@op("Max", "Min", "Sum", "Mean")
def _variadic(ins, at, ctx):
    f = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add, "Mean": np.add}[ctx["op"]]
    out = ins[0]
    for x in ins[1:]:
        out = f(out, x)
    if ctx["op"] == "Mean":
        out = out / len(ins)
    return [out.astype(ins[0].dtype)]


@op("Where")
def _where(ins, at, ctx):
    return [np.where(ins[0], ins[1], ins[2])]


@op("Clip")
def _clip(ins, at, ctx):
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else at.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else at.get("max")
    return [np.clip(ins[0], lo, hi).astype(ins[0].dtype)]


@op("Identity", "Dropout")
def _identity(ins, at, ctx):
    return [ins[0]] + ([np.ones(ins[0].shape, dtype=bool)] if ctx["op"] == "Dropout" else [])


@op("Cast")
def _cast(ins, at, ctx):
    return [ins[0].astype(helper.tensor_dtype_to_np_dtype(at["to"]))]


@op("CastLike")
def _castlike(ins, at, ctx):
    return [ins[0].astype(ins[1].dtype)]


@op("Constant")
def _constant(ins, at, ctx):
    if "value" in at:
        return [np.asarray(at["value"])]
    for k, dt in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64), ("value_ints", np.int64)):
        if k in at:
            return [np.asarray(at[k], dtype=dt)]
    raise UnsupportedError("Constant", "attribute not supported by the NumPy backend",
                           expected="value, value_float(s), value_int(s)", got=sorted(at))


@op("ConstantOfShape")
def _cos(ins, at, ctx):
    val = np.asarray(at.get("value", np.zeros(1, np.float32))).reshape(-1)
    return [np.full(tuple(int(d) for d in ins[0]), val[0], dtype=val.dtype)]


@op("Shape")
def _shape(ins, at, ctx):
    s = np.asarray(ins[0].shape, dtype=np.int64)
    start, end = at.get("start", 0), at.get("end", None)
    return [s[start:end]]


@op("Size")
def _size(ins, at, ctx):
    return [np.asarray(ins[0].size, dtype=np.int64)]


# ---------------------------------------------------------------------------------- linear algebra
@op("MatMul")
def _matmul(ins, at, ctx):
    return [np.matmul(ins[0], ins[1])]


@op("Gemm")
def _gemm(ins, at, ctx):
    a, b = ins[0], ins[1]
    if at.get("transA", 0):
        a = a.T
    if at.get("transB", 0):
        b = b.T
    y = at.get("alpha", 1.0) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + at.get("beta", 1.0) * ins[2]
    return [y.astype(ins[0].dtype)]


# ---------------------------------------------------------------------------------- shapes
def _axes(ins, at, idx=1):
    if len(ins) > idx and ins[idx] is not None:
        return [int(a) for a in np.asarray(ins[idx]).reshape(-1)]
    if "axes" in at:
        return [int(a) for a in at["axes"]]
    return None


@op("Transpose")
def _transpose(ins, at, ctx):
    return [np.transpose(ins[0], at.get("perm"))]


@op("Reshape")
def _reshape(ins, at, ctx):
    x, shape = ins[0], [int(d) for d in ins[1]]
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


@op("Flatten")
def _flatten(ins, at, ctx):
    x = ins[0]
    ax = at.get("axis", 1) % (x.ndim + 1) if x.ndim else 0
    return [x.reshape(int(np.prod(x.shape[:ax])), -1)]


@op("Squeeze")
def _squeeze(ins, at, ctx):
    axes = _axes(ins, at)
    return [np.squeeze(ins[0], axis=tuple(axes) if axes is not None else None)]


@op("Unsqueeze")
def _unsqueeze(ins, at, ctx):
    x = ins[0]
    axes = sorted(a % (x.ndim + len(_axes(ins, at))) for a in _axes(ins, at))
    for a in axes:
        x = np.expand_dims(x, a)
    return [x]


@op("Concat")
def _concat(ins, at, ctx):
    return [np.concatenate([x for x in ins if x is not None], axis=at["axis"])]


@op("Split")
def _split(ins, at, ctx):
    x, axis = ins[0], at.get("axis", 0)
    split = _axes(ins, {"axes": at["split"]} if "split" in at else {}, 1)
    n = len(ctx["node"].output)
    if split is None:
        if "num_outputs" in at or n:
            return list(np.array_split(x, at.get("num_outputs", n), axis=axis))
    idx = np.cumsum(split)[:-1]
    return list(np.split(x, idx, axis=axis))


@op("Slice")
def _slice(ins, at, ctx):
    x = ins[0]
    if len(ins) > 1:
        starts, ends = [int(v) for v in ins[1]], [int(v) for v in ins[2]]
        axes = [int(v) for v in ins[3]] if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = [int(v) for v in ins[4]] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    else:  # opset < 10
        starts, ends = at["starts"], at["ends"]
        axes = at.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[a % x.ndim] = slice(s, e, st)
    return [x[tuple(sl)]]


def _axis_and_index(x, idx, at) -> tuple[int, np.ndarray]:
    """The ``axis`` attribute made non-negative, and negative indices counted from its end."""
    axis = at.get("axis", 0) % x.ndim
    return axis, np.where(idx < 0, idx + x.shape[axis], idx)


@op("Gather")
def _gather(ins, at, ctx):
    axis, idx = _axis_and_index(*ins, at)
    return [np.take(ins[0], idx, axis=axis)]


@op("GatherElements")
def _gather_el(ins, at, ctx):
    axis, idx = _axis_and_index(*ins, at)
    return [np.take_along_axis(ins[0], idx, axis=axis)]


@op("GatherND")
def _gather_nd(ins, at, ctx):
    data, idx = ins
    b = at.get("batch_dims", 0)
    bshape = data.shape[:b]
    data_r = data.reshape((-1,) + data.shape[b:])
    idx_r = idx.reshape((-1,) + idx.shape[b:])
    outs = []
    for i in range(data_r.shape[0]):
        d, ix = data_r[i], idx_r[i]
        flat = ix.reshape(-1, ix.shape[-1])
        outs.append(np.stack([d[tuple(j)] for j in flat]).reshape(ix.shape[:-1] + d.shape[ix.shape[-1]:]))
    out = np.stack(outs)
    return [out.reshape(bshape + out.shape[1:])]


@op("Expand")
def _expand(ins, at, ctx):
    shape = np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1]))
    return [np.broadcast_to(ins[0], shape).copy()]


@op("Tile")
def _tile(ins, at, ctx):
    return [np.tile(ins[0], [int(r) for r in ins[1]])]


@op("Range")
def _range(ins, at, ctx):
    return [np.arange(ins[0], ins[1], ins[2]).astype(ins[0].dtype)]


# ---------------------------------------------------------------------------------- reductions
def _reduce(f):
    def run(ins, at, ctx):
        axes = _axes(ins, at)
        if axes is None and at.get("noop_with_empty_axes", 0):
            return [ins[0]]
        return [np.asarray(f(ins[0], axis=tuple(axes) if axes is not None else None,
                             keepdims=bool(at.get("keepdims", 1)))).astype(ins[0].dtype)]
    return run


OPS["ReduceSum"] = _reduce(np.sum)
OPS["ReduceMean"] = _reduce(np.mean)
OPS["ReduceMax"] = _reduce(np.max)
OPS["ReduceMin"] = _reduce(np.min)


@op("ArgMax", "ArgMin")
def _argmax(ins, at, ctx):
    x = ins[0]
    axis = at.get("axis", 0)
    f = np.argmax if ctx["op"] == "ArgMax" else np.argmin
    if at.get("select_last_index", 0):
        flipped = np.flip(x, axis=axis)
        r = x.shape[axis] - 1 - f(flipped, axis=axis)
    else:
        r = f(x, axis=axis)
    if at.get("keepdims", 1):
        r = np.expand_dims(r, axis)
    return [r.astype(np.int64)]


@op("Softmax", "LogSoftmax")
def _softmax(ins, at, ctx):
    x = ins[0]
    if ctx["opset"] < 13:
        ax = at.get("axis", 1) % x.ndim
        shape = x.shape
        x2 = x.reshape(int(np.prod(shape[:ax])), -1)
        y = _softmax([x2], {"axis": 1}, {**ctx, "opset": 13})[0]
        return [y.reshape(shape)]
    axis = at.get("axis", -1)
    m = x - np.max(x, axis=axis, keepdims=True)
    if ctx["op"] == "LogSoftmax":
        return [(m - np.log(np.sum(np.exp(m), axis=axis, keepdims=True))).astype(x.dtype)]
    e = np.exp(m)
    return [(e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype)]


# ---------------------------------------------------------------------------------- recurrent
def _reference():
    try:
        from edgelstm import reference
    except ImportError as e:
        raise UnsupportedError("numpy backend", "edgelstm.reference (the NumPy reference cells) cannot be imported",
                               expected="edgelstm/reference.py", got=str(e)) from None
    return reference


def _call_with_supported(fn, *args, **kwargs):
    """Call a reference cell with the node's attributes; an attribute the cell does not take is
    an error, never silently dropped."""
    params = inspect.signature(fn).parameters
    for k, v in kwargs.items():
        if k not in params and v is not None:
            raise UnsupportedError(f"edgelstm.reference.{fn.__name__}", f"attribute {k!r} not supported",
                                   expected=sorted(p for p in params if not p[0].isupper()), got=k)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


@op("LSTM", "GRU", "RNN")
def _recurrent(ins, at, ctx):
    """Delegate to edgelstm.reference.lstm/gru/rnn, which take the node's attributes as keywords
    (and raise UnsupportedError for options they do not implement)."""
    kind = ctx["op"]
    ref = _reference()
    ins = list(ins) + [None] * (8 - len(ins))
    fn = {"LSTM": ref.lstm, "GRU": ref.gru, "RNN": ref.rnn}[kind]
    args = ins[:7] if kind == "LSTM" else ins[:6]
    kwargs = dict(at)
    if kind == "LSTM":
        kwargs["P"] = ins[7]
    outs = _call_with_supported(fn, *args, **kwargs)
    return [np.asarray(o, dtype=ins[0].dtype) for o in outs]


# ---------------------------------------------------------------------------------- the walker
class NumpyGraph:
    """Evaluate an ONNX model with NumPy. ``run(feeds) -> {output name: array}``."""

    def __init__(self, model: "onnx.ModelProto"):
        if onnx is None:  # pragma: no cover
            raise MissingExtraError("the numpy backend", "verify", missing=["onnx"])
        self.model = model
        g = model.graph
        from edgelstm.manifest import DEFAULT_OPSET
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), DEFAULT_OPSET)
        self.initializers = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in self.initializers]
        self.output_names = [o.name for o in g.output]
        for node in g.node:
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedError(node.name or node.op_type, "operator domain not supported by the NumPy backend",
                                       expected="the default ONNX domain", got=f"{node.domain}.{node.op_type}")
            if node.op_type not in OPS:
                raise UnsupportedError(node.name or node.op_type, "operator not supported by the NumPy backend",
                                       expected=sorted(OPS), got=node.op_type)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, Any] = dict(self.initializers)
        for name in self.input_names:
            if name not in feeds:
                raise InputError(name, "missing graph input", expected=self.input_names, got=sorted(feeds))
            env[name] = np.asarray(feeds[name])
        for node in self.model.graph.node:
            ins = [env[n] if n else None for n in node.input]
            ctx = {"op": node.op_type, "node": node, "opset": self.opset}
            outs = OPS[node.op_type](ins, _attrs(node), ctx)
            for name, val in zip(node.output, outs):
                if name:
                    env[name] = np.asarray(val)
        return {n: env[n] for n in self.output_names}
