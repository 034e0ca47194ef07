"""Graph facts read from an ONNX file's bytes without the onnx package, once for every reader:
tensor headers, nodes (op, domain, inputs, integer attributes, subgraph bodies), the dtype
tables, "is it quantized" and the precision of a file without a manifest (:class:`GraphFacts`,
the benchmark's floor model and parameter counts), and the model-level walk ``inspect``
reports (:class:`ModelFacts`: op histograms at the top level and inside control-flow bodies,
subgraphs, every initializer, opsets, IR version, producer).

Built on the protobuf wire reader of :mod:`edgelstm.runtime.integrity` (``iter_values``,
``read_varint``, ``WireError`` and its ModelProto field numbers); standard library only besides
that, torch-free and onnx-free, so a device install can use it. Imported by ``edgelstm.bench``
and ``edgelstm.cli.inspect``; raises :class:`~edgelstm.runtime.integrity.WireError` on malformed
bytes (the caller names the file in its typed error).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edgelstm.runtime.integrity import (GRAPH_FIELD, IR_VERSION_FIELD, OPSET_IMPORT_FIELD, PRODUCER_NAME_FIELD,
                                        WireError, iter_values, read_varint)

# protobuf field numbers (onnx.proto3) beyond the ModelProto ones integrity names
PRODUCER_VERSION_FIELD = 3                      # ModelProto.producer_version
OPSET_DOMAIN, OPSET_VERSION = 1, 2              # OperatorSetIdProto


#: ONNX ``TensorProto.DataType`` -> bytes per element
DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
#: ONNX ``TensorProto.DataType`` -> NumPy dtype name (the element types a graph input may have)
DTYPE_NAMES = {1: "float32", 10: "float16", 11: "float64", 6: "int32", 7: "int64", 9: "bool", 3: "int8", 2: "uint8"}
#: element types that hold weights: float, uint8, int8, float16, double, bfloat16
WEIGHT_DTYPES = frozenset({1, 2, 3, 10, 11, 16})
FLOAT16 = 10
#: ops a quantizer or converter produces: a graph holding one was quantized
QUANTIZED_OPS = frozenset({"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeMatMul", "QuantizeLinear",
                           "DequantizeLinear", "QLinearMatMul", "ConvInteger", "QGemm", "MatMulIntegerToFloat",
                           "DynamicQuantizeLinear", "QAttention"})
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_INPUT, _NODE_NAME, _NODE_OP, _NODE_ATTR, _NODE_DOMAIN = 1, 3, 4, 5, 7
_ATTR_NAME, _ATTR_INT, _ATTR_GRAPH, _ATTR_GRAPHS = 1, 3, 6, 11
_TENSOR_DIMS, _TENSOR_DTYPE, _TENSOR_NAME = 1, 2, 8


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def tensor_header(buf: bytes) -> tuple[str, list[int], int]:
    """``(name, dims, data type)`` of one serialized ``TensorProto`` (its data is not read)."""
    dims: list[int] = []
    dtype, name = 0, ""
    for num, wt, v in iter_values(buf):
        if num == _TENSOR_DIMS:
            if wt == 2:  # packed repeated int64
                j = 0
                while j < len(v):
                    d, j = read_varint(v, j)
                    dims.append(d)
            else:
                dims.append(v)
        elif num == _TENSOR_DTYPE:
            dtype = v
        elif num == _TENSOR_NAME:
            name = _text(v)
    return name, dims, dtype


@dataclass(frozen=True)
class NodeFacts:
    """One ``NodeProto``: its op, domain, name, inputs, integer attributes and the subgraph
    bodies it carries (``(attribute name, GraphProto bytes)``, for ``If`` / ``Loop`` / ``Scan``)."""

    op: str
    domain: str = ""
    name: str = ""
    inputs: tuple[str, ...] = ()
    attrs: tuple[tuple[str, int], ...] = ()
    graphs: tuple[tuple[str, bytes], ...] = ()

    @property
    def key(self) -> str:
        """``LSTM`` for the default domain, ``com.microsoft:DynamicQuantizeLSTM`` otherwise."""
        return self.op if self.domain in ("", "ai.onnx") else f"{self.domain}:{self.op}"

    def attr(self, name: str, default: int | None = None) -> int | None:
        return dict(self.attrs).get(name, default)


def node_facts(buf: bytes) -> NodeFacts:
    """Parse one serialized ``NodeProto``."""
    op, domain, name, inputs, attrs, graphs = "", "", "", [], [], []
    for num, wt, v in iter_values(buf):
        if num == _NODE_INPUT and wt == 2:
            inputs.append(_text(v))
        elif num == _NODE_OP:
            op = _text(v)
        elif num == _NODE_DOMAIN:
            domain = _text(v)
        elif num == _NODE_NAME:
            name = _text(v)
        elif num == _NODE_ATTR and wt == 2:
            aname, aint, bodies = "", None, []
            for n2, w2, v2 in iter_values(v):
                if n2 == _ATTR_NAME:
                    aname = _text(v2)
                elif n2 == _ATTR_INT and w2 == 0:
                    aint = v2
                elif n2 in (_ATTR_GRAPH, _ATTR_GRAPHS) and w2 == 2:
                    bodies.append(v2)
            if aint is not None:
                attrs.append((aname, aint))
            graphs += [(aname, g) for g in bodies]
    return NodeFacts(op, domain, name, tuple(inputs), tuple(attrs), tuple(graphs))


@dataclass
class GraphFacts:
    """A ``GraphProto``'s initializers (name -> (dims, data type)) and its nodes, in file order.
    Subgraph bodies are not walked here (each node keeps them: :attr:`NodeFacts.graphs`)."""

    initializers: dict[str, tuple[list[int], int]]
    nodes: list[NodeFacts]

    @property
    def ops(self) -> set[str]:
        return {n.op for n in self.nodes}

    @property
    def parameters(self) -> int:
        """Elements of every weight initializer (:data:`WEIGHT_DTYPES`)."""
        return sum(_count(d) for d, t in self.initializers.values() if t in WEIGHT_DTYPES)

    @property
    def weight_bytes(self) -> int:
        return sum(_count(d) * DTYPE_BYTES.get(t, 4) for d, t in self.initializers.values() if t in WEIGHT_DTYPES)

    @property
    def precision(self) -> str:
        return guess_precision(self.ops, (t for _, t in self.initializers.values()))


def _count(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def graph_body_facts(graph: bytes) -> GraphFacts:
    """:class:`GraphFacts` of serialized ``GraphProto`` bytes (a model's graph or a subgraph body)."""
    initializers: dict[str, tuple[list[int], int]] = {}
    nodes: list[NodeFacts] = []
    for num, wt, v in iter_values(graph):
        if num == _GRAPH_INITIALIZER and wt == 2:
            name, dims, dtype = tensor_header(v)
            initializers[name] = (dims, dtype)
        elif num == _GRAPH_NODE and wt == 2:
            nodes.append(node_facts(v))
    return GraphFacts(initializers, nodes)


def graph_facts(buf: bytes) -> GraphFacts:
    """:class:`GraphFacts` of a serialized ``ModelProto``'s main graph; :class:`WireError` when
    the bytes are not one."""
    graph = next((v for num, wt, v in iter_values(buf) if num == GRAPH_FIELD and wt == 2), None)
    if graph is None:
        raise WireError("no graph field (ModelProto field 7)")
    return graph_body_facts(graph)


def quantized_ops(ops) -> list[str]:
    """The ops of ``ops`` (names, without domain) that only a quantized graph holds, sorted."""
    return sorted(set(ops) & QUANTIZED_OPS)


def guess_precision(ops, initializer_dtypes) -> str:
    """The precision of a graph without a manifest: ``int8-static`` (QDQ: a ``QuantizeLinear``),
    ``int8-dynamic`` (any other quantized op), ``fp16`` (a float16 initializer) or ``fp32``."""
    ops = set(ops)
    if quantized_ops(ops):
        return "int8-static" if "QuantizeLinear" in ops else "int8-dynamic"
    if any(t == FLOAT16 for t in initializer_dtypes):
        return "fp16"
    return "fp32"


@dataclass
class ModelFacts:
    """What a walk of a ModelProto's graph (and its subgraphs, recursively) found: what
    ``edgelstm inspect`` reports."""

    ir_version: int | None = None
    producer: str | None = None
    opsets: dict[str, int | None] = field(default_factory=dict)   # domain ("ai.onnx" for "") -> version
    nodes: int = 0                                                # top-level nodes
    ops: Counter = field(default_factory=Counter)                 # top-level op -> count ("domain:op" off ai.onnx)
    subgraph_ops: Counter = field(default_factory=Counter)        # the same inside control-flow bodies
    subgraphs: list[dict[str, Any]] = field(default_factory=list)  # node, op, attribute, depth, nodes
    initializers: dict[str, tuple[list[int], int]] = field(default_factory=dict)  # name -> (dims, dtype)
    initializer_count: int = 0                                    # every initializer, subgraphs' too

    @property
    def parameters(self) -> int:
        return GraphFacts(self.initializers, []).parameters

    @property
    def weight_bytes(self) -> int:
        return GraphFacts(self.initializers, []).weight_bytes

    def _graph(self, buf: bytes, depth: int) -> int:
        nodes = 0
        for num, wt, v in iter_values(buf):
            if num == _GRAPH_INITIALIZER and wt == 2:
                name, dims, dtype = tensor_header(v)
                self.initializer_count += 1
                # unnamed or repeated names (a subgraph's own constants) still count once each
                self.initializers[name if name and name not in self.initializers
                                  else f"{name}#{self.initializer_count}"] = (dims, dtype)
            elif num == _GRAPH_NODE and wt == 2:
                nodes += 1
                node = node_facts(v)
                (self.ops if depth == 0 else self.subgraph_ops)[node.key] += 1
                for aname, g in node.graphs:
                    entry = {"node": node.name, "op": node.key, "attribute": aname, "depth": depth + 1}
                    self.subgraphs.append(entry)
                    entry["nodes"] = self._graph(g, depth + 1)
        return nodes


def read_graph_facts(data: bytes) -> ModelFacts:
    """Walk a serialized ModelProto. Raises ``WireError`` (or ``IndexError``/``ValueError`` from
    truncated bytes) when it is not one."""
    facts = ModelFacts()
    producer, version = "", ""
    for num, wt, v in iter_values(data):
        if num == IR_VERSION_FIELD and wt == 0:
            facts.ir_version = v
        elif num == PRODUCER_NAME_FIELD:
            producer = _text(v)
        elif num == PRODUCER_VERSION_FIELD:
            version = _text(v)
        elif num == OPSET_IMPORT_FIELD and wt == 2:
            domain, opver = "", None
            for n2, _w2, v2 in iter_values(v):
                if n2 == OPSET_DOMAIN:
                    domain = _text(v2)
                elif n2 == OPSET_VERSION:
                    opver = v2
            facts.opsets[domain or "ai.onnx"] = opver
        elif num == GRAPH_FIELD and wt == 2:
            facts.nodes = facts._graph(v, 0)
    facts.producer = f"{producer} {version}".strip() or None
    return facts
