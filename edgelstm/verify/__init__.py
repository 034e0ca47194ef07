"""edgelstm.verify: the verification harness behind ``edgelstm verify``.

``verify(model, reference=RUN_DIR, against=[...], devices=[...])`` returns a
:class:`VerifyResult` (truthy when every check passed; ``to_dict()``/``to_json()`` give the same
structure the ``--json`` report holds). Heavy modules (onnx, onnxruntime, torch) are imported
when used, not when this package is imported.
"""
from __future__ import annotations

from edgelstm.verify.result import CHECKS, CheckResult, VerifyResult
from edgelstm.verify.stats import ErrorStats, error_stats, snr_db, top1_agreement, trend
from edgelstm.verify.tolerance import PROFILES, Profile, Tolerances, parse_overrides, profile_for


def verify(*args, **kwargs) -> VerifyResult:
    """See :func:`edgelstm.verify.core.verify`."""
    from edgelstm.verify.core import verify as _verify

    return _verify(*args, **kwargs)


__all__ = ["verify", "VerifyResult", "CheckResult", "CHECKS", "ErrorStats", "error_stats", "snr_db",
           "top1_agreement", "trend", "PROFILES", "Profile", "Tolerances", "parse_overrides", "profile_for"]
