"""Comparison and table logic of the ARM check (host side, numpy + stdlib; unit-tested).

Two questions per model:

1. ARM vs x86: do the same model and the same inputs give the same outputs on the emulated
   ARM64 device as on x86, with the same onnxruntime version and the same intra-op thread count?
2. Streaming parity on ARM: does feeding the sequence in chunks with carried state give what
   one whole-sequence call gives, on the ARM side itself?

Tolerances (why they are what they are):

* fp32, ARM vs x86: ``1e-5 * max(1, max|ref|)``. Both compute in fp32, but with different SIMD
  kernels (NEON vs AVX2/AVX-512 in MLAS), so sums are reordered; the error of reordered fp32
  sums grows like T * eps32 (1.2e-7) over T steps. Measured: about 1e-7.
* fp32, streaming vs whole: the same bound: the state is carried exactly, only the GEMM shapes
  (chunk length vs whole length) change the summation order.
* int8 (dynamic): the inputs of each quantized node are quantized per call to uint8 with a scale
  from that call's min/max. One rounding flip moves an activation by one step, about 2/255 of its
  range. Bound: ``2 * (2/255) * max(1, max|ref|)`` (two activation steps) AND an SQNR >= 30 dB
  ARM vs x86 (the DESIGN's int8 quality bar vs fp32 is 20 dB; two machines running the same
  integer kernels must agree far better than the quantization itself). Measured: about 1e-7.
  The wrong results of qemu's ``max`` core (SVE/SME) are ~1e-1: they fail.
* int8, streaming vs whole: chunking changes each call's min/max and so the quantization scale
  of the inputs: differences of the order of the quantization error itself are expected. Bound:
  the DESIGN's int8 bar, SQNR >= 20 dB (streaming vs whole on the same machine).
* fp16: ``1e-2 * max(1, max|ref|)`` (10-bit mantissa; DESIGN).
* integer outputs (greedy tokens): exact equality.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from edgelstm.errors import UnknownChoiceError

INT8_STEP = 2.0 / 255.0  # one uint8 step of an activation range of width 2 (tanh/sigmoid outputs)


@dataclass(frozen=True)
class Tolerance:
    rel_atol: float        # max |diff| <= rel_atol * max(1, max|ref|)
    min_sqnr_db: float | None = None  # and, when set, SQNR(ref, got) >= this
    why: str = ""


ARM_VS_X86 = {
    "fp32": Tolerance(1e-5, None, "fp32, reordered SIMD sums: O(T*eps32)"),
    "fp16": Tolerance(1e-2, None, "fp16, 10-bit mantissa"),
    "int8": Tolerance(2 * INT8_STEP, 30.0, "two uint8 activation steps and SQNR >= 30 dB"),
}
STREAM_PARITY = {
    "fp32": Tolerance(1e-5, None, "fp32, only GEMM shapes differ between chunked and whole"),
    "fp16": Tolerance(1e-2, None, "fp16, 10-bit mantissa"),
    "int8": Tolerance(math.inf, 20.0, "per-call input quantization scale changes with the chunk: SQNR >= 20 dB"),
}


def precision_key(precision: str) -> str:
    """Manifest precision ("int8-dynamic", "int8-static", "fp16", "fp32") -> tolerance key."""
    p = precision.lower()
    if p.startswith("int8"):
        return "int8"
    if p in ("fp16", "fp32"):
        return p
    raise UnknownChoiceError("precision", "unknown precision", expected="fp32, fp16 or int8-*", got=precision)


@dataclass
class Stat:
    key: str
    max_abs: float
    scale: float          # max(1, max|ref|)
    sqnr_db: float        # 10 log10(sum ref^2 / sum diff^2); inf when identical
    ok: bool
    note: str = ""


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = float(np.sum((got.astype(np.float64) - ref) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def compare_array(key: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> Stat:
    if ref.shape != got.shape:
        return Stat(key, math.inf, 1.0, -math.inf, False, f"shape {got.shape} != reference {ref.shape}")
    if np.issubdtype(ref.dtype, np.integer) or ref.dtype == np.bool_:
        diff = int(np.count_nonzero(ref != got))
        return Stat(key, float(diff), 1.0, math.inf if diff == 0 else -math.inf, diff == 0,
                    "" if diff == 0 else f"{diff} of {ref.size} integer values differ")
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(ref))):
        return Stat(key, math.inf, 1.0, -math.inf, False, "NaN or Inf in the outputs")
    if ref.size == 0:
        return Stat(key, 0.0, 1.0, math.inf, True)
    max_abs = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    scale = max(1.0, float(np.max(np.abs(ref))))
    s = sqnr_db(ref, got)
    ok = max_abs <= tol.rel_atol * scale and (tol.min_sqnr_db is None or s >= tol.min_sqnr_db)
    return Stat(key, max_abs, scale, s, ok)


def compare_outputs(ref: dict, got: dict, tol: Tolerance, keys: list[str] | None = None) -> list[Stat]:
    """Compare every array of ``ref`` (or ``keys``) with ``got``; a missing one is a failure."""
    stats = []
    for k in sorted(keys if keys is not None else ref):
        if k not in got:
            stats.append(Stat(k, math.inf, 1.0, -math.inf, False, "missing on the compared side"))
        else:
            stats.append(compare_array(k, np.asarray(ref[k]), np.asarray(got[k]), tol))
    return stats


def stream_pairs(outputs: dict) -> list[tuple[str, str]]:
    """(``full/<n>``, ``stream/<n>``) for every streamed output that has a whole-sequence twin."""
    return [(f"full/{k[len('stream/'):]}", k) for k in sorted(outputs)
            if k.startswith("stream/") and f"full/{k[len('stream/'):]}" in outputs]


def streaming_parity(outputs: dict, tol: Tolerance) -> list[Stat]:
    return [compare_array(s, np.asarray(outputs[f]), np.asarray(outputs[s]), tol) for f, s in stream_pairs(outputs)]


@dataclass
class Row:
    family: str
    precision: str
    arm_vs_x86: list[Stat] = field(default_factory=list)
    parity: list[Stat] = field(default_factory=list)
    parity_applicable: bool = True
    error: str = ""

    @property
    def max_diff(self) -> float:
        return max((s.max_abs for s in self.arm_vs_x86), default=math.nan)

    @property
    def min_sqnr(self) -> float:
        return min((s.sqnr_db for s in self.arm_vs_x86), default=math.nan)

    @property
    def parity_diff(self) -> float:
        return max((s.max_abs for s in self.parity), default=math.nan)

    @property
    def passed(self) -> bool:
        if self.error or not self.arm_vs_x86:
            return False
        if self.parity_applicable and not self.parity:
            return False
        return all(s.ok for s in self.arm_vs_x86) and all(s.ok for s in self.parity)

    def failures(self) -> list[str]:
        out = [self.error] if self.error else []
        if not self.arm_vs_x86 and not self.error:
            out.append("no ARM-vs-x86 comparison was made")
        if self.parity_applicable and not self.parity and not self.error:
            out.append("no streaming comparison was made")
        out += [f"ARM vs x86 {s.key}: max|diff| {s.max_abs:.3g} sqnr {s.sqnr_db:.1f} dB {s.note}".strip()
                for s in self.arm_vs_x86 if not s.ok]
        out += [f"streaming {s.key}: max|diff| {s.max_abs:.3g} sqnr {s.sqnr_db:.1f} dB {s.note}".strip()
                for s in self.parity if not s.ok]
        return out

    def to_dict(self) -> dict:
        return {"family": self.family, "precision": self.precision, "passed": self.passed,
                "max_abs_diff_arm_vs_x86": _num(self.max_diff), "min_sqnr_db_arm_vs_x86": _num(self.min_sqnr),
                "stream_parity_max_abs_diff": _num(self.parity_diff), "parity_applicable": self.parity_applicable,
                "error": self.error, "failures": self.failures(),
                "arm_vs_x86": [_stat_dict(s) for s in self.arm_vs_x86], "parity": [_stat_dict(s) for s in self.parity]}


def _num(v: float):
    return None if isinstance(v, float) and math.isnan(v) else (str(v) if isinstance(v, float) and math.isinf(v) else v)


def _stat_dict(s: Stat) -> dict:
    d = asdict(s)
    d["max_abs"], d["sqnr_db"] = _num(s.max_abs), _num(s.sqnr_db)
    return d


def _fmt(v: float, spec: str = ".1e") -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v, spec)


def format_table(rows: list[Row]) -> str:
    head = ("family", "precision", "max|ARM-x86|", "SQNR dB", "stream vs whole on ARM", "result")
    lines = []
    body = []
    for r in rows:
        parity_sqnr = min((st.sqnr_db for st in r.parity), default=math.nan)
        parity = (f"{_fmt(r.parity_diff)} ({_fmt(parity_sqnr, '.0f')} dB)" if r.parity_applicable
                  else "n/a (not streamable)")
        body.append((r.family, r.precision, _fmt(r.max_diff), _fmt(r.min_sqnr, ".0f"), parity,
                     "PASS" if r.passed else "FAIL"))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(b, widths)))
    return "\n".join(lines)
