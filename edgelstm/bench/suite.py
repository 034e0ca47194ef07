"""``edgelstm bench`` as a library call: its options as one typed object, and the run.

:class:`BenchOptions` holds exactly the command's options (the CLI builds it from its flags, the
demo directly); :func:`run_bench` times every model over the cases they give, then PyTorch where
asked, and returns the ``edgelstm.bench/1`` report. Writing the report (JSON, CSV, plot) and
printing it is the caller's.

Imports the standard library, ``edgelstm.errors``, ``edgelstm.runtime`` and the modules beside it.
Imported by ``edgelstm.cli.bench`` and ``edgelstm.demo_stages``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from edgelstm.bench.cases import MODES, Case, Settings
from edgelstm.bench.drivers import bench_onnx
from edgelstm.bench.feeds import build_feeds
from edgelstm.bench.measure import environment
from edgelstm.bench.report import make_report
from edgelstm.errors import CheckpointError, UsageError

MAX_BATCH = 65_536        # --batch: beyond this one call's inputs no longer fit a device's memory
MAX_TIME = 1_000_000      # --time: steps per call
MAX_ELEMENTS = 1 << 26    # batch * time per call (times the feature size: the input's floats)
DEFAULT_RUNS = 200        # --runs when neither --runs nor --duration is given


@dataclass(frozen=True)
class BenchOptions:
    """The options of ``edgelstm bench`` (one field per flag, the CLI's names and defaults)."""

    models: tuple[str, ...]                    # the ONNX files, timed in order (the first is the baseline)
    device: str = "cpu"
    provider_option: tuple[str, ...] = ()      # PROVIDER:KEY=VALUE entries
    threads: int | None = None                 # None or 0: onnxruntime's default
    batch: str = "1"                           # comma-separated batch sizes
    modes: str = "stream"                      # comma-separated: stream, sequence
    times: str | None = None                   # comma-separated steps per call (default by mode)
    warmup: int = 20
    runs: int | None = None                    # DEFAULT_RUNS unless duration is given
    duration: float | None = None
    torch_run: str | None = None               # also time PyTorch eager on this run directory
    no_floor: bool = False
    json_out: str | None = None                # outputs: written by the caller
    csv_out: str | None = None
    plot_out: str | None = None
    quiet: bool = False                        # no progress lines
    trust_modified: bool = False

    def cases(self) -> list[Case]:
        """Every (mode, batch, time) to time, in order."""
        mode_list = [m.strip() for m in self.modes.split(",") if m.strip()]
        if not mode_list:
            raise UsageError("--mode", "no mode given", expected=list(MODES), got=repr(self.modes))
        batches = int_list("--batch", self.batch, MAX_BATCH)
        cases = []
        for mode in mode_list:
            ts = int_list("--time", self.times, MAX_TIME) if self.times else [1 if mode == "stream" else 256]
            if max(batches) * max(ts) > MAX_ELEMENTS:
                raise UsageError("--batch/--time", "batch x time too large for one call",
                                 expected=f"<= {MAX_ELEMENTS}", got=max(batches) * max(ts))
            cases += [Case(mode, b, t) for b in batches for t in ts]
        return cases

    def settings(self) -> Settings:
        from edgelstm.runtime.providers import parse_provider_options

        runs = DEFAULT_RUNS if self.runs is None and self.duration is None else self.runs
        return Settings(warmup=self.warmup, runs=runs, duration=self.duration, threads=self.threads,
                        device=self.device, floor=not self.no_floor, trust_modified=self.trust_modified,
                        provider_options=parse_provider_options(self.provider_option))


def int_list(option: str, text: str, limit: int, example: str = "1,8") -> list[int]:
    """``"1,8"`` -> ``[1, 8]``: positive integers up to ``limit``, else a usage error naming ``option``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(option, "not a comma-separated list of integers", expected=f"e.g. {example}",
                         got=text) from None
    if not values or any(v < 1 for v in values):
        raise UsageError(option, "values must be positive integers", expected=f"e.g. {example}", got=text)
    if max(values) > limit:
        raise UsageError(option, "value too large", expected=f"<= {limit}", got=max(values))
    return values


def unique_names(paths: Sequence[str]) -> list[str]:
    """Short names for the table: the file stem, with the parent folder where stems collide."""
    stems = [Path(p).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{Path(p).parent.name}/{s}" for p, s in zip(paths, stems)]


def run_bench(options: BenchOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time ``options.models`` (then PyTorch with ``torch_run``) and return the report
    (:func:`edgelstm.bench.report.make_report`). ``progress`` gets a line per case unless ``quiet``."""
    if options.torch_run and not Path(options.torch_run).is_dir():  # before minutes of ONNX timing, not after
        raise CheckpointError(str(options.torch_run), "run directory not found",
                              expected="a directory from edgelstm train", got=str(options.torch_run))
    progress = None if options.quiet else progress
    cases, settings = options.cases(), options.settings()
    rows: list[dict] = []
    for path, name in zip(options.models, unique_names(options.models)):
        rows += bench_onnx(path, cases, settings, name=name, progress=progress)
    if options.torch_run:
        rows += _torch_rows(options, cases, settings, progress)
    providers = sorted({p for r in rows if r["backend"] == "onnxruntime" for p in r["providers"]})
    return make_report(rows, settings, environment(options.threads, providers))


def _torch_rows(options: BenchOptions, cases: list[Case], settings: Settings,
                progress: Callable[[str], None] | None) -> list[dict]:
    """PyTorch eager on the run directory, fed the inputs the first model's graph is fed."""
    from edgelstm.bench.torch_driver import bench_torch
    from edgelstm.runtime.integrity import check_model_file
    from edgelstm.runtime.providers import plan_providers
    from edgelstm.runtime.session import create_session, session_options

    path, _data, manifest = check_model_file(options.models[0], trust_modified=options.trust_modified)
    sess = create_session(path, plan_providers("cpu"), session_options(record_placement=False))
    role = manifest.graph if manifest else "model"
    return bench_torch(options.torch_run, lambda c: build_feeds(sess, manifest, batch=c.batch, time_steps=c.time,
                                                                 seed=settings.seed),
                       role, cases, settings, progress)
