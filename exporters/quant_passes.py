"""The quantization passes: int8 preparation (node names, the GRU rewrite), onnxruntime's dynamic
and static (QDQ) quantizers, and fp16 (weights stored fp16 for CPU, full conversion for GPU);
plus the model checks that come before them (readable, not quantized already).

Imports: numpy, onnx and onnxruntime.quantization (inside the functions), :mod:`edgelstm.errors`,
:mod:`edgelstm.manifest`, :mod:`edgelstm.exporters.quant_options` and
:mod:`edgelstm.exporters.gru_int8`. Imported by :mod:`edgelstm.exporters.quantize`.
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from edgelstm.errors import EdgeLSTMError, ModelFileError, UnsupportedError
from edgelstm.exporters.quant_options import QuantizeOptions, QuantizeReport
from edgelstm.manifest import Manifest
from edgelstm.exporters.graph import RECURRENT_OPS
from edgelstm.runtime.graphfacts import guess_precision, quantized_ops

log = logging.getLogger("edgelstm.exporters.quantize")  # one logger for the whole pipeline

# onnxruntime's QDQ quantizer: the op types quantized statically (weights and their activations)
STATIC_OP_TYPES = ["MatMul", "Gemm", "Conv"]


# ============================================================================ the input
def load_model(path: Path):
    import onnx

    if not path.exists():
        raise ModelFileError(str(path), "model file not found", expected="an existing .onnx file", got="no such file")
    if path.is_dir():
        raise ModelFileError(str(path), "model path is a directory", expected="an .onnx file", got="a directory")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends: not ONNX
        raise ModelFileError(str(path), "not a readable ONNX model", expected="an ONNX protobuf",
                             got=f"{type(e).__name__}: {e}") from None
    if not model.graph.node:
        raise ModelFileError(str(path), "ONNX model has no nodes", expected="a graph", got="an empty graph")
    return model


def op_counts(model) -> dict[str, int]:
    c: Counter = Counter()

    def walk(g):
        for n in g.node:
            c[n.op_type] += 1
            for a in n.attribute:
                if a.g is not None and a.g.node:
                    walk(a.g)
                for sg in a.graphs:
                    walk(sg)
    walk(model.graph)
    return dict(sorted(c.items()))


def already_quantized(model, manifest: Manifest | None) -> str | None:
    if manifest is not None and manifest.precision != "fp32":
        return f"manifest precision {manifest.precision}"
    hit = quantized_ops(op_counts(model))
    if hit:
        return f"quantized ops {hit}"
    if guess_precision((), (t.data_type for t in model.graph.initializer)) == "fp16":
        return "float16 initializers"
    return None


# ============================================================================ int8
def recurrent_nodes(model) -> list:
    return [n for n in model.graph.node if n.op_type in RECURRENT_OPS and n.domain in ("", "ai.onnx")]


def name_nodes(model) -> None:
    """The quantizers select nodes by name: give every unnamed node one."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)


def _subgraph_node_names(node) -> list[str]:
    """MatMul nodes in ``node``'s subgraphs, at any depth (the GRU rewrite nests a Scan in an If)."""
    out = []
    for a in node.attribute:
        if a.type == a.GRAPH:
            for n in a.g.node:
                if n.op_type == "MatMul":
                    out.append(n.name)
                out += _subgraph_node_names(n)
    return out


def prepare_int8(model, opts: QuantizeOptions, report: QuantizeReport, paying: set[str]):
    """GRU rewrite and the list of recurrent node names (to quantize dynamically). Only the nodes
    in ``paying`` (the int8 plan's) are rewritten or listed."""
    from edgelstm.exporters.gru_int8 import decompose_gru

    for n in recurrent_nodes(model):
        if n.op_type == "RNN":
            report.kept_float.append(f"{n.name} (RNN: onnxruntime has no int8 RNN; weights stay float32)")
    before = {n.name for n in model.graph.node}
    if opts.gru == "int8":
        model, rewrites = decompose_gru(model, only=paying)
        report.gru_rewritten = [r.node for r in rewrites]
    else:
        report.kept_float += [f"{n.name} (GRU: --gru float)" for n in recurrent_nodes(model) if n.op_type == "GRU"]
    new_nodes = [n for n in model.graph.node if n.name not in before]
    recurrent_names = [n.name for n in model.graph.node if n.op_type == "LSTM" and n.name in paying]
    recurrent_names += [n.name for n in new_nodes if n.op_type == "MatMul"]
    for n in new_nodes:
        if n.op_type in ("Scan", "If"):
            recurrent_names.append(n.name)
            recurrent_names += _subgraph_node_names(n)
    return model, recurrent_names, [n.name for n in new_nodes]


class _quiet_root_logger:
    """onnxruntime.quantization logs advice through the root logger ("consider pre-processing",
    "check if the model is already quantized" on our second, recurrent-only pass); keep it out
    of the user's output unless they asked for debug logs."""

    def __enter__(self):
        self.root = logging.getLogger()
        self.level = self.root.level
        if not log.isEnabledFor(logging.DEBUG):
            self.root.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.root.setLevel(self.level)


class _LogWriter(io.TextIOBase):
    def write(self, text: str) -> int:
        if text.strip():
            log.debug("onnxruntime: %s", text.strip())
        return len(text)


def _weight_type():
    from onnxruntime.quantization import QuantType
    return QuantType.QInt8


# int8 weights are quantized to 7 bits (``reduce_range``). onnxruntime's U8S8 kernels on x86 CPUs with
# AVX2 or AVX-512 but without VNNI (Haswell to Skylake-SP: many edge boxes and cloud hosts) add pairs of
# u8*s8 products in saturating int16 (``vpmaddubsw``); with full-range weights those sums overflow and
# the outputs are garbage (seen here on a Skylake-SP Xeon: digits accuracy 0.978 -> 0.056, logits SQNR
# 18-22 dB). 7-bit weights cannot overflow on any CPU, cost about 6 dB of weight SQNR, and leave VNNI and
# ARM speed unchanged. The file runs wherever it is copied, so this is not decided by the build machine.
REDUCE_RANGE = True


@contextlib.contextmanager
def _foreign_errors(subject: str, what: str):
    """onnxruntime's own exceptions (Fail, InvalidGraph, IndexError deep in its quantizer...) on a
    model it cannot take become one typed error naming the file."""
    try:
        yield
    except (EdgeLSTMError, OSError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - onnxruntime raises untyped errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UnsupportedError(subject, f"{what} failed on this model", expected="a model onnxruntime can "
                               "load and quantize", got=f"{type(e).__name__}: {first[:300]}") from None


def run_dynamic(src: Path, dst: Path, opts: QuantizeOptions, nodes: list[str] | None, subject: str = "") -> None:
    from onnxruntime.quantization import quantize_dynamic

    extra = {"EnableSubgraph": True, "MatMulConstBOnly": True}
    kw = {}
    if nodes is not None:
        kw = {"nodes_to_quantize": nodes, "op_types_to_quantize": ["LSTM", "MatMul", "Conv", "Gather"]}
    with _quiet_root_logger(), _foreign_errors(subject or str(src), "onnxruntime's dynamic quantizer"):
        quantize_dynamic(str(src), str(dst), per_channel=opts.per_channel, weight_type=_weight_type(), reduce_range=REDUCE_RANGE,
                         extra_options=extra, **kw)


def run_static(src: Path, dst: Path, opts: QuantizeOptions, reader, exclude: list[str],
                subject: str = "") -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as _quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[opts.method]
    with _quiet_root_logger(), contextlib.redirect_stdout(_LogWriter()), \
            _foreign_errors(subject or str(src), "onnxruntime's static quantizer"):  # the calibrators print()
        _quantize_static(
            str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=STATIC_OP_TYPES, per_channel=opts.per_channel, reduce_range=REDUCE_RANGE,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,  # U8S8: the CPU provider's fast path
            nodes_to_exclude=exclude, calibrate_method=method,
            extra_options={"MatMulConstBOnly": True, "CalibTensorRangeSymmetric": False},
            calibration_providers=["CPUExecutionProvider"],
        )


# ============================================================================ fp16
def fp16(model, opts: QuantizeOptions, report: QuantizeReport):
    if opts.target == "cpu":
        return _fp16_storage(model, report)
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    out = convert_float_to_float16(model, keep_io_types=opts.keep_io_types, op_block_list=list(DEFAULT_OP_BLOCK_LIST))
    _toposort(out.graph)  # the converter appends its boundary Casts after their consumers
    return out


FP16_MAX = 65504.0


def _fp16_storage(model, report: QuantizeReport):
    """fp16 for CPU targets: every float32 initializer is stored as float16 and read through a
    ``Cast`` to float32, which onnxruntime constant-folds at load. The file halves; compute stays
    fp32 everywhere. onnxruntime's CPU provider has no fp16 LSTM/GRU/RNN kernels and only some
    fp16 kernels elsewhere (a fully converted graph can even crash its session setup: seen with a
    fp16 Transpose -> MatMul head at ORT_ENABLE_ALL), so this is the robust CPU form."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    casts, keep = [], []
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    for t in g.initializer:
        if t.data_type != TensorProto.FLOAT:
            keep.append(t)
            continue
        arr = numpy_helper.to_array(t)
        if np.any(np.abs(arr) > FP16_MAX):
            # e.g. the attention mask's fill value (-float32 max): fp16 would turn it into -inf,
            # and softmax over an all-masked row into NaN. It is a constant, not a weight: keep it fp32.
            keep.append(t)
            report.kept_float.append(f"{t.name} (values beyond the float16 range, max |v| "
                                     f"{float(np.abs(arr).max()):.3g})")
            continue
        name = f"{t.name}__fp16"
        while name in taken:
            name += "_"
        taken.add(name)
        keep.append(numpy_helper.from_array(arr.astype(np.float16), name))
        casts.append(helper.make_node("Cast", [name], [t.name], to=TensorProto.FLOAT, name=f"{name}_to_fp32"))
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    kept = [n.name or n.op_type for n in recurrent_nodes(model)]
    report.kept_float.append(
        "all compute (--target cpu): weights are stored fp16 and cast to fp32 at load; onnxruntime's CPU "
        "provider has no fp16 LSTM/GRU/RNN kernels" + (f" (recurrent: {', '.join(kept)})" if kept else ""))
    return model


def _toposort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable)."""
    import onnx

    produced_by = {o: i for i, n in enumerate(graph.node) for o in n.output if o}

    def deps(n) -> set[int]:
        names = set(n.input)
        for a in n.attribute:  # subgraphs may read outer-scope values
            if a.type == onnx.AttributeProto.GRAPH:
                names |= {x for sn in a.g.node for x in sn.input}
        return {produced_by[x] for x in names if x in produced_by}

    nodes = list(graph.node)
    dep = [deps(n) for n in nodes]
    done: set[int] = set()
    order: list[int] = []
    while len(order) < len(nodes):
        progressed = False
        for i in range(len(nodes)):
            if i not in done and dep[i] <= done | {i}:
                done.add(i)
                order.append(i)
                progressed = True
        if not progressed:
            raise UnsupportedError("graph", "cycle in the node graph after conversion", expected="a DAG",
                                   got=f"{len(nodes) - len(order)} nodes left")
    sorted_nodes = [nodes[i] for i in order]
    del graph.node[:]
    graph.node.extend(sorted_nodes)


