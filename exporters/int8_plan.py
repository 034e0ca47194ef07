"""Does int8 pay? The per-node decision ``quantize`` makes before it quantizes anything.

int8 weights make a file smaller, but they are not free: onnxruntime quantizes each activation
row at run time (``DynamicQuantizeLSTM``, ``DynamicQuantizeMatMul``) and the GRU rewrite that
gives a ``GRU`` int8 weights (``gru_int8.py``) runs its recurrence as a ``Scan`` of small kernels
instead of one fused node. For small weights that fixed cost is larger than what the narrower
products save, and the int8 file is slower than the fp32 one. Measured with
``benchmarks/int8_pays.py`` (results in ``benchmarks/results/int8_pays.json``) on this project's
CI machine (x86 Skylake-SP, 1 thread, one 1-layer node, int8 with 7-bit weights), twice, on a
machine loaded by other work; int8 time / fp32 time (< 1: int8 faster), first run / second run:

==========  ======  ========  ==================  ===================
cell        hidden  features  streaming step      256-step sequence
==========  ======  ========  ==================  ===================
LSTM        32      40        1.07 / 1.04         1.22 / 1.11
LSTM        64      40        1.31 / 0.83         0.91 / 0.95
LSTM        128     128       1.03 / 0.81         0.72 / 0.74
LSTM        256     128       0.58 / 0.67         0.37 / 0.41
GRU         32      40        1.81 / 1.59         9.05 / 9.0
GRU         64      40        1.68 / 1.75         7.8 / 5.44
GRU         128     128       1.23 / 0.86         2.04 / 2.95
GRU         256     128       1.16 / 0.84         1.09 / 1.52
==========  ======  ========  ==================  ===================

(The issue that asked for this rule measured the keyword-spotting size, a 1x64 LSTM with 40
features, on a quiet machine: int8 15.6 us vs fp32 14.5 us per step.)

So, for ``--target cpu`` (and ARM, whose int8 path is the same MLAS design), the rule is:

* ``LSTM``: int8 when its ``W`` and ``R`` hold at least ``MIN_INT8_WEIGHTS`` (2^18) elements, the
  size from which int8 was faster in both cases in both runs (hidden 256 with 128 features is
  393,216; hidden 128 with 128 features, 131,072, was on par per step in one run: kept float);
* ``GRU``: never by default: no measured size paid on sequences (the rewrite's ``Scan`` costs
  more than the int8 products save); ``--force-int8`` rewrites it anyway;
* ``MatMul`` / ``Gemm`` / ``Conv`` with constant weights: the same element threshold as the LSTM (a head
  ``Linear(256, 10)`` has 2,560 weights: int8 would only add a quantize step);
* ``Gather`` of a constant table (an embedding): the same element threshold. A lookup has no
  arithmetic for int8 to speed up: it pays in size (a word-level vocabulary of 10,000 x 256 is
  2.56 M elements, 7.7 MB saved) and costs one ``DequantizeLinear`` of the gathered rows per
  call, which side by side measured 1.07x the fp32 decoder step of the suite's smallest seq2seq
  model (vocabulary 64 x 32: 6 KB saved). Below 2^18 elements (1 MB of fp32) it stays float.

``--target gpu`` is not modelled (int8 there means QDQ for TensorRT): every node is quantized as
the mode says. ``force=True`` quantizes every node the mode can take, and the decision says so.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx is imported by the caller (the export extra); this module only reads protos
    import onnx

# Smallest weight count (W + R elements of a recurrent node, B of a MatMul) for which int8 pays.
MIN_INT8_WEIGHTS = 1 << 18
_THRESHOLD_OPS = ("LSTM", "MatMul", "Gemm", "Conv")


@dataclass(frozen=True)
class Int8Decision:
    """One node: quantize it to int8 or keep it float, and why."""

    node: str
    op: str
    weights: int       # constant weight elements the node reads (W + R for a recurrent node)
    int8: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return f"{'int8' if self.int8 else 'kept float'}: {self.node} ({self.op}, {self.weights:,} weights): {self.reason}"


def _elements(init: onnx.TensorProto | None) -> int:
    if init is None:
        return 0
    n = 1
    for d in init.dims:
        n *= d
    return n


def _weights(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> int | None:
    """Constant weight elements of ``node``, or None when its weights are not initializers."""
    if node.op_type in ("LSTM", "GRU"):
        w, r = (inits.get(x) for x in node.input[1:3])
        return None if w is None or r is None else _elements(w) + _elements(r)
    if node.op_type in ("MatMul", "Gemm", "Conv"):
        return _elements(inits.get(node.input[1])) if len(node.input) > 1 and node.input[1] in inits else None
    if node.op_type == "Gather":
        return _elements(inits.get(node.input[0])) if node.input[0] in inits else None
    return None


def plan_int8(model: onnx.ModelProto, *, target: str, force: bool) -> list[Int8Decision]:
    """A decision for every top-level node that int8 could change (named nodes: ``_name_nodes`` first)."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("LSTM", "GRU", "Gather") + _THRESHOLD_OPS:
            continue
        n = _weights(node, inits)
        if n is None:
            continue
        if force:
            out.append(Int8Decision(node.name, node.op_type, n, True, "--force-int8"))
        elif target == "gpu":
            out.append(Int8Decision(node.name, node.op_type, n, True, "target gpu: not modelled, quantized as asked"))
        elif node.op_type == "Gather":
            big = n >= MIN_INT8_WEIGHTS
            out.append(Int8Decision(node.name, node.op_type, n, big, f">= {MIN_INT8_WEIGHTS:,} table entries: int8 "
                                    "makes the lookup table 4x smaller" if big else f"< {MIN_INT8_WEIGHTS:,} table "
                                    "entries: a few bytes saved for a DequantizeLinear per call"))
        elif node.op_type == "GRU":
            out.append(Int8Decision(node.name, node.op_type, n, False, "the GRU int8 rewrite was slower than the "
                                    "fused fp32 GRU at every measured size (hidden 32-256); --force-int8 to rewrite"))
        elif n >= MIN_INT8_WEIGHTS:
            out.append(Int8Decision(node.name, node.op_type, n, True, f">= {MIN_INT8_WEIGHTS:,} weights: int8 is "
                                    "faster and 4x smaller"))
        else:
            out.append(Int8Decision(node.name, node.op_type, n, False, f"< {MIN_INT8_WEIGHTS:,} weights: quantizing "
                                    "activations at run time costs more than int8 products save"))
    return out
