"""runtime/graphfacts.py: the graph facts inspect reports, read from the wire format, agree with
what the onnx package itself reads from the same bytes."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelstm.runtime.graphfacts import DTYPE_BYTES, WEIGHT_DTYPES, read_graph_facts, tensor_header
from edgelstm.runtime.integrity import WireError
from graphs import RecurrentSpec, build_recurrent


@pytest.mark.parametrize("dtype, shape", [
    (np.float32, (3, 4)), (np.int8, (5,)), (np.uint8, (2, 1, 3)), (np.float16, (7, 2)), (np.int64, ()),
], ids=["float32", "int8", "uint8", "float16", "int64-scalar"])
def test_tensor_header_matches_onnx(dtype, shape):
    t = numpy_helper.from_array(np.zeros(shape, dtype=dtype), "w")
    name, dims, code = tensor_header(t.SerializeToString())
    assert (name, dims, code) == ("w", list(t.dims), t.data_type)
    # the byte table agrees with numpy's item size for every type the header names here
    assert DTYPE_BYTES[code] == np.dtype(dtype).itemsize


@pytest.mark.parametrize("spec", [RecurrentSpec(), RecurrentSpec(cell="gru", layers=2, directions=2)],
                         ids=["lstm", "gru-2x-bidirectional"])
def test_facts_of_a_recurrent_graph_match_onnx(spec):
    model = build_recurrent(spec)
    facts = read_graph_facts(model.SerializeToString())
    inits = model.graph.initializer
    weights = [t for t in inits if t.data_type in WEIGHT_DTYPES]
    assert facts.initializer_count == len(inits)
    assert facts.parameters == sum(math.prod(t.dims) for t in weights)
    assert facts.weight_bytes == sum(numpy_helper.to_array(t).nbytes for t in weights)
    assert facts.nodes == len(model.graph.node)
    assert sum(facts.ops.values()) == len(model.graph.node) and facts.subgraph_ops == {}
    assert facts.ir_version == model.ir_version
    assert facts.opsets == {(o.domain or "ai.onnx"): o.version for o in model.opset_import}


def test_subgraph_initializers_and_custom_domains_count():
    then = helper.make_graph([helper.make_node("Identity", ["k"], ["y"])], "then", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                             [numpy_helper.from_array(np.ones(2, np.float32), "k")])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "else", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="pick"),
         helper.make_node("Fused", ["y"], ["z"], domain="com.example")], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.ones(2, np.float32), "k")])  # same name as the branch's own "k"
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    facts = read_graph_facts(m.SerializeToString())
    assert facts.ops == {"If": 1, "com.example:Fused": 1}
    assert facts.subgraph_ops == {"Identity": 1, "Neg": 1}
    assert facts.initializer_count == 2 and facts.parameters == 4  # both "k"s, neither lost to the name clash
    assert facts.opsets == {"ai.onnx": 17, "com.example": 1}


def test_malformed_bytes_raise_the_wire_error():
    data = build_recurrent(RecurrentSpec()).SerializeToString()
    with pytest.raises(WireError):
        read_graph_facts(data[: len(data) // 2])
    assert isinstance(onnx.load_from_string(data), onnx.ModelProto)  # the whole file is fine
