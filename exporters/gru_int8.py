"""GRU nodes rewritten so that onnxruntime's quantizer gives them int8 weights.

onnxruntime quantizes ``LSTM`` (into ``com.microsoft.DynamicQuantizeLSTM``) but leaves ``GRU`` in
float in every mode. This module rewrites each ``GRU`` node of a graph into an equivalent
formulation made of ordinary operators whose matrix products *are* quantizable:

* the input projection ``X · W^T + b`` for all time steps is one ``MatMul`` outside the
  recurrence (``[T, B, I] x [I, 3H]``);
* then ``If(T == 1)``: the then-branch is the cell written once (the streaming step: no loop,
  about 13 kernels per layer), the else-branch a ``Scan`` whose body does one ``MatMul`` with
  ``R^T`` per step (two when ``linear_before_reset=0``) plus the gate arithmetic, with no
  per-step length mask (see :func:`_sequence_branch`);
* the ``T == 1`` test and the ``len > 0`` mask are computed once per graph, shared by every GRU
  over the same steps (:func:`_time_key`) and the same ``sequence_lens``;
* outputs nobody reads are not computed.

``quantize_dynamic(..., extra_options={"EnableSubgraph": True})`` then turns every product into
``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat`` with int8 weights, in both branches; run
:func:`finish_quantized` on its result (node order for ``onnx.checker``). The Scan body keeps
its own copy of ``R`` (see :func:`_local_weights`): onnxruntime pre-packs weights only from the
product's graph or its parent. Figures: benchmarks/README.md.

Semantics kept exactly as the ONNX ``GRU`` operator defines them (gate order ``z, r, h``,
activations ``Sigmoid``/``Tanh``):

* ``linear_before_reset`` 1 (PyTorch) and 0;
* ``direction`` forward, reverse and bidirectional;
* ``sequence_lens``: steps ``t >= len[b]`` write zeros into ``Y`` and ``Y_h`` is the state after
  the last valid step (for the reverse direction, processing starts at ``len[b] - 1`` from
  ``initial_h``); a sequence of length 0 gets zeros in ``Y_h``, as onnxruntime's ``GRU`` gives;
* optional ``B``, ``sequence_lens`` and ``initial_h`` (zeros when absent);
* ``layout`` 0 (time-major) and 1 (batch-major).

Non-default activations, ``clip`` and ``activation_alpha/beta`` raise
:class:`~edgelstm.errors.UnsupportedError` rather than being ignored. ``W``, ``R`` and ``B``
must be initializers (the quantizer only quantizes constant weights).
"""
from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgelstm.errors import UnsupportedError

log = logging.getLogger(__name__)

GATES = 3  # z, r, h
MIN_OPSET = 13  # Unsqueeze/Split take their axes/sizes as inputs from opset 13


@dataclass
class GruRewrite:
    """What :func:`decompose_gru` did to one GRU node."""

    node: str
    directions: int
    hidden_size: int
    linear_before_reset: int
    layout: int


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _onnx_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


class _Builder:
    """Collects the nodes of one graph (top level, a branch or a Scan body); names are unique over
    the whole model (``taken`` is shared), so subgraphs can read top-level tensors by name."""

    def __init__(self, prefix: str, taken: set[str], opset: int, inits: list[onnx.TensorProto] | None = None,
                 cache: dict[tuple, str] | None = None):
        self.prefix = prefix
        self.taken = taken
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits = [] if inits is None else inits
        self.cache = {} if cache is None else cache  # small constants by value

    def sub(self, prefix: str, scope: bool = True) -> "_Builder":
        """A builder for a subgraph (``scope``: its own initializers) or for more top-level nodes.

        Subgraphs keep their small constants (split sizes, axes) as their own initializers:
        onnxruntime's quantizer infers each subgraph's shapes on its own, without the outer
        scope, and an unknown ``split`` input gets even halves there. Weights stay at the top
        level, read from the outer scope (one copy for both branches)."""
        if scope:
            return _Builder(prefix, self.taken, self.opset)
        return _Builder(prefix, self.taken, self.opset, self.inits, self.cache)

    def name(self, base: str) -> str:
        n = f"{self.prefix}/{base}"
        i = 1
        while n in self.taken:
            n = f"{self.prefix}/{base}_{i}"
            i += 1
        self.taken.add(n)
        return n

    def const(self, base: str, value: np.ndarray) -> str:
        value = np.ascontiguousarray(value)
        key = (value.dtype.str, value.shape, value.tobytes()) if value.size <= 16 else None
        if key is not None and key in self.cache:
            return self.cache[key]
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(value, n))
        if key is not None:
            self.cache[key] = n
        return n

    def op(self, op_type: str, inputs: list[str], base: str, n_out: int = 1, out: list[str] | None = None,
           **attrs) -> list[str] | str:
        outs = out or [self.name(f"{base}{i}" if n_out > 1 else base) for i in range(n_out)]
        # a node is named after its first output (unique: ``taken`` holds node and tensor names)
        node_name = outs[0] if outs[0].startswith(f"{self.prefix}/") else self.name(base)
        self.taken.add(node_name)
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, **attrs))
        return outs if len(outs) > 1 else outs[0]

    def dim(self, x: str, axis: int, base: str) -> str:
        """``Shape(x)[axis:axis+1]`` as a ``[1]`` int64 tensor (one kernel from opset 15)."""
        if self.opset >= 15:
            return self.op("Shape", [x], base, start=axis, end=axis + 1)
        shape = self.op("Shape", [x], base + "_shape")
        return self.op("Slice", [shape, self.const(base + "_s", np.array([axis], np.int64)),
                                 self.const(base + "_e", np.array([axis + 1], np.int64))], base)


@dataclass
class _Direction:
    """Top-level names of one direction's weights (all initializers, read from the subgraphs)."""

    xw: str                 # X · W^T + folded biases, [T, B, 3H]
    h0: str                 # initial state, [1, B, H]
    r_t: str = ""           # lbr=1: R^T [H, 3H]
    rb: str = ""            # lbr=1: [0, 0, Rb_h] added right after h · R^T ("" when all zero)
    r_zr_t: str = ""        # lbr=0: [Rz; Rr]^T [H, 2H]
    r_h_t: str = ""         # lbr=0: Rh^T [H, H]
    reverse: bool = False
    arrays: dict = field(default_factory=dict)  # the recurrent weights' values, by field name


def _local_weights(b: _Builder, w: _Direction) -> _Direction:
    """``w`` with its recurrent weights stored in ``b``'s own graph (the Scan body).

    onnxruntime pre-packs a quantized product's weight only when the weight is an initializer
    of the product's graph or of its parent graph. The body of a ``Scan`` nested in an ``If``
    is two levels below the top level: read from there, ``h · R^T`` in int8 ran as slowly as
    fp32 (8.4 vs 3.9 us per step at hidden 256). So the body keeps a copy of ``R`` (the
    one-step branch, one level down, reads the top-level one): int8 files grow by one ``R`` per
    direction and layer."""
    local = replace(w)
    for fld, value in w.arrays.items():
        setattr(local, fld, b.const(f"{fld}_local", value))
    return local


@dataclass
class _Shared:
    """Top-level constants and tensors shared by every GRU node of the graph (computed once)."""

    is_one_step: dict[object, str]   # time key -> [1] bool, T == 1
    valid: dict[str, str]            # sequence_lens name -> [B, 1] bool, len > 0


def _cell(b: _Builder, w: _Direction, xw: str, h_prev: str, H: int,
          lbr: int) -> str:
    """One GRU step in the operator's own formula (gates z, r, h; Sigmoid, Tanh), on ``xw`` =
    ``x_t · W^T + biases [.., 3H]`` and ``h_prev [.., H]`` (any matching leading dims)."""
    s2 = b.const(f"split_{2 * H}_{H}", np.array([2 * H, H], np.int64))
    s1 = b.const(f"split_{H}_{H}", np.array([H, H], np.int64))
    x_zr, x_h = b.op("Split", [xw, s2], "split_x", n_out=2, axis=-1)
    if lbr:
        hr = b.op("MatMul", [h_prev, w.r_t], "h_R")                          # [.., 3H]
        if w.rb:  # onnxruntime folds this Add into the quantized product's bias
            hr = b.op("Add", [hr, w.rb], "h_R_b")
        h_zr, h_h = b.op("Split", [hr, s2], "split_h", n_out=2, axis=-1)
        zr = b.op("Sigmoid", [b.op("Add", [x_zr, h_zr], "pre_zr")], "zr")
        z, r = b.op("Split", [zr, s1], "split_zr", n_out=2, axis=-1)
        n = b.op("Tanh", [b.op("Add", [x_h, b.op("Mul", [r, h_h], "r_h")], "pre_n")], "n")
    else:
        h_zr = b.op("MatMul", [h_prev, w.r_zr_t], "h_Rzr")                   # [.., 2H]
        zr = b.op("Sigmoid", [b.op("Add", [x_zr, h_zr], "pre_zr")], "zr")
        z, r = b.op("Split", [zr, s1], "split_zr", n_out=2, axis=-1)
        rh = b.op("MatMul", [b.op("Mul", [r, h_prev], "r_hprev"), w.r_h_t], "rh_Rh")  # Rb_h folded into x_h
        n = b.op("Tanh", [b.op("Add", [x_h, rh], "pre_n")], "n")
    # h_t = (1 - z) ⊙ n + z ⊙ h_prev, written n + z ⊙ (h_prev - n): one kernel less
    return b.op("Add", [n, b.op("Mul", [z, b.op("Sub", [h_prev, n], "h_minus_n")], "z_d")], "h_new")


def _vi(name: str, elem: int, dims: list) -> onnx.ValueInfoProto:
    """Typed value info; ``None`` dims get a symbol of their own (batch and time vary)."""
    return helper.make_tensor_value_info(name, elem, [f"{name}_{i}" if d is None else d for i, d in enumerate(dims)])


def _const_ints(name: str, consts: dict[str, np.ndarray]) -> list[int] | None:
    v = consts.get(name)
    return None if v is None else [int(i) for i in np.asarray(v).reshape(-1)]


def _time_key(name: str, producers: dict[str, onnx.NodeProto], consts: dict[str, np.ndarray]) -> str:
    """The tensor whose axis 0 is ``name``'s axis 0 (time), following ops that keep that axis:
    a layout-0 GRU's ``Y`` (same T as its ``X``), ``Identity``, ``Squeeze`` of other axes,
    ``Transpose`` keeping axis 0 and ``Reshape`` copying axis 0 (shape ``[0, ...]``). Two GRU nodes with one key run over the same number of steps."""
    for _ in range(1000):
        node = producers.get(name)
        if node is None:
            return name
        if node.op_type == "Identity":
            name = node.input[0]
        elif node.op_type == "GRU" and node.output[0] == name and int(_attr(node, "layout", 0)) == 0:
            name = node.input[0]
        elif node.op_type == "Transpose" and list(_attr(node, "perm", [0]))[:1] == [0]:
            name = node.input[0]
        elif node.op_type == "Reshape" and not _attr(node, "allowzero", 0) and \
                (_const_ints(node.input[1], consts) or [None])[0] == 0:  # 0: copy axis 0
            name = node.input[0]
        elif node.op_type == "Squeeze":
            axes = _attr(node, "axes")
            axes = list(axes) if axes is not None else (
                _const_ints(node.input[1], consts) if len(node.input) > 1 and node.input[1] else None)
            if not axes or any(a <= 0 for a in axes):  # unknown, all, axis 0 or negative (rank unknown)
                return name
            name = node.input[0]
        else:
            return name
    return name


def _weights(b: _Builder, d: int, W: np.ndarray, R: np.ndarray, Bias: np.ndarray, H: int, lbr: int,
             x: str, h0: str, reverse: bool) -> _Direction:
    three_h = 3 * H
    wb, rb = Bias[d, :three_h], Bias[d, three_h:]
    # biases folded into the input projection: z and r always, h too when linear_before_reset=0
    fold = wb.copy()
    fold[: 2 * H] += rb[: 2 * H]
    if not lbr:
        fold[2 * H:] += rb[2 * H:]
    xw = b.op("MatMul", [x, b.const(f"d{d}_W_T", W[d].T)], f"d{d}_xW")                     # [T, B, 3H]
    xw = b.op("Add", [xw, b.const(f"d{d}_bias_x", fold.astype(W.dtype))], f"d{d}_xW_b")
    w = _Direction(xw=xw, h0=h0, reverse=reverse)
    if lbr:
        w.arrays["r_t"] = np.ascontiguousarray(R[d].T)                                       # [H, 3H]
        if np.any(rb[2 * H:]):
            w.arrays["rb"] = np.concatenate([np.zeros(2 * H, W.dtype), rb[2 * H:]]).astype(W.dtype)
    else:
        w.arrays["r_zr_t"] = np.ascontiguousarray(R[d][: 2 * H].T)                          # [H, 2H]
        w.arrays["r_h_t"] = np.ascontiguousarray(R[d][2 * H:].T)                            # [H, H]
    for fld, value in w.arrays.items():
        setattr(w, fld, b.const(f"d{d}_{fld}", value))
    return w


def _one_step_branch(top: _Builder, shared: _Shared, dirs: list[_Direction], H: int, lbr: int,
                     valid: str | None, want_y: bool, want_yh: bool, elem: int, dtype) -> onnx.GraphProto:
    """T == 1: the cell once per direction on ``[1, B, *]`` tensors (direction does not matter for
    one step). A sequence of length 0 gets zeros in ``Y`` and ``Y_h``, as onnxruntime's ``GRU``."""
    b = top.sub(f"{top.prefix}/t1")
    outs = []
    for d, w in enumerate(dirs):
        h_new = _cell(b, w, w.xw, w.h0, H, lbr)                               # [1, B, H]
        if valid is not None:
            h_new = b.op("Where", [valid, h_new, b.const(f"d{d}_zero", np.zeros(1, dtype))], f"d{d}_h_len")
        outs.append(h_new)
    yh = outs[0] if len(outs) == 1 else b.op("Concat", outs, "h_cat", axis=0)             # [D, B, H]
    g_out = []
    if want_y:
        y = b.op("Unsqueeze", [yh, b.const("ax0", np.array([0], np.int64))], "y")       # [1, D, B, H]
        g_out.append(_vi(y, elem, [None, len(dirs), None, H]))
    if want_yh:
        g_out.append(_vi(yh, elem, [len(dirs), None, H]))
    return helper.make_graph(b.nodes, f"{top.prefix}_one_step", [], g_out, initializer=b.inits)


def _scan_body(top: _Builder, shared: _Shared, w: _Direction, d: int, H: int, lbr: int, want_seq: bool,
               elem: int) -> onnx.GraphProto:
    """One step of the Scan: state ``h_prev [B, H]``, scan input ``xw_t [B, 3H]``; outputs the new
    state and, when ``want_seq``, the same value as the scan output."""
    b = top.sub(f"{top.prefix}/b{d}")
    h_prev, xw_t = b.name("h_prev"), b.name("xw_t")
    h_new = _cell(b, _local_weights(b, w), xw_t, h_prev, H, lbr)
    outs = [_vi(h_new, elem, [None, H])]
    if want_seq:  # a graph output may not appear twice (onnxruntime then loses the state)
        outs.append(_vi(b.op("Identity", [h_new], "y_t"), elem, [None, H]))
    return helper.make_graph(b.nodes, f"{top.prefix}_d{d}_body", [_vi(h_prev, elem, [None, H]), _vi(xw_t, elem, [None, 3 * H])],
                             outs, initializer=b.inits)


def _sequence_branch(top: _Builder, shared: _Shared, dirs: list[_Direction], H: int, lbr: int,
                     lens: str | None, valid: str | None, wants: tuple[bool, bool], elem: int,
                     dtype) -> onnx.GraphProto:
    """Any T: a ``Scan`` per direction. With ``sequence_lens`` the Scan runs unmasked (no
    per-step mask): the reverse direction reads each sequence's first ``len`` steps reversed
    (``ReverseSequence``), ``Y_h`` is the output at step ``len - 1`` (zeros for ``len = 0``) and
    ``Y`` is zeroed beyond ``len``. ``wants``: whether ``Y`` and ``Y_h`` are read."""
    want_y, want_yh = wants
    b = top.sub(f"{top.prefix}/seq")
    ax0 = b.const("ax0", np.array([0], np.int64))
    ys, yhs = [], []
    if lens is not None:
        lens64 = b.op("Cast", [lens], "lens_i64", to=TensorProto.INT64)                     # [B]
        last = b.op("Max", [b.op("Sub", [lens64, b.const("one_i", np.array(1, np.int64))], "len_m1"),
                            b.const("zero_i", np.array(0, np.int64))], "last")        # [B], >= 0
        last = b.op("Unsqueeze", [last, b.const("ax02", np.array([0, 2], np.int64))], "last_1b1")  # [1, B, 1]
        if want_y:
            t_len = b.op("Squeeze", [b.dim(dirs[0].xw, 0, "t_len"), ax0], "t_scalar")
            steps = b.op("Range", [b.const("zero_i", np.array(0, np.int64)), t_len,
                                   b.const("one_i", np.array(1, np.int64))], "steps")  # [T]
            mask = b.op("Less", [b.op("Unsqueeze", [steps, b.const("ax1", np.array([1], np.int64))], "steps_col"),
                                 b.op("Unsqueeze", [lens64, ax0], "lens_row")], "valid_tb")  # [T, B]
            mask = b.op("Unsqueeze", [mask, b.const("ax2", np.array([2], np.int64))], "mask")  # [T, B, 1]
    for d, w in enumerate(dirs):
        h0 = b.op("Squeeze", [w.h0, ax0], f"d{d}_h0")                                       # [B, H]
        if lens is None:
            body = _scan_body(top, shared, w, d, H, lbr, want_y, elem)
            flag = [1 if w.reverse else 0]
            res = b.op("Scan", [h0, w.xw], f"d{d}_scan", n_out=1 + want_y, body=body, num_scan_inputs=1,
                       scan_input_directions=flag, **({"scan_output_directions": flag} if want_y else {}))
            h_last, y_d = (res if want_y else (res, None))
            yhs.append(b.op("Unsqueeze", [h_last, ax0], f"d{d}_h"))                          # [1, B, H]
        else:
            xw = w.xw
            if w.reverse:
                xw = b.op("ReverseSequence", [xw, lens64], f"d{d}_x_rev", batch_axis=1, time_axis=0)
            body = _scan_body(top, shared, w, d, H, lbr, True, elem)
            _, y_d = b.op("Scan", [h0, xw], f"d{d}_scan", n_out=2, body=body, num_scan_inputs=1)  # [T, B, H]
            idx = b.op("Expand", [last, b.op("Shape", [b.op("Unsqueeze", [h0, ax0], f"d{d}_h0_1bh")], f"d{d}_shape_1bh")],
                       f"d{d}_last_1bh")                                                      # [1, B, H]
            h_last = b.op("GatherElements", [y_d, idx], f"d{d}_h_last", axis=0)              # [1, B, H]
            yhs.append(b.op("Where", [valid, h_last, b.const(f"d{d}_zero", np.zeros(1, dtype))], f"d{d}_h"))
            if want_y:
                if w.reverse:
                    y_d = b.op("ReverseSequence", [y_d, lens64], f"d{d}_y_rev", batch_axis=1, time_axis=0)
                y_d = b.op("Where", [mask, y_d, b.const(f"d{d}_zero", np.zeros(1, dtype))], f"d{d}_y_len")
        if want_y:
            ys.append(b.op("Unsqueeze", [y_d, b.const("ax1", np.array([1], np.int64))], f"d{d}_y"))  # [T, 1, B, H]
    g_out = []
    if want_y:
        y = ys[0] if len(ys) == 1 else b.op("Concat", ys, "y_cat", axis=1)                 # [T, D, B, H]
        g_out.append(_vi(y, elem, [None, len(dirs), None, H]))
    if want_yh:
        yh = yhs[0] if len(yhs) == 1 else b.op("Concat", yhs, "h_cat", axis=0)             # [D, B, H]
        g_out.append(_vi(yh, elem, [len(dirs), None, H]))
    return helper.make_graph(b.nodes, f"{top.prefix}_sequence", [], g_out, initializer=b.inits)


def _rewrite_node(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], top: _Builder, shared: _Shared,
                  index: int, time_key: object, used: set[str]) -> GruRewrite:
    label = node.name or f"GRU#{index}"
    acts = _attr(node, "activations")
    if acts is not None:
        acts = [a.decode() if isinstance(a, bytes) else a for a in acts]
        n_dir = 2 if (_attr(node, "direction", b"forward") in (b"bidirectional", "bidirectional")) else 1
        if [a.lower() for a in acts] != ["sigmoid", "tanh"] * n_dir:
            raise UnsupportedError(label, "GRU with non-default activations cannot be rewritten for int8",
                                   expected="Sigmoid, Tanh", got=acts)
    for bad in ("clip", "activation_alpha", "activation_beta"):
        if _attr(node, bad) is not None:
            raise UnsupportedError(label, f"GRU attribute {bad!r} is not supported by the int8 rewrite",
                                   expected="no such attribute", got=_attr(node, bad))
    direction = _attr(node, "direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    lbr = int(_attr(node, "linear_before_reset", 0))
    layout = int(_attr(node, "layout", 0))
    ins = list(node.input) + [""] * (6 - len(node.input))
    x_name, w_name, r_name, b_name, sl_name, h0_name = ins[:6]
    for role, name in (("W", w_name), ("R", r_name)) + ((("B", b_name),) if b_name else ()):
        if name not in inits:
            raise UnsupportedError(label, f"GRU input {role} ({name!r}) is not a constant initializer; "
                                   "int8 weights need constant weights", expected="an initializer",
                                   got="a computed tensor")
    W = numpy_helper.to_array(inits[w_name])  # [D, 3H, I]
    R = numpy_helper.to_array(inits[r_name])  # [D, 3H, H]
    D, three_h, _ = W.shape
    H = three_h // GATES
    hs = _attr(node, "hidden_size")
    if hs is not None and int(hs) != H:
        raise UnsupportedError(label, "GRU hidden_size disagrees with W", expected=H, got=hs)
    Bias = (numpy_helper.to_array(inits[b_name]) if b_name
            else np.zeros((D, 2 * three_h), dtype=W.dtype))  # [D, 6H] = [Wb; Rb]
    dtype = W.dtype
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    outs = list(node.output) + [""] * (2 - len(node.output))
    y_name, yh_name = (n if n in used else "" for n in outs[:2])  # outputs nobody reads are not computed
    if not (y_name or yh_name):
        return GruRewrite(label, D, H, lbr, layout)

    b = top.sub(label, scope=False)
    # --- boundary layout: time-major inside ----------------------------------------------
    x = b.op("Transpose", [x_name], "x_tbi", perm=[1, 0, 2]) if layout == 1 else x_name   # [T, B, I]
    if h0_name:
        h0_all = b.op("Transpose", [h0_name], "h0_dbh", perm=[1, 0, 2]) if layout == 1 else h0_name  # [D, B, H]
        h0s = [h0_all] if D == 1 else b.op("Split", [h0_all, b.const("split_1_1", np.ones(2, np.int64))], "h0",
                                           n_out=2, axis=0)                               # [1, B, H] each
    else:
        shape = b.op("Concat", [b.const("one_l", np.array([1], np.int64)), b.dim(x, 1, "batch"),
                                b.const("hidden", np.array([H], np.int64))], "h0_shape", axis=0)
        h0s = [b.op("ConstantOfShape", [shape], "h0", value=numpy_helper.from_array(np.zeros(1, dtype)))] * D
    # --- shared by every GRU over the same steps / lengths: T == 1, len > 0 -----------------
    if time_key not in shared.is_one_step:
        shared.is_one_step[time_key] = b.op("Equal", [b.dim(x, 0, "t_len"), b.const("one_l", np.array([1], np.int64))],
                                            "is_one_step")                                # [1] bool
    valid = None
    if sl_name:
        if sl_name not in shared.valid:
            pos = b.op("Greater", [sl_name, b.const("zero_len", np.zeros(1, np.int32))], "len_pos")  # [B]
            shared.valid[sl_name] = b.op("Unsqueeze", [pos, b.const("ax1", np.array([1], np.int64))], "valid")
        valid = shared.valid[sl_name]                                                      # [B, 1]
    dirs = [_weights(b, d, W, R, Bias, H, lbr, x, h0s[d],
                     direction == "reverse" or (direction == "bidirectional" and d == 1)) for d in range(D)]
    want_y, want_yh = bool(y_name), bool(yh_name)
    then_g = _one_step_branch(b, shared, dirs, H, lbr, valid, want_y, want_yh, elem, dtype)
    else_g = _sequence_branch(b, shared, dirs, H, lbr, sl_name or None, valid, (want_y, want_yh), elem, dtype)
    if_out = []
    if want_y:
        if_out.append(y_name if layout == 0 else b.name("y_tdbh"))
    if want_yh:
        if_out.append(yh_name if layout == 0 else b.name("yh_dbh"))
    b.op("If", [shared.is_one_step[time_key]], "one_step_or_scan", out=if_out, then_branch=then_g,
         else_branch=else_g)
    # --- outputs, back to the node's layout -------------------------------------------------
    if layout == 1:
        if want_y:
            b.op("Transpose", [if_out[0]], "Y", out=[y_name], perm=[2, 0, 1, 3])
        if want_yh:
            b.op("Transpose", [if_out[-1]], "Y_h", out=[yh_name], perm=[1, 0, 2])
    top.nodes.extend(b.nodes)
    return GruRewrite(label, D, H, lbr, layout)


def _consumed(graph: onnx.GraphProto, out: set[str]) -> set[str]:
    """Every tensor name read by a node of ``graph`` or its subgraphs, or output by ``graph``."""
    out.update(o.name for o in graph.output)
    for n in graph.node:
        out.update(n.input)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _consumed(a.g, out)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    _consumed(g, out)
    return out


def decompose_gru(model: onnx.ModelProto, only: set[str] | None = None) -> tuple[onnx.ModelProto, list[GruRewrite]]:
    """Return a copy of ``model`` with every top-level ``GRU`` node (those named in ``only``, when
    given) rewritten (see module doc).

    The result computes the same function in float (within float32 rounding); quantize it with
    ``quantize_dynamic(..., extra_options={"EnableSubgraph": True})`` for int8 weights.
    """
    opset = _onnx_opset(model)
    grus = [n for n in model.graph.node if n.op_type == "GRU" and n.domain in ("", "ai.onnx")
            and (only is None or n.name in only)]
    if not grus:
        return model, []
    if opset < MIN_OPSET:
        raise UnsupportedError("model", "GRU int8 rewrite needs a newer ONNX opset",
                               expected=f">= {MIN_OPSET}", got=opset)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    taken = {t.name for t in g.initializer}

    def collect(graph: onnx.GraphProto) -> None:
        for n in graph.node:
            taken.add(n.name)
            taken.update(n.input)
            taken.update(n.output)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    collect(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        collect(sg)
        taken.update(v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info))
        taken.update(t.name for t in graph.initializer)
    collect(g)
    used = _consumed(g, set())
    producers = {o: n for n in g.node for o in n.output}
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer if len(t.dims) <= 1}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    new_inits: list[onnx.TensorProto] = []
    cache: dict[tuple, str] = {}
    shared = _Shared({}, {})
    new_nodes: list[onnx.NodeProto] = []
    rewrites: list[GruRewrite] = []
    used_weights: set[str] = set()
    for i, node in enumerate(g.node):
        if node.op_type == "GRU" and node.domain in ("", "ai.onnx") and (only is None or node.name in only):
            top = _Builder("", taken, opset, new_inits, cache)  # shared constants over all nodes
            key = ((_time_key(node.input[0], producers, consts), 0) if int(_attr(node, "layout", 0)) == 0
                   else (node.input[0], 1))
            rewrites.append(_rewrite_node(node, inits, top, shared, i, key, used))
            new_nodes.extend(top.nodes)
            used_weights.update(x for x in list(node.input)[1:4] if x)
        else:
            new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    # drop the original W/R/B when nothing else reads them
    still_read = _consumed(g, set())
    keep = [t for t in g.initializer if t.name not in used_weights or t.name in still_read]
    del g.initializer[:]
    g.initializer.extend(keep)
    # value_info of the old GRU outputs may carry shapes that still hold; leave them.
    for info in rewrites:
        log.info("GRU %s: rewritten as MatMul + If(T == 1: one cell, else Scan) (%d direction(s), hidden %d, "
                 "linear_before_reset=%d)", info.node, info.directions, info.hidden_size, info.linear_before_reset)
    return out, rewrites


def finish_quantized(model: onnx.ModelProto) -> onnx.ModelProto:
    """Tidy a quantized rewrite (in place; returns ``model``): sort the top-level nodes so that
    each comes after every node whose output it reads, counting the names its subgraphs read
    from the outer scope, and drop the subgraphs' ``value_info``.

    onnxruntime's quantizer re-sorts the graph by explicit inputs only, so the ``If`` of the
    rewrite (whose only explicit input is ``T == 1``) can land before the products its branches
    read: onnxruntime still runs such a file, ``onnx.checker`` rejects it. The quantizer also
    stores the shapes it inferred inside each subgraph (about 3 KB per GRU layer, redundant:
    onnxruntime infers them again at load). The sort is stable: nodes already in order keep it."""
    _drop_subgraph_value_info(model.graph)
    g = model.graph
    nodes = list(g.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps: list[set[int]] = []
    for i, n in enumerate(nodes):
        names = set(n.input)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names |= _consumed(a.g, set())
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    names |= _consumed(sg, set())
        deps.append({producer[x] for x in names if x in producer and producer[x] != i})
    users: list[list[int]] = [[] for _ in nodes]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    waiting = [len(ds) for ds in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):  # a cycle: leave the graph as it is for the checker to report
        return model
    del g.node[:]
    g.node.extend(nodes[i] for i in order)
    return model


def _drop_subgraph_value_info(graph: onnx.GraphProto, top: bool = True) -> None:
    if not top:
        del graph.value_info[:]
    for n in graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _drop_subgraph_value_info(a.g, False)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    _drop_subgraph_value_info(sg, False)
