"""Benchmark core: time ONNX models with onnxruntime, measure the machine's floor, report.

Torch-free: imports only numpy, onnxruntime, the standard library and ``edgelstm.errors`` /
``edgelstm.manifest``, so ``edgelstm bench`` runs on a device that has only the runtime.

What one *case* measures (``mode`` x ``batch`` x ``time``):

* ``stream``: one call feeds a chunk ``x [batch, time, features]`` (``time`` = chunk length,
  1 = one step) and carries the state (``h_out`` -> ``h_in`` ...) into the next call, as a
  streaming application does. For a seq2seq ``decoder_step`` graph one call is one decoder
  step and ``time`` is the source (memory) length.
* ``sequence``: one call runs whole sequences of ``time`` steps from zero state.

Statistics are over per-call wall times (``time.perf_counter_ns``) after a warm-up:
min, p50, p90, p99, max, mean, std and ``jitter = p99 - p50`` (how far the slow tail sits
above the typical call). Percentiles, not means, are what the tables report.

The *floor* of a case is how long this machine takes, in the same run, for the work no
implementation can avoid: the recurrent layers' matrix products (input projections batched
over time; the recurrent products ``h @ R`` of all steps as one ``[batch*time, hidden] @
[hidden, gates*hidden]`` product, the same arithmetic without the step-to-step dependency, so a
lower bound; a single step concatenates ``[x, h] @ [W; R]``) plus the constant-weight MatMul/Gemm nodes, in fp32
NumPy/BLAS, and reading every weight once (a BLAS pass over a buffer of the weights' fp32
size). ``floor_s = max(matmul_s, read_s)`` since the products read the weights themselves.
Each backend is reported as ``x_floor = p50 / floor_s``. Element-wise gate math, attention
scores against the memory and the softmax are not counted: the floor is a lower bound.

JSON schema ``edgelstm.bench/1`` (see :func:`make_report`)::

    {"schema": "edgelstm.bench/1", "environment": {...}, "settings": {...},
     "results": [{"name", "backend", "model", "precision", "family", "graph", "mode", "batch",
                  "time", "threads", "device", "providers", "file_bytes", "parameters",
                  "weight_bytes", "session_create_s", "first_inference_s", "first_call_s",
                  "runs", "warmup", "latency_s": {min,p50,p90,p99,max,mean,std,jitter},
                  "steps_per_s", "sequences_per_s", "frame_rate_hz", "rtf",
                  "rss_peak_mb", "rss_delta_mb", "floor": {matmul_s, read_s, floor_s} | null,
                  "x_floor", "baseline", "speedup_vs_baseline", "file_size_vs_baseline",
                  "speedup_vs_torch"}]}
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edgelstm.errors import InputError, ManifestError, ModelFileError, UnknownChoiceError, UsageError
from edgelstm.manifest import Manifest
from edgelstm.runtime.integrity import graph_digest, iter_values, read_varint

log = logging.getLogger(__name__)

SCHEMA = "edgelstm.bench/1"
MODES = ("stream", "sequence")

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


# ============================================================================ statistics
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


def _rss_mb() -> float | None:
    """Current resident set size in MB (Linux), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MB (kernel-reported high-water mark)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ============================================================================ ONNX file facts
_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
_WEIGHT_DTYPES = {1, 2, 3, 10, 11, 16}  # float, uint8, int8, float16, double, bfloat16


# the protobuf wire-format reader is shared with the runtime's file checks (one implementation)
_varint = read_varint
_fields = iter_values


@dataclass
class GraphFacts:
    """What the benchmark reads from the ONNX file itself, without the onnx package."""

    initializers: dict[str, tuple[list[int], int]] = field(default_factory=dict)  # name -> (dims, dtype)
    nodes: list[tuple[str, list[str], dict[str, int]]] = field(default_factory=list)  # op, inputs, int attrs

    @property
    def parameters(self) -> int:
        return sum(math.prod(d) for d, t in self.initializers.values() if t in _WEIGHT_DTYPES)

    @property
    def weight_bytes(self) -> int:
        return sum(math.prod(d) * _DTYPE_BYTES.get(t, 4) for d, t in self.initializers.values() if t in _WEIGHT_DTYPES)


def _tensor_header(buf: bytes) -> tuple[str, list[int], int]:
    dims: list[int] = []
    dtype, name = 0, ""
    for num, wt, v in _fields(buf):
        if num == 1:
            if wt == 2:  # packed
                j = 0
                while j < len(v):
                    d, j = _varint(v, j)
                    dims.append(d)
            else:
                dims.append(v)
        elif num == 2:
            dtype = v
        elif num == 8:
            name = v.decode("utf-8", "replace")
    return name, dims, dtype


def graph_facts(path: str | os.PathLike) -> GraphFacts:
    """Initializer shapes and the node list of an ONNX file, parsed from the protobuf wire format."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(str(path), "cannot read the model file", got=e.strerror) from None
    facts = GraphFacts()
    try:
        graph = next((v for num, wt, v in _fields(data) if num == 7 and wt == 2), None)
        if graph is None:
            raise ValueError("no graph")
        for num, wt, v in _fields(graph):
            if num == 5 and wt == 2:
                name, dims, dtype = _tensor_header(v)
                facts.initializers[name] = (dims, dtype)
            elif num == 1 and wt == 2:
                op, inputs, attrs = "", [], {}
                for n2, w2, v2 in _fields(v):
                    if n2 == 1:
                        inputs.append(v2.decode("utf-8", "replace"))
                    elif n2 == 4:
                        op = v2.decode("utf-8", "replace")
                    elif n2 == 5 and w2 == 2:
                        aname, aint = "", None
                        for n3, _w3, v3 in _fields(v2):
                            if n3 == 1:
                                aname = v3.decode("utf-8", "replace")
                            elif n3 == 3:
                                aint = v3
                        if aint is not None:
                            attrs[aname] = aint
                facts.nodes.append((op, inputs, attrs))
    except (ValueError, IndexError) as e:
        raise ModelFileError(str(path), "not a readable ONNX model", expected="an ONNX ModelProto",
                             got=str(e)) from None
    return facts


# ============================================================================ floor
_RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}
_MATMUL_OPS = {"MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
               "QLinearMatMul", "FusedMatMul"}


@dataclass
class Product:
    """``repeat`` times ``[rows, k] @ [k, n]`` in fp32."""

    rows: int
    k: int
    n: int
    repeat: int = 1
    what: str = ""
    weights: int = 0  # distinct weight elements these products read (k * n per direction)


def floor_products(facts: GraphFacts, *, batch: int, time_steps: int, per_step_head: bool,
                   mode: str = "sequence") -> list[Product]:
    """The matrix products a case cannot avoid, from the graph's recurrent and MatMul nodes.

    ``per_step_head``: constant-weight MatMul/Gemm outside the recurrence run on every step
    (label/regress tasks) rather than once per sequence (classify, decoder steps).
    """
    prods: list[Product] = []
    for op, inputs, attrs in facts.nodes:
        if op in _RECURRENT_GATES and len(inputs) >= 3:
            w = facts.initializers.get(inputs[1])
            r = facts.initializers.get(inputs[2])
            if not w or not r or len(w[0]) != 3 or len(r[0]) != 3:
                continue
            wd, rd = w[0], r[0]
            if op == "DynamicQuantizeLSTM":  # W [D, I, 4H], R [D, H, 4H]
                dirs, k_in, gh = wd
                k_h = rd[1]
            else:  # W [D, G*H, I], R [D, G*H, H]
                dirs, gh, k_in = wd
                k_h = rd[2]
            if time_steps == 1:
                prods.append(Product(batch, k_in + k_h, gh, dirs, f"{op} [x,h]@[W;R]", (k_in + k_h) * gh * dirs))
            else:
                prods.append(Product(batch * time_steps, k_in, gh, dirs, f"{op} x@W over time", k_in * gh * dirs))
                # the per-step products h@R, timed as ONE product over all steps: the same FLOPs
                # without the recurrence's dependency or a NumPy call per step, so never more than
                # what any implementation needs (timed step by step, NumPy's per-call cost and
                # BLAS's matrix-vector kernel put this "floor" above onnxruntime's measured time)
                prods.append(Product(batch * time_steps, k_h, gh, dirs, f"{op} h@R, all steps as one product",
                                     k_h * gh * dirs))
        elif op in _MATMUL_OPS and len(inputs) >= 2:
            b = facts.initializers.get(inputs[1])
            if not b or len(b[0]) != 2:
                continue
            k, n = b[0]
            if op == "Gemm" and attrs.get("transB", 0):
                k, n = n, k
            rows = batch * (time_steps if per_step_head else 1)
            prods.append(Product(rows, k, n, 1, f"{op} {k}x{n}", k * n))
    return prods


@dataclass
class Floor:
    matmul_s: float
    read_s: float
    floor_s: float
    products: list[dict] = field(default_factory=list)


def measure_floor(facts: GraphFacts, *, batch: int, time_steps: int, per_step_head: bool,
                  warmup: int = 5, runs: int = 50, seed: int = 0) -> Floor | None:
    """Time the case's unavoidable products and one pass over the weights, fp32 NumPy/BLAS."""
    prods = floor_products(facts, batch=batch, time_steps=time_steps, per_step_head=per_step_head)
    if not prods:
        return None
    rng = np.random.default_rng(seed)
    ops = []
    for p in prods:
        a = rng.standard_normal((p.rows, p.k), dtype=np.float32)
        b = rng.standard_normal((p.k, p.n), dtype=np.float32)
        c = np.empty((p.rows, p.n), dtype=np.float32)
        ops.append((a, b, c, p.repeat))

    def products() -> None:
        for a, b, c, rep in ops:
            for _ in range(rep):
                np.matmul(a, b, out=c)

    matmul = LatencyStats.from_samples(measure(products, warmup=warmup, runs=runs)).p50
    # Reading every weight once: a BLAS matrix-vector pass over a buffer of the weights' fp32 size.
    n_weights = sum(p.weights for p in prods)
    cols = 256
    buf = rng.standard_normal((max(1, -(-n_weights // cols)), cols), dtype=np.float32)
    ones = np.ones(cols, dtype=np.float32)
    out = np.empty(buf.shape[0], dtype=np.float32)
    read = LatencyStats.from_samples(measure(lambda: np.matmul(buf, ones, out=out), warmup=warmup, runs=runs)).p50
    return Floor(matmul_s=matmul, read_s=read, floor_s=max(matmul, read),
                 products=[asdict(p) for p in prods])


# ============================================================================ sessions and inputs
def resolve_providers(device: str, provider_options: dict[str, dict[str, Any]] | None = None
                      ) -> tuple[list[str], list[dict]]:
    """``cpu`` / ``cuda`` / ... -> (providers, options) via the runtime's resolver; a benchmark
    never falls back silently, so an unavailable device raises ProviderUnavailableError.
    ``provider_options`` (provider name -> options, e.g. CUDA's ``use_tf32``) must name
    providers this run uses."""
    from edgelstm.runtime.providers import check_provider_options, plan_providers

    if "," in device:  # a list would read as a fallback chain and time only its first available entry
        raise UsageError("--device", "bench times one device per run", expected="one of cpu, cuda, tensorrt, arm, "
                         "coreml, nnapi, qnn (run once per device, then merge with edgelstm bench-report)", got=device)
    plan = plan_providers(device, fallback=False, provider_options=provider_options)
    check_provider_options(provider_options, plan.providers)
    return plan.providers, plan.options


def session_options(threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if threads:  # None or 0: onnxruntime's default, the rule of every --threads
        if threads < 0:
            raise UsageError("--threads", "must be >= 0 (0 = onnxruntime's default)", expected=">= 0", got=threads)
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


def state_pairs(session, manifest: Manifest | None) -> list[tuple[str, str]]:
    """(input, output) names of the recurrent state: from the manifest, else ``*_in`` -> ``*_out``."""
    if manifest is not None and manifest.states:
        return [(s.input, s.output) for s in manifest.states]
    from edgelstm.runtime.interface import pair_states  # noqa: PLC0415

    return pair_states([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])


def _dim(value: Any, fallback: int) -> int:
    return value if isinstance(value, int) and value > 0 else fallback


def build_feeds(session, manifest: Manifest | None, *, batch: int, time_steps: int,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for one call, by the project's naming scheme (docs/DESIGN.md, "Exported graphs").

    ``x [batch, time, F]``, ``src [batch, time]`` token ids, ``lengths``/``src_lengths``
    filled with ``time``, ``token [batch]`` = bos, ``memory [batch, time, H]``, state inputs
    zeros ``[L, batch, H]``. Any other input: symbolic dims -> batch (first) then time.
    """
    rng = np.random.default_rng(seed)
    vocab = len(manifest.vocab) if manifest is not None and manifest.vocab else 16
    bos = (manifest.special_tokens.get("bos", 1) if manifest is not None else 1)
    feeds: dict[str, np.ndarray] = {}
    state_in = {a for a, _ in state_pairs(session, manifest)}
    for inp in session.get_inputs():
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise InputError(inp.name, "input type the benchmark cannot generate",
                             expected=sorted(_ORT_DTYPES), got=inp.type)
        shape = list(inp.shape)
        name = inp.name
        if name in ("lengths", "src_lengths", "sequence_lens"):
            feeds[name] = np.full((batch,), time_steps, dtype=dtype)
        elif name == "token":
            feeds[name] = np.full((batch,), bos, dtype=dtype)
        elif name == "src":
            feeds[name] = rng.integers(3, max(4, vocab), size=(batch, time_steps)).astype(dtype)
        elif len(shape) == 3 and name in ("x", "memory"):
            feeds[name] = rng.standard_normal((batch, time_steps, _dim(shape[2], 1))).astype(dtype)
        elif len(shape) == 3 and name in state_in:
            hidden = manifest.hidden_size if manifest is not None else 1
            layers = manifest.layers * manifest.directions if manifest is not None else 1
            feeds[name] = np.zeros((_dim(shape[0], layers), batch, _dim(shape[2], hidden)), dtype=dtype)
        else:
            dims, first = [], True
            for d in shape:
                if isinstance(d, int) and d > 0:
                    dims.append(d)
                else:
                    dims.append(batch if first else time_steps)
                first = False
            if np.issubdtype(dtype, np.floating):
                feeds[name] = rng.standard_normal(dims).astype(dtype)
            else:
                feeds[name] = np.zeros(dims, dtype=dtype)
    return feeds


# ============================================================================ cases
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


MAX_THREADS = 1024          # beyond this onnxruntime spends minutes creating threads
MAX_RUNS = 10_000_000
MAX_DURATION_S = 24 * 3600.0


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
        if self.threads == 0:  # onnxruntime's default, the rule of every --threads
            object.__setattr__(self, "threads", None)
        if self.threads is not None and self.threads < 0:
            raise UsageError("--threads", "must be >= 0 (0 = onnxruntime's default)", expected=">= 0", got=self.threads)
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


def bench_onnx(path: str | os.PathLike, cases: Sequence[Case], settings: Settings, *,
               name: str | None = None, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Benchmark one ONNX file over ``cases``; one result row per case."""
    import onnxruntime as ort

    from edgelstm.runtime.integrity import read_model_bytes
    from edgelstm.runtime.model import Model
    from edgelstm.runtime.session import LoadOptions

    path = Path(path)
    # the runtime's own load: the seal, the manifest's schema and its agreement with the graph,
    # so bench refuses exactly what run refuses (one small CPU session, before the timed one)
    manifest = Model(*read_model_bytes(path), LoadOptions(device="cpu", threads=1, trust_modified=settings.trust_modified)).manifest
    providers, provider_options = resolve_providers(settings.device, settings.provider_options)
    facts = graph_facts(path)
    so = session_options(settings.threads)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=providers,
                                    provider_options=provider_options)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelFileError(str(path), "onnxruntime cannot load the model", got=str(e).splitlines()[0]) from None
    create_s = time.perf_counter() - t0
    digest = graph_digest(path.read_bytes())  # names the model across machines and file renames
    pairs = state_pairs(sess, manifest)
    out_names = [o.name for o in sess.get_outputs()]
    out_index = {n: i for i, n in enumerate(out_names)}
    graph_role = manifest.graph if manifest is not None else "model"
    task = manifest.task if manifest is not None else "custom"
    frame_rate = manifest.frame_rate_hz if manifest is not None else None
    name = name or path.stem
    rows = []
    first_inference_s = None
    for case in cases:
        if case.mode == "stream":
            if not pairs:
                raise UsageError(f"{path.name} --mode stream", "model has no state inputs to carry",
                                 expected="inputs named *_in with matching *_out (or manifest states)", got=[i.name for i in sess.get_inputs()])
            if manifest is not None and not manifest.streamable and graph_role != "decoder_step":
                raise UsageError(f"{path.name} --mode stream", "manifest marks the model as not streamable",
                                 expected="--mode sequence", got="stream")
        feeds = build_feeds(sess, manifest, batch=case.batch, time_steps=case.time, seed=settings.seed)
        initial = {k: v.copy() for k, v in feeds.items()}

        if case.mode == "stream":
            def call(feeds=feeds) -> None:
                outs = sess.run(out_names, feeds)
                for si, so in pairs:
                    feeds[si] = outs[out_index[so]]
        else:
            def call(feeds=feeds) -> None:
                sess.run(out_names, feeds)

        t1 = time.perf_counter()
        try:
            call()
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{path.name} {case.key}", "onnxruntime rejected the generated inputs",
                             expected={k: list(v.shape) for k, v in initial.items()}, got=str(e).splitlines()[0]) from None
        first_call_s = time.perf_counter() - t1
        if first_inference_s is None:
            first_inference_s = first_call_s
        samples = measure(call, warmup=settings.warmup, runs=settings.runs, duration=settings.duration,
                          progress=progress, label=f"{name} {case.key}")
        stats = LatencyStats.from_samples(samples)
        steps_per_call = 1 if graph_role == "decoder_step" else case.time
        floor = None
        if settings.floor:
            per_step_head = task in ("label", "regress", "forecast")
            fl = measure_floor(facts, batch=case.batch, time_steps=steps_per_call, per_step_head=per_step_head)
            floor = asdict(fl) if fl else None
        rss_now = _rss_mb()
        rows.append(result_row(
            name=name, backend="onnxruntime", case=case, stats=stats, settings=settings,
            steps_per_call=steps_per_call, frame_rate_hz=frame_rate,
            model=str(path), precision=manifest.precision if manifest else _guess_precision(facts),
            family=manifest.family if manifest else None, graph=graph_role,
            providers=sess.get_providers(), file_bytes=path.stat().st_size,
            parameters=facts.parameters, weight_bytes=facts.weight_bytes,
            session_create_s=create_s, first_inference_s=first_inference_s, first_call_s=first_call_s,
            rss_peak_mb=_peak_rss_mb(),
            rss_delta_mb=(rss_now - rss0) if (rss_now is not None and rss0 is not None) else None,
            floor=floor, x_floor=(stats.p50 / floor["floor_s"]) if floor else None,
        ))
        rows[-1]["graph_sha256"] = digest
        if progress:
            progress(f"{name}: {case.key} p50 {stats.p50 * 1e6:.1f} us, p99 {stats.p99 * 1e6:.1f} us")
    del sess
    return rows


DECODE_TOKENS_PER_CALL = 16  # decoder_step through the runtime: one timed call decodes this many tokens


def bench_runtime(path: str | os.PathLike, cases: Sequence[Case], settings: Settings, *,
                  name: str | None = None, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Benchmark one exported file through :mod:`edgelstm.runtime`, the way an application calls it.

    Unlike :func:`bench_onnx` (bare ``InferenceSession.run``), each call is the runtime's public path
    with its input checks: ``stream`` with ``time`` 1 is ``model.stream(batch).step(frame)``,
    ``stream`` with ``time`` > 1 is ``Stream.feed(chunk)``, ``sequence`` is ``model.run(x)`` (zero
    state). A seq2seq ``*.decoder_step.onnx`` is timed as one token of ``Seq2SeqModel.generate``
    (``time`` = source length, memory from the encoder), a ``*.encoder.onnx`` as
    ``model.encoder.run`` on ``[batch, time]`` token ids. Rows carry ``api`` naming the call.
    """
    import onnxruntime as ort

    from edgelstm import runtime

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(str(path), "model file not found", expected="an existing .onnx file", got=str(path))
    facts = graph_facts(path)
    digest = graph_digest(path.read_bytes())  # names the model across machines and file renames
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    resolve_providers(settings.device, settings.provider_options)  # refuses options for unused providers
    loaded = runtime.load(path, device=settings.device, threads=settings.threads, fallback=False,
                          provider_options=settings.provider_options or None, trust_modified=settings.trust_modified)
    create_s = time.perf_counter() - t0
    role = "model"
    if isinstance(loaded, runtime.Seq2SeqModel):
        role = "decoder_step" if path.name.endswith(".decoder_step.onnx") else "encoder"
        model = loaded.decoder if role == "decoder_step" else loaded.encoder
    else:
        model = loaded
    manifest = model.manifest
    frame_rate = manifest.frame_rate_hz if manifest is not None else None
    name = name or path.stem
    rng = np.random.default_rng(settings.seed)
    rows = []
    first_inference_s = None
    for case in cases:
        steps_per_call = case.time
        if role == "decoder_step":
            s2s = loaded
            src = rng.integers(3, max(4, len(s2s.vocab or []) or 16), size=(case.batch, case.time))
            lens = np.full(case.batch, case.time)
            ids = src.astype(np.int64)
            memory, init = s2s._encode(ids, lens)
            tokens_per_call = DECODE_TOKENS_PER_CALL

            def call(memory=memory, init=init, lens=lens, width=case.time) -> None:
                # generate's own decoder loop (IO binding, double-buffered state), exactly
                # DECODE_TOKENS_PER_CALL tokens; the sample is divided by that count below
                s2s._decode(memory, init, lens, width, tokens_per_call, False, until_eos=False)
            api, steps_per_call = f"Seq2SeqModel.generate decoder loop (per token, {tokens_per_call} per call)", 1
        elif role == "encoder":
            src = rng.integers(3, max(4, len(loaded.vocab or []) or 16), size=(case.batch, case.time))
            inputs = {"src": src, "src_lengths": np.full(case.batch, case.time)}

            def call(inputs=inputs) -> None:
                model.run(inputs=inputs)
            api = "encoder.run"
        elif case.mode == "stream":
            if not model.streamable:
                raise UsageError(f"{path.name} --mode stream", "model is not streamable",
                                 expected="--mode sequence", got="stream")
            stream = model.stream(case.batch)
            features = model.features or 1
            if case.time == 1:
                frame = rng.standard_normal((case.batch, features)).astype(np.float32)

                def call(stream=stream, frame=frame) -> None:
                    stream.step(frame)
                api = "Stream.step"
            else:
                chunk = rng.standard_normal((case.batch, case.time, features)).astype(np.float32)

                def call(stream=stream, chunk=chunk) -> None:
                    stream.feed(chunk)
                api = "Stream.feed"
        else:
            x = rng.standard_normal((case.batch, case.time, model.features or 1)).astype(np.float32)

            def call(x=x) -> None:
                model.run(x)
            api = "Model.run"
        t1 = time.perf_counter()
        call()
        first_call_s = time.perf_counter() - t1
        if first_inference_s is None:
            first_inference_s = first_call_s
        samples = measure(call, warmup=settings.warmup, runs=settings.runs, duration=settings.duration,
                          progress=progress, label=f"{name} {case.key}")
        if role == "decoder_step":
            samples = samples / DECODE_TOKENS_PER_CALL  # per token: one decoder step (first_call_s: whole call)
        stats = LatencyStats.from_samples(samples)
        floor = None
        if settings.floor:
            per_step_head = (manifest.task if manifest else None) in ("label", "regress", "forecast")
            fl = measure_floor(facts, batch=case.batch, time_steps=steps_per_call, per_step_head=per_step_head)
            floor = asdict(fl) if fl else None
        rss_now = _rss_mb()
        rows.append(result_row(
            name=name, backend="onnxruntime", case=case, stats=stats, settings=settings,
            steps_per_call=steps_per_call, frame_rate_hz=frame_rate, api=f"edgelstm.runtime {api}",
            model=str(path), precision=manifest.precision if manifest else _guess_precision(facts),
            family=manifest.family if manifest else None, graph=role, providers=list(model.providers),
            file_bytes=path.stat().st_size, parameters=facts.parameters, weight_bytes=facts.weight_bytes,
            session_create_s=create_s, first_inference_s=first_inference_s, first_call_s=first_call_s,
            rss_peak_mb=_peak_rss_mb(),
            rss_delta_mb=(rss_now - rss0) if (rss_now is not None and rss0 is not None) else None,
            floor=floor, x_floor=(stats.p50 / floor["floor_s"]) if floor else None,
        ))
        rows[-1]["graph_sha256"] = digest
        if progress:
            progress(f"{name}: {case.key} p50 {stats.p50 * 1e6:.1f} us, p99 {stats.p99 * 1e6:.1f} us")
    return rows


def _guess_precision(facts: GraphFacts) -> str:
    ops = {op for op, _, _ in facts.nodes}
    if ops & {"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul"}:
        return "int8-dynamic"
    if any(t == 10 for _, t in facts.initializers.values()):
        return "fp16"
    return "fp32"


# ============================================================================ ratios and report
def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Side-by-side ratios within one run, per case (mode, batch, time).

    ``baseline`` is the first ONNX model benchmarked; ``speedup_vs_baseline`` =
    baseline p50 / this p50, ``file_size_vs_baseline`` = this file / baseline file,
    ``speedup_vs_torch`` = PyTorch eager p50 / this p50 (when a PyTorch row exists).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["batch"], r["time"]), []).append(r)
    for group in groups.values():
        onnx_rows = [r for r in group if r["backend"] == "onnxruntime"]
        torch_row = next((r for r in group if r["backend"] == "pytorch-eager"), None)
        base = onnx_rows[0] if onnx_rows else None
        for r in group:
            p50 = r["latency_s"]["p50"]
            r["baseline"] = base["name"] if base else None
            r["speedup_vs_baseline"] = (base["latency_s"]["p50"] / p50) if base and p50 > 0 else None
            fb, bb = r.get("file_bytes"), (base or {}).get("file_bytes")
            r["file_size_vs_baseline"] = (fb / bb) if fb and bb else None
            r["speedup_vs_torch"] = (torch_row["latency_s"]["p50"] / p50) if torch_row and p50 > 0 else None
    return rows


def make_report(rows: list[dict[str, Any]], settings: Settings, env: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "environment": env, "settings": asdict(settings), "results": add_ratios(rows)}


CSV_COLUMNS = ["machine", "name", "backend", "precision", "family", "graph", "mode", "batch", "time", "threads",
               "device", "runs", "p50_us", "p90_us", "p99_us", "min_us", "max_us", "jitter_us",
               "steps_per_s", "sequences_per_s", "rtf", "session_create_ms", "first_inference_ms",
               "file_bytes", "parameters", "rss_peak_mb", "floor_us", "x_floor",
               "speedup_vs_baseline", "file_size_vs_baseline", "speedup_vs_torch", "model_key"]


def flat_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat dict per result with the :data:`CSV_COLUMNS` (times in us / ms). ``machine`` is the
    report's ``label`` when ``bench-report --label`` gave one; ``model_key`` is the graph digest
    (first 12 hex digits), so copies of one model under other file names line up."""
    machine = report.get("label") or report.get("environment", {}).get("machine")
    out = []
    for r in report["results"]:
        lat = r["latency_s"]
        floor = r.get("floor") or {}
        out.append({
            "machine": machine, "name": r.get("name"), "backend": r.get("backend"),
            "precision": r.get("precision"), "family": r.get("family"), "graph": r.get("graph"),
            "mode": r["mode"], "batch": r["batch"], "time": r["time"], "threads": r.get("threads"),
            "device": r.get("device"), "runs": lat["n"],
            **{f"{k}_us": lat[k] * 1e6 for k in ("p50", "p90", "p99", "min", "max", "jitter")},
            "steps_per_s": r.get("steps_per_s"), "sequences_per_s": r.get("sequences_per_s"), "rtf": r.get("rtf"),
            "session_create_ms": _scale(r.get("session_create_s"), 1e3),
            "first_inference_ms": _scale(r.get("first_inference_s"), 1e3),
            "file_bytes": r.get("file_bytes"), "parameters": r.get("parameters"), "rss_peak_mb": r.get("rss_peak_mb"),
            "floor_us": _scale(floor.get("floor_s"), 1e6), "x_floor": r.get("x_floor"),
            "speedup_vs_baseline": r.get("speedup_vs_baseline"),
            "file_size_vs_baseline": r.get("file_size_vs_baseline"), "speedup_vs_torch": r.get("speedup_vs_torch"),
            "model_key": (r.get("graph_sha256") or "")[:12] or r.get("name"),
        })
    return out


def _scale(v: float | None, k: float) -> float | None:
    return None if v is None else v * k


def to_csv(report: dict[str, Any]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in flat_rows(report):
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a bench JSON file (schema ``edgelstm.bench/1``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(str(path), "cannot read the benchmark file", got=e.strerror) from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise ManifestError(str(path), "benchmark file is not valid JSON", expected=SCHEMA,
                            got=str(e)[:200] or type(e).__name__) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ManifestError(str(path), "not an edgelstm benchmark result", expected=f"schema {SCHEMA!r}", got=got)
    for key in ("environment", "results"):
        if key not in data:
            raise ManifestError(str(path), f"benchmark file lacks {key!r}", expected=SCHEMA, got=sorted(data))
    _check_report_types(data, str(path))
    return data


def _check_report_types(data: dict[str, Any], source: str) -> None:
    """The fields the tables read have the types they need (a hand-edited file fails here, in one line)."""
    def bad(where: str, expected: str, got: Any) -> ManifestError:
        return ManifestError(source, f"malformed benchmark field {where}", expected=expected, got=repr(got)[:60])

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(data["environment"], dict):
        raise bad("'environment'", "an object", data["environment"])
    if not isinstance(data["results"], list):
        raise bad("'results'", "a list", data["results"])
    for i, r in enumerate(data["results"]):
        if not isinstance(r, dict):
            raise bad(f"results[{i}]", "an object", r)
        if not isinstance(r.get("mode"), str):
            raise bad(f"results[{i}].mode", "a string", r.get("mode"))
        for k in ("batch", "time"):
            if not isinstance(r.get(k), int) or isinstance(r.get(k), bool):
                raise bad(f"results[{i}].{k}", "an integer", r.get(k))
        lat = r.get("latency_s")
        if not isinstance(lat, dict):
            raise bad(f"results[{i}].latency_s", "an object", lat)
        for k in ("n", "p50", "p90", "p99", "min", "max", "jitter"):
            if not number(lat.get(k)):
                raise bad(f"results[{i}].latency_s.{k}", "a number", lat.get(k))
        for k in ("steps_per_s", "sequences_per_s", "rtf", "session_create_s", "first_inference_s", "file_bytes",
                  "parameters", "rss_peak_mb", "x_floor", "speedup_vs_baseline", "file_size_vs_baseline",
                  "speedup_vs_torch"):
            if r.get(k) is not None and not number(r[k]):
                raise bad(f"results[{i}].{k}", "a number or null", r[k])
        if r.get("floor") is not None and not (isinstance(r["floor"], dict)
                                               and (r["floor"].get("floor_s") is None or number(r["floor"]["floor_s"]))):
            raise bad(f"results[{i}].floor", "an object with a number floor_s", r["floor"])


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def markdown_table(reports: Sequence[dict[str, Any]]) -> str:
    """One markdown table over the results of one or several machines."""
    header = ["machine", "model", "backend", "precision", "mode", "batch", "time", "threads",
              "p50 us", "p99 us", "jitter us", "steps/s", "RTF", "x floor", "vs first", "vs torch", "file KiB",
              "create ms", "first call ms", "peak RSS MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rep in reports:
        for r in flat_rows(rep):
            fb = r["file_bytes"]
            lines.append("| " + " | ".join([
                _fmt(r["machine"]), _fmt(r["name"]), _fmt(r["backend"]), _fmt(r["precision"]), _fmt(r["mode"]),
                _fmt(r["batch"]), _fmt(r["time"]), _fmt(r["threads"] if r["threads"] is not None else "default"),
                _fmt(r["p50_us"], ".1f"), _fmt(r["p99_us"], ".1f"), _fmt(r["jitter_us"], ".1f"),
                _fmt(r["steps_per_s"], ".4g"), _fmt(r["rtf"], ".3g"), _fmt(r["x_floor"], ".2f"),
                _fmt(r["speedup_vs_baseline"], ".2f"), _fmt(r["speedup_vs_torch"], ".2f"),
                _fmt(fb / 1024 if fb else None, ".1f"), _fmt(r["session_create_ms"], ".1f"),
                _fmt(r["first_inference_ms"], ".2f"), _fmt(r["rss_peak_mb"], ".0f"),
            ]) + " |")
    return "\n".join(lines) + "\n"


def environment_table(reports: Sequence[dict[str, Any]]) -> str:
    """One line per machine: what the figures were measured on."""
    header = ["machine", "cpu", "arch", "cores", "onnxruntime", "providers", "numpy / BLAS", "when"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rep in reports:
        e = rep["environment"]
        lines.append("| " + " | ".join(_fmt(v) for v in [
            rep.get("label") or e.get("machine"), e.get("cpu"), e.get("arch"), f"{e.get('usable_cores')}/{e.get('cores')}",
            e.get("onnxruntime"), ", ".join(e.get("providers") or e.get("available_providers") or []),
            f"{e.get('numpy')} / {e.get('blas')}", e.get("timestamp")]) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["SCHEMA", "MODES", "Case", "Settings", "LatencyStats", "Floor", "GraphFacts", "Product",
           "measure", "measure_floor", "floor_products", "graph_facts", "environment", "bench_onnx", "bench_runtime",
           "build_feeds", "state_pairs", "resolve_providers", "result_row", "add_ratios", "make_report",
           "flat_rows", "to_csv", "load_report", "markdown_table", "environment_table", "CSV_COLUMNS"]
