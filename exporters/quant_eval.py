"""How far a quantized graph is from the float one: both run on the same data, every float
output compared (SQNR, max and mean absolute error from :mod:`edgelstm.stats`), plus the task
metric where the data has labels; a result far off is refused (:func:`check_accuracy`).

Imports: numpy, onnxruntime (through :mod:`edgelstm.runtime.session`), :mod:`edgelstm.errors`,
:mod:`edgelstm.stats`, :mod:`edgelstm.exporters.quant_options` and
:mod:`edgelstm.exporters.calibration`. Imported by :mod:`edgelstm.exporters.quantize`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgelstm.errors import QuantizationAccuracyError
from edgelstm.exporters.calibration import CalibrationData, complete_feed
from edgelstm.exporters.quant_options import OutputError, QuantizeOptions, QuantizeReport
from edgelstm.manifest import Manifest
from edgelstm.runtime.interface import Interface

# When the quantized graph is this far off the float one on the evaluation data, quantize refuses
# to write it (QuantizationAccuracyError, exit 1) unless --accept-error: an output whose SQNR is
# below MIN_SQNR_DB (10 dB: the noise is a third of the signal's amplitude; int8 weights of a
# working LSTM measure 30-45 dB here, a greedy decoder whose tokens flip measured 3 dB), or a task
# metric that fell by more than MAX_ACCURACY_DROP (absolute) or whose RMSE rose by more than
# MAX_RMSE_RISE (relative).
MIN_SQNR_DB = 10.0
MAX_ACCURACY_DROP = 0.05
MAX_RMSE_RISE = 0.25


def session(model: bytes | str | os.PathLike, threads: int, *, safe_fp16: bool = False, subject: str | None = None):
    """A CPU session on ``model`` (bytes, or a path) through the runtime's one session setup.
    ``safe_fp16``: a fully fp16 graph (meant for a GPU) on the CPU provider, where ORT_ENABLE_ALL's
    CPU-only rewrites have crashed session setup on fp16 Transpose -> MatMul (onnxruntime 1.32)."""
    from edgelstm.runtime.providers import plan_providers
    from edgelstm.runtime.session import create_session, session_options

    so = session_options(threads, inter_threads=1, optimization="extended" if safe_fp16 else "all",
                         record_placement=False)
    data = model if isinstance(model, bytes) else None
    where = Path(subject or ("model" if data is not None else str(model)))
    return create_session(where, plan_providers("cpu", fallback=False), so, data)


def _task_metric(task: str | None, out_ref: np.ndarray, out_q: np.ndarray, labels: np.ndarray,
                 lengths: np.ndarray | None, mask: np.ndarray | None = None) -> dict[str, Any] | None:
    """accuracy (classify / label: padding labels and steps past ``lengths`` left out) or RMSE
    (regress / forecast: steps past ``lengths`` and, for a forecast, steps its ``mask`` leaves out)."""
    from edgelstm.tokens import IGNORE_INDEX

    if labels is None:
        return None
    if labels.dtype.kind in "iu":
        if out_ref.ndim == 2 and labels.ndim == 1:
            f = float(np.mean(out_ref.argmax(-1) == labels))
            q = float(np.mean(out_q.argmax(-1) == labels))
            return {"name": "accuracy", "float": f, "quantized": q, "delta": q - f}
        if out_ref.ndim == 3 and labels.ndim == 2:
            valid = labels != IGNORE_INDEX
            if lengths is not None:
                valid &= np.arange(labels.shape[1])[None, :] < lengths[:, None]
            f = float(np.mean((out_ref.argmax(-1) == labels)[valid]))
            q = float(np.mean((out_q.argmax(-1) == labels)[valid]))
            return {"name": "accuracy (per step)", "float": f, "quantized": q, "delta": q - f}
        return None
    if labels.shape == out_ref.shape and task in (None, "regress", "forecast"):
        valid = np.ones(labels.shape[:2], bool)
        if labels.ndim == 3:
            if lengths is not None:
                valid = np.arange(labels.shape[1])[None, :] < lengths[:, None]
            if mask is not None and mask.shape == valid.shape:
                valid &= mask.astype(bool)
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

    ref_s = session(float_model.SerializeToString(), opts.threads)
    q_s = session(str(quant_path), opts.threads, safe_fp16=opts.mode == "fp16" and opts.target == "gpu")
    inputs = ref_s.get_inputs()
    names = [o.name for o in ref_s.get_outputs()]
    refs: dict[str, list] = {n: [] for n in names}
    qs: dict[str, list] = {n: [] for n in names}
    lengths = []
    n_done = 0
    lens_name = iface.lengths
    for batch in data.batches(opts.batch_size, opts.calibration_samples):
        feed = complete_feed(batch, iface, inputs, manifest)
        q_feed = complete_feed(batch, iface, q_s.get_inputs(), manifest)
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
                              np.concatenate(lengths) if lengths else None,
                              None if data.mask is None else data.mask[:n_done])
    return errors, metric, n_done


def check_accuracy(report: QuantizeReport, opts: QuantizeOptions) -> None:
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
    raise QuantizationAccuracyError(report.output, f"the {opts.mode} model is far off the float model on "
                                    f"{report.data_source}; nothing written", expected="SQNR >= "
                                    f"{MIN_SQNR_DB:g} dB (or --accept-error to write it anyway)",
                                    got="; ".join(problems))

