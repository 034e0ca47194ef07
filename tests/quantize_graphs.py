"""Tiny float ONNX models for the quantization tests (built with onnx.helper, no torch).

Weights follow PyTorch's default init, U(-1/sqrt(H), 1/sqrt(H)), so the recurrences are in the
regime trained models live in (saturating random weights would make any int8 error explode over
time and say nothing about the quantizer). Names follow docs/DESIGN.md: ``x``, ``lengths``,
``h_in``/``c_in`` -> ``logits``/``y``, ``h_out``/``c_out``; a manifest is attached.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgelstm.manifest import MANIFEST_KEY, Manifest, StateSpec, TensorSpec

OPSET = 17


def build(cell: str = "lstm", *, layers: int = 1, directions: int = 1, input_size: int = 6, hidden: int = 16,
          classes: int = 4, task: str = "classify", seed: int = 0, lbr: int = 1, manifest: bool = True,
          rnn_op: str | None = None) -> onnx.ModelProto:
    """``cell``: lstm | peephole | gru | rnn. ``task``: classify (logits from the last valid step,
    gathered with ``lengths``) or label (per-step ``y``)."""
    rng = np.random.default_rng(seed)
    L, F, H, K, D = layers, input_size, hidden, classes, directions
    gates = {"lstm": 4, "peephole": 4, "gru": 3, "rnn": 1}[cell]
    op = {"lstm": "LSTM", "peephole": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell]
    s = 1.0 / np.sqrt(H)

    def u(*shape):
        return rng.uniform(-s, s, shape).astype(np.float32)

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    nodes, inits = [], []
    nodes.append(helper.make_node("Transpose", ["x"], ["x_tbf"], perm=[1, 0, 2], name="to_time_major"))
    init("axis0", np.array([0], np.int64))
    layer_in, in_size, h_outs, c_outs = "x_tbf", F, [], []
    for layer in range(L):
        p = f"l{layer}_"
        init(p + "start", np.array([layer * D], np.int64))
        init(p + "end", np.array([(layer + 1) * D], np.int64))
        nodes.append(helper.make_node("Slice", ["h_in", p + "start", p + "end", "axis0"], [p + "h0"], name=p + "slice_h"))
        ins = [layer_in, init(p + "W", u(D, gates * H, in_size)), init(p + "R", u(D, gates * H, H)),
               init(p + "B", u(D, 2 * gates * H)), "lengths", p + "h0"]
        outs = [p + "Y", p + "Yh"]
        attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
        if cell == "gru":
            attrs["linear_before_reset"] = lbr
        if op == "LSTM":
            nodes.append(helper.make_node("Slice", ["c_in", p + "start", p + "end", "axis0"], [p + "c0"], name=p + "slice_c"))
            ins.append(p + "c0")
            if cell == "peephole":
                ins.append(init(p + "P", u(D, 3 * H)))
            outs.append(p + "Yc")
            c_outs.append(p + "Yc")
        nodes.append(helper.make_node(op, ins, outs, name=f"{op.lower()}{layer}", **attrs))
        h_outs.append(p + "Yh")
        # Y [T, D, B, H] -> [T, B, D*H]
        nodes.append(helper.make_node("Transpose", [p + "Y"], [p + "Yt"], perm=[0, 2, 1, 3], name=p + "tr"))
        init(p + "shape", np.array([0, 0, D * H], np.int64))
        nodes.append(helper.make_node("Reshape", [p + "Yt", p + "shape"], [p + "out"], name=p + "flat"))
        layer_in, in_size = p + "out", D * H
    nodes.append(helper.make_node("Concat", h_outs, ["h_out"], axis=0, name="cat_h"))
    if c_outs:
        nodes.append(helper.make_node("Concat", c_outs, ["c_out"], axis=0, name="cat_c"))
    init("head_W", u(D * H, K))
    init("head_b", u(K))
    if task == "classify":
        # last valid step of each sequence: seq[lengths-1, b]  (batch-major first)
        nodes += [
            helper.make_node("Transpose", [layer_in], ["seq_btf"], perm=[1, 0, 2], name="to_batch_major"),
            helper.make_node("Cast", ["lengths"], ["len64"], to=TensorProto.INT64, name="len_cast"),
            helper.make_node("Sub", ["len64", init("one", np.array(1, np.int64))], ["last"], name="last_idx"),
            helper.make_node("Reshape", ["last", init("idx_shape", np.array([-1, 1, 1], np.int64))], ["last3"], name="idx3"),
            helper.make_node("Shape", ["seq_btf"], ["seq_shape"], name="seq_shape"),
            helper.make_node("Slice", ["seq_shape", init("s0", np.array([0], np.int64)), init("s1", np.array([1], np.int64))],
                             ["b_dim"], name="b_dim"),
            helper.make_node("Concat", ["b_dim", init("one1", np.array([1], np.int64)),
                                        init("dh", np.array([D * H], np.int64))], ["idx_full"], axis=0, name="idx_full"),
            helper.make_node("Expand", ["last3", "idx_full"], ["idx_exp"], name="idx_exp"),
            helper.make_node("GatherElements", ["seq_btf", "idx_exp"], ["last_h3"], axis=1, name="gather_last"),
            helper.make_node("Squeeze", ["last_h3", init("ax1", np.array([1], np.int64))], ["last_h"], name="squeeze_last"),
            helper.make_node("MatMul", ["last_h", "head_W"], ["head_mm"], name="head"),
            helper.make_node("Add", ["head_mm", "head_b"], ["logits"], name="head_bias"),
        ]
        out_name, out_shape = "logits", ["batch", K]
    else:
        nodes += [helper.make_node("Transpose", [layer_in], ["seq_btf"], perm=[1, 0, 2], name="to_batch_major"),
                  helper.make_node("MatMul", ["seq_btf", "head_W"], ["head_mm"], name="head"),
                  helper.make_node("Add", ["head_mm", "head_b"], ["y"], name="head_bias")]
        out_name, out_shape = "y", ["batch", "time", K]
    lstm_like = op == "LSTM"
    state = [L * D, "batch", H]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", F]),
              helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]),
              helper.make_tensor_value_info("h_in", TensorProto.FLOAT, state)]
    outputs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape),
               helper.make_tensor_value_info("h_out", TensorProto.FLOAT, state)]
    if lstm_like:
        inputs.append(helper.make_tensor_value_info("c_in", TensorProto.FLOAT, state))
        outputs.append(helper.make_tensor_value_info("c_out", TensorProto.FLOAT, state))
    graph = helper.make_graph(nodes, f"tiny_{cell}", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgelstm-tests")
    if manifest:
        states = [StateSpec("h_in", "h_out", state)] + ([StateSpec("c_in", "c_out", state)] if lstm_like else [])
        m = Manifest(
            family={"lstm": "lstm", "peephole": "peephole", "gru": "gru", "rnn": "rnn"}[cell], task=task, layers=L,
            hidden_size=H, directions=D,
            inputs=[TensorSpec(i.name, "int32" if i.name == "lengths" else "float32",
                               [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in inputs],
            outputs=[TensorSpec(o.name, "float32", [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
                     for o in outputs],
            states=states, streamable=D == 1, labels=[f"c{i}" for i in range(K)] if task == "classify" else None)
        entry = model.metadata_props.add()
        entry.key, entry.value = MANIFEST_KEY, m.to_json()
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    from graphs import save as save_sealed

    return save_sealed(model, path)


def data(model: onnx.ModelProto, n: int = 48, t: int = 12, seed: int = 1, labels: bool = True) -> dict[str, np.ndarray]:
    """Inputs for ``model`` (x, lengths) and labels ``y`` = the float model's own prediction with
    20% of them flipped, so float accuracy is about 0.8 and a quantized model that changes
    predictions shows it."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    F = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    x = rng.standard_normal((n, t, F)).astype(np.float32)
    lengths = rng.integers(t // 2, t + 1, size=n).astype(np.int32)
    out = {"x": x, "lengths": lengths}
    if labels:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = dict(out)
        for i in sess.get_inputs():
            if i.name not in feed:
                feed[i.name] = np.zeros((i.shape[0], n, i.shape[2]), np.float32)
        pred = sess.run(None, feed)[0].argmax(-1)
        flip = rng.random(pred.shape) < 0.2
        out["y"] = np.where(flip, (pred + 1) % model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value, pred)
    return out
