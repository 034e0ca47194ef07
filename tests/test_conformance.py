"""ONNX's official LSTM, GRU and RNN node cases through onnxruntime and through the NumPy
reference cells (via the verification harness's NumPy graph interpreter)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgelstm.verify.interp import NumpyGraph  # noqa: E402

CASES = [
    "test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes", "test_lstm_batchwise",
    "test_lstm_reverse", "test_lstm_bidirectional",
    "test_gru_defaults", "test_gru_with_initial_bias", "test_gru_seq_length", "test_gru_batchwise",
    "test_gru_reverse", "test_gru_bidirectional",
    "test_simple_rnn_defaults", "test_simple_rnn_with_initial_bias", "test_rnn_seq_length",
    "test_simple_rnn_batchwise", "test_simple_rnn_reverse", "test_simple_rnn_bidirectional",
]
PREFIXES = ("test_lstm", "test_gru", "test_rnn", "test_simple_rnn")

# The expected outputs were computed by ONNX's float32 NumPy reference; onnxruntime and our cells
# compute the same recurrences in float32 with differently ordered sums: a few ulps per step over
# <= 10 steps. rtol 1e-5 / atol 1e-6 is ~100x that, and far below any gate-order or bias bug (O(0.1)).
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def official():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other operators' generators warn about overflow
        return {c.name: c for c in collect_testcases() if c.name.startswith(PREFIXES)}


def test_every_official_recurrent_case_is_covered(official):
    assert sorted(official) == sorted(CASES)


def _io(case):
    inputs, outputs = case.data_sets[0]
    in_names = [i.name for i in case.model.graph.input]
    out_names = [o.name for o in case.model.graph.output]
    return dict(zip(in_names, inputs)), dict(zip(out_names, outputs))


def to_layout0(model):
    """onnxruntime's CPU kernels refuse ``layout=1`` ("Batchwise recurrent operations (layout == 1)
    are not supported", onnxruntime 1.32). Rewrite the node to layout 0 with Transposes around it,
    as an exporter targeting onnxruntime must; the graph's inputs and outputs are unchanged."""
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    node = g.node[0]
    if not any(a.name == "layout" and a.i == 1 for a in node.attribute):
        return m
    new_attrs = [a for a in node.attribute if a.name != "layout"]
    del node.attribute[:]
    node.attribute.extend(new_attrs)
    pre, post = [], []
    for idx in (0, 5, 6):  # X [b,s,i], initial_h/c [b,d,h] -> seq/dir-major
        if idx < len(node.input) and node.input[idx]:
            src = node.input[idx]
            pre.append(helper.make_node("Transpose", [src], [src + "_l0"], perm=[1, 0, 2]))
            node.input[idx] = src + "_l0"
    for idx, perm in ((0, [2, 0, 1, 3]), (1, [1, 0, 2]), (2, [1, 0, 2])):  # Y, Y_h, Y_c back to batch-major
        if idx < len(node.output) and node.output[idx]:
            dst = node.output[idx]
            node.output[idx] = dst + "_l0"
            post.append(helper.make_node("Transpose", [dst + "_l0"], [dst], perm=perm))
    nodes = pre + [node] + post
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("name", CASES)
def test_official_case_through_onnxruntime(official, name):
    case = official[name]
    feeds, expected = _io(case)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    model = to_layout0(case.model)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for out, want in expected.items():
        np.testing.assert_allclose(got[out], want, rtol=RTOL, atol=ATOL, err_msg=f"{name}: {out}")


@pytest.mark.parametrize("name", CASES)
def test_official_case_through_numpy_reference_cells(official, name):
    case = official[name]
    feeds, expected = _io(case)
    got = NumpyGraph(case.model).run(feeds)
    for out, want in expected.items():
        assert got[out].shape == want.shape, f"{name}: {out}"
        np.testing.assert_allclose(got[out], want, rtol=RTOL, atol=ATOL, err_msg=f"{name}: {out}")
