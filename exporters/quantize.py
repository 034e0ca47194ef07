"""Quantize an exported edgelstm ONNX file: int8 (dynamic or static QDQ) or fp16.

``quantize(IN, OUT, mode, ...)`` is path in, path out, like onnxruntime's own functions, with the
options in a typed :class:`QuantizeOptions` and every invalid combination rejected before any
work is done. The result is written to a temporary name and renamed, so a failure never leaves a
half-written file.

Modes
-----
``int8-dynamic``
    ``onnxruntime.quantization.quantize_dynamic``: ``LSTM`` becomes ``com.microsoft.DynamicQuantizeLSTM``
    and ``MatMul``/``Gemm`` become integer ops. ``GRU`` (left in float by onnxruntime) is first
    rewritten by :mod:`edgelstm.exporters.gru_int8` into an input-projection ``MatMul`` plus a
    ``Scan`` whose per-step ``MatMul`` with ``R^T`` quantizes, so GRU weights become int8 too.
``int8-static``
    QDQ quantization with calibration on real data (MinMax, Entropy or Percentile) for the
    non-recurrent operators (head, attention projections). onnxruntime's QDQ quantizer has no
    recurrent operators (LSTM/GRU would stay float), so by default the recurrent weights get the
    dynamic treatment above (``recurrent="int8-dynamic"``); ``recurrent="float"`` keeps them float.
``fp16``
    ``onnxruntime.transformers.float16.convert_float_to_float16``. For ``target="cpu"`` the
    recurrent nodes (LSTM/GRU/RNN) stay float32, since onnxruntime's CPU provider has no fp16
    kernels for them and would cast around them anyway; ``target="gpu"`` converts them as well.

The output keeps the edgelstm manifest (``metadata_props["edgelstm"]``) with ``precision``
updated and the options under ``extra["quantization"]``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgelstm.errors import (DataError, EdgeLSTMError, InputError, ModelFileError, UnknownChoiceError,
                             UnsupportedError, UsageError)
from edgelstm.exporters.int8_plan import Int8Decision, plan_int8
from edgelstm.fileio import atomic_path
from edgelstm.manifest import SCHEMA_VERSION, Manifest
from edgelstm.runtime.integrity import set_manifest as _set_manifest  # the one manifest writer
from edgelstm.runtime.interface import Interface
from edgelstm.units import format_size

log = logging.getLogger(__name__)

MODES = ("int8-dynamic", "int8-static", "fp16")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("cpu", "gpu")
RECURRENT_CHOICES = ("int8-dynamic", "float")  # what int8-static does with LSTM/GRU weights
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
# ops already produced by a quantizer / converter: a model holding them was quantized before
QUANTIZED_OPS = {"DynamicQuantizeLSTM", "QuantizeLinear", "DequantizeLinear", "MatMulInteger",
                 "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulIntegerToFloat"}
# When the quantized graph is this far off the float one on the evaluation data, quantize refuses
# to write it (QuantizationAccuracyError, exit 1) unless --accept-error: an output whose SQNR is
# below MIN_SQNR_DB (10 dB: the noise is a third of the signal's amplitude; int8 weights of a
# working LSTM measure 30-45 dB here, a greedy decoder whose tokens flip measured 3 dB), or a task
# metric that fell by more than MAX_ACCURACY_DROP (absolute) or whose RMSE rose by more than
# MAX_RMSE_RISE (relative).
MIN_SQNR_DB = 10.0
MAX_ACCURACY_DROP = 0.05
MAX_RMSE_RISE = 0.25

# onnxruntime's QDQ quantizer: the op types quantized statically (weights and their activations)
STATIC_OP_TYPES = ["MatMul", "Gemm", "Conv"]


@dataclass(frozen=True)
class QuantizeOptions:
    """Everything that decides what ``quantize`` writes. Validated by :meth:`validate`."""

    mode: str                                  # one of MODES
    per_channel: bool = False                  # int8: one scale per output channel of each weight
    method: str | None = None                  # int8-static calibration: minmax (default), entropy, percentile
    target: str = "cpu"                        # cpu | gpu: fp16 keeps recurrent nodes fp32 on cpu
    keep_io_types: bool | None = None          # fp16: keep graph inputs/outputs float32 (default True)
    recurrent: str | None = None               # int8-static: "int8-dynamic" (default) or "float"
    gru: str = "int8"                          # int8: "int8" rewrites GRU for int8 weights, "float" leaves it
    calibration_samples: int = 512             # at most this many sequences are used to calibrate / evaluate
    batch_size: int = 32                       # sequences per onnxruntime call while calibrating / evaluating
    threads: int = 1                           # intra-op threads when evaluating (int8 LSTM output depends on it)
    force_int8: bool = False                   # int8: quantize every node the mode can take, even where int8
                                               # is slower than float (see int8_plan.py)
    accept_error: bool = False                 # write the output even when it is far off (see MIN_SQNR_DB)

    def validate(self, *, has_calibration: bool) -> "QuantizeOptions":
        """Reject unknown names and option combinations that would be ignored; fill defaults."""
        if self.mode not in MODES:
            raise UnknownChoiceError("--mode", "unknown quantization mode", expected=list(MODES), got=self.mode)
        if self.target not in TARGETS:
            raise UnknownChoiceError("--target", "unknown target", expected=list(TARGETS), got=self.target)
        if self.gru not in ("int8", "float"):
            raise UnknownChoiceError("gru", "unknown GRU treatment", expected=["int8", "float"], got=self.gru)
        if self.method is not None and self.method not in CALIBRATION_METHODS:
            raise UnknownChoiceError("--method", "unknown calibration method",
                                     expected=list(CALIBRATION_METHODS), got=self.method)
        if self.recurrent is not None and self.recurrent not in RECURRENT_CHOICES:
            raise UnknownChoiceError("--recurrent", "unknown recurrent treatment",
                                     expected=list(RECURRENT_CHOICES), got=self.recurrent)
        for name, value in (("calibration_samples", self.calibration_samples), ("batch_size", self.batch_size),
                            ("threads", self.threads)):
            if not isinstance(value, int) or value < 1:
                raise UsageError(name, "must be a positive integer", expected=">= 1", got=value)
        if self.mode == "int8-static":
            if not has_calibration:
                raise UsageError("--calibration", "int8-static needs calibration data",
                                 expected="an .npz of graph inputs or a run directory", got="nothing")
        else:
            if self.method is not None:
                raise UsageError("--method", "a calibration method only applies to int8-static",
                                 expected="no --method", got=f"{self.method} with {self.mode}")
            if self.recurrent is not None:
                raise UsageError("--recurrent", "only applies to int8-static",
                                 expected="no --recurrent", got=f"{self.recurrent} with {self.mode}")
        if self.mode == "fp16":
            if self.keep_io_types is False and self.target == "cpu":
                raise UsageError("--fp16-io", "float16 inputs/outputs need fp16 compute",
                                 expected="--target gpu", got="--target cpu")
            if self.per_channel:
                raise UsageError("--per-channel", "per-channel scales only apply to int8 modes",
                                 expected="int8-dynamic or int8-static", got=self.mode)
            if self.force_int8:
                raise UsageError("--force-int8", "only applies to int8 modes",
                                 expected="int8-dynamic or int8-static", got=self.mode)
        else:
            if self.keep_io_types is not None:
                raise UsageError("--keep-io-types", "only applies to fp16",
                                 expected="no --keep-io-types/--fp16-io", got=f"set with {self.mode}")
            if self.target == "gpu" and (self.mode == "int8-dynamic" or self.recurrent != "float"):
                raise UnsupportedError(
                    "--target", "int8 recurrent kernels (DynamicQuantizeLSTM, MatMulInteger) exist only on "
                    "onnxruntime's CPU provider", expected="--target cpu, or int8-static with --recurrent float "
                    "(QDQ, for TensorRT), or fp16", got=f"gpu with {self.mode}")
        d = asdict(self)
        if self.mode == "int8-static":
            d["method"] = self.method or "minmax"
            d["recurrent"] = self.recurrent or "int8-dynamic"
        if self.mode == "fp16":
            d["keep_io_types"] = True if self.keep_io_types is None else bool(self.keep_io_types)
        return QuantizeOptions(**d)


@dataclass
class OutputError:
    """Quantized vs float on one graph output."""

    name: str
    snr_db: float
    max_abs: float
    mean_abs: float


@dataclass
class QuantizeReport:
    """What ``quantize`` did and how far the result is from the float model."""

    input: str
    output: str
    options: dict[str, Any]
    size_before: int
    size_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    gru_rewritten: list[str] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)   # recurrent nodes left in float, and why
    int8_decisions: list[dict] = field(default_factory=list)  # int8 modes: every node's int8-or-float decision
    data_source: str | None = None                        # where the error was measured
    samples: int = 0
    errors: list[OutputError] = field(default_factory=list)
    metric: dict[str, Any] | None = None                  # {"name", "float", "quantized", "delta"}
    notes: list[str] = field(default_factory=list)
    companions: list["QuantizeReport"] = field(default_factory=list)  # seq2seq: the decoder step's report

    @property
    def ratio(self) -> float:
        return self.size_before / max(self.size_after, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d

    def lines(self) -> list[str]:
        """Human-readable summary (the CLI prints these)."""
        out = [f"{self.options['mode']}: {self.input} -> {self.output}",
               f"size: {format_size(self.size_before)} -> {format_size(self.size_after)} ({self.ratio:.2f}x smaller)"]
        if self.gru_rewritten:
            out.append(f"GRU rewritten for int8 weights: {', '.join(self.gru_rewritten)}")
        out += [f"kept float: {k}" for k in self.kept_float]
        out += [f"  {Int8Decision(**d).line()}" for d in self.int8_decisions]
        if self.errors:
            out.append(f"error vs float on {self.data_source} ({self.samples} sequences):")
            out += [f"  {e.name}: SQNR {e.snr_db:.1f} dB, max abs {e.max_abs:.3g}, mean abs {e.mean_abs:.3g}"
                    for e in self.errors]
        if self.metric:
            m = self.metric
            out.append(f"{m['name']}: float {m['float']:.4f}, quantized {m['quantized']:.4f} "
                       f"(delta {m['delta']:+.4f})")
        out += [f"note: {n}" for n in self.notes]
        for c in self.companions:
            out += c.lines()
        return out


# ============================================================================ loading
def _load_model(path: Path):
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




def _op_counts(model) -> dict[str, int]:
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


def _already_quantized(model, manifest: Manifest | None) -> str | None:
    if manifest is not None and manifest.precision != "fp32":
        return f"manifest precision {manifest.precision}"
    ops = set(_op_counts(model))
    hit = sorted(ops & QUANTIZED_OPS)
    if hit:
        return f"quantized ops {hit}"
    from onnx import TensorProto

    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return "float16 initializers"
    return None


# ============================================================================ data
@dataclass
class CalibrationData:
    """Graph inputs (by graph input name) plus optional labels, all sharing the first axis."""

    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    batch_axis: dict[str, int] = field(default_factory=dict)  # inputs batched on another axis (states: 1)

    def __len__(self) -> int:
        name = next(iter(self.feeds))
        return int(self.feeds[name].shape[self.batch_axis.get(name, 0)])

    def batches(self, batch_size: int, limit: int) -> Iterator[dict[str, np.ndarray]]:
        """Slices of every input along its own batch axis."""
        n = min(len(self), limit)
        for i in range(0, n, batch_size):
            sl = slice(i, min(i + batch_size, n))
            yield {k: v[(slice(None),) * self.batch_axis.get(k, 0) + (sl,)] for k, v in self.feeds.items()}


def _input_roles(iface: Interface) -> dict[str, str]:
    """Map the npz aliases ``x`` / ``lengths`` to graph input names when the graph names differ."""
    names = {t.name for t in iface.inputs}
    roles = {}
    if "x" not in names and iface.primary is not None:
        roles["x"] = iface.primary.name
    if "lengths" not in names and iface.lengths is not None:
        roles["lengths"] = iface.lengths
    return roles


def load_calibration(path: str | os.PathLike, iface: Interface, manifest: Manifest | None) -> CalibrationData:
    """Read an ``.npz`` keyed by graph input names (``x``/``lengths`` accepted as aliases; ``y``
    holds labels; each array batched on its input's own batch axis) or a run directory (its
    held-out data, normalized as the manifest says)."""
    p = Path(path)
    if not p.exists():
        raise DataError(str(p), "calibration data not found", expected="an .npz file or a run directory",
                        got="no such path")
    if p.is_dir():
        return _load_run_dir(p, iface, manifest)
    from edgelstm.data.readers import load_arrays

    arrays = load_arrays(p)  # refuses pickles, complex / text arrays, truncated archives
    return _feeds_from_arrays(arrays, iface, source=p.name)


def _feeds_from_arrays(arrays: dict[str, np.ndarray], iface: Interface, *, source: str) -> CalibrationData:
    names = {t.name for t in iface.inputs}
    roles = _input_roles(iface)
    labels = arrays.pop("y", None) if "y" not in names else None
    feeds: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        target = k if k in names else roles.get(k)
        if target is None:
            raise DataError(f"{source}:{k}", "array does not name a graph input",
                            expected=sorted(names | set(roles) | {"y"}), got=k)
        feeds[target] = v
    if not feeds:
        raise DataError(source, "no graph input in the calibration data", expected=sorted(names), got=sorted(arrays))
    axes = {k: iface.input(k).batch_axis or 0 for k in feeds}
    for k, v in feeds.items():  # rank, fixed sizes and finiteness, before onnxruntime sees them
        info = iface.input(k)
        want = list(info.shape)
        if v.ndim != len(want):
            raise DataError(f"{source}:{k}", "array rank does not match the graph input",
                            expected=f"{len(want)}-D {info.layout()}", got=f"{v.ndim}-D {list(v.shape)}")
        for axis, (w, g) in enumerate(zip(want, v.shape)):
            if axis != axes[k] and isinstance(w, int) and w != g:
                raise DataError(f"{source}:{k}", f"size of axis {axis} does not match the graph input "
                                "(calibration data from another model or data set?)", expected=want,
                                got=list(v.shape))
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise DataError(f"{source}:{k}", "calibration data holds NaN or Inf", expected="finite values",
                            got=f"{int((~np.isfinite(v)).sum())} non-finite values")
    sizes = {k: v.shape[axes[k]] for k, v in feeds.items()}
    n = next(iter(sizes.values()))
    for k, size in sizes.items():
        if size != n:
            raise DataError(f"{source}:{k}", "arrays disagree on the number of sequences", expected=n,
                            got=size)  # each counted on its input's own batch axis
    if labels is not None and labels.shape[0] != n:
        raise DataError(f"{source}:y", "labels disagree with the inputs on the number of sequences",
                        expected=n, got=labels.shape[0])
    # missing state inputs start at zeros, missing lengths mean full sequences (_complete_feed)
    return CalibrationData(feeds, labels, source, axes)


def _load_run_dir(p: Path, iface: Interface, manifest: Manifest | None) -> CalibrationData:
    """The run's held-out (validation) split, loaded as training saw it, normalized for the graph."""
    from edgelstm.checkpoint import read_run_config
    from edgelstm.data import load_dataset

    run = read_run_config(p)
    if not run.dataset:
        raise DataError(str(p), "run config names no data set to calibrate on", expected="a dataset in config.json",
                        got=None)
    bundle = load_dataset(run.dataset, seed=run.seed or 0)
    split = bundle.val if len(bundle.val) else bundle.test
    x = np.asarray(split.x)
    norm = manifest.normalization if manifest is not None else None
    if norm is not None and x.ndim == 3 and x.shape[-1] != len(norm.mean):
        raise DataError(str(p), f"the run's data set ({run.dataset}) does not fit this model",
                        expected=f"{len(norm.mean)} features per step", got=f"{x.shape[-1]}")
    if x.dtype.kind == "f":
        if norm is not None:  # the graph takes normalized features (the runtime normalizes on the way in)
            x = ((x - np.asarray(norm.mean, np.float32)) / np.asarray(norm.std, np.float32)).astype(np.float32)
        x = x.astype(np.float32)
    names = {t.name for t in iface.inputs}
    arrays = {"x": x, "lengths": np.asarray(split.lengths)}
    if "src" in names:  # seq2seq encoder
        arrays = {"src": x, "src_lengths": np.asarray(split.lengths)}
    elif bundle.task in ("regress", "forecast") and bundle.target_normalization is not None:
        pass  # targets live in a normalized space the graph output may not share: no metric
    elif bundle.task != "seq2seq":
        arrays["y"] = np.asarray(split.y)
    if not (set(arrays) - {"y"}) <= names | set(_input_roles(iface)):
        raise UnsupportedError(str(p), "this graph cannot be fed from the run's data set",
                               expected="a graph taking x/lengths or src/src_lengths", got=sorted(names))
    return _feeds_from_arrays(arrays, iface, source=f"{p.name} ({run.dataset}, validation split)")


_ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                 "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def _complete_feed(batch: dict[str, np.ndarray], iface: Interface, sess_inputs,
                   manifest: Manifest | None = None) -> dict[str, np.ndarray]:
    """Fill missing state (zeros) and lengths (full) inputs from the interface, then cast every
    input to the session's dtype (an fp16 graph may take float16)."""
    try:
        feed, _ = iface.complete(batch, defaults=_state_defaults(iface, manifest))
    except InputError as e:
        raise DataError(e.subject, "graph input missing from the calibration data and cannot be defaulted",
                        expected=f"an array named {e.subject!r}", got="none") from None
    out = {}
    for i in sess_inputs:
        want = _ORT_TO_NUMPY.get(i.type)
        out[i.name] = feed[i.name].astype(want, copy=False) if want else feed[i.name]
    return out


def _state_defaults(iface: Interface, manifest: Manifest | None) -> dict[str, dict[int, int]]:
    """Sizes of symbolic state dims ``[layers*directions, batch, hidden]`` from the manifest."""
    if manifest is None:
        return {}
    return {t.name: {0: manifest.layers * manifest.directions, 2: manifest.hidden_size}
            for t in iface.inputs if t.role == "state_in" and t.rank == 3}


def _random_data(iface: Interface, manifest: Manifest | None, sess_inputs=None, n: int = 64, t: int = 24,
                 seed: int = 0) -> CalibrationData | None:
    """Evaluation data drawn from the interface: standard normal floats, token ids in their
    embedding's range, lengths in ``[t/2, t]``; states and missing lengths are filled later
    (zeros, full). None when an input has a size nothing determines."""
    rng = np.random.default_rng(seed)
    t = max(t, iface.min_time)  # export's --min-size: a conv front end is never fed less
    if manifest is not None and manifest.task == "seq2seq":
        return _random_seq2seq_data(sess_inputs, manifest, rng, n, t)
    feeds: dict[str, np.ndarray] = {}
    try:
        for info in iface.data_inputs:
            feeds[info.name] = iface.fill(info.name, n, t, rng=rng)
    except InputError:
        return None
    if iface.lengths is not None:
        feeds[iface.lengths] = rng.integers(max(1, t // 2), t + 1, size=n).astype(iface.input(iface.lengths).dtype)
    if not feeds:
        return None
    tokens = any(i.role == "tokens" for i in iface.data_inputs)
    return CalibrationData(feeds, None, "random inputs (token ids in range, N(0,1) floats)" if tokens
                           else "random N(0,1) inputs",
                           {k: iface.input(k).batch_axis or 0 for k in feeds})


def _random_seq2seq_data(sess_inputs, manifest: Manifest, rng, n: int, t: int) -> CalibrationData:
    """Random token ids (never the pad/bos/eos ids 0-2) and N(0,1) states and memory for either graph."""
    vocab = len(manifest.vocab) if manifest.vocab else \
        int(manifest.extra.get("model_config", {}).get("vocab_size") or 4)  # ids 0-2 are pad/bos/eos
    lens = rng.integers(max(1, t // 2), t + 1, size=n)
    feeds: dict[str, np.ndarray] = {}
    axes: dict[str, int] = {}
    for i in sess_inputs:
        shape = list(i.shape)
        if "int" in i.type and len(shape) == 1 and i.name.endswith("lengths"):
            feeds[i.name] = lens.astype(np.int32 if "int32" in i.type else np.int64)
        elif "int" in i.type:
            dims = [n] if len(shape) == 1 else [n, t]
            feeds[i.name] = rng.integers(3, max(vocab, 4), size=dims).astype(np.int64 if "int64" in i.type else np.int32)
        elif len(shape) == 3 and isinstance(shape[0], int):      # state [layers*dirs, batch, hidden]
            feeds[i.name] = rng.standard_normal((shape[0], n, shape[2])).astype(np.float32)
            axes[i.name] = 1
        elif len(shape) == 3:                                    # memory [batch, src_time, hidden]
            feeds[i.name] = rng.standard_normal((n, t, shape[2])).astype(np.float32)
        else:
            return None
    return CalibrationData(feeds, None, "random tokens and N(0,1) states", axes)


class _Reader:
    """onnxruntime CalibrationDataReader over :class:`CalibrationData`.

    The histogram calibrators (entropy, percentile) stack every batch of a tensor into one array,
    so all batches must have the same size: use the largest batch size that divides the count."""

    def __init__(self, data: CalibrationData, iface: Interface, sess_inputs, opts: QuantizeOptions,
                 manifest: Manifest | None = None):
        n = min(len(data), opts.calibration_samples)
        bs = opts.batch_size
        if opts.method in ("entropy", "percentile"):
            bs = max(b for b in range(1, min(bs, n) + 1) if n % b == 0)
        self._it = (_complete_feed(b, iface, sess_inputs, manifest) for b in data.batches(bs, n))

    def get_next(self):
        return next(self._it, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


# ============================================================================ evaluation
def _session(model_bytes_or_path, threads: int, *, safe_fp16: bool = False, subject: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if safe_fp16:
        # a fully fp16 graph (meant for a GPU) on the CPU provider: ORT_ENABLE_ALL's CPU-only
        # rewrites have crashed session setup on fp16 Transpose -> MatMul (onnxruntime 1.32)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes_or_path, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's Fail / InvalidGraph / NotImplemented
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        where = subject or (model_bytes_or_path if isinstance(model_bytes_or_path, str) else "model")
        raise ModelFileError(where, "onnxruntime cannot load this model", expected="a model onnxruntime's CPU "
                             "provider runs", got=first[:300]) from None


def _task_metric(task: str | None, out_ref: np.ndarray, out_q: np.ndarray, labels: np.ndarray,
                 lengths: np.ndarray | None) -> dict[str, Any] | None:
    """accuracy (classify / label, labels ignore padding -100 and steps past ``lengths``) or RMSE."""
    if labels is None:
        return None
    if labels.dtype.kind in "iu":
        if out_ref.ndim == 2 and labels.ndim == 1:
            f = float(np.mean(out_ref.argmax(-1) == labels))
            q = float(np.mean(out_q.argmax(-1) == labels))
            return {"name": "accuracy", "float": f, "quantized": q, "delta": q - f}
        if out_ref.ndim == 3 and labels.ndim == 2:
            valid = labels != -100
            if lengths is not None:
                valid &= np.arange(labels.shape[1])[None, :] < lengths[:, None]
            f = float(np.mean((out_ref.argmax(-1) == labels)[valid]))
            q = float(np.mean((out_q.argmax(-1) == labels)[valid]))
            return {"name": "accuracy (per step)", "float": f, "quantized": q, "delta": q - f}
        return None
    if labels.shape == out_ref.shape and task in (None, "regress", "forecast"):
        valid = np.ones(labels.shape[:2], bool)
        if lengths is not None and labels.ndim == 3:
            valid = np.arange(labels.shape[1])[None, :] < lengths[:, None]
        f = float(np.sqrt(np.mean(((out_ref - labels) ** 2)[valid])))
        q = float(np.sqrt(np.mean(((out_q - labels) ** 2)[valid])))
        return {"name": "rmse", "float": f, "quantized": q, "delta": q - f}
    return None


def evaluate(float_model, quant_path: str | os.PathLike, data: CalibrationData, opts: QuantizeOptions,
             task: str | None = None, *, iface: Interface, manifest: Manifest | None = None
             ) -> tuple[list[OutputError], dict | None, int]:
    """Run both models on ``data`` (same threads) and compare every float output, each
    concatenated along its own batch axis."""
    from edgelstm.stats import error_stats

    ref_s = _session(float_model.SerializeToString(), opts.threads)
    q_s = _session(str(quant_path), opts.threads, safe_fp16=opts.mode == "fp16" and opts.target == "gpu")
    inputs = ref_s.get_inputs()
    names = [o.name for o in ref_s.get_outputs()]
    refs: dict[str, list] = {n: [] for n in names}
    qs: dict[str, list] = {n: [] for n in names}
    lengths = []
    n_done = 0
    lens_name = iface.lengths
    for batch in data.batches(opts.batch_size, opts.calibration_samples):
        feed = _complete_feed(batch, iface, inputs, manifest)
        q_feed = _complete_feed(batch, iface, q_s.get_inputs(), manifest)
        r_out = ref_s.run(names, feed)
        q_out = q_s.run(names, q_feed)
        for n, r, q in zip(names, r_out, q_out):
            info = iface.output(n)
            axis = info.batch_axis if info is not None and info.batch_axis is not None else 0
            refs[n].append((axis, r))
            qs[n].append((axis, q.astype(np.float32)))
        if lens_name:
            lengths.append(feed[lens_name])
        first = next(iter(batch))
        n_done += batch[first].shape[data.batch_axis.get(first, 0)]
    errors, cat = [], {}
    for n in names:
        if not refs[n] or refs[n][0][1].dtype.kind != "f":
            continue
        axis = refs[n][0][0]
        r = np.concatenate([a for _, a in refs[n]], axis=axis)
        q = np.concatenate([a for _, a in qs[n]], axis=axis)
        cat[n] = (r, q)
        s = error_stats(r, q, name=n)
        errors.append(OutputError(n, round(s.snr_db, 2), s.max_abs, s.mean_abs))
    metric = None
    if data.labels is not None and names:
        main = iface.data_outputs[0].name if iface.data_outputs else names[0]
        labels = data.labels[:n_done]
        metric = _task_metric(task, cat[main][0], cat[main][1], labels,
                              np.concatenate(lengths) if lengths else None)
    return errors, metric, n_done




# ============================================================================ the modes
def _recurrent_nodes(model) -> list:
    return [n for n in model.graph.node if n.op_type in RECURRENT_OPS and n.domain in ("", "ai.onnx")]


def _name_nodes(model) -> None:
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


def _prepare_int8(model, opts: QuantizeOptions, report: QuantizeReport, paying: set[str]):
    """GRU rewrite and the list of recurrent node names (to quantize dynamically). Only the nodes
    in ``paying`` (the int8 plan's) are rewritten or listed."""
    from edgelstm.exporters.gru_int8 import decompose_gru

    for n in _recurrent_nodes(model):
        if n.op_type == "RNN":
            report.kept_float.append(f"{n.name} (RNN: onnxruntime has no int8 RNN; weights stay float32)")
    before = {n.name for n in model.graph.node}
    if opts.gru == "int8":
        model, rewrites = decompose_gru(model, only=paying)
        report.gru_rewritten = [r.node for r in rewrites]
    else:
        report.kept_float += [f"{n.name} (GRU: --gru float)" for n in _recurrent_nodes(model) if n.op_type == "GRU"]
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


def _run_dynamic(src: Path, dst: Path, opts: QuantizeOptions, nodes: list[str] | None, subject: str = "") -> None:
    from onnxruntime.quantization import quantize_dynamic

    extra = {"EnableSubgraph": True, "MatMulConstBOnly": True}
    kw = {}
    if nodes is not None:
        kw = {"nodes_to_quantize": nodes, "op_types_to_quantize": ["LSTM", "MatMul", "Conv", "Gather"]}
    with _quiet_root_logger(), _foreign_errors(subject or str(src), "onnxruntime's dynamic quantizer"):
        quantize_dynamic(str(src), str(dst), per_channel=opts.per_channel, weight_type=_weight_type(), reduce_range=REDUCE_RANGE,
                         extra_options=extra, **kw)


def _run_static(src: Path, dst: Path, opts: QuantizeOptions, reader: "_Reader", exclude: list[str],
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


def _fp16(model, opts: QuantizeOptions, report: QuantizeReport):
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
    kept = [n.name or n.op_type for n in _recurrent_nodes(model)]
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


# ============================================================================ public entry point
def _seq2seq_pair(path: Path) -> tuple[Path, Path]:
    from edgelstm.runtime.interface import pair_paths

    return pair_paths(path)


def quantize(model_path: str | os.PathLike, output_path: str | os.PathLike,
             mode: str | QuantizeOptions = "int8-dynamic", **kw) -> QuantizeReport:
    """Quantize one ONNX file, or a seq2seq pair given by its stem.

    ``edgelstm export`` writes a seq2seq model ``OUT.onnx`` as ``OUT.encoder.onnx`` and
    ``OUT.decoder_step.onnx``. Given the stem (a path that does not exist while that pair does),
    both graphs are quantized into the pair of ``output_path``, each manifest naming its new
    companion; the returned report is the encoder's, with the decoder step's in ``companions``.
    See :func:`quantize_file` for the options.
    """
    src, dst = Path(model_path), Path(output_path)
    pair = _seq2seq_pair(src)
    if not src.exists() and all(p.exists() for p in pair):
        if dst.suffix.lower() != ".onnx":
            raise UsageError("-o", "output must be an .onnx file", expected="a path ending in .onnx", got=str(dst))
        mode_name = mode.mode if isinstance(mode, QuantizeOptions) else mode
        if mode_name == "int8-static":
            raise UnsupportedError(str(src), "int8-static is not available for a seq2seq pair: its decoder step "
                                   "needs calibration data for memory and states, which a run directory or an "
                                   ".npz of source sequences does not hold", expected="--mode int8-dynamic or fp16",
                                   got="int8-static")
        out_pair = _seq2seq_pair(dst)
        if not kw.get("overwrite", True) and any(p.exists() for p in out_pair):
            raise UsageError(str(dst), "output exists", expected="a new path or --overwrite",
                             got=[str(p) for p in out_pair if p.exists()])
        roles = {"encoder": out_pair[0].name, "decoder_step": out_pair[1].name}
        reports = []
        # both graphs are written into a temporary folder beside the output and renamed into place
        # only when both succeeded: never half a pair on disk
        stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent if str(dst.parent) else "."))
        try:
            for role, s_path, d_path in (("encoder", pair[0], out_pair[0]), ("decoder_step", pair[1], out_pair[1])):
                other = {k: v for k, v in roles.items() if k != role}
                # the run's (or npz's) source sequences feed the encoder; the decoder step's inputs
                # (memory, states) are not in them: its error is measured on random tokens and states
                kw_role = kw if role == "encoder" else {**kw, "calibration": None}
                reports.append(quantize_file(s_path, stage / d_path.name, mode, companions=other, **kw_role))
            for d_path in out_pair:
                os.replace(stage / d_path.name, d_path)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        for r, d_path in zip(reports, out_pair):
            r.output = str(d_path)
        reports[0].companions = reports[1:]
        return reports[0]
    return quantize_file(src, dst, mode, **kw)


def quantize_file(model_path: str | os.PathLike, output_path: str | os.PathLike,
                  mode: str | QuantizeOptions = "int8-dynamic",
                  *, companions: dict[str, str] | None = None, calibration: str | os.PathLike | None = None, per_channel: bool = False, method: str | None = None,
             target: str = "cpu", keep_io_types: bool | None = None, recurrent: str | None = None,
             gru: str = "int8", calibration_samples: int = 512, threads: int = 1, evaluate_error: bool = True,
             overwrite: bool = True, force_int8: bool = False, trust_modified: bool = False,
             accept_error: bool = False) -> QuantizeReport:
    """Quantize ``model_path`` into ``output_path`` and measure the error against the float model.

    ``mode`` is a mode name or a full :class:`QuantizeOptions` (then the keyword options are not
    used). Errors: :class:`UnknownChoiceError` / :class:`UsageError` for bad options (raised before
    anything is read), :class:`ModelFileError` for a missing or non-ONNX input,
    :class:`DataError` for unreadable calibration data, :class:`UnsupportedError` for a model the
    mode cannot take (already quantized, GRU options the rewrite cannot keep...).
    The input goes through the runtime's integrity check (seal and manifest schema); with
    ``trust_modified`` a file that fails the seal check is quantized but its output is left
    unsealed, so it is refused as modified in turn: quantize never re-seals a modified file.
    """
    if isinstance(mode, QuantizeOptions):
        opts = mode
    else:
        opts = QuantizeOptions(mode=mode, per_channel=per_channel, method=method, target=target,
                               keep_io_types=keep_io_types, recurrent=recurrent, gru=gru,
                               calibration_samples=calibration_samples, threads=threads, force_int8=force_int8,
                               accept_error=accept_error)
    opts = opts.validate(has_calibration=calibration is not None)
    src, dst = Path(model_path), Path(output_path)
    if dst.suffix.lower() != ".onnx":
        raise UsageError("-o", "output must be an .onnx file", expected="a path ending in .onnx", got=str(dst))
    if src.exists() and dst.exists() and src.resolve() == dst.resolve():
        raise UsageError("-o", "output would overwrite the input model", expected="a different path", got=str(dst))
    if dst.exists() and not overwrite:
        raise UsageError(str(dst), "output exists", expected="a new path or --overwrite", got="an existing file")
    if calibration is not None and not Path(calibration).exists():
        raise DataError(str(calibration), "calibration data not found", expected="an .npz file or a run directory",
                        got="no such path")

    import onnx

    from edgelstm.runtime.integrity import read_model_bytes, seal_problem

    from edgelstm.runtime.model import Model
    from edgelstm.runtime.session import LoadOptions

    # the runtime's own load (the integrity check, then the manifest against the graph): what run
    # refuses, quantize refuses
    src_path, src_bytes = read_model_bytes(src)
    loaded = Model(src_path, src_bytes, LoadOptions(device="cpu", threads=1, trust_modified=trust_modified))
    manifest = loaded.manifest
    sealed = seal_problem(src_bytes, str(src)) is None
    model = _load_model(src)
    why = _already_quantized(model, manifest)
    if why:
        raise UnsupportedError(str(src), "model is already quantized", expected="an fp32 model", got=why)
    float_model = onnx.ModelProto()
    float_model.CopyFrom(model)
    sess_inputs = _session(float_model.SerializeToString(), opts.threads, subject=str(src)).get_inputs()
    iface = _interface(loaded, model)
    data = load_calibration(calibration, iface, manifest) if calibration is not None else None
    if data is not None and len(data) == 0:
        raise DataError(str(calibration), "calibration data holds no sequences", expected=">= 1", got=0)

    report = QuantizeReport(input=str(src), output=str(dst), options=asdict(opts),
                            size_before=src.stat().st_size, size_after=0, ops_before=_op_counts(model), ops_after={})
    with tempfile.TemporaryDirectory(prefix="edgelstm-quant-") as tmp:
        stage = Path(tmp) / "stage.onnx"
        result = Path(tmp) / "result.onnx"
        paying: set[str] = set()
        if opts.mode != "fp16":
            _name_nodes(model)
            decisions = plan_int8(model, target=opts.target, force=opts.force_int8)
            report.int8_decisions = [d.to_dict() for d in decisions]
            paying = {d.node for d in decisions if d.int8}
        if opts.mode == "fp16":
            onnx.save(_fp16(model, opts, report), str(result))
        elif not paying:
            report.notes.append(f"int8 does not pay for any node of this model on --target {opts.target}: "
                                "the output keeps fp32 (--force-int8 quantizes anyway)")
            onnx.save(float_model, str(result))
        else:
            if opts.mode == "int8-static" and opts.recurrent == "float":
                opts_gru = QuantizeOptions(**{**asdict(opts), "gru": "float"})
                model, recurrent_names, new_nodes = _prepare_int8(model, opts_gru, report, paying)
                report.kept_float += [f"{n.name} (LSTM: --recurrent float)" for n in _recurrent_nodes(model)
                                      if n.op_type == "LSTM" and n.name in paying]
                recurrent_names = []
            else:
                model, recurrent_names, new_nodes = _prepare_int8(model, opts, report, paying)
            onnx.save(model, str(stage))
            other = sorted(paying - {n.name for n in _recurrent_nodes(model)} - set(report.gru_rewritten))
            if opts.mode == "int8-dynamic":
                _run_dynamic(stage, result, opts, recurrent_names + other, str(src))
            else:
                static_out = Path(tmp) / "static.onnx"
                # every node of the GRU rewrite, every recurrent node and every node int8 does not
                # pay for stays out of QDQ
                exclude = sorted(set(new_nodes) | {n.name for n in _recurrent_nodes(model)}
                                 | {d.node for d in decisions if not d.int8})
                _run_static(stage, static_out if recurrent_names else result, opts, _Reader(
                    data, iface, sess_inputs, opts, manifest), exclude, str(src))
                if recurrent_names:
                    _run_dynamic(static_out, result, opts, recurrent_names, str(src))
        out_model = onnx.load(str(result))
        if report.gru_rewritten:  # the quantizer sorts by explicit inputs; the GRU If reads the outer scope
            from edgelstm.exporters.gru_int8 import finish_quantized

            finish_quantized(out_model)
        _finish_manifest(out_model, manifest, opts, report, data, companions, seal=sealed)
        report.ops_after = _op_counts(out_model)
        # the file to evaluate must be the file we ship: write it, evaluate, then publish
        final = Path(tmp) / "final.onnx"
        onnx.save(out_model, str(final))
        try:
            onnx.checker.check_model(str(final))
        except onnx.checker.ValidationError as e:
            raise UnsupportedError(str(src), f"{opts.mode} produced an invalid model", expected="a valid ONNX model",
                                   got=str(e).splitlines()[0]) from None
        if evaluate_error:
            eval_data = data if data is not None else _random_data(iface, manifest, sess_inputs)
            if eval_data is None:
                report.notes.append("no data to measure the error on: an input has a size nothing determines "
                                    "(pass --calibration DATA.npz)")
            else:
                report.data_source = eval_data.source
                if opts.mode == "fp16" and opts.target == "gpu":
                    report.notes.append("error measured on the CPU provider (fp16 kernels differ on GPU)")
                report.errors, report.metric, report.samples = evaluate(
                    float_model, final, eval_data, opts, task=manifest.task if manifest else None, iface=iface,
                    manifest=manifest)
                _check_accuracy(report, opts)
        if sealed and manifest is not None:  # what is shipped passes the check every reader runs
            from edgelstm.runtime.integrity import check_model_bytes

            check_model_bytes(final.read_bytes(), str(dst))
        with atomic_path(dst) as out_tmp:  # temp name beside dst, renamed onto it on success
            shutil.copyfile(final, out_tmp)
        report.size_after = dst.stat().st_size
    log.info("quantized %s -> %s (%s)", src, dst, opts.mode)
    return report


def _interface(loaded, model) -> Interface:
    """The runtime's interface of the float model, with token ranges read off its embedding tables."""
    from edgelstm.runtime.interface import token_ranges

    return loaded.interface.with_token_ranges(token_ranges(model.graph))


def _check_accuracy(report: QuantizeReport, opts: QuantizeOptions) -> None:
    """Refuse an output that is far off the float model (see MIN_SQNR_DB), unless accepted."""
    problems = [f"{e.name}: SQNR {e.snr_db:.1f} dB < {MIN_SQNR_DB:g} dB" for e in report.errors
                if np.isfinite(e.snr_db) and e.snr_db < MIN_SQNR_DB]
    m = report.metric
    if m and m["name"].startswith("accuracy") and m["delta"] < -MAX_ACCURACY_DROP:
        problems.append(f"{m['name']} fell by {-m['delta']:.3f} > {MAX_ACCURACY_DROP:g}")
    if m and m["name"] == "rmse" and m["quantized"] > m["float"] * (1 + MAX_RMSE_RISE):
        problems.append(f"RMSE rose {m['quantized'] / max(m['float'], 1e-12):.2f}x > {1 + MAX_RMSE_RISE:g}x")
    if not problems:
        return
    if opts.accept_error:
        report.notes.append("QUANTIZED MODEL FAR OFF, accepted (--accept-error): " + "; ".join(problems))
        return
    from edgelstm.errors import QuantizationAccuracyError

    raise QuantizationAccuracyError(report.output, f"the {opts.mode} model is far off the float model on "
                                    f"{report.data_source}; nothing written", expected="SQNR >= "
                                    f"{MIN_SQNR_DB:g} dB (or --accept-error to write it anyway)",
                                    got="; ".join(problems))


def _finish_manifest(out_model, manifest: Manifest | None, opts: QuantizeOptions, report: QuantizeReport,
                     data: CalibrationData | None, companions: dict[str, str] | None = None, *,
                     seal: bool = True) -> None:
    if manifest is None:
        report.notes.append("input has no edgelstm manifest; the output has none either")
        return
    m = Manifest.from_json(manifest.to_json())
    if opts.mode == "fp16" or any(d["int8"] for d in report.int8_decisions):
        m.precision = opts.mode  # else int8 paid for no node: the file is the fp32 one
    for imp in out_model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            m.opset = imp.version
    if opts.mode == "fp16" and not opts.keep_io_types:
        for spec in list(m.inputs) + list(m.outputs):
            if spec.dtype == "float32":
                spec.dtype = "float16"
        for s in m.states:
            if s.dtype == "float32":
                s.dtype = "float16"
    info = {k: v for k, v in asdict(opts).items()
            if v is not None and k not in ("batch_size", "threads", "accept_error")}
    info["gru_rewritten"] = report.gru_rewritten
    info["kept_float"] = report.kept_float
    if report.int8_decisions:  # the reasons are in the report; the file keeps which node got what
        info["int8_nodes"] = [d["node"] for d in report.int8_decisions if d["int8"]]
        info["float_nodes"] = [d["node"] for d in report.int8_decisions if not d["int8"]]
    if data is not None:
        info["calibration"] = {"source": data.source, "samples": min(len(data), opts.calibration_samples)}
    import onnxruntime

    from edgelstm.runtime.integrity import DIGEST_KEY, SEAL_KEY, seal_proto  # stdlib only

    m.extra = {k: v for k, v in m.extra.items() if k != DIGEST_KEY}
    m.extra["quantization"] = info
    if companions is not None:
        m.companions = dict(companions)
    m.producer = {**m.producer, "onnxruntime": onnxruntime.__version__}
    m.schema_version = SCHEMA_VERSION
    m.validate(source=report.output)
    _set_manifest(out_model, m)
    out_model.producer_name = "edgelstm"
    if seal:  # the graph changed: re-seal it, or the runtime would (rightly) call the file modified
        seal_proto(out_model)
    else:
        for prop in [p for p in out_model.metadata_props if p.key == SEAL_KEY]:
            out_model.metadata_props.remove(prop)
        report.notes.append("the input failed the seal check (--trust-modified): the output is not sealed")


__all__ = ["MODES", "CALIBRATION_METHODS", "TARGETS", "QuantizeOptions", "QuantizeReport", "OutputError",
           "CalibrationData", "load_calibration", "evaluate", "quantize", "quantize_file"]
