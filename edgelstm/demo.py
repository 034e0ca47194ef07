"""``make demo``: one model per family on bundled data, then one summary table.

The demo is a list of stages (:data:`STAGES`). Each stage is a function ``stage(ctx)`` that
reads and extends ``ctx.rows``: one dict per trained model (family, dataset, run_dir, metric,
...). Later stages (export, quantize, verify, bench) add their own columns to the same dicts;
the report prints every column any row has, in first-seen order. A stage that fails for one row
with an :class:`~edgelstm.errors.EdgeLSTMError` records ``row["error:<stage>"]`` and the demo
goes on; the CLI exits non-zero at the end (see :func:`failures`).

Rows (``role`` says why each is there):

=========== ========= ============================================================
family      dataset   role
=========== ========= ============================================================
lstm        digits    main: classification, >= 95 % test accuracy expected
peephole    timing    main: interval timing, the task peepholes were invented for
lstm        timing    comparison: the same task without peepholes
gru         sine      main: forecasting
gru         sunspots  comparison: forecasting a real, stationary series (vs. persistence)
gru         airline   comparison: a trending series whose test years exceed every training
                      value: persistence wins; kept to show the limit honestly
attention   dates     main: seq2seq, >= 95 % exact match expected
=========== ========= ============================================================
"""
from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgelstm.errors import EdgeLSTMError
from edgelstm.fileio import write_text_atomic

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


@dataclass
class DemoJob:
    family: str
    dataset: str
    role: str               # "main" (exported by later stages) or "comparison"
    train: dict[str, Any]   # TrainConfig fields
    quick: dict[str, Any] = field(default_factory=dict)  # overrides with --quick
    expect: float | None = None  # quality bar on the test metric (reported as pass / FAIL)


QUICK = dict(epochs=2, max_train=128, hidden_size=16, patience=2)

JOBS: list[DemoJob] = [
    DemoJob("lstm", "digits", "main", dict(hidden_size=64, epochs=40, lr=3e-3, patience=8), expect=0.95),
    DemoJob("peephole", "timing", "main", dict(hidden_size=32, epochs=100, lr=1e-2, patience=40, stop_at=1.0)),
    DemoJob("lstm", "timing", "comparison", dict(hidden_size=32, epochs=100, lr=1e-2, patience=40, stop_at=1.0)),
    DemoJob("gru", "sine", "main", dict(hidden_size=32, epochs=40, lr=1e-2, patience=8)),
    DemoJob("gru", "sunspots", "comparison", dict(hidden_size=32, epochs=100, lr=1e-2, batch_size=16, patience=20)),
    DemoJob("gru", "airline", "comparison", dict(hidden_size=32, epochs=100, lr=1e-2, batch_size=16, patience=20)),
    DemoJob("attention", "dates", "main", dict(hidden_size=64, emb_size=32, epochs=15, lr=3e-3, patience=4,
                                               stop_at=1.0), quick=dict(emb_size=8), expect=0.95),
]


@dataclass
class DemoContext:
    out_dir: Path
    quick: bool
    progress: bool
    echo: Echo
    rows: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def main_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("role") == "main" and "error:train" not in r]


def _solved_epoch(history: list[dict[str, float]], metric: str, threshold: float) -> int | None:
    key = f"val_{metric}"
    return next((int(h["epoch"]) for h in history if h.get(key, 0.0) >= threshold), None)


def stage_train(ctx: DemoContext) -> None:
    """Train every job; one row per job with its test metric, size and time."""
    import torch

    from edgelstm.training import TrainConfig, train_run
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    for job in JOBS:
        kw = {**job.train, **((QUICK | job.quick) if ctx.quick else {})}
        run_dir = ctx.out_dir / "runs" / f"{job.family}-{job.dataset}"
        row: dict[str, Any] = {"family": job.family, "dataset": job.dataset, "role": job.role,
                               "run_dir": str(run_dir)}
        ctx.rows.append(row)
        ctx.echo(f"[train] {job.family} on {job.dataset} ...")
        try:
            result, _ = train_run(job.dataset, TrainConfig(family=job.family, **kw), run_dir, overwrite=True,
                                  progress=ctx.progress)
        except EdgeLSTMError as e:  # reported in its row; the demo goes on, the CLI exits non-zero
            log.error("training %s on %s failed: %s", job.family, job.dataset, e)
            row["error:train"] = f"{type(e).__name__}: {e}"
            continue
        m = result.metrics
        metric = m["metric"]
        row.update({
            "metric": metric, "test": round(m[f"test_{metric}"], 4), "val": round(m[f"val_{metric}"], 4),
            "params": m["parameters"], "weights_kb": round((run_dir / "model.safetensors").stat().st_size / 1024, 1),
            "epochs": m["epochs_run"], "train_s": m["train_seconds"],
        })
        if job.dataset == "timing":
            row["solved_at_epoch"] = _solved_epoch(result.history, "sequence_accuracy", 0.99)
            row["test_sequence_accuracy"] = round(m["test_sequence_accuracy"], 4)
        if "test_rmse_persistence" in m:
            row["persistence_rmse"] = round(m["test_rmse_persistence"], 4)
        if job.expect is not None and not ctx.quick:
            row["quality"] = "pass" if m[f"test_{metric}"] >= job.expect else f"FAIL (< {job.expect})"


Stage = Callable[[DemoContext], None]
# Training is here; the stages after it (export, quantize, metric, verify, bench: each adds columns
# to the rows) are edgelstm.demo_stages.later_stages(), imported here because they need the export extras.
STAGES: list[tuple[str, Stage]] = [("train", stage_train)]


def _later_stages() -> list[tuple[str, Stage]]:
    from edgelstm.demo_stages import later_stages  # noqa: PLC0415 (needs the export extras)

    return later_stages()


STAGES += _later_stages()


# ---------------------------------------------------------------------------- report
# The summary table's columns, in order, with their headers; report.json keeps every key.
SUMMARY_COLUMNS: list[tuple[str, str]] = [
    ("family", "family"), ("dataset", "dataset"), ("role", "role"), ("metric", "metric"),
    ("test", "torch test"), ("onnx_fp32", "onnx fp32"), ("int8", "int8"), ("int8_delta", "int8 delta"),
    ("quality", "quality"), ("persistence_rmse", "persistence"), ("solved_at_epoch", "solved at epoch"),
    ("params", "params"), ("fp32_kb", "fp32 KiB"), ("int8_kb", "int8 KiB"), ("int8_size_%", "int8 size %"),
    ("int8_decision", "int8 decision"),
    ("recurrent", "recurrent nodes"), ("export_err", "export max err"), ("verify", "verify"),
    ("fp32_max_err", "verify fp32 max err"), ("int8_sqnr_db", "int8 SQNR dB"), ("drift_steps", "drift steps"), ("drift_growth", "drift growth"),
    ("torch_step_us", "torch step us"), ("fp32_step_us", "fp32 step us"), ("fp32_speedup", "fp32 speed-up"),
    ("int8_step_us", "int8 step us"), ("int8_speedup", "int8 speed-up"), ("train_s", "train s"),
]


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    present = {k for r in rows for k in r}
    cols = [(k, h) for k, h in SUMMARY_COLUMNS if k in present]
    errors = sorted(k for k in present if k.startswith("error:"))
    return cols + [(k, k) for k in errors]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_report(ctx: DemoContext) -> tuple[Path, Path]:
    table = markdown_table(ctx.rows)
    notes = [
        "metric: accuracy / event_f1 / exact_match (higher is better), rmse in the data's units (lower is better).",
        "timing: solved_at_epoch = first epoch with >= 99 % of validation sequences exactly right "
        "(peephole vs classic LSTM).",
        "persistence_rmse: error of predicting the last value again; a forecaster should beat it. "
        "airline: 1959-60 passenger counts lie above anything seen in 1949-57, which a saturating "
        "recurrent net trained on normalized values cannot extrapolate to.",
        "onnx fp32 / int8: the same test split scored through the torch-free runtime on the exported "
        "and the int8-dynamic file; int8 delta = int8 - onnx fp32.",
        "int8 decision: `quantize` makes a node int8 only where int8 is faster than fp32 on the target "
        "(an LSTM or MatMul from 2^18 weights; the GRU int8 rewrite only with --force-int8; "
        "exporters/int8_plan.py has the measurements). The demo's models are smaller than that, so "
        "their int8 files keep fp32 and the int8 columns stay empty: the 2x256 case of "
        "benchmarks/README.md is where int8 pays.",
        "verify: PyTorch vs onnxruntime fp32 and int8 (plus ONNX's reference evaluator and the NumPy "
        "cells) on random inputs and the run's test split; drift steps = 16x the training sequence "
        "length (cap 1,000) streamed one step at a time; full reports in onnx/*.verify.json.",
        "step us: one streaming step at batch 1 on one thread (seq2seq: one decoder step over a "
        "16-step memory); speed-up = PyTorch eager / onnxruntime, measured in the same run.",
    ]
    md = (f"# edgelstm demo{' (quick)' if ctx.quick else ''}\n\n{table}\n\n"
          + "\n".join(f"- {n}" for n in notes)
          + "\n\nStage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in ctx.timings.items()) + "\n")
    md_path, json_path = ctx.out_dir / "report.md", ctx.out_dir / "report.json"
    write_text_atomic(md_path, md)
    write_text_atomic(json_path, json.dumps(report_payload(ctx), indent=2, default=str) + "\n")
    return md_path, json_path


def report_payload(ctx: DemoContext) -> dict:
    """``report.json`` (schema ``edgelstm.demo/1``, docs/SCHEMAS.md)."""
    return {"schema": "edgelstm.demo/1", "quick": ctx.quick, "rows": ctx.rows, "stage_seconds": ctx.timings,
            "environment": {"python": platform.python_version(), "machine": platform.machine(),
                            "processor": platform.processor() or None}}


def run_demo(out_dir: str | Path = "demo_out", quick: bool = False, *, progress: bool = True,
             echo: Echo | None = None, stages: list[tuple[str, Stage]] | None = None) -> DemoContext:
    """Run every stage, print the summary table, write ``report.md`` and ``report.json``."""
    if echo is None:
        import click
        echo = click.echo
    ctx = DemoContext(out_dir=Path(out_dir), quick=quick, progress=progress, echo=echo)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    for name, stage in (STAGES if stages is None else stages):
        t0 = time.perf_counter()
        stage(ctx)
        ctx.timings[name] = round(time.perf_counter() - t0, 1)
    md_path, json_path = write_report(ctx)
    echo("")
    echo(markdown_table(ctx.rows))
    echo(f"\nreport: {md_path} and {json_path.name}")
    return ctx


def failures(ctx: DemoContext) -> list[str]:
    """Row errors and failed quality bars, for the CLI's exit code."""
    out = []
    for r in ctx.rows:
        out += [f"{r['family']}/{r['dataset']}: {k}: {v}" for k, v in r.items() if k.startswith("error:")]
        if str(r.get("verify", "")).startswith("FAIL"):
            out.append(f"{r['family']}/{r['dataset']}: verify {r['verify']}")
        if str(r.get("quality", "")).startswith("FAIL"):
            out.append(f"{r['family']}/{r['dataset']}: {r['metric']} {r['test']} {r['quality']}")
    return out
