"""Checks every exported graph passes before it is written: onnx checker (full), strict shape
inference, onnxruntime load, and numeric parity with PyTorch at several batch sizes / time
lengths. Results are small structured objects that serialize to JSON.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import onnx

from edgelstm.errors import ExportError
from edgelstm.stats import FP32_RTOL_SCALE  # the fp32 parity rule, defined once



def tolerance(reference: np.ndarray, scale: float = FP32_RTOL_SCALE) -> float:
    peak = float(np.max(np.abs(reference))) if reference.size else 0.0
    return scale * max(1.0, peak)


@dataclass
class OutputDiff:
    name: str
    shape: list[int]
    max_abs_error: float
    tolerance: float
    passed: bool


@dataclass
class ParityCase:
    """One comparison of the graph with PyTorch at the given axis sizes."""

    sizes: dict[str, int]
    outputs: list[OutputDiff] = field(default_factory=list)
    label: str = ""

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs), default=0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["max_abs_error"] = self.max_abs_error
        return d


def check_graph(model: onnx.ModelProto, *, subject: str) -> onnx.ModelProto:
    """Full onnx checker and strict shape inference; returns the model with inferred shapes."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx raises several unrelated classes
        raise ExportError(subject, "the ONNX checker rejected the graph", expected="a valid ONNX model",
                          got=str(e).strip().splitlines()[0][:400]) from None
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        raise ExportError(subject, "ONNX shape inference failed", expected="consistent shapes and types",
                          got=str(e).strip().splitlines()[0][:400]) from None


def ort_session(model_bytes: bytes, *, subject: str):
    import onnxruntime as ort  # noqa: PLC0415

    from edgelstm.runtime.session import session_options  # noqa: PLC0415

    # parity must not depend on the thread count (and the machine is shared): one thread
    so = session_options(1, inter_threads=1, optimization="all", record_placement=False)
    try:
        return ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(subject, "onnxruntime cannot load the graph", expected="a graph onnxruntime runs",
                          got=str(e).strip().splitlines()[0][:400]) from None


def compare(session, feeds: dict[str, np.ndarray], reference: dict[str, np.ndarray], *, sizes: dict[str, int],
            label: str, subject: str, scale: float = FP32_RTOL_SCALE) -> ParityCase:
    names = [o.name for o in session.get_outputs()]
    try:
        got = session.run(names, feeds)
    except Exception as e:
        raise ExportError(subject, f"onnxruntime failed to run the graph at {label} {sizes}",
                          expected="a graph that runs at any batch size and time length",
                          got=str(e).strip().splitlines()[0][:400]) from None
    case = ParityCase(sizes=dict(sizes), label=label)
    for name, value in zip(names, got):
        ref = reference[name]
        if tuple(value.shape) != tuple(ref.shape):
            raise ExportError(subject, f"output {name!r} has the wrong shape at {label} {sizes}",
                              expected=list(ref.shape), got=list(value.shape))
        if ref.dtype.kind == "f":
            err = float(np.max(np.abs(value.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
            tol = tolerance(ref, scale)
            ok = bool(err <= tol) and bool(np.isfinite(value).all() or not np.isfinite(ref).all())
        else:  # integer / bool outputs must match exactly
            err = float(np.max(np.abs(value.astype(np.int64) - ref.astype(np.int64)))) if ref.size else 0.0
            tol = 0.0
            ok = err == 0.0
        case.outputs.append(OutputDiff(name=name, shape=list(value.shape), max_abs_error=err, tolerance=tol, passed=ok))
    return case


def run_parity(session, cases: list[tuple[str, dict[str, int], dict[str, np.ndarray]]],
               reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], *, subject: str,
               scale: float = FP32_RTOL_SCALE, raise_on_failure: bool = True) -> list[ParityCase]:
    """Compare every case; collect all results, then raise one error naming every failure."""
    results = [compare(session, feeds, reference(feeds), sizes=sizes, label=label, subject=subject, scale=scale)
               for label, sizes, feeds in cases]
    failed = [c for c in results if not c.passed]
    if failed and raise_on_failure:
        worst = [f"{c.label} {c.sizes}: " + ", ".join(f"{o.name} err {o.max_abs_error:.3g} > tol {o.tolerance:.3g}"
                                                       for o in c.outputs if not o.passed) for c in failed]
        raise ExportError(subject, "ONNX outputs differ from PyTorch",
                          expected=f"max abs error <= {scale:g} * max(1, max|ref|)", got="; ".join(worst))
    return results


def streaming_case(session, feeds: dict[str, np.ndarray], *, time_axes: dict[str, int],
                   output_time_axes: dict[str, int], states: list[tuple[str, str]], lengths_input: str | None,
                   sizes: dict[str, int], subject: str, scale: float = FP32_RTOL_SCALE,
                   skip: set[str] = frozenset()) -> ParityCase:
    """The whole sequence vs two chunks with the state carried from the first to the second.

    ``time_axes``: input name -> its time axis; ``output_time_axes`` likewise for outputs (outputs
    without one are compared on the last chunk, except those in ``skip``); ``states``: (input, output) pairs.
    """
    T = next(feeds[n].shape[a] for n, a in time_axes.items())
    full = dict(feeds)
    if lengths_input:
        full[lengths_input] = np.full_like(feeds[lengths_input], T)
    names = [o.name for o in session.get_outputs()]
    whole = dict(zip(names, session.run(names, full)))
    cut = max(1, T // 2)
    carried: dict[str, np.ndarray] = {}
    pieces: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for a, b in ((0, cut), (cut, T)):
        chunk = {}
        for n, v in full.items():
            if n in time_axes:
                chunk[n] = np.take(v, np.arange(a, b), axis=time_axes[n])
            elif n == lengths_input:
                chunk[n] = np.full_like(v, b - a)
            else:
                chunk[n] = v
        chunk.update(carried)
        got = dict(zip(names, session.run(names, chunk)))
        for n in names:
            pieces[n].append(got[n])
        carried = {i: got[o] for i, o in states}
    case = ParityCase(sizes=dict(sizes), label="streaming")
    for n in names:
        if n in skip:
            continue
        streamed = np.concatenate(pieces[n], axis=output_time_axes[n]) if n in output_time_axes else pieces[n][-1]
        ref = whole[n]
        if streamed.shape != ref.shape:
            raise ExportError(subject, f"streamed output {n!r} has another shape than the whole sequence's",
                              expected=list(ref.shape), got=list(streamed.shape))
        err = float(np.max(np.abs(streamed.astype(np.float64) - ref))) if ref.size else 0.0
        tol = tolerance(ref, scale)
        case.outputs.append(OutputDiff(n, list(ref.shape), err, tol, bool(err <= tol)))
    if not case.passed:
        bad = ", ".join(f"{o.name} err {o.max_abs_error:.3g} > tol {o.tolerance:.3g}" for o in case.outputs
                        if not o.passed)
        raise ExportError(subject, "streaming in chunks differs from the whole sequence",
                          expected="chunk outputs equal to the whole sequence's", got=bad)
    return case
