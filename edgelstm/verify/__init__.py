"""edgelstm.verify: the verification harness behind ``edgelstm verify``.

``verify(model, reference=RUN_DIR, against=[...], devices=[...])`` returns a
:class:`VerifyResult` (truthy when every check passed; ``to_dict()``/``to_json()`` give the same
structure the ``--json`` report holds). ``summarize(result)`` condenses a result into a small dict
for demos and dashboards: pass/fail, the worst max-abs error (fp32/fp16) or the lowest SNR
(int8), top-1 agreement, accuracy (or RMSE, or seq2seq exact match) vs the run's labels,
streaming parity max error and the drift trend, overall and per candidate backend.

Verify one exported file and one quantized file against a run directory in a few seconds::

    from edgelstm.verify import verify, summarize
    result = verify("model.onnx", reference="runs/digits", against=["model.int8.onnx"], steps=500)
    summary = summarize(result)   # summary["passed"], summary["candidates"][...]["headline"]

The keywords are the fields of :class:`VerifyOptions` (a typed, frozen dataclass); one options
object can serve several calls: ``verify(path, VerifyOptions(steps=0), reference=run_dir)``.

Seq2seq exports are verified as their encoder / decoder-step pair: pass the stem (``model.onnx``)
or either file. Heavy modules (onnx, onnxruntime, torch) are imported
when used, not when this package is imported.

The package: ``options`` (VerifyOptions), ``core`` (the single-graph harness: backends, inputs,
then ``checks_task`` for outputs/task and ``checks_state`` for streaming, drift, batch
invariance and the state round-trip, on ``candidate``'s comparisons), ``seq2seq`` (the pair),
``common`` (what both harnesses share), ``backends``/``interp``/``inputs``/``tolerance``/
``result``/``summary``. It may import the runtime, the exporters' user-model loader, numpy,
onnx, onnxruntime and torch (those three lazily), never ``edgelstm.cli``; it is imported by
``edgelstm.cli.verify`` and the demo.
"""
from __future__ import annotations

from edgelstm.verify.options import VerifyOptions
from edgelstm.verify.result import CHECKS, CheckResult, VerifyResult
from edgelstm.verify.summary import summarize
from edgelstm.stats import ErrorStats, error_stats, snr_db, top1_agreement, trend
from edgelstm.verify.tolerance import PROFILES, Profile, Tolerances, parse_overrides, profile_for


def verify(*args, **kwargs) -> VerifyResult:
    """See :func:`edgelstm.verify.core.verify`."""
    from edgelstm.verify.core import verify as _verify

    return _verify(*args, **kwargs)


__all__ = ["verify", "VerifyOptions", "summarize", "VerifyResult", "CheckResult", "CHECKS", "ErrorStats", "error_stats", "snr_db",
           "top1_agreement", "trend", "PROFILES", "Profile", "Tolerances", "parse_overrides", "profile_for"]
