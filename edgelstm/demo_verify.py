"""The demo's verify stage: each exported fp32 file and its int8 file against the PyTorch run.

Uses :func:`edgelstm.verify.verify` with a short drift sequence (the CLI's default is 10,000
steps; the demo keeps its few-minute budget) and writes each full report as JSON beside the
models, so the table's one-word verdict can be traced to every statistic.

Imports the standard library, ``edgelstm.fileio`` and :mod:`edgelstm.demo_common`;
``edgelstm.verify`` inside the stage. Imported by :mod:`edgelstm.demo_stages`.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgelstm.demo_common import guard, stage_rows
from edgelstm.fileio import write_text_atomic

DEMO_DRIFT_STEPS = 1000   # cap on the demo's drift horizon (the CLI's default is 10,000)
DRIFT_HORIZON_FACTOR = 16  # drift over 16x the longest training sequence


def drift_steps(run_dir: str | Path, quick: bool) -> int:
    """The demo's drift horizon: 16x the longest sequence the model was trained on, capped.

    Streaming a digits classifier trained on 8-row images for 1,000 steps of noise measures
    extrapolation far outside anything it has seen, not the export; 16x its training length
    still shows a state error that compounds, while the streaming families (timing, sine) get
    the full cap. ``edgelstm verify --steps N`` runs any horizon.
    """
    if quick:
        return 200
    try:
        cfg = json.loads((Path(run_dir) / "config.json").read_text())
        t = int(cfg["extra"]["data"]["x_shape"][1])
    except (OSError, KeyError, TypeError, ValueError, IndexError):
        return DEMO_DRIFT_STEPS
    return max(64, min(DEMO_DRIFT_STEPS, DRIFT_HORIZON_FACTOR * t))


def stage_verify(ctx) -> None:
    from edgelstm.verify import summarize, verify

    for row in stage_rows(ctx, "onnx"):
        ctx.echo(f"[verify] {Path(row['onnx']).name}"
                 + (f" and {Path(row['int8_onnx']).name}" if "int8_onnx" in row else "")
                 + f" against {row['run_dir']}")

        def go(row=row):
            result = verify(row["onnx"], reference=row["run_dir"],
                            against=[row["int8_onnx"]] if "int8_onnx" in row else [],
                            steps=drift_steps(row["run_dir"], ctx.quick))
            s = summarize(result)
            out = Path(row["onnx"]).with_suffix(".verify.json")
            write_text_atomic(out, json.dumps(result.to_dict(), indent=1, default=str) + "\n")
            row["verify"] = "pass" if s["passed"] else "FAIL: " + "; ".join(s["failures"][:2])
            row["drift_steps"] = result.to_dict().get("config", {}).get("steps")
            row["verify_report"] = str(out)
            if s["worst_max_abs"] is not None:
                row["fp32_max_err"] = s["worst_max_abs"]
            if s["min_snr_db"] is not None:
                row["int8_sqnr_db"] = round(s["min_snr_db"], 1)
            if s["drift_max_growth"] is not None:
                row["drift_growth"] = round(s["drift_max_growth"], 2)
        guard(row, "verify", go)
