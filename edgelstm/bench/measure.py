"""Per-call timing and its statistics, process memory, and the machine the figures came from.

Statistics are over per-call wall times (``time.perf_counter_ns``) after a warm-up: min, p50,
p90, p99, max, mean, std and ``jitter = p99 - p50`` (how far the slow tail sits above the
typical call). Percentiles, not means, are what the tables report.

Imports numpy, the standard library, ``edgelstm.errors`` (onnxruntime inside
:func:`environment`). Imported by the rest of :mod:`edgelstm.bench` and ``benchmarks/``.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgelstm.errors import UsageError


@dataclass
class LatencyStats:
    """Per-call wall-time statistics in seconds."""

    n: int
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    std: float
    jitter: float  # p99 - p50: how far the slow tail sits above the typical call

    @classmethod
    def from_samples(cls, samples: Sequence[float] | np.ndarray) -> "LatencyStats":
        a = np.asarray(samples, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise UsageError("latency samples", "need at least one timing sample", expected=">= 1 sample", got=a.size)
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise UsageError("latency samples", "samples must be finite and non-negative", got=a.tolist()[:5])
        p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
        return cls(n=int(a.size), min=float(a.min()), p50=p50, p90=p90, p99=p99, max=float(a.max()),
                   mean=float(a.mean()), std=float(a.std()), jitter=p99 - p50)


def measure(fn: Callable[[], object], *, warmup: int = 10, runs: int | None = 100,
            duration: float | None = None, min_runs: int = 5, max_runs: int = 1_000_000,
            progress: Callable[[str], None] | None = None, label: str = "") -> np.ndarray:
    """Call ``fn`` ``warmup`` times untimed, then time each call; return seconds per call.

    Either ``runs`` calls, or (``duration`` given) calls until ``duration`` seconds have been
    spent, at least ``min_runs`` and at most ``max_runs``. ``progress`` gets a line every ~2 s.
    """
    if warmup < 0:
        raise UsageError("--warmup", "must not be negative", expected=">= 0", got=warmup)
    if duration is None and (runs is None or runs < 1):
        raise UsageError("--runs", "must be at least 1", expected=">= 1", got=runs)
    if duration is not None and not (duration > 0):
        raise UsageError("--duration", "must be positive seconds", expected="> 0", got=duration)
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    samples: list[int] = []
    start = clock()
    last_report = start
    target = None if duration is None else int(duration * 1e9)
    n_target = runs if duration is None else max_runs
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        samples.append(t1 - t0)
        n = len(samples)
        if target is None:
            if n >= n_target:
                break
        elif (t1 - start >= target and n >= min_runs) or n >= n_target:
            break
        if progress is not None and t1 - last_report > 2_000_000_000:
            last_report = t1
            done = f"{n}/{n_target}" if target is None else f"{(t1 - start) / 1e9:.1f}/{duration:g} s"
            progress(f"  {label} {done} runs, p50 so far {np.median(samples) / 1e3:.1f} us")
    return np.asarray(samples, dtype=np.float64) / 1e9


def first_call(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (the first, untimed by :func:`measure`'s warm-up)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ============================================================================ memory
def rss_mb() -> float | None:
    """Current resident set size in MB (Linux), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MB (kernel-reported high-water mark)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ============================================================================ environment
def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        import subprocess
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _blas() -> str | None:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - show_config's format differs across NumPy versions
        return None


def environment(threads: int | None = None, providers: Sequence[str] | None = None) -> dict[str, Any]:
    """The machine the figures were measured on: recorded with every result file."""
    import onnxruntime as ort

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "machine": socket.gethostname() or platform.node(),
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_mb": _mem_total_mb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas(),
        "onnxruntime": ort.__version__,
        "available_providers": list(ort.get_available_providers()),
        "providers": list(providers) if providers else None,
        "threads": threads,
        "load_average": load,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
