"""Error statistics between a reference tensor and a candidate tensor. NumPy only.

Imported by ``edgelstm.verify`` (the harness), ``edgelstm.exporters`` (the parity check's fp32
tolerance, quantize's error report) and ``edgelstm export``'s ``--atol`` default: the producer measures with the same statistics as the checker without importing it.
Every comparison in the harness goes through :func:`error_stats`, so a JSON report always holds
the same fields: max/mean/p99 absolute error, max relative error, cosine similarity and the
signal-to-noise ratio in dB (``10 log10(sum ref^2 / sum (ref - got)^2)``, the SQNR that
onnxruntime's quantization tools use).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgelstm.errors import InputError

# A relative error divides by |ref|; below this magnitude the relative error is meaningless
# (fp32 noise on a zero), so elements smaller than it are left out of max_rel.
REL_FLOOR = 1e-6
# SNR/cosine are capped so that identical tensors give a finite, JSON-safe number.
SNR_CAP_DB = 200.0
#: The fp32 parity rule, for export's check and verify's fp32 profile alike:
#: max |onnx - torch| <= FP32_RTOL_SCALE * max(1, max |torch|). Both sides compute in fp32;
#: reordered sums accumulate O(T * eps32) relative error over T steps, so the bound scales with
#: the magnitude of the reference and not below 1 (docs/DESIGN.md).
FP32_RTOL_SCALE = 1e-5


@dataclass
class ErrorStats:
    """How far ``got`` is from ``ref`` (both flattened, float64)."""

    count: int
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    cosine: float
    snr_db: float
    ref_max_abs: float   # scale of the reference, used by scale-aware tolerances
    worst_index: list[int]  # index of the largest absolute error in the original shape

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else (SNR_CAP_DB if x > 0 else -SNR_CAP_DB)


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """Signal-to-noise ratio of ``got`` against ``ref`` in dB, capped at +-:data:`SNR_CAP_DB`."""
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(got, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(np.clip(10.0 * math.log10(signal / noise), -SNR_CAP_DB, SNR_CAP_DB))


def error_stats(ref: np.ndarray, got: np.ndarray, *, name: str = "output") -> ErrorStats:
    """Compare two tensors of the same shape. Raises :class:`InputError` on a shape mismatch."""
    ref = np.asarray(ref)
    got = np.asarray(got)
    if ref.shape != got.shape:
        raise InputError(name, "candidate and reference shapes differ", expected=list(ref.shape), got=list(got.shape))
    r = ref.astype(np.float64, copy=False)
    g = got.astype(np.float64, copy=False)
    if r.size == 0:
        return ErrorStats(0, 0.0, 0.0, 0.0, 0.0, 1.0, SNR_CAP_DB, 0.0, [])
    diff = np.abs(r - g)
    if not np.all(np.isfinite(g)):
        # NaN/Inf in the candidate: the worst possible result, reported as such.
        bad = np.argwhere(~np.isfinite(g))[0]
        return ErrorStats(int(r.size), math.inf, math.inf, math.inf, math.inf, -1.0, -SNR_CAP_DB,
                          float(np.max(np.abs(r))), [int(i) for i in bad])
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    mask = np.abs(r) > REL_FLOOR
    max_rel = float(np.max(diff[mask] / np.abs(r[mask]))) if np.any(mask) else 0.0
    nr = float(np.linalg.norm(r))
    ng = float(np.linalg.norm(g))
    if nr == 0.0 and ng == 0.0:
        cosine = 1.0
    elif nr == 0.0 or ng == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.dot(r.ravel(), g.ravel()) / (nr * ng))
    return ErrorStats(
        count=int(r.size),
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        p99_abs=float(np.percentile(diff, 99)),
        max_rel=max_rel,
        cosine=_finite(cosine),
        snr_db=snr_db(r, g),
        ref_max_abs=float(np.max(np.abs(r))),
        worst_index=[int(i) for i in worst],
    )


def top1_agreement(ref_logits: np.ndarray, got_logits: np.ndarray, tie_tol: float = 0.0) -> dict:
    """Share of rows whose arg-max agrees, over the last axis.

    A flip counts as a disagreement only when the reference itself separates the two classes by
    more than ``tie_tol``: two logits closer than the tolerance are a tie, and picking either is
    within the numerical contract.
    """
    r = np.asarray(ref_logits, dtype=np.float64).reshape(-1, np.shape(ref_logits)[-1])
    g = np.asarray(got_logits, dtype=np.float64).reshape(-1, np.shape(got_logits)[-1])
    a_ref = r.argmax(axis=1)
    a_got = g.argmax(axis=1)
    rows = np.arange(r.shape[0])
    margin = r[rows, a_ref] - r[rows, a_got]  # >= 0; 0 where they agree
    flips = a_ref != a_got
    real_flips = flips & (margin > tie_tol)
    n = max(int(r.shape[0]), 1)
    return {
        "rows": int(r.shape[0]),
        "raw_agreement": float(1.0 - flips.sum() / n),
        "agreement": float(1.0 - real_flips.sum() / n),
        "tie_flips": int((flips & ~real_flips).sum()),
        "flips": int(real_flips.sum()),
        "tie_tol": float(tie_tol),
    }


def trend(steps: np.ndarray, errors: np.ndarray) -> dict:
    """Summarise an error-vs-time curve: least-squares slope, first and last quarter means, growth.

    ``growth`` = mean error over the last quarter / mean over the first quarter (after the first
    point): a model whose state error keeps growing shows growth well above 1.
    """
    t = np.asarray(steps, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if e.size < 4:
        return {"slope_per_1k_steps": 0.0, "first_quarter_mean": float(e.mean()) if e.size else 0.0,
                "last_quarter_mean": float(e.mean()) if e.size else 0.0, "growth": 1.0, "final": float(e[-1]) if e.size else 0.0}
    q = max(e.size // 4, 1)
    first = float(e[:q].mean())
    last = float(e[-q:].mean())
    if np.ptp(t) > 0:
        slope = float(np.polyfit(t, e, 1)[0]) * 1000.0
    else:
        slope = 0.0
    tiny = np.finfo(np.float32).tiny
    growth = last / max(first, tiny) if last > 0 else 1.0
    return {"slope_per_1k_steps": slope, "first_quarter_mean": first, "last_quarter_mean": last,
            "growth": float(min(growth, 1e12)), "final": float(e[-1]), "max": float(e.max())}
