"""Graph facts read from an ONNX file's bytes without the onnx package: the operator histogram
(top level and inside control-flow bodies), the subgraphs, the initializers with their shapes
and element types, parameter count and weight bytes, the opsets, IR version and producer.

Built on the protobuf wire reader of :mod:`edgelstm.runtime.integrity` (``iter_values``,
``read_varint``, ``WireError`` and its ModelProto field numbers). Standard library only
besides that; torch-free and onnx-free, so a device install can use it. Imported by
``edgelstm.cli.inspect``; raises :class:`~edgelstm.runtime.integrity.WireError` on malformed
bytes (the caller names the file in its typed error).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edgelstm.runtime.integrity import (GRAPH_FIELD, IR_VERSION_FIELD, OPSET_IMPORT_FIELD, PRODUCER_NAME_FIELD,
                                        iter_values, read_varint)

# ONNX TensorProto element type -> bytes per element (onnx.proto3 TensorProto.DataType)
DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
# the element types that hold weights: float, uint8, int8, float16, double, bfloat16
WEIGHT_DTYPES = frozenset({1, 2, 3, 10, 11, 16})

# protobuf field numbers (onnx.proto3) beyond the ModelProto ones integrity names
PRODUCER_VERSION_FIELD = 3                      # ModelProto.producer_version
OPSET_DOMAIN, OPSET_VERSION = 1, 2              # OperatorSetIdProto
GRAPH_NODE, GRAPH_INITIALIZER = 1, 5            # GraphProto
NODE_NAME, NODE_OP, NODE_ATTR, NODE_DOMAIN = 3, 4, 5, 7   # NodeProto
ATTR_NAME, ATTR_GRAPH, ATTR_GRAPHS = 1, 6, 11   # AttributeProto
TENSOR_DIMS, TENSOR_DTYPE, TENSOR_NAME = 1, 2, 8  # TensorProto


def text(v: Any) -> str:
    """A length-delimited string field as text (undecodable bytes replaced, never an error)."""
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def tensor_header(buf: bytes) -> tuple[str, list[int], int]:
    """A TensorProto's name, dims and element type, without touching its data."""
    dims: list[int] = []
    dtype, name = 0, ""
    for num, wt, v in iter_values(buf):
        if num == TENSOR_DIMS:
            if wt == 2:  # packed repeated int64
                j = 0
                while j < len(v):
                    d, j = read_varint(v, j)
                    dims.append(d)
            else:
                dims.append(v)
        elif num == TENSOR_DTYPE:
            dtype = v
        elif num == TENSOR_NAME:
            name = text(v)
    return name, dims, dtype


@dataclass
class GraphFacts:
    """What a walk of a ModelProto's graph (and its subgraphs, recursively) found."""

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
        return sum(math.prod(d) for d, t in self.initializers.values() if t in WEIGHT_DTYPES)

    @property
    def weight_bytes(self) -> int:
        return sum(math.prod(d) * DTYPE_BYTES.get(t, 4) for d, t in self.initializers.values() if t in WEIGHT_DTYPES)

    def _graph(self, buf: bytes, depth: int) -> int:
        nodes = 0
        for num, wt, v in iter_values(buf):
            if num == GRAPH_INITIALIZER and wt == 2:
                name, dims, dtype = tensor_header(v)
                self.initializer_count += 1
                # unnamed or repeated names (a subgraph's own constants) still count once each
                self.initializers[name if name and name not in self.initializers
                                  else f"{name}#{self.initializer_count}"] = (dims, dtype)
            elif num == GRAPH_NODE and wt == 2:
                nodes += 1
                self._node(v, depth)
        return nodes

    def _node(self, buf: bytes, depth: int) -> None:
        op, domain, name, bodies = "", "", "", []
        for num, wt, v in iter_values(buf):
            if num == NODE_OP:
                op = text(v)
            elif num == NODE_DOMAIN:
                domain = text(v)
            elif num == NODE_NAME:
                name = text(v)
            elif num == NODE_ATTR and wt == 2:
                aname, graphs = "", []
                for n2, w2, v2 in iter_values(v):
                    if n2 == ATTR_NAME:
                        aname = text(v2)
                    elif n2 in (ATTR_GRAPH, ATTR_GRAPHS) and w2 == 2:
                        graphs.append(v2)
                bodies += [(aname, g) for g in graphs]
        key = op if domain in ("", "ai.onnx") else f"{domain}:{op}"
        (self.ops if depth == 0 else self.subgraph_ops)[key] += 1
        for aname, g in bodies:
            entry = {"node": name, "op": key, "attribute": aname, "depth": depth + 1}
            self.subgraphs.append(entry)
            entry["nodes"] = self._graph(g, depth + 1)


def read_graph_facts(data: bytes) -> GraphFacts:
    """Walk a serialized ModelProto. Raises ``WireError`` (or ``IndexError``/``ValueError`` from
    truncated bytes) when it is not one."""
    facts = GraphFacts()
    producer, version = "", ""
    for num, wt, v in iter_values(data):
        if num == IR_VERSION_FIELD and wt == 0:
            facts.ir_version = v
        elif num == PRODUCER_NAME_FIELD:
            producer = text(v)
        elif num == PRODUCER_VERSION_FIELD:
            version = text(v)
        elif num == OPSET_IMPORT_FIELD and wt == 2:
            domain, opver = "", None
            for n2, _w2, v2 in iter_values(v):
                if n2 == OPSET_DOMAIN:
                    domain = text(v2)
                elif n2 == OPSET_VERSION:
                    opver = v2
            facts.opsets[domain or "ai.onnx"] = opver
        elif num == GRAPH_FIELD and wt == 2:
            facts.nodes = facts._graph(v, 0)
    facts.producer = f"{producer} {version}".strip() or None
    return facts
