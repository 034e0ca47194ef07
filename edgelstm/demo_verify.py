"""The demo's verify stage: each exported fp32 file and its int8 file against the PyTorch run.

Uses :func:`edgelstm.verify.verify` with a short drift sequence (the CLI's default is 10,000
steps; the demo keeps its few-minute budget) and writes each full report as JSON beside the
models, so the table's one-word verdict can be traced to every statistic.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgelstm.fileio import write_text_atomic

DEMO_DRIFT_STEPS = 1000


def stage_verify(ctx) -> None:
    from edgelstm.demo_stages import _guard, _rows
    from edgelstm.verify import summarize, verify

    for row in _rows(ctx, "onnx"):
        ctx.echo(f"[verify] {Path(row['onnx']).name}"
                 + (f" and {Path(row['int8_onnx']).name}" if "int8_onnx" in row else "")
                 + f" against {row['run_dir']}")

        def go(row=row):
            result = verify(row["onnx"], reference=row["run_dir"],
                            against=[row["int8_onnx"]] if "int8_onnx" in row else [],
                            steps=200 if ctx.quick else DEMO_DRIFT_STEPS)
            s = summarize(result)
            out = Path(row["onnx"]).with_suffix(".verify.json")
            write_text_atomic(out, json.dumps(result.to_dict(), indent=1, default=str) + "\n")
            row["verify"] = "pass" if s["passed"] else "FAIL: " + "; ".join(s["failures"][:2])
            row["verify_report"] = str(out)
            if s["worst_max_abs"] is not None:
                row["fp32_max_err"] = s["worst_max_abs"]
            if s["min_snr_db"] is not None:
                row["int8_sqnr_db"] = round(s["min_snr_db"], 1)
            if s["drift_max_growth"] is not None:
                row["drift_growth"] = round(s["drift_max_growth"], 2)
        _guard(ctx, row, "verify", go)
