"""A compact summary of a verification, for demos, dashboards and CI logs.

``summarize(result)`` takes a :class:`~edgelstm.verify.result.VerifyResult` (or its
``to_dict()``) and returns a small JSON-able dict; see :func:`summarize` for the fields.
"""
from __future__ import annotations

import math
from typing import Any

from edgelstm.verify.tolerance import INT8_PRECISIONS


def _num(v: Any) -> float | None:
    """Report numbers as floats; the JSON form spells inf/nan as strings."""
    if v is None:
        return None
    if isinstance(v, str):
        return {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}.get(v)
    return float(v)


def _min(vals):
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def _max(vals):
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def _candidate(name: str, checks: list[dict], precision: str | None) -> dict:
    outputs = [c for c in checks if c["check"] == "outputs"]
    task = [c for c in checks if c["check"] == "task"]
    streaming = [c for c in checks if c["check"] == "streaming"]
    drift = [c for c in checks if c["check"] == "drift"]
    labelled = [c for c in task if c["stats"].get("accuracy") is not None
                or c["stats"].get("label_exact_match") is not None or c["stats"].get("rmse") is not None]
    s: dict[str, Any] = {
        "precision": precision,
        "passed": all(c["passed"] for c in checks),
        "failed": [f"{c['check']}{' ' + c['output'] if c['output'] else ''}" for c in checks if not c["passed"]],
        "max_abs": _max(_num(c["stats"].get("max_abs")) for c in outputs),
        "min_snr_db": _min(_num(c["stats"].get("snr_db")) for c in outputs),
        "agreement": _min(_num(c["stats"].get("agreement")) for c in task),
        "exact_match": _min(_num(c["stats"].get("exact_match")) for c in task),
        "streaming_max_abs": _max(_num(c["stats"].get("max_abs")) for c in streaming),
    }
    if labelled:
        st = labelled[-1]["stats"]
        s["data"] = labelled[-1]["case"]
        for key in ("accuracy", "reference_accuracy", "label_exact_match", "reference_label_exact_match",
                    "rmse", "reference_rmse"):
            if st.get(key) is not None:
                s[key] = _num(st[key])
    if drift:
        d = max(drift, key=lambda c: _num(c["stats"].get("growth")) or 0.0)
        st = d["stats"]
        s["drift"] = {"steps": int(d["case"].split()[0].split("=")[1]) if d["case"].startswith("steps=") else None,
                      "final_error": _num(st.get("final")), "max_error": _num(st.get("max_abs")),
                      "growth": _num(st.get("growth")), "slope_per_1k_steps": _num(st.get("slope_per_1k_steps")),
                      "growing": bool(st.get("growing")), "output": st.get("worst_output")}
    int8 = precision in INT8_PRECISIONS
    bits = [f"SQNR {s['min_snr_db']:.1f} dB" if int8 and s["min_snr_db"] is not None
            else (f"max|err| {s['max_abs']:.2g}" if s["max_abs"] is not None else None)]
    if s.get("accuracy") is not None:
        bits.append(f"acc {s['accuracy']:.3f} (ref {s['reference_accuracy']:.3f})")
    elif s.get("label_exact_match") is not None:
        bits.append(f"exact {s['label_exact_match']:.3f} (ref {s['reference_label_exact_match']:.3f})")
    elif s["exact_match"] is not None:
        bits.append(f"greedy = ref {s['exact_match']:.0%}")
    elif s["agreement"] is not None:
        bits.append(f"agree {s['agreement']:.0%}")
    if s.get("drift"):
        bits.append(f"drift x{s['drift']['growth']:.2g}")
    s["headline"] = ", ".join(b for b in bits if b)
    return s


def summarize(result) -> dict:
    """The key figures of a verification, small enough for one table row per candidate.

    ``result`` is a :class:`VerifyResult` or its ``to_dict()``. Returns::

        {"passed": bool, "model": str, "reference": str,           # e.g. "torch[run]"
         "checks": int, "failed": int, "skipped": int,
         "failures": [str, ...],                                   # first 5 failure lines
         "worst_max_abs": float | None,                            # over fp32/fp16 candidates
         "min_snr_db": float | None,                               # over int8 candidates
         "min_agreement": float | None,                            # top-1 (ties excused), all candidates
         "streaming_max_abs": float | None,                        # chunked vs whole, all candidates
         "drift_max_growth": float | None,                         # last/first quarter error
         "data": str | None,                                       # the labelled data used, if any
         "candidates": {name: {"precision", "passed", "failed", "max_abs", "min_snr_db",
                               "agreement", "exact_match" (seq2seq greedy vs reference),
                               "streaming_max_abs", "accuracy"/"reference_accuracy" or
                               "label_exact_match"/"reference_label_exact_match" or
                               "rmse"/"reference_rmse" (with labelled data), "data",
                               "drift": {"steps", "final_error", "max_error", "growth",
                                         "slope_per_1k_steps", "growing", "output"},
                               "headline": str}}}              # e.g. "SQNR 35.9 dB, acc 0.98 (ref 0.98)"
    """
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    checks = d.get("checks", [])
    precisions = d.get("config", {}).get("candidate_precisions", {})
    names = list(dict.fromkeys([*d.get("candidates", []), *(c["candidate"] for c in checks)]))
    cands = {n: _candidate(n, [c for c in checks if c["candidate"] == n], precisions.get(n))
             for n in names if any(c["candidate"] == n for c in checks)}
    int8 = [c for c in cands.values() if c["precision"] in INT8_PRECISIONS]
    flt = [c for c in cands.values() if c["precision"] not in INT8_PRECISIONS]
    data = next((c["data"] for c in cands.values() if c.get("data")), None)
    return {
        "passed": bool(d.get("passed")), "model": d.get("model"), "reference": d.get("reference"),
        "checks": len(checks), "failed": len(d.get("failures", [])), "skipped": len(d.get("skipped", [])),
        "failures": list(d.get("failures", []))[:5],
        "worst_max_abs": _max(c["max_abs"] for c in flt),
        "min_snr_db": _min(c["min_snr_db"] for c in int8),
        "min_agreement": _min(c["agreement"] for c in cands.values()),
        "streaming_max_abs": _max(c["streaming_max_abs"] for c in cands.values()),
        "drift_max_growth": _max((c.get("drift") or {}).get("growth") for c in cands.values()),
        "data": data,
        "candidates": cands,
    }
