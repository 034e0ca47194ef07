"""What one benchmark run measures: its cases, its settings, and one result row per case.

Imports the standard library, ``edgelstm.errors``, ``edgelstm.runtime.session`` (the thread
rule) and :mod:`.measure`. Imported by the drivers, :mod:`.suite` and ``benchmarks/``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgelstm.bench.measure import LatencyStats
from edgelstm.errors import UnknownChoiceError, UsageError
from edgelstm.runtime.session import check_threads

MODES = ("stream", "sequence")
MAX_THREADS = 1024          # beyond this onnxruntime spends minutes creating threads
MAX_RUNS = 10_000_000
MAX_DURATION_S = 24 * 3600.0


@dataclass
class Case:
    mode: str
    batch: int
    time: int

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UnknownChoiceError("--mode", "unknown benchmark mode", expected=list(MODES), got=self.mode)
        if self.batch < 1:
            raise UsageError("--batch", "batch size must be at least 1", expected=">= 1", got=self.batch)
        if self.time < 1:
            raise UsageError("--time", "time length must be at least 1", expected=">= 1", got=self.time)

    @property
    def key(self) -> str:
        return f"{self.mode}/b{self.batch}/t{self.time}"


@dataclass
class Settings:
    warmup: int = 10
    runs: int | None = 100
    duration: float | None = None
    threads: int | None = None
    device: str = "cpu"
    floor: bool = True
    seed: int = 0
    trust_modified: bool = False  # load files whose seal fails (see edgelstm.runtime.integrity)
    provider_options: dict = field(default_factory=dict)  # provider name -> options, e.g. CUDA's use_tf32

    def __post_init__(self) -> None:
        try:
            threads = check_threads(self.threads)  # the one rule: None or 0 = onnxruntime's default
        except UsageError:
            raise UsageError("--threads", "must be >= 0 (0 = onnxruntime's default)", expected=">= 0",
                             got=self.threads) from None
        self.threads = threads or None  # recorded as null: onnxruntime's default
        if self.threads is not None and self.threads > MAX_THREADS:
            raise UsageError("--threads", "too many threads", expected=f"<= {MAX_THREADS}", got=self.threads)
        if self.warmup > MAX_RUNS or (self.runs is not None and self.runs > MAX_RUNS):
            raise UsageError("--warmup/--runs", "too many calls", expected=f"<= {MAX_RUNS}",
                             got=max(self.warmup, self.runs or 0))
        if self.duration is not None and not self.duration <= MAX_DURATION_S:
            raise UsageError("--duration", "must be finite seconds", expected=f"0 < seconds <= {MAX_DURATION_S}",
                             got=self.duration)
        if self.warmup < 0:
            raise UsageError("--warmup", "must not be negative", expected=">= 0", got=self.warmup)
        if self.runs is not None and self.duration is not None:
            raise UsageError("--runs/--duration", "give one of them, not both", expected="--runs N or --duration S",
                             got=f"--runs {self.runs} --duration {self.duration}")
        if self.runs is None and self.duration is None:
            raise UsageError("--runs/--duration", "give one of them", expected="--runs N or --duration S", got="neither")
        if self.runs is not None and self.runs < 1:
            raise UsageError("--runs", "must be at least 1", expected=">= 1", got=self.runs)
        if self.duration is not None and not self.duration > 0:
            raise UsageError("--duration", "must be positive seconds", expected="> 0", got=self.duration)


def result_row(*, name: str, backend: str, case: Case, stats: LatencyStats, settings: Settings,
               steps_per_call: int, frame_rate_hz: float | None = None, **extra: Any) -> dict[str, Any]:
    """One result record (the JSON schema's ``results[]`` entry) from a timed case."""
    p50 = stats.p50
    steps = case.batch * steps_per_call
    row: dict[str, Any] = {
        "name": name, "backend": backend, "mode": case.mode, "batch": case.batch, "time": case.time,
        "threads": settings.threads, "device": settings.device, "runs": stats.n, "warmup": settings.warmup,
        "latency_s": asdict(stats),
        "steps_per_s": steps / p50 if p50 > 0 else None,
        "sequences_per_s": (case.batch / p50 if p50 > 0 else None) if case.mode == "sequence" else None,
        "frame_rate_hz": frame_rate_hz,
        # processing time / duration of the audio (or signal) it covers; < 1 keeps up in real time
        "rtf": (p50 * frame_rate_hz / steps_per_call) if frame_rate_hz else None,
    }
    row.update(extra)
    return row
