"""The GRU rewrite for int8 weights (edgelstm.exporters.gru_int8).

Each ``GRU`` node becomes the input projection ``MatMul`` + ``If(T == 1)``: the then-branch is the
cell once (no loop, the streaming step), the else-branch a ``Scan``. Checked here: the fp32
rewrite against onnxruntime's own ``GRU`` kernel over the option matrix, for T = 1 and T > 1;
the structure (what the one-step path runs, what is computed once per graph); and int8 weights
in both branches after ``quantize_dynamic``.

Thresholds and why:

* fp32 rewrite vs onnxruntime's GRU: <= 1e-6 absolute. Both compute the operator's formula in
  fp32; only the order of the sums in the products and of ``(1-z)n + zh`` vs ``n + z(h-n)``
  differ, a few float32 ulps (outputs are in [-1, 1], ulp <= 6e-8; measured <= 3e-7 here).
* int8 SQNR >= 30 dB, as in tests/test_quantize.py: per-tensor int8 weights give about
  40-45 dB on these models; a broken scale, a float fallback or a wrong gate order gives < 10 dB.
"""
from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelstm.errors import UnsupportedError
from edgelstm.exporters.gru_int8 import decompose_gru, finish_quantized
from quantize_graphs import build

FP32_ATOL = 1e-6
INT8_MIN_SQNR_DB = 30.0


def _sess(model_or_path, profile_prefix: str | None = None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # int8 outputs depend on the thread count
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _ops(graph: onnx.GraphProto) -> Counter:
    """Op types of ``graph`` alone (its subgraphs are counted by walking them explicitly)."""
    return Counter(n.op_type for n in graph.node)


def _all_ops(graph: onnx.GraphProto) -> Counter:
    c: Counter = Counter()
    for n in graph.node:
        c[n.op_type] += 1
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                c += _all_ops(a.g)
    return c


def _branches(model: onnx.ModelProto) -> list[tuple[onnx.GraphProto, onnx.GraphProto]]:
    """(then, else) of every If node of the top level."""
    out = []
    for n in model.graph.node:
        if n.op_type == "If":
            g = {a.name: a.g for a in n.attribute}
            out.append((g["then_branch"], g["else_branch"]))
    return out


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref - got).astype(np.float64) ** 2),
                                                                          1e-30)))


def _gru_model(direction: str, lbr: int, layout: int, *, bias=True, lens=True, h0=True, I=5, H=7, seed=0,
               outputs=("Y", "Y_h"), **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    s = 1 / np.sqrt(H)
    inits = [numpy_helper.from_array(rng.uniform(-s, s, (D, 3 * H, I)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.uniform(-s, s, (D, 3 * H, H)).astype(np.float32), "R")]
    ins = ["x", "W", "R", "B" if bias else "", "sl" if lens else "", "h0" if h0 else ""]
    if bias:
        inits.append(numpy_helper.from_array(rng.uniform(-s, s, (D, 6 * H)).astype(np.float32), "B"))
    while ins[-1] == "":
        ins.pop()
    g_in = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", I] if layout else ["t", "b", I])]
    if lens:
        g_in.append(helper.make_tensor_value_info("sl", TensorProto.INT32, ["b"]))
    if h0:
        g_in.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["b", D, H] if layout else [D, "b", H]))
    node = helper.make_node("GRU", ins, ["Y" if "Y" in outputs else "", "Y_h" if "Y_h" in outputs else ""],
                            hidden_size=H, direction=direction, linear_before_reset=lbr, layout=layout, name="gru",
                            **attrs)
    g_out = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["y0", "y1", "y2", "y3"]),
             helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, ["h0", "h1", "h2"])]
    g_out = [o for o in g_out if o.name in outputs]
    return helper.make_model(helper.make_graph([node], "g", g_in, g_out, initializer=inits),
                             opset_imports=[helper.make_opsetid("", 17)])


GRU_CASES = list(itertools.product(["forward", "reverse", "bidirectional"], [1, 0], [0, 1]))
# T = 1: one sequence of length 0 in the batch; T = 6: uneven lengths, one of 1 step, one of 0
LENGTHS = {1: [1, 0, 1, 1], 6: [6, 3, 1, 0]}


@pytest.mark.parametrize("T", [1, 6], ids=["T1", "T6"])
@pytest.mark.parametrize("direction,lbr,layout", GRU_CASES,
                         ids=[f"{d}-lbr{lbr}-layout{lay}" for d, lbr, lay in GRU_CASES])
@pytest.mark.parametrize("optional", ["all-inputs", "no-B-lens-h0"])
def test_rewrite_matches_onnxruntime_gru(direction, lbr, layout, optional, T):
    full = optional == "all-inputs"
    kw = dict(bias=full, lens=full, h0=full)
    model = _gru_model(direction, lbr, layout, **kw)
    rewritten, info = decompose_gru(model)
    onnx.checker.check_model(rewritten)
    assert [r.node for r in info] == ["gru"]
    D = 2 if direction == "bidirectional" else 1
    assert "GRU" not in _all_ops(rewritten.graph) and _ops(rewritten.graph)["If"] == 1
    rng = np.random.default_rng(3)
    B, I, H = 4, 5, 7
    x_tb = rng.standard_normal((T, B, I)).astype(np.float32)
    h0_tb = rng.standard_normal((D, B, H)).astype(np.float32)
    ref_feed = {"x": x_tb}
    if full:
        ref_feed |= {"sl": np.array(LENGTHS[T], np.int32), "h0": h0_tb}
    # onnxruntime's GRU kernel only takes layout 0: the reference runs time-major, the rewrite both
    ref = _sess(_gru_model(direction, lbr, 0, **kw)).run(None, ref_feed)
    feed = dict(ref_feed)
    if layout:
        feed["x"] = x_tb.transpose(1, 0, 2)
        if full:
            feed["h0"] = h0_tb.transpose(1, 0, 2)
    got = _sess(rewritten).run(None, feed)
    if layout:
        got = [got[0].transpose(1, 2, 0, 3), got[1].transpose(1, 0, 2)]  # back to [T, D, B, H], [D, B, H]
    assert got[0].shape == (T, D, B, H) and got[1].shape == (D, B, H)
    for name, r, g in zip(("Y", "Y_h"), ref, got):
        np.testing.assert_allclose(g, r, atol=FP32_ATOL, rtol=0, err_msg=name)
    if full:  # as onnxruntime's GRU: zeros in Y past each length, and Y_h = 0 for a length-0 sequence
        lens = np.array(LENGTHS[T])
        for b, n in enumerate(lens):
            assert np.all(got[0][n:, :, b] == 0)
        assert np.all(got[1][:, lens == 0] == 0)


@pytest.mark.parametrize("outputs", [("Y",), ("Y_h",)], ids=["Y-only", "Y_h-only"])
@pytest.mark.parametrize("T", [1, 5], ids=["T1", "T5"])
def test_unread_output_is_not_computed(outputs, T):
    model = _gru_model("bidirectional", 1, 0, outputs=outputs)
    rewritten, _ = decompose_gru(model)
    (then_g, else_g), = _branches(rewritten)
    assert len(then_g.output) == len(else_g.output) == 1
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((T, 3, 5)).astype(np.float32), "sl": np.array([T, 1, 0], np.int32),
            "h0": rng.standard_normal((2, 3, 7)).astype(np.float32)}
    ref = _sess(model).run(None, feed)
    got = _sess(rewritten).run(None, feed)
    np.testing.assert_allclose(got[0], ref[0], atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize("attrs,match", [
    ({"activations": ["Relu", "Tanh"]}, "non-default activations"),
    ({"clip": 3.0}, "attribute 'clip' is not supported"),
], ids=["activations", "clip"])
def test_rewrite_refuses_what_it_cannot_keep(attrs, match):
    with pytest.raises(UnsupportedError, match=match):
        decompose_gru(_gru_model("forward", 1, 0, **attrs))


def test_rewrite_from_torch_export():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gru = torch.nn.GRU(5, 8, num_layers=2, bidirectional=True).eval()
    x = torch.randn(7, 3, 5)
    import io
    buf = io.BytesIO()
    torch.onnx.export(gru, (x,), buf, input_names=["x"], output_names=["y", "h"], dynamo=False,
                      dynamic_axes={"x": {0: "t", 1: "b"}})
    model = onnx.load_from_string(buf.getvalue())
    rewritten, info = decompose_gru(model)
    assert len(info) == 2 and all(r.linear_before_reset == 1 for r in info)
    sess = _sess(rewritten)
    for T in (1, 11):  # other T, B than the example
        x2 = np.random.default_rng(T).standard_normal((T, 2, 5)).astype(np.float32)
        with torch.no_grad():
            y_ref, h_ref = gru(torch.from_numpy(x2))
        y, h = sess.run(None, {"x": x2})
        # torch's own kernel sums in another order than onnxruntime's: 1e-6 still holds on 8 units
        np.testing.assert_allclose(y, y_ref.numpy(), atol=FP32_ATOL, rtol=0)
        np.testing.assert_allclose(h, h_ref.numpy(), atol=FP32_ATOL, rtol=0)


# ============================================================================ structure
@pytest.fixture(scope="module")
def two_layers():
    """A 2-layer GRU classifier with lengths and state (tests/quantize_graphs.py), and its rewrite."""
    model = build("gru", layers=2, input_size=6, hidden=16, manifest=False)
    return model, decompose_gru(model)[0]


def test_one_step_branch_is_the_cell_once(two_layers):
    _, rewritten = two_layers
    branches = _branches(rewritten)
    assert len(branches) == 2  # one If per layer
    for then_g, else_g in branches:
        ops = _all_ops(then_g)
        # no loop: h·R^T and its bias, three Splits, the gate arithmetic, one Where for the
        # lengths (Y and Y_h alike), one Unsqueeze for Y [1, D, B, H]
        assert ops == Counter({"MatMul": 1, "Split": 3, "Add": 4, "Mul": 2, "Sub": 1, "Sigmoid": 1, "Tanh": 1,
                               "Where": 1, "Unsqueeze": 1}), ops
        assert _ops(else_g)["Scan"] == 1
        body = next(a.g for n in else_g.node if n.op_type == "Scan" for a in n.attribute if a.name == "body")
        # no per-step length mask: the Scan body is the cell and the Identity of its scan output
        assert _ops(body) == Counter({"MatMul": 1, "Split": 3, "Add": 4, "Mul": 2, "Sub": 1, "Sigmoid": 1, "Tanh": 1,
                                      "Identity": 1}), _ops(body)


def test_shared_work_is_done_once_per_graph(two_layers):
    _, rewritten = two_layers
    top = _ops(rewritten.graph)
    # T == 1 test and len > 0 mask: once for both layers (same steps, same lengths)
    assert top["Equal"] == 1 and top["Greater"] == 1 and top["If"] == 2
    cond = {n.input[0] for n in rewritten.graph.node if n.op_type == "If"}
    assert len(cond) == 1


def test_one_step_runs_no_scan(two_layers, tmp_path):
    """What onnxruntime executes for a streaming step: no Scan kernel, and the same values."""
    model, rewritten = two_layers
    rng = np.random.default_rng(0)
    sess = _sess(rewritten, str(tmp_path / "prof"))
    ref = _sess(model)
    for T in (1, 9):
        feed = {"x": rng.standard_normal((3, T, 6)).astype(np.float32), "lengths": np.array([T, 1, 0], np.int32),
                "h_in": rng.standard_normal((2, 3, 16)).astype(np.float32)}
        if T == 1:
            sess.run(None, feed)
            events = json.loads(Path(sess.end_profiling()).read_text())
            ran = Counter(e["args"].get("op_name") for e in events
                          if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))
            assert ran["If"] == 2 and ran["Scan"] == 0 and ran["MatMul"] >= 4, ran
        for r, g in zip(ref.run(None, feed), _sess(rewritten).run(None, feed)):
            np.testing.assert_allclose(g, r, atol=FP32_ATOL, rtol=0)


# ============================================================================ int8
@pytest.fixture(scope="module")
def quantized(two_layers, tmp_path_factory):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgelstm.exporters.quant_passes import REDUCE_RANGE

    _, rewritten = two_layers
    d = tmp_path_factory.mktemp("gru8")
    onnx.save(rewritten, str(d / "f.onnx"))
    quantize_dynamic(str(d / "f.onnx"), str(d / "q.onnx"), weight_type=QuantType.QInt8, reduce_range=REDUCE_RANGE,
                     extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True})
    q = finish_quantized(onnx.load(str(d / "q.onnx")))
    onnx.checker.check_model(q)  # the If comes after the products its branches read
    onnx.save(q, str(d / "q.onnx"))
    return d / "q.onnx"


def test_int8_weights_in_both_branches(quantized):
    q = onnx.load(str(quantized))
    assert not [t for t in q.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2]
    for then_g, else_g in _branches(q):
        assert _all_ops(then_g)["MatMulInteger"] == 1 and _all_ops(then_g)["MatMul"] == 0
        assert _all_ops(else_g)["MatMulInteger"] == 1 and _all_ops(else_g)["MatMul"] == 0
    assert _ops(q.graph)["MatMulInteger"] >= 3  # the two input projections and the head


@pytest.mark.parametrize("T", [1, 12], ids=["step", "sequence"])
def test_int8_error(two_layers, quantized, T):
    model, _ = two_layers
    rng = np.random.default_rng(5)
    feed = {"x": rng.standard_normal((16, T, 6)).astype(np.float32),
            "lengths": rng.integers(1, T + 1, 16).astype(np.int32),
            "h_in": rng.standard_normal((2, 16, 16)).astype(np.float32) * 0.5}
    ref = _sess(model).run(None, feed)
    got = _sess(quantized).run(None, feed)
    for name, r, g in zip(("logits", "h_out"), ref, got):
        assert _sqnr_db(r, g) >= INT8_MIN_SQNR_DB, f"{name}: {_sqnr_db(r, g):.1f} dB"
