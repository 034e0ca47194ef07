"""The demo's stages after training: export, quantize, task metric through the runtime, verify, bench.

Each stage works on ``ctx.main_rows()`` (one model per family) and adds columns to those rows.
A stage that fails for one row records ``row["error:<stage>"]`` and the demo goes on; the CLI
exits non-zero at the end (:mod:`edgelstm.demo_common`). Everything here goes through the same
public library functions a user calls: ``edgelstm.exporters.export_run``,
``edgelstm.exporters.quantize.quantize``, ``edgelstm.runtime``, ``edgelstm.verify`` (in
:mod:`edgelstm.demo_verify`) and ``edgelstm.bench.suite.run_bench`` (what ``edgelstm bench`` runs).

Imports numpy, the standard library, :mod:`edgelstm.demo_common` and :mod:`edgelstm.demo_verify`;
the exporters, runtime, training and benchmark inside the stages. Imported by :mod:`edgelstm.demo`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgelstm.demo_common import guard, stage_rows
from edgelstm.demo_verify import stage_verify

INT8 = "int8-dynamic"


def _onnx_dir(ctx) -> Path:
    d = ctx.out_dir / "onnx"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _files(path: Path) -> list[Path]:
    """The files one exported model is made of (seq2seq: encoder + decoder step)."""
    if path.exists():
        return [path]
    from edgelstm.runtime.interface import pair_paths

    return list(pair_paths(path))


def _kb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in _files(path)) / 1024, 1)


# ---------------------------------------------------------------------------- export
def stage_export(ctx) -> None:
    from edgelstm.exporters import export_run

    for row in stage_rows(ctx):
        out = _onnx_dir(ctx) / f"{row['family']}-{row['dataset']}.onnx"
        ctx.echo(f"[export] {row['run_dir']} -> {out.name}")

        def go(row=row, out=out):
            report = export_run(row["run_dir"], out)
            reports = [report, *report.companions]
            row["onnx"] = str(out)
            row["fp32_kb"] = _kb(out)
            row["recurrent"] = " ".join(f"{n['op']}x{sum(1 for m in r.recurrent_nodes if m['op'] == n['op'])}"
                                        for r in reports for n in r.recurrent_nodes[:1])
            row["nodes"] = "+".join(str(r.node_count_after) for r in reports)
            errs = [r.max_abs_error for r in reports if r.max_abs_error is not None]
            row["export_err"] = max(errs) if errs else None
        guard(row, "export", go)


# ---------------------------------------------------------------------------- quantize
def stage_quantize(ctx) -> None:
    from edgelstm.exporters.quantize import quantize

    for row in stage_rows(ctx, "onnx"):
        src = Path(row["onnx"])
        dst = src.with_name(src.name.replace(".onnx", f".{INT8}.onnx"))
        ctx.echo(f"[quantize] {src.name} -> {dst.name}")

        def go(row=row, src=src, dst=dst):
            report = quantize(src, dst, INT8, threads=1,
                              calibration=None if row["family"] == "attention" else row["run_dir"])
            reports = [report, *report.companions]
            if not any(d["int8"] for r in reports for d in r.int8_decisions):
                # the product's default: no node is large enough for int8 to be faster, so the
                # "int8" file is the fp32 one; the demo says so instead of timing it twice
                row["int8_decision"] = "fp32 kept: int8 does not pay at this size"
                return
            row["int8_onnx"] = str(dst)
            row["int8_kb"] = _kb(dst)
            row["int8_size_%"] = round(100 * row["int8_kb"] / row["fp32_kb"], 1)
        guard(row, "quantize", go)


# ---------------------------------------------------------------------------- task metric
def onnx_test_metric(onnx_path: str | Path, run_dir: str | Path, *, threads: int = 1) -> dict[str, float]:
    """The run's test metric, computed through the torch-free runtime on the exported file.

    Uses the run's own dataset and seed (so the same test split as training) and raw inputs: the
    runtime applies the manifest's normalization itself, so this also checks that it does.
    """
    from edgelstm import runtime
    from edgelstm.checkpoint import read_run_config
    from edgelstm.data import load_dataset
    from edgelstm.data.bundle import valid_step_mask
    from edgelstm.training import metrics

    cfg = read_run_config(run_dir)
    bundle = load_dataset(cfg.dataset, seed=cfg.seed)
    test = bundle.test
    model = runtime.load(onnx_path, device="cpu", threads=threads)
    if bundle.task == "seq2seq":
        gen = model.generate(test.x, max_len=bundle.max_len)
        width = max(max((len(t) for t in gen.tokens), default=0) + 1, test.y.shape[1])
        pred = np.zeros((len(gen.tokens), width), dtype=np.int64)
        for i, toks in enumerate(gen.tokens):
            pred[i, :len(toks)] = toks
            pred[i, len(toks)] = 2  # eos
        return metrics.sequences(pred, test.y)
    out = model.run(test.x, lengths=test.lengths.astype(np.int32))
    name = model.manifest.outputs[0].name
    pred = out.outputs[name]
    if bundle.task in ("classify", "label"):
        return metrics.classification(pred.argmax(-1), test.y)
    keep = test.mask if test.mask is not None else valid_step_mask(test.lengths, test.x.shape[1])
    return metrics.regression(pred, test.y, keep)


def stage_task_metric(ctx) -> None:
    for row in stage_rows(ctx, "onnx"):
        metric = row["metric"]
        ctx.echo(f"[metric] {row['family']}/{row['dataset']}: test {metric} through the runtime")

        def go(row=row, metric=metric):
            row["onnx_fp32"] = round(onnx_test_metric(row["onnx"], row["run_dir"])[metric], 4)
            if "int8_onnx" in row:
                row["int8"] = round(onnx_test_metric(row["int8_onnx"], row["run_dir"])[metric], 4)
                row["int8_delta"] = round(row["int8"] - row["onnx_fp32"], 4)
        guard(row, "metric", go)


# ---------------------------------------------------------------------------- bench
def stage_bench(ctx) -> None:
    """One streaming step at batch 1, one thread: PyTorch eager vs onnxruntime fp32 and int8."""
    from edgelstm.bench.report import write_report
    from edgelstm.bench.suite import BenchOptions, run_bench

    for row in stage_rows(ctx, "onnx"):
        files = [Path(row["onnx"])] + ([Path(row["int8_onnx"])] if "int8_onnx" in row else [])
        if row["family"] == "attention":  # the streaming unit of seq2seq is one decoder step
            files = [_files(f)[1] for f in files]
        out = ctx.out_dir / "bench" / f"{row['family']}-{row['dataset']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        opts = BenchOptions(models=tuple(map(str, files)), threads=1, batch="1", modes="stream",
                            times="16" if row["family"] == "attention" else "1", runs=30 if ctx.quick else 300,
                            warmup=10, torch_run=row["run_dir"], no_floor=True, quiet=True, json_out=str(out))
        ctx.echo(f"[bench] {row['family']}/{row['dataset']}: streaming step, batch 1, 1 thread")

        def go(row=row, opts=opts, out=out):
            report = run_bench(opts)
            write_report(out, report)
            by = {}
            for r in report["results"]:
                by[r["backend"] if r["backend"] == "pytorch-eager" else r.get("precision", r["name"])] = r
            torch_p50 = by.get("pytorch-eager", {}).get("latency_s", {}).get("p50")
            for key, label in (("fp32", "fp32"), (INT8, "int8"), ("int8", "int8")):
                r = by.get(key)
                if r is None or f"{label}_step_us" in row:
                    continue
                p50 = r["latency_s"]["p50"]
                row[f"{label}_step_us"] = round(p50 * 1e6, 1)
                if torch_p50:
                    row[f"{label}_speedup"] = round(torch_p50 / p50, 1)
            if torch_p50:
                row["torch_step_us"] = round(torch_p50 * 1e6, 1)
        guard(row, "bench", go)


def later_stages() -> list[tuple[str, Any]]:
    """The stages after training, in order."""
    return [("export", stage_export), ("quantize", stage_quantize), ("metric", stage_task_metric),
            ("verify", stage_verify), ("bench", stage_bench)]
