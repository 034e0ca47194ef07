"""The floor: how long this machine takes for the work no implementation of a case can avoid.

The floor of a case is measured in the same run as the case: the recurrent layers' matrix
products (input projections batched over time; the recurrent products ``h @ R`` of all steps as
one ``[batch*time, hidden] @ [hidden, gates*hidden]`` product, the same arithmetic without the
step-to-step dependency, so a lower bound; a single step concatenates ``[x, h] @ [W; R]``) plus
the constant-weight MatMul/Gemm nodes, in fp32 NumPy/BLAS, and reading every weight once (a BLAS
pass over a buffer of the weights' fp32 size). ``floor_s = max(matmul_s, read_s)`` since the
products read the weights themselves. Each backend is reported as ``x_floor = p50 / floor_s``.
Element-wise gate math, attention scores against the memory and the softmax are not counted:
the floor is a lower bound.

The graph is read with the contract's wire reader (:func:`edgelstm.runtime.graphfacts.graph_facts`).
Imports numpy, the standard library, ``edgelstm.errors``, ``edgelstm.runtime.integrity`` and
:mod:`.measure`. Imported by :mod:`.drivers` and ``benchmarks/``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgelstm.bench.measure import LatencyStats, measure
from edgelstm.errors import ModelFileError
from edgelstm.runtime.graphfacts import GraphFacts, graph_facts
from edgelstm.runtime.integrity import WireError

_RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}
_MATMUL_OPS = {"MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
               "QLinearMatMul", "FusedMatMul"}


def file_facts(path: str | os.PathLike) -> GraphFacts:
    """Initializer shapes and the node list of an ONNX file (:class:`ModelFileError` if it is not one)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(str(path), "cannot read the model file", got=e.strerror) from None
    try:
        return graph_facts(data)
    except (WireError, IndexError) as e:
        raise ModelFileError(str(path), "not a readable ONNX model", expected="an ONNX ModelProto",
                             got=str(e)) from None


@dataclass
class Product:
    """``repeat`` times ``[rows, k] @ [k, n]`` in fp32."""

    rows: int
    k: int
    n: int
    repeat: int = 1
    what: str = ""
    weights: int = 0  # distinct weight elements these products read (k * n per direction)


def floor_products(facts: GraphFacts, *, batch: int, time_steps: int, per_step_head: bool) -> list[Product]:
    """The matrix products a case cannot avoid, from the graph's recurrent and MatMul nodes.

    ``per_step_head``: constant-weight MatMul/Gemm outside the recurrence run on every step
    (label/regress tasks) rather than once per sequence (classify, decoder steps).
    """
    prods: list[Product] = []
    for node in facts.nodes:
        op, inputs = node.op, node.inputs
        if op in _RECURRENT_GATES and len(inputs) >= 3:
            w = facts.initializers.get(inputs[1])
            r = facts.initializers.get(inputs[2])
            if not w or not r or len(w[0]) != 3 or len(r[0]) != 3:
                continue
            wd, rd = w[0], r[0]
            if op == "DynamicQuantizeLSTM":  # W [D, I, 4H], R [D, H, 4H]
                dirs, k_in, gh = wd
                k_h = rd[1]
            else:  # W [D, G*H, I], R [D, G*H, H]
                dirs, gh, k_in = wd
                k_h = rd[2]
            if time_steps == 1:
                prods.append(Product(batch, k_in + k_h, gh, dirs, f"{op} [x,h]@[W;R]", (k_in + k_h) * gh * dirs))
            else:
                prods.append(Product(batch * time_steps, k_in, gh, dirs, f"{op} x@W over time", k_in * gh * dirs))
                # the per-step products h@R, timed as ONE product over all steps: the same FLOPs
                # without the recurrence's dependency or a NumPy call per step, so never more than
                # what any implementation needs (timed step by step, NumPy's per-call cost and
                # BLAS's matrix-vector kernel put this "floor" above onnxruntime's measured time)
                prods.append(Product(batch * time_steps, k_h, gh, dirs, f"{op} h@R, all steps as one product",
                                     k_h * gh * dirs))
        elif op in _MATMUL_OPS and len(inputs) >= 2:
            b = facts.initializers.get(inputs[1])
            if not b or len(b[0]) != 2:
                continue
            k, n = b[0]
            if op == "Gemm" and node.attr("transB", 0):
                k, n = n, k
            rows = batch * (time_steps if per_step_head else 1)
            prods.append(Product(rows, k, n, 1, f"{op} {k}x{n}", k * n))
    return prods


@dataclass
class Floor:
    matmul_s: float
    read_s: float
    floor_s: float
    products: list[dict] = field(default_factory=list)


def measure_floor(facts: GraphFacts, *, batch: int, time_steps: int, per_step_head: bool,
                  warmup: int = 5, runs: int = 50, seed: int = 0) -> Floor | None:
    """Time the case's unavoidable products and one pass over the weights, fp32 NumPy/BLAS."""
    prods = floor_products(facts, batch=batch, time_steps=time_steps, per_step_head=per_step_head)
    if not prods:
        return None
    rng = np.random.default_rng(seed)
    ops = []
    for p in prods:
        a = rng.standard_normal((p.rows, p.k), dtype=np.float32)
        b = rng.standard_normal((p.k, p.n), dtype=np.float32)
        c = np.empty((p.rows, p.n), dtype=np.float32)
        ops.append((a, b, c, p.repeat))

    def products() -> None:
        for a, b, c, rep in ops:
            for _ in range(rep):
                np.matmul(a, b, out=c)

    matmul = LatencyStats.from_samples(measure(products, warmup=warmup, runs=runs)).p50
    # Reading every weight once: a BLAS matrix-vector pass over a buffer of the weights' fp32 size.
    n_weights = sum(p.weights for p in prods)
    cols = 256
    buf = rng.standard_normal((max(1, -(-n_weights // cols)), cols), dtype=np.float32)
    ones = np.ones(cols, dtype=np.float32)
    out = np.empty(buf.shape[0], dtype=np.float32)
    read = LatencyStats.from_samples(measure(lambda: np.matmul(buf, ones, out=out), warmup=warmup, runs=runs)).p50
    return Floor(matmul_s=matmul, read_s=read, floor_s=max(matmul, read),
                 products=[asdict(p) for p in prods])


def case_floor(facts: GraphFacts, *, batch: int, time_steps: int, task: str | None) -> dict | None:
    """:func:`measure_floor` as a result row's ``floor`` entry (None when the graph has no products);
    the head runs per step for the per-step tasks (label, regress, forecast)."""
    fl = measure_floor(facts, batch=batch, time_steps=time_steps,
                       per_step_head=task in ("label", "regress", "forecast"))
    return asdict(fl) if fl else None
