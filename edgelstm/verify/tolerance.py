"""Tolerance profiles per precision, and per-output overrides.

Why the defaults are what they are (see docs/DESIGN.md, "Tolerances"):

* **fp32**: ``max_abs <= 1e-5 * max(1, max|ref|)``. Both sides compute in fp32; reordered sums
  accumulate O(T * eps32) relative error over T steps (eps32 ~ 6e-8, T up to a few hundred).
* **fp16**: ``max_abs <= 1e-2 * max(1, max|ref|)``: a 10-bit mantissa gives eps16 ~ 1e-3 and the
  error grows over the time steps.
* **tf32**: ``max_abs <= 4 * 2**-11 * max(1, max|ref|)`` (~1.95e-3): an fp32 file run by
  onnxruntime's CUDA provider with TF32 on (its default, ``use_tf32=1``). TF32 rounds the two
  operands of every matrix product (``W @ x``, ``R @ h``, the head) to a 10-bit mantissa, unit
  roundoff ``u = 2**-11`` ~ 4.9e-4, and accumulates in fp32; element-wise gate maths and the
  state stay fp32. One gate pre-activation ``z = W x + R h + b`` therefore carries at most
  ~``2u`` relative error per product from the operand roundings, ``4u`` for the two; the
  gate non-linearities have slope <= 1, so ``h`` and ``c`` inherit no more than that per step,
  and a stable cell contracts earlier steps' errors instead of summing them (the drift check's
  growth limit judges the long run). Seen on an H200: 1.3e-4 on ``h_out`` of a 2x256 LSTM,
  ~15x under the bound; with ``use_tf32=0`` the same run differs by 6e-8 (fp32 profile).
  fp16's 1e-2 is looser because fp16 also rounds activations, state and sums.
* **int8**: judged by SQNR (``snr_db >= 20``) and by the task (top-1 agreement, accuracy within
  one point of fp32), not by the max error: int8 error is noise by construction, what matters
  is how loud it is against the signal and whether decisions change.

Overrides (``--atol h_out:1e-3``, ``--atol 1e-4``, ``--min-snr y:25``) replace the default of the
named output, or of every output for a bare value. An explicit ``--atol`` is absolute: it is not
multiplied by the reference scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from edgelstm.errors import UsageError
from edgelstm.stats import FP32_RTOL_SCALE, ErrorStats

INT8_PRECISIONS = ("int8-dynamic", "int8-static", "int8")
TF32_UNIT_ROUNDOFF = 2.0 ** -11   # 10 stored mantissa bits (+1 implicit): round-to-nearest error <= 2**-11
CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass(frozen=True)
class Profile:
    """Default thresholds for one precision."""

    precision: str
    atol_scale: float | None      # max_abs <= atol_scale * max(1, max|ref|); None: not judged by max error
    min_snr_db: float | None      # snr_db >= this; None: not judged by SNR
    min_agreement: float          # tie-adjusted top-1 agreement
    max_accuracy_drop: float      # accuracy vs labels may drop this much (0.01 = one point)
    drift_growth_limit: float     # last-quarter / first-quarter state error above this = growing
    why: str


PROFILES: dict[str, Profile] = {
    "fp32": Profile("fp32", FP32_RTOL_SCALE, None, 1.0, 0.01, 4.0,
                    "fp32 vs fp32: reordered sums accumulate O(T*eps32) relative error"),
    "fp16": Profile("fp16", 1e-2, None, 1.0, 0.01, 4.0,
                    "fp16: 10-bit mantissa (eps16 ~ 1e-3), error grows over time steps"),
    "tf32": Profile("tf32", 4 * TF32_UNIT_ROUNDOFF, None, 1.0, 0.01, 4.0,
                    "fp32 file on CUDA with TF32 matmuls: operands rounded to 10 mantissa bits (u = 2^-11), "
                    "<= 2u per product, 4u per gate pre-activation"),
    "int8": Profile("int8", None, 20.0, 0.99, 0.01, 4.0,
                    "int8: judged by SQNR >= 20 dB and the task, not the max error"),
}


def profile_for(precision: str) -> Profile:
    if precision in INT8_PRECISIONS:
        return PROFILES["int8"]
    if precision in PROFILES:
        return PROFILES[precision]
    raise UsageError("precision", "no tolerance profile for this precision",
                     expected=sorted(PROFILES) + list(INT8_PRECISIONS), got=precision)


def tf32_enabled(provider_options: Mapping[str, Any] | None) -> bool:
    """Whether onnxruntime's CUDA provider runs fp32 matrix products in TF32 with these options:
    its ``use_tf32`` option defaults to 1 (onnxruntime-gpu 1.18 and later)."""
    value = (provider_options or {}).get("use_tf32", "1")
    return str(value).strip().lower() not in ("0", "false")


def select_profile(precision: str, provider: str | None = None,
                   provider_options: Mapping[str, Any] | None = None) -> Profile:
    """The profile judging one candidate: its file's precision, except that an fp32 file run by
    the CUDA provider with TF32 on (the default) is judged by ``tf32``: verification judges what
    that provider computes. ``use_tf32=0`` in its options keeps the fp32 profile."""
    prof = profile_for(precision)
    if prof.precision == "fp32" and provider == CUDA_PROVIDER and tf32_enabled(provider_options):
        return PROFILES["tf32"]
    return prof


def parse_overrides(values: tuple[str, ...] | list[str] | None, option: str) -> dict[str | None, float]:
    """Parse ``["1e-4", "h_out:1e-3"]`` into ``{None: 1e-4, "h_out": 1e-3}``."""
    out: dict[str | None, float] = {}
    for raw in values or ():
        name, sep, num = str(raw).rpartition(":")
        key = name.strip() if sep else None
        if sep and not key:
            raise UsageError(option, "empty output name before ':'", expected="NAME:VALUE or VALUE", got=raw)
        try:
            val = float(num)
        except ValueError:
            raise UsageError(option, "not a number", expected="NAME:VALUE or VALUE, e.g. h_out:1e-3", got=raw) from None
        if not math.isfinite(val) or (option.endswith("atol") and val < 0):
            raise UsageError(option, "value out of range", expected="a finite number >= 0", got=raw)
        out[key] = val
    return out


@dataclass
class Tolerances:
    """The thresholds in force: the profile of each candidate's precision, plus user overrides."""

    atol: dict[str | None, float] = field(default_factory=dict)
    min_snr_db: dict[str | None, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        def keyed(d):
            return {("*" if k is None else k): v for k, v in d.items()}
        return {"atol": keyed(self.atol), "min_snr_db": keyed(self.min_snr_db),
                "profiles": {k: {"atol_scale": p.atol_scale, "min_snr_db": p.min_snr_db,
                                 "min_agreement": p.min_agreement, "max_accuracy_drop": p.max_accuracy_drop,
                                 "drift_growth_limit": p.drift_growth_limit, "why": p.why}
                             for k, p in PROFILES.items()}}

    def check_names(self, outputs: list[str]) -> None:
        """An override naming an output the model does not have is a usage error, not ignored."""
        for opt, d in (("--atol", self.atol), ("--min-snr", self.min_snr_db)):
            for k in d:
                if k is not None and k not in outputs:
                    raise UsageError(opt, f"no output named {k!r}", expected=outputs, got=k)

    def atol_for(self, output: str, profile: Profile, ref_scale: float) -> float | None:
        if output in self.atol:
            return self.atol[output]
        if None in self.atol:
            return self.atol[None]
        if profile.atol_scale is None:
            return None
        return profile.atol_scale * max(1.0, ref_scale)

    def snr_for(self, output: str, profile: Profile) -> float | None:
        if output in self.min_snr_db:
            return self.min_snr_db[output]
        if None in self.min_snr_db:
            return self.min_snr_db[None]
        return profile.min_snr_db

    def judge(self, output: str, stats: ErrorStats, profile: Profile) -> tuple[bool, str, str]:
        """Return (passed, rule, failure detail) for one output's statistics."""
        rules, problems = [], []
        atol = self.atol_for(output, profile, stats.ref_max_abs)
        if atol is not None:
            rules.append(f"max_abs <= {atol:.3g}")
            if not stats.max_abs <= atol:  # also catches NaN
                problems.append(f"max_abs {stats.max_abs:.3g} > {atol:.3g} at index {stats.worst_index}")
        snr = self.snr_for(output, profile)
        if snr is not None:
            rules.append(f"snr_db >= {snr:g}")
            if not stats.snr_db >= snr:
                problems.append(f"snr {stats.snr_db:.1f} dB < {snr:g} dB")
        rule = " and ".join(rules) + f" ({profile.precision} profile)"
        return (not problems, rule, "; ".join(problems))
