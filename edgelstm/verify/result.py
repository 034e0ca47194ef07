"""Structured verification results: truthy when passing, serialisable to JSON, printable as a table.

Every check appends a :class:`CheckResult`; nothing stops at the first failure, so one report
lists everything that broke (Polygraphy style).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from edgelstm.errors import UsageError, VerificationError
from edgelstm.fileio import atomic_path, json_safe

CHECKS = ("outputs", "task", "streaming", "drift", "batch_invariance", "state_roundtrip")


@dataclass
class CheckResult:
    """One check of one candidate against the reference, for one output (or the whole model)."""

    check: str               # one of CHECKS
    candidate: str           # e.g. "ort:cpu[model.int8.onnx]"
    reference: str           # e.g. "torch"
    output: str | None       # graph output name, or None for whole-model checks
    passed: bool
    rule: str = ""           # the threshold applied, in words
    message: str = ""        # what broke (empty when passing)
    case: str = ""           # the input case, e.g. "batch=3 time=17" or "chunk=4"
    stats: dict = field(default_factory=dict)
    curve: dict | None = None  # drift: {"step": [...], "error": {...}}

    def __bool__(self) -> bool:
        return self.passed

    @property
    def where(self) -> str:
        out = f" {self.output}" if self.output else ""
        return f"{self.check}{out} [{self.candidate} vs {self.reference}]"

    def to_dict(self) -> dict:
        d = {"check": self.check, "candidate": self.candidate, "reference": self.reference,
             "output": self.output, "passed": self.passed, "rule": self.rule, "message": self.message,
             "case": self.case, "stats": self.stats}
        if self.curve is not None:
            d["curve"] = self.curve
        return json_safe(d)


@dataclass
class VerifyResult:
    """Everything ``edgelstm verify`` found. ``bool(result)`` is True when every check passed."""

    model: str
    reference: str
    candidates: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)   # {"what", "reason"}
    config: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # facts about this machine that bear on the verdict

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def add(self, check: CheckResult) -> CheckResult:
        self.checks.append(check)
        return check

    def skip(self, what: str, reason: str) -> None:
        self.skipped.append({"what": what, "reason": reason})

    def select(self, check: str | None = None, candidate: str | None = None, output: str | None = None) -> list[CheckResult]:
        return [c for c in self.checks
                if (check is None or c.check == check)
                and (candidate is None or c.candidate == candidate)
                and (output is None or c.output == output)]

    def raise_for_failures(self) -> None:
        """Raise :class:`VerificationError` listing every failure (for use in scripts and tests)."""
        if not self.passed:
            lines = [f"{c.where}: {c.message}" for c in self.failures] or ["no check ran"]
            raise VerificationError(self.model, f"{len(self.failures)} check(s) failed: " + " | ".join(lines))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return json_safe({
            "passed": self.passed, "model": self.model, "reference": self.reference,
            "candidates": self.candidates,
            "summary": {"checks": len(self.checks), "failed": len(self.failures), "skipped": len(self.skipped)},
            "failures": [f"{c.where}: {c.message}" for c in self.failures],
            "checks": [c.to_dict() for c in self.checks], "skipped": self.skipped,
            "config": self.config, "environment": self.environment, "notes": self.notes,
        })

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, allow_nan=False)

    # ------------------------------------------------------------------ human output
    def _profile_note(self) -> list[str]:
        """One line naming the tolerance profiles when one differs from its file's precision (an fp32
        file judged as tf32 on CUDA) or provider options were given; nothing otherwise."""
        profiles = self.config.get("candidate_profiles", {})
        precisions = self.config.get("candidate_precisions", {})
        opts = self.config.get("provider_options") or {}
        if not opts and all(profiles.get(n) == precisions.get(n) or precisions.get(n, "").startswith("int8")
                            for n in profiles):
            return []
        line = "tolerance profiles: " + ", ".join(f"{n}={p}" for n, p in profiles.items())
        if opts:
            line += "; provider options: " + ", ".join(f"{p}: {o}" for p, o in opts.items())
        return [line]

    def table(self) -> str:
        """A terminal table: one row per check result, failures marked, then the skipped items."""
        header = ("check", "candidate", "output", "case", "max_abs", "snr_db", "other", "result")
        rows = [header]
        for c in self.checks:
            s = c.stats
            other = ""
            if "exact_match" in s:
                other = f"agree {s['agreement']:.3f} greedy {s['exact_match']:.3f}"
                if s.get("exact_match_ties_excused", s["exact_match"]) != s["exact_match"]:
                    other += f" (ties excused {s['exact_match_ties_excused']:.3f})"
                if s.get("label_exact_match") is not None:
                    other += f" labels {s['label_exact_match']:.3f} (ref {s['reference_label_exact_match']:.3f})"
            elif "agreement" in s:
                other = f"agree {s['agreement']:.3f}"
                if s.get("accuracy") is not None:
                    other += f" acc {s['accuracy']:.3f} (ref {s['reference_accuracy']:.3f})"
            elif "rmse" in s:
                other = f"rmse {s['rmse']:.4g} (ref {s['reference_rmse']:.4g})"
            elif "growth" in s:
                other = f"growth {s['growth']:.2g}"
            elif "cosine" in s:
                other = f"cos {s['cosine']:.6f}"
            rows.append((c.check, c.candidate, c.output or "-", c.case or "-",
                         _num(s.get("max_abs")), _num(s.get("snr_db"), "{:.1f}"), other,
                         "ok" if c.passed else "FAIL"))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out = [f"verify {self.model}  (reference: {self.reference})", *self._profile_note(), *lines]
        for s in self.skipped:
            out.append(f"skipped: {s['what']}: {s['reason']}")
        out += [f"note: {n}" for n in self.notes]
        for c in self.failures:
            out.append(f"FAIL {c.where}: {c.message}  [rule: {c.rule}]")
        n_fail = len(self.failures)
        out.append(f"{'PASSED' if self.passed else 'FAILED'}: {len(self.checks) - n_fail}/{len(self.checks)} checks passed"
                   + (f", {len(self.skipped)} skipped" if self.skipped else ""))
        return "\n".join(out)

    def plot(self, path) -> None:
        """PNG of drift error vs time step, one line per candidate and state output."""
        from edgelstm.extras import require

        require("plot", "--plot")
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        drift = [c for c in self.checks if c.check == "drift" and c.curve]
        if not drift:
            raise UsageError("--plot", "no drift curve to plot (the drift check did not run)",
                             expected="--steps > 0 and a streamable model", got="no drift results")
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for c in drift:
            steps = c.curve["step"]
            for name, errs in c.curve["error"].items():
                ys = [max(float(e), 1e-12) for e in errs]
                ax.plot(steps, ys, label=f"{c.candidate} {name}{'' if c.passed else ' (FAIL)'}")
        ax.set_yscale("log")
        ax.set_xlabel("time step")
        ax.set_ylabel(f"max |error| vs {self.reference}")
        ax.set_title(f"long-horizon drift: {self.model}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)


def _num(v, fmt: str = "{:.3g}") -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return fmt.format(v)
