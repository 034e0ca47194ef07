"""Small ONNX graphs built with ``onnx.helper`` for tests and benchmarks.

They follow the naming contract of docs/DESIGN.md (``x``, ``lengths``, ``h_in``/``c_in`` ->
``logits``/``y``, ``h_out``/``c_out``; seq2seq encoder / decoder_step pairs) and carry an
:class:`edgelstm.manifest.Manifest` in ``metadata_props``, so the runtime, the verifier and the
benchmarks can be tested without waiting for the exporter. Tests may import onnx; the runtime
never does.

Usage::

    spec = RecurrentSpec(cell="lstm", layers=2, input_size=8, hidden=16, classes=3)
    path = save(build_recurrent(spec), tmp_path / "m.onnx")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgelstm.manifest import MANIFEST_KEY, Manifest, Normalization, StateSpec, TensorSpec
from edgelstm.runtime.integrity import seal_proto

OPSET = 17


@dataclass
class RecurrentSpec:
    """A fused-recurrent-op model: ``layers`` LSTM/GRU nodes then a linear head."""

    cell: str = "lstm"            # "lstm" | "gru" | "peephole"
    layers: int = 1               # stacked recurrent nodes
    input_size: int = 4           # features per step
    hidden: int = 8               # hidden units per direction
    classes: int = 3              # head outputs (classes or regression targets)
    directions: int = 1           # 2 = bidirectional (not streamable)
    task: str = "classify"        # "classify" -> logits [b, K]; "label"/"regress" -> y [b, t, K]
    seed: int = 0                 # weights are N(0, 0.5) from this seed
    labels: list[str] | None = None
    normalization: tuple[list[float], list[float]] | None = None
    manifest: bool = True         # False: a bare graph without metadata
    manifest_overrides: dict = field(default_factory=dict)  # applied to the manifest dict


def _init(name: str, arr: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def build_recurrent(spec: RecurrentSpec) -> onnx.ModelProto:
    rng = np.random.default_rng(spec.seed)
    L, F, H, K, D = spec.layers, spec.input_size, spec.hidden, spec.classes, spec.directions
    lstm_like = spec.cell in ("lstm", "peephole")
    gates = 4 if lstm_like else 3
    direction = "bidirectional" if D == 2 else "forward"
    nodes, inits = [], []

    def w(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    nodes.append(helper.make_node("Transpose", ["x"], ["x_tbf"], perm=[1, 0, 2]))
    inits.append(_init("flat_shape", np.array([0, 0, -1], dtype=np.int64)))
    inits.append(_init("axis0", np.array([0], dtype=np.int64)))
    layer_in, in_size = "x_tbf", F
    h_outs, c_outs = [], []
    for layer in range(L):
        p = f"l{layer}_"
        inits += [_init(p + "W", w(D, gates * H, in_size)), _init(p + "R", w(D, gates * H, H)),
                  _init(p + "B", w(D, 2 * gates * H)),
                  _init(p + "start", np.array([layer * D], dtype=np.int64)),
                  _init(p + "end", np.array([(layer + 1) * D], dtype=np.int64))]
        nodes.append(helper.make_node("Slice", ["h_in", p + "start", p + "end", "axis0"], [p + "h0"]))
        ins = [layer_in, p + "W", p + "R", p + "B", "lengths", p + "h0"]
        outs = [p + "Y", p + "Yh"]
        if lstm_like:
            nodes.append(helper.make_node("Slice", ["c_in", p + "start", p + "end", "axis0"], [p + "c0"]))
            ins.append(p + "c0")
            outs.append(p + "Yc")
            if spec.cell == "peephole":
                inits.append(_init(p + "P", w(D, 3 * H)))
                ins.append(p + "P")
            nodes.append(helper.make_node("LSTM", ins, outs, hidden_size=H, direction=direction, name=p + "lstm"))
            c_outs.append(p + "Yc")
        else:
            nodes.append(helper.make_node("GRU", ins, outs, hidden_size=H, direction=direction,
                                          linear_before_reset=1, name=p + "gru"))
        h_outs.append(p + "Yh")
        # Y [T, D, B, H] -> [T, B, D*H]
        nodes.append(helper.make_node("Transpose", [p + "Y"], [p + "Yt"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [p + "Yt", "flat_shape"], [p + "seq"]))
        layer_in, in_size = p + "seq", D * H
    nodes.append(helper.make_node("Concat", h_outs, ["h_out"], axis=0) if L > 1
                 else helper.make_node("Identity", h_outs, ["h_out"]))
    if lstm_like:
        nodes.append(helper.make_node("Concat", c_outs, ["c_out"], axis=0) if L > 1
                     else helper.make_node("Identity", c_outs, ["c_out"]))
    inits += [_init("head_W", w(D * H, K)), _init("head_b", w(K))]
    top = f"l{L - 1}_"
    if spec.task == "classify":
        out_name = "logits"
        nodes.append(helper.make_node("Transpose", [top + "Yh"], ["top_bdh"], perm=[1, 0, 2]))
        inits.append(_init("bh_shape", np.array([0, -1], dtype=np.int64)))
        nodes.append(helper.make_node("Reshape", ["top_bdh", "bh_shape"], ["top_flat"]))
        nodes.append(helper.make_node("MatMul", ["top_flat", "head_W"], ["head_mm"]))
        nodes.append(helper.make_node("Add", ["head_mm", "head_b"], ["logits"]))
        out_shape: list = ["batch", K]
    else:
        out_name = "y"
        nodes.append(helper.make_node("MatMul", [layer_in, "head_W"], ["head_mm"]))
        nodes.append(helper.make_node("Add", ["head_mm", "head_b"], ["y_tbk"]))
        nodes.append(helper.make_node("Transpose", ["y_tbk"], ["y"], perm=[1, 0, 2]))
        out_shape = ["batch", "time", K]
    f32 = TensorProto.FLOAT
    state_shape = [L * D, "batch", H]
    inputs = [helper.make_tensor_value_info("x", f32, ["batch", "time", F]),
              helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]),
              helper.make_tensor_value_info("h_in", f32, state_shape)]
    outputs = [helper.make_tensor_value_info(out_name, f32, out_shape),
               helper.make_tensor_value_info("h_out", f32, state_shape)]
    if lstm_like:
        inputs.append(helper.make_tensor_value_info("c_in", f32, state_shape))
        outputs.append(helper.make_tensor_value_info("c_out", f32, state_shape))
    graph = helper.make_graph(nodes, f"{spec.cell}_{spec.task}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgelstm-tests")
    model.ir_version = 8
    if spec.manifest:
        m = Manifest(
            family=spec.cell, task=spec.task, layers=L, hidden_size=H, directions=D,
            inputs=[TensorSpec("x", "float32", ["batch", "time", F], "features"),
                    TensorSpec("lengths", "int32", ["batch"], "valid steps"),
                    TensorSpec("h_in", "float32", state_shape)]
            + ([TensorSpec("c_in", "float32", state_shape)] if lstm_like else []),
            outputs=[TensorSpec(out_name, "float32", out_shape),
                     TensorSpec("h_out", "float32", state_shape)]
            + ([TensorSpec("c_out", "float32", state_shape)] if lstm_like else []),
            states=[StateSpec("h_in", "h_out", state_shape)]
            + ([StateSpec("c_in", "c_out", state_shape)] if lstm_like else []),
            labels=spec.labels,
            normalization=Normalization(*spec.normalization) if spec.normalization else None,
            streamable=D == 1,
        )
        set_manifest(model, m.to_json(), spec.manifest_overrides)
    onnx.checker.check_model(model)
    return model


def set_manifest(model: onnx.ModelProto, manifest_json: str, overrides: dict | None = None) -> None:
    """Store (a possibly edited copy of) a manifest JSON in ``metadata_props``."""
    import json

    d = json.loads(manifest_json)
    d.update(overrides or {})
    text = json.dumps(d, sort_keys=True)
    for prop in model.metadata_props:
        if prop.key == MANIFEST_KEY:
            prop.value = text
            return
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, MANIFEST_KEY: text})


def save(model: onnx.ModelProto, path: str | Path, *, seal: bool = True) -> Path:
    """Write ``model``; one with a manifest is sealed first (as export does), unless ``seal=False``."""
    path = Path(path)
    if seal and any(p.key == MANIFEST_KEY for p in model.metadata_props):
        seal_proto(model)
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------------------------------- seq2seq
@dataclass
class Seq2SeqSpec:
    """A tiny LSTM encoder + Luong ("dot") attention decoder step, token ids pad=0 bos=1 eos=2."""

    vocab: list[str] = field(default_factory=lambda: ["<pad>", "<bos>", "<eos>"] + list("abcdef"))
    emb: int = 6
    hidden: int = 8
    max_len: int = 12
    seed: int = 0
    eos_bias: float = 0.0  # added to the eos logit: large -> the decoder stops at once


def build_seq2seq(spec: Seq2SeqSpec, stem: str = "s2s") -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Return ``(encoder, decoder_step)`` models whose manifests name each other as companions."""
    rng = np.random.default_rng(spec.seed)
    V, E, H = len(spec.vocab), spec.emb, spec.hidden

    def w(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    f32, i64, i32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
    emb_src, emb_tgt = w(V, E), w(V, E)
    # encoder: src [b, s] -> memory [b, s, H], h_out/c_out [1, b, H]
    enc_nodes = [
        helper.make_node("Gather", ["emb", "src"], ["e_bse"]),
        helper.make_node("Transpose", ["e_bse"], ["e_sbe"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["e_sbe", "W", "R", "B", "src_lengths"], ["Y", "h_out", "c_out"],
                         hidden_size=H, name="enc_lstm"),
        helper.make_node("Squeeze", ["Y", "ax1"], ["Y_sbh"]),
        helper.make_node("Transpose", ["Y_sbh"], ["memory"], perm=[1, 0, 2]),
    ]
    enc_inits = [_init("emb", emb_src), _init("W", w(1, 4 * H, E)), _init("R", w(1, 4 * H, H)),
                 _init("B", w(1, 8 * H)), _init("ax1", np.array([1], dtype=np.int64))]
    state = [1, "batch", H]
    enc_graph = helper.make_graph(
        enc_nodes, "encoder",
        [helper.make_tensor_value_info("src", i64, ["batch", "src_time"]),
         helper.make_tensor_value_info("src_lengths", i32, ["batch"])],
        [helper.make_tensor_value_info("memory", f32, ["batch", "src_time", H]),
         helper.make_tensor_value_info("h_out", f32, state),
         helper.make_tensor_value_info("c_out", f32, state)], enc_inits)
    # decoder step: token [b], h_in, c_in, memory, src_lengths -> logits [b, V], h_out, c_out, attention
    out_b = w(V)
    out_b[2] += spec.eos_bias
    dec_nodes = [
        helper.make_node("Gather", ["emb", "token"], ["e_be"]),
        helper.make_node("Unsqueeze", ["e_be", "ax0"], ["e_1be"]),
        helper.make_node("LSTM", ["e_1be", "W", "R", "B", "", "h_in", "c_in"], ["Y", "h_out", "c_out"],
                         hidden_size=H, name="dec_lstm"),
        helper.make_node("Squeeze", ["h_out", "ax0"], ["h_bh"]),
        helper.make_node("Unsqueeze", ["h_bh", "ax2"], ["h_bh1"]),
        helper.make_node("MatMul", ["memory", "h_bh1"], ["scores_bs1"]),
        helper.make_node("Squeeze", ["scores_bs1", "ax2"], ["scores"]),
        helper.make_node("Shape", ["memory"], ["mem_shape"]),
        helper.make_node("Gather", ["mem_shape", "one"], ["s_len"], axis=0),
        helper.make_node("Range", ["zero", "s_len", "one"], ["positions"]),
        helper.make_node("Cast", ["src_lengths"], ["len64"], to=i64),
        helper.make_node("Unsqueeze", ["len64", "ax1"], ["len_b1"]),
        helper.make_node("Less", ["positions", "len_b1"], ["valid"]),
        helper.make_node("Where", ["valid", "scores", "neg"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["attention"], axis=-1),
        helper.make_node("Unsqueeze", ["attention", "ax1"], ["attn_b1s"]),
        helper.make_node("MatMul", ["attn_b1s", "memory"], ["ctx_b1h"]),
        helper.make_node("Squeeze", ["ctx_b1h", "ax1"], ["ctx"]),
        helper.make_node("Concat", ["h_bh", "ctx"], ["hc"], axis=1),
        helper.make_node("MatMul", ["hc", "Wout"], ["lo"]),
        helper.make_node("Add", ["lo", "bout"], ["logits"]),
    ]
    dec_inits = [_init("emb", emb_tgt), _init("W", w(1, 4 * H, E)), _init("R", w(1, 4 * H, H)),
                 _init("B", w(1, 8 * H)), _init("Wout", w(2 * H, V)), _init("bout", out_b),
                 _init("ax0", np.array([0], dtype=np.int64)), _init("ax1", np.array([1], dtype=np.int64)),
                 _init("ax2", np.array([2], dtype=np.int64)), _init("zero", np.array(0, dtype=np.int64)),
                 _init("one", np.array(1, dtype=np.int64)), _init("neg", np.array(-1e9, dtype=np.float32))]
    dec_graph = helper.make_graph(
        dec_nodes, "decoder_step",
        [helper.make_tensor_value_info("token", i64, ["batch"]),
         helper.make_tensor_value_info("h_in", f32, state),
         helper.make_tensor_value_info("c_in", f32, state),
         helper.make_tensor_value_info("memory", f32, ["batch", "src_time", H]),
         helper.make_tensor_value_info("src_lengths", i32, ["batch"])],
        [helper.make_tensor_value_info("logits", f32, ["batch", V]),
         helper.make_tensor_value_info("h_out", f32, state),
         helper.make_tensor_value_info("c_out", f32, state),
         helper.make_tensor_value_info("attention", f32, ["batch", "src_time"])], dec_inits)
    models = []
    common = dict(family="attention", task="seq2seq", layers=1, hidden_size=H, directions=1,
                  vocab=spec.vocab, special_tokens={"pad": 0, "bos": 1, "eos": 2}, max_len=spec.max_len,
                  companions={"encoder": f"{stem}.encoder.onnx", "decoder_step": f"{stem}.decoder_step.onnx"})
    enc_m = Manifest(graph="encoder", streamable=False,
                     inputs=[TensorSpec("src", "int64", ["batch", "src_time"]),
                             TensorSpec("src_lengths", "int32", ["batch"])],
                     outputs=[TensorSpec("memory", "float32", ["batch", "src_time", H]),
                              TensorSpec("h_out", "float32", state), TensorSpec("c_out", "float32", state)],
                     **common)
    dec_m = Manifest(graph="decoder_step", streamable=False,
                     inputs=[TensorSpec("token", "int64", ["batch"]), TensorSpec("h_in", "float32", state),
                             TensorSpec("c_in", "float32", state),
                             TensorSpec("memory", "float32", ["batch", "src_time", H]),
                             TensorSpec("src_lengths", "int32", ["batch"])],
                     outputs=[TensorSpec("logits", "float32", ["batch", V]),
                              TensorSpec("h_out", "float32", state), TensorSpec("c_out", "float32", state),
                              TensorSpec("attention", "float32", ["batch", "src_time"])],
                     states=[StateSpec("h_in", "h_out", state), StateSpec("c_in", "c_out", state)], **common)
    for graph, man in ((enc_graph, enc_m), (dec_graph, dec_m)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="edgelstm-tests")
        model.ir_version = 8
        set_manifest(model, man.to_json())
        onnx.checker.check_model(model)
        models.append(model)
    return models[0], models[1]


def save_seq2seq(spec: Seq2SeqSpec, directory: str | Path, stem: str = "s2s") -> tuple[Path, Path]:
    enc, dec = build_seq2seq(spec, stem)
    d = Path(directory)
    return save(enc, d / f"{stem}.encoder.onnx"), save(dec, d / f"{stem}.decoder_step.onnx")


def build_add(features: int = 3) -> onnx.ModelProto:
    """A bare one-``Add`` graph without a manifest: ``out = a + 1``."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "one"], ["out"])], "add",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", features])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", features])],
        [_init("one", np.ones(features, dtype=np.float32))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model
