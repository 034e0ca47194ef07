"""The report: ratios within a run, the ``edgelstm.bench/1`` JSON, CSV and markdown tables,
noise warnings, and reading a report back (``bench-report``).

JSON schema ``edgelstm.bench/1`` (see :func:`make_report` and docs/SCHEMAS.md)::

    {"schema": "edgelstm.bench/1", "environment": {...}, "settings": {...},
     "results": [{"name", "backend", "model", "precision", "family", "graph", "mode", "batch",
                  "time", "threads", "device", "providers", "file_bytes", "parameters",
                  "weight_bytes", "session_create_s", "first_inference_s", "first_call_s",
                  "runs", "warmup", "latency_s": {min,p50,p90,p99,max,mean,std,jitter},
                  "steps_per_s", "sequences_per_s", "frame_rate_hz", "rtf",
                  "rss_peak_mb", "rss_delta_mb", "floor": {matmul_s, read_s, floor_s} | null,
                  "x_floor", "baseline", "speedup_vs_baseline", "file_size_vs_baseline",
                  "speedup_vs_torch"}]}

Imports the standard library, ``edgelstm.errors`` and :mod:`.cases`. Imported by :mod:`.suite`,
:mod:`.plot`, ``edgelstm.cli.bench`` and ``benchmarks/``.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from edgelstm.bench.cases import Settings
from edgelstm.errors import ManifestError, UsageError

SCHEMA = "edgelstm.bench/1"


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


# A p99 this many times the p50 means the machine was busy (other processes, frequency scaling)
# while measuring: steady-state onnxruntime steps on an idle core stay within about 2x here.
NOISY_P99_OVER_P50 = 5.0


def noise_warnings(reports: Sequence[dict]) -> list[str]:
    """One line per machine that was too busy to trust: load average above its usable cores, or
    cases whose p99 exceeds NOISY_P99_OVER_P50 times their p50."""
    out = []
    for rep in reports:
        env = rep.get("environment", {})
        where = rep.get("label") or env.get("machine")
        load, cores = env.get("load_average"), env.get("usable_cores") or env.get("cores")
        if load and cores and load[0] > cores:
            out.append(f"warning: {where}: load average {load[0]:.1f} on {cores} usable cores while measuring; "
                       "rerun on a quiet machine before comparing")
        noisy = [(r["name"], r["mode"], r["batch"], r["time"], r["p99_us"] / r["p50_us"]) for r in flat_rows(rep)
                 if r["p50_us"] and r["p99_us"] / r["p50_us"] > NOISY_P99_OVER_P50]
        if noisy:
            worst = max(noisy, key=lambda n: n[4])
            out.append(f"warning: {where}: p99 above {NOISY_P99_OVER_P50:g}x p50 in {len(noisy)} case(s) "
                       f"(worst {worst[4]:.0f}x: {worst[0]} {worst[1]} b{worst[2]} t{worst[3]}); the machine was busy")
    return out


def write_report(path: str | os.PathLike, report: dict[str, Any]) -> None:
    """Write a report as strict JSON (NaN/Inf as strings, like every ``--json``), atomically."""
    from edgelstm.fileio import json_safe, write_text_atomic

    write_text_atomic(path, json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n")
