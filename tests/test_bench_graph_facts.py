"""The graph facts of the contract (``edgelstm.runtime.integrity``) the benchmark and inspect read:
initializer headers, nodes with their domain, attributes and subgraph bodies, the quantized-op set
and the precision of a file without a manifest, against the onnx package's own view."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelstm.runtime.graphfacts import QUANTIZED_OPS, graph_facts, guess_precision, quantized_ops, tensor_header
from edgelstm.runtime.integrity import WireError


def _model(nodes, inits, *, opsets=(("", 17),)) -> bytes:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]).SerializeToString()


def _init(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.zeros(shape, dtype), name)


@pytest.mark.parametrize("shape,dtype", [((4, 3), np.float32), ((2, 3, 5), np.float16), ((7,), np.int8), ((), np.int64)],
                         ids=["fp32-2d", "fp16-3d", "int8-1d", "int64-scalar"])
def test_tensor_header_reads_name_dims_and_type(shape, dtype):
    t = _init("w", shape, dtype)
    assert tensor_header(t.SerializeToString()) == ("w", list(shape), t.data_type)


def test_graph_facts_nodes_attributes_domains_and_subgraphs():
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "then", [],
                             [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])])
    nodes = [helper.make_node("Gemm", ["x", "W"], ["g"], name="head", transB=1),
             helper.make_node("DynamicQuantizeLSTM", ["x", "W"], ["q"], domain="com.microsoft"),
             helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)]
    data = _model(nodes, [_init("W", (4, 4)), _init("b", (4,), np.float16)], opsets=(("", 17), ("com.microsoft", 1)))
    facts = graph_facts(data)
    assert facts.initializers == {"W": ([4, 4], TensorProto.FLOAT), "b": ([4], TensorProto.FLOAT16)}
    assert [n.key for n in facts.nodes] == ["Gemm", "com.microsoft:DynamicQuantizeLSTM", "If"]
    gemm, _, branch = facts.nodes
    assert (gemm.name, gemm.inputs, gemm.attr("transB"), gemm.attr("transA", 0)) == ("head", ("x", "W"), 1, 0)
    assert sorted(a for a, _ in branch.graphs) == ["else_branch", "then_branch"]
    assert onnx.GraphProto.FromString(branch.graphs[0][1]).node[0].op_type == "Identity"
    # weights: 16 fp32 (4 bytes) + 4 fp16 (2 bytes)
    assert (facts.parameters, facts.weight_bytes) == (20, 16 * 4 + 4 * 2)


@pytest.mark.parametrize("ops,dtypes,want", [
    ({"LSTM", "MatMul"}, [TensorProto.FLOAT], "fp32"),
    ({"LSTM"}, [TensorProto.FLOAT, TensorProto.FLOAT16], "fp16"),
    ({"DynamicQuantizeLSTM", "MatMulInteger"}, [TensorProto.INT8], "int8-dynamic"),
    ({"QuantizeLinear", "DequantizeLinear", "MatMul"}, [TensorProto.INT8], "int8-static"),
], ids=["fp32", "fp16", "int8-dynamic", "int8-static-qdq"])
def test_guess_precision(ops, dtypes, want):
    assert guess_precision(ops, dtypes) == want


def test_quantized_ops_is_the_one_set():
    assert quantized_ops(["LSTM", "MatMulInteger", "QGemm", "Add"]) == ["MatMulInteger", "QGemm"]
    assert {"DynamicQuantizeLSTM", "QuantizeLinear", "DynamicQuantizeLinear", "MatMulIntegerToFloat"} <= QUANTIZED_OPS


@pytest.mark.parametrize("data", [b"\x0a\x05ab", _model([], [])[:-3]], ids=["no-graph", "truncated"])
def test_graph_facts_refuses_what_is_not_a_model(data):
    with pytest.raises(WireError):
        graph_facts(data)
