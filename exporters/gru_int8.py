"""GRU nodes rewritten so that onnxruntime's quantizer gives them int8 weights.

onnxruntime quantizes ``LSTM`` (into ``com.microsoft.DynamicQuantizeLSTM``) but leaves ``GRU`` in
float in every mode. This module rewrites each ``GRU`` node of a graph into an equivalent
formulation made of ordinary operators whose matrix products *are* quantizable:

* the input projection ``X · W^T + b`` for all time steps is one ``MatMul`` outside the
  recurrence (``[T, B, I] x [I, 3H]``);
* the recurrence is a ``Scan`` whose body does one ``MatMul`` with ``R^T`` per step (two when
  ``linear_before_reset=0``) plus the gate arithmetic.

``quantize_dynamic(..., extra_options={"EnableSubgraph": True})`` then turns both products into
``DynamicQuantizeMatMul`` with int8 weights.

Semantics kept exactly as the ONNX ``GRU`` operator defines them (gate order ``z, r, h``,
activations ``Sigmoid``/``Tanh``):

* ``linear_before_reset`` 1 (PyTorch) and 0;
* ``direction`` forward, reverse and bidirectional;
* ``sequence_lens``: steps ``t >= len[b]`` leave the state untouched and write zeros into ``Y``,
  so ``Y_h`` is the state after the last valid step (for the reverse direction, processing
  starts at ``len[b] - 1`` from ``initial_h``);
* optional ``B``, ``sequence_lens`` and ``initial_h`` (zeros when absent);
* ``layout`` 0 (time-major) and 1 (batch-major).

Non-default activations, ``clip`` and ``activation_alpha/beta`` raise
:class:`~edgelstm.errors.UnsupportedError` rather than being ignored. ``W``, ``R`` and ``B``
must be initializers (the quantizer only quantizes constant weights).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

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
    """Collects nodes and initializers under a unique name prefix."""

    def __init__(self, prefix: str, taken: set[str]):
        self.prefix = prefix
        self.taken = taken
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def name(self, base: str) -> str:
        n = f"{self.prefix}/{base}"
        i = 1
        while n in self.taken:
            n = f"{self.prefix}/{base}_{i}"
            i += 1
        self.taken.add(n)
        return n

    def const(self, base: str, value: np.ndarray) -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], base: str, n_out: int = 1, **attrs) -> list[str] | str:
        outs = [self.name(f"{base}_out{i}" if n_out > 1 else base) for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(f"{base}_node"), **attrs))
        return outs if n_out > 1 else outs[0]


def _body(prefix: str, d: int, hidden: int, r_t: np.ndarray, rb_h: np.ndarray, lbr: int,
          masked: bool, dtype) -> onnx.GraphProto:
    """The Scan body of one direction: state ``h_prev [B, H]``, scan inputs ``xw_t [B, 3H]``
    (input projection with every bias that can be folded) and, when masked, ``m_t [B, 1]`` bool."""
    H = hidden
    b = _Builder(f"{prefix}/d{d}/step", set())
    h_prev, xw_t, m_t = b.name("h_prev"), b.name("xw_t"), b.name("m_t")
    split_2h_h = b.const("split_2h_h", np.array([2 * H, H], dtype=np.int64))
    x_zr, x_h = b.op("Split", [xw_t, split_2h_h], "split_x", n_out=2, axis=1)
    if lbr:
        # one product for the three gates: h_prev · R^T  [B, 3H]
        rt = b.const("R_T", r_t)                                   # [H, 3H]
        hr = b.op("MatMul", [h_prev, rt], "h_R")                   # [B, 3H]
        h_zr, h_h = b.op("Split", [hr, split_2h_h], "split_h", n_out=2, axis=1)
        zr = b.op("Sigmoid", [b.op("Add", [x_zr, h_zr], "pre_zr")], "zr")  # [B, 2H]
        z, r = b.op("Split", [zr, b.const("split_h_h", np.array([H, H], dtype=np.int64))], "split_zr",
                    n_out=2, axis=1)
        hh_b = b.op("Add", [h_h, b.const("Rb_h", rb_h)], "h_Rh_b")  # h_prev·Rh^T + Rbh
        n = b.op("Tanh", [b.op("Add", [x_h, b.op("Mul", [r, hh_b], "r_h")], "pre_n")], "n")
    else:
        # z, r from h_prev · [Rz; Rr]^T, then the candidate from (r ⊙ h_prev) · Rh^T
        rt_zr = b.const("R_zr_T", np.ascontiguousarray(r_t[:, : 2 * H]))  # [H, 2H]
        rt_h = b.const("R_h_T", np.ascontiguousarray(r_t[:, 2 * H:]))     # [H, H]
        h_zr = b.op("MatMul", [h_prev, rt_zr], "h_Rzr")
        zr = b.op("Sigmoid", [b.op("Add", [x_zr, h_zr], "pre_zr")], "zr")
        z, r = b.op("Split", [zr, b.const("split_h_h", np.array([H, H], dtype=np.int64))], "split_zr",
                    n_out=2, axis=1)
        rh = b.op("MatMul", [b.op("Mul", [r, h_prev], "r_hprev"), rt_h], "rh_Rh")  # Rbh folded into x_h
        n = b.op("Tanh", [b.op("Add", [x_h, rh], "pre_n")], "n")
    # h_t = (1 - z) ⊙ n + z ⊙ h_prev  (the operator's own form, to stay within rounding of it)
    one = b.const("one", np.array(1.0, dtype=dtype))
    h_new = b.op("Add", [b.op("Mul", [b.op("Sub", [one, z], "one_minus_z"), n], "zn"),
                         b.op("Mul", [z, h_prev], "zh")], "h_new")
    if masked:
        zero = b.const("zero", np.array(0.0, dtype=dtype))
        h_out = b.op("Where", [m_t, h_new, h_prev], "h_out")
        y_t = b.op("Where", [m_t, h_new, zero], "y_t")
    else:
        h_out = b.op("Identity", [h_new], "h_out")
        y_t = b.op("Identity", [h_new], "y_t")
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inputs = [helper.make_tensor_value_info(h_prev, elem, ["batch", H]),
              helper.make_tensor_value_info(xw_t, elem, ["batch", 3 * H])]
    if masked:
        inputs.append(helper.make_tensor_value_info(m_t, TensorProto.BOOL, ["batch", 1]))
    outputs = [helper.make_tensor_value_info(h_out, elem, ["batch", H]),
               helper.make_tensor_value_info(y_t, elem, ["batch", H])]
    return helper.make_graph(b.nodes, f"{prefix}_d{d}_body", inputs, outputs, initializer=b.inits)


def _rewrite_node(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], taken: set[str],
                  index: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], GruRewrite]:
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
    outs = list(node.output) + [""] * (2 - len(node.output))
    y_name, yh_name = outs[:2]

    b = _Builder(label, taken)
    # --- boundary layout: time-major inside ----------------------------------------------
    x = b.op("Transpose", [x_name], "x_tbi", perm=[1, 0, 2]) if layout == 1 else x_name  # [T, B, I]
    h0_all = None
    if h0_name:
        h0_all = b.op("Transpose", [h0_name], "h0_dbh", perm=[1, 0, 2]) if layout == 1 else h0_name  # [D, B, H]
    shape_x = b.op("Shape", [x], "shape_x")
    batch = b.op("Slice", [shape_x, b.const("i1", np.array([1], np.int64)), b.const("i2", np.array([2], np.int64))],
                 "batch")  # [1]
    masked = bool(sl_name)
    mask = None
    if masked:
        t_len = b.op("Slice", [shape_x, b.const("i0", np.array([0], np.int64)),
                               b.const("i1b", np.array([1], np.int64))], "t_len")
        t_scalar = b.op("Squeeze", [t_len, b.const("ax0", np.array([0], np.int64))], "t_scalar")
        steps = b.op("Range", [b.const("zero_i", np.array(0, np.int64)), t_scalar,
                               b.const("one_i", np.array(1, np.int64))], "steps")          # [T]
        steps_col = b.op("Unsqueeze", [steps, b.const("ax1", np.array([1], np.int64))], "steps_col")  # [T, 1]
        lens = b.op("Cast", [sl_name], "lens_i64", to=TensorProto.INT64)                  # [B]
        lens_row = b.op("Unsqueeze", [lens, b.const("ax0b", np.array([0], np.int64))], "lens_row")  # [1, B]
        valid = b.op("Less", [steps_col, lens_row], "valid")                               # [T, B]
        mask = b.op("Unsqueeze", [valid, b.const("ax2", np.array([2], np.int64))], "mask")  # [T, B, 1]
    y_dirs, h_dirs = [], []
    for d in range(D):
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        wb, rb = Bias[d, :three_h], Bias[d, three_h:]
        # biases folded into the input projection: z and r always, h too when linear_before_reset=0
        fold = wb.copy()
        fold[: 2 * H] += rb[: 2 * H]
        if not lbr:
            fold[2 * H:] += rb[2 * H:]
        w_t = b.const(f"d{d}_W_T", np.ascontiguousarray(W[d].T))                        # [I, 3H]
        xw = b.op("MatMul", [x, w_t], f"d{d}_xW")                                         # [T, B, 3H]
        xw = b.op("Add", [xw, b.const(f"d{d}_bias_x", fold.astype(dtype))], f"d{d}_xW_b")
        if h0_all is not None:
            h0 = b.op("Gather", [h0_all, b.const(f"d{d}_idx", np.array(d, np.int64))], f"d{d}_h0", axis=0)  # [B, H]
        else:
            h0 = b.op("ConstantOfShape", [b.op("Concat", [batch, b.const(f"d{d}_H", np.array([H], np.int64))],
                                                f"d{d}_h0_shape", axis=0)],
                      f"d{d}_h0", value=numpy_helper.from_array(np.zeros(1, dtype)))
        body = _body(label, d, H, np.ascontiguousarray(R[d].T), rb[2 * H:].astype(dtype), lbr, masked, dtype)
        scan_in = [xw] + ([mask] if masked else [])
        h_last, y_d = b.op("Scan", [h0] + scan_in, f"d{d}_scan", n_out=2, body=body,
                           num_scan_inputs=len(scan_in),
                           scan_input_directions=[1 if reverse else 0] * len(scan_in),
                           scan_output_directions=[1 if reverse else 0])
        y_dirs.append(b.op("Unsqueeze", [y_d, b.const(f"d{d}_ax1", np.array([1], np.int64))], f"d{d}_y"))  # [T,1,B,H]
        h_dirs.append(b.op("Unsqueeze", [h_last, b.const(f"d{d}_ax0", np.array([0], np.int64))], f"d{d}_h"))  # [1,B,H]
    # --- outputs, back to the node's layout -------------------------------------------------
    if y_name:
        y = y_dirs[0] if D == 1 else b.op("Concat", y_dirs, "y_cat", axis=1)             # [T, D, B, H]
        b.nodes.append(helper.make_node("Transpose" if layout == 1 else "Identity", [y], [y_name],
                                        name=b.name("Y_node"), **({"perm": [2, 0, 1, 3]} if layout == 1 else {})))
    if yh_name:
        yh = h_dirs[0] if D == 1 else b.op("Concat", h_dirs, "h_cat", axis=0)            # [D, B, H]
        b.nodes.append(helper.make_node("Transpose" if layout == 1 else "Identity", [yh], [yh_name],
                                        name=b.name("Y_h_node"), **({"perm": [1, 0, 2]} if layout == 1 else {})))
    return b.nodes, b.inits, GruRewrite(label, D, H, lbr, layout)


def decompose_gru(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[GruRewrite]]:
    """Return a copy of ``model`` with every top-level ``GRU`` node rewritten (see module doc).

    The result computes the same function in float (within float32 rounding); quantize it with
    ``quantize_dynamic(..., extra_options={"EnableSubgraph": True})`` for int8 weights.
    """
    opset = _onnx_opset(model)
    grus = [n for n in model.graph.node if n.op_type == "GRU" and n.domain in ("", "ai.onnx")]
    if not grus:
        return model, []
    if opset < MIN_OPSET:
        raise UnsupportedError("model", "GRU int8 rewrite needs a newer ONNX opset",
                               expected=f">= {MIN_OPSET}", got=opset)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    taken = {t.name for t in g.initializer} | {n.name for n in g.node}
    for n in g.node:
        taken.update(n.input)
        taken.update(n.output)
    taken.update(v.name for v in list(g.input) + list(g.output) + list(g.value_info))
    new_nodes: list[onnx.NodeProto] = []
    rewrites: list[GruRewrite] = []
    used_weights: set[str] = set()
    for i, node in enumerate(g.node):
        if node.op_type == "GRU" and node.domain in ("", "ai.onnx"):
            nodes, new_inits, info = _rewrite_node(node, inits, taken, i)
            new_nodes.extend(nodes)
            g.initializer.extend(new_inits)
            rewrites.append(info)
            used_weights.update(x for x in list(node.input)[1:4] if x)
        else:
            new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    # drop the original W/R/B when nothing else reads them
    still_read = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name not in used_weights or t.name in still_read]
    del g.initializer[:]
    g.initializer.extend(keep)
    # value_info of the old GRU outputs may carry shapes that still hold; leave them.
    for info in rewrites:
        log.info("GRU %s: rewritten as MatMul + Scan (%d direction(s), hidden %d, linear_before_reset=%d)",
                 info.node, info.directions, info.hidden_size, info.linear_before_reset)
    return out, rewrites
