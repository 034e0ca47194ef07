"""The speed targets of one ``make bench`` run, side by side, from the run's own result files.

``make bench`` runs the suite (``run.py``), the stream group (``stream_group.py``), the step
decomposition (``step_floor.py``) and the peers (``peers.py``), each writing its JSON into
``benchmarks/results/``; this script reads those files and rewrites the "Speed targets" table
between its markers in ``benchmarks/README.md``: each target, the measured figure, the goal, and
whether it was met in this run. Nothing is measured here.

    .venv/bin/python benchmarks/summary.py --suite S.json --group G.json --step F.json --peers P.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- targets:begin -->", "<!-- targets:end -->"
#: int8 "slower" than fp32 only beyond this ratio of the side-by-side timing (alternating blocks,
#: median of block ratios): the margin of two identical graphs timed that way on the shared VM
SAME_SPEED = 1.05


def _load(path: str | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def _p50(row: dict) -> float:
    return row["latency_s"]["p50"]


def _case(row: dict) -> tuple:
    c = row.get("config") or {}
    return (c.get("family"), c.get("layers"), c.get("hidden"), c.get("graph"), row["mode"], row["batch"], row["time"])


def suite_targets(suite: dict) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, goal, met) from the suite's rows."""
    rows = suite["results"]
    by = {}
    for r in rows:
        by.setdefault(_case(r), {})[r["name"].split()[-1]] = r
    out = []
    step = by.get(("lstm", 2, 256, "model", "stream", 1, 1), {})
    if "ort-int8" in step and step["ort-int8"].get("floor"):
        ratio = _p50(step["ort-int8"]) / step["ort-int8"]["floor"]["floor_s"]
        out.append(("2x256 LSTM int8 streaming step / fp32 floor of the step",
                    f"{_p50(step['ort-int8']) * 1e6:.1f} us / {step['ort-int8']['floor']['floor_s'] * 1e6:.1f} us "
                    f"= {ratio:.2f}x", "<= 0.6x", ratio <= 0.6))
    worse, same = [], 0
    n = 0
    for key, engines in sorted(by.items(), key=str):
        f, q = engines.get("ort-fp32"), engines.get("ort-int8")
        if f is None or q is None:
            continue
        n += 1
        if q.get("precision") == "fp32":  # quantize kept the fp32 graph: the same graph, the same speed
            same += 1
            continue
        if (q.get("file_bytes") or 0) > (f.get("file_bytes") or 0):
            worse.append(f"{q['name']} {key[4]} b{key[5]}: file {q['file_bytes']} > {f['file_bytes']} bytes")
        paired = q.get("int8_vs_fp32_paired")
        ratio = paired["ratio"] if paired else _p50(q) / _p50(f)
        if ratio > SAME_SPEED:
            worse.append(f"{q['name']} {key[4]} b{key[5]} t{key[6]}: {ratio:.2f}x fp32"
                         + (" (side by side)" if paired else ""))
    out.append((f"int8 never larger nor slower than fp32 ({n} cases; {same} kept the fp32 graph)",
                "; ".join(worse[:6]) + (f" (+{len(worse) - 6})" if len(worse) > 6 else "") if worse else "none worse",
                f"no case (slower = over {SAME_SPEED}x)", not worse))
    seq = [(k, e) for k, e in by.items() if k[4] == "sequence" and k[5] > 1 and "ort-fp32" in e and "pytorch" in e
           and k[3] == "model"]
    if seq:
        ratios = sorted((_p50(e["pytorch"]) / _p50(e["ort-fp32"]), k) for k, e in seq)
        low, k = ratios[0]
        out.append((f"batched fp32 sequences vs PyTorch eager (own process), {len(seq)} cases",
                    f"slowest {low:.2f}x ({k[0]} {k[1]}x{k[2]}, {k[5]}x{k[6]}); median "
                    f"{ratios[len(ratios) // 2][0]:.2f}x", ">= 1.0x in every case", low >= 1.0))
    return out


def group_targets(group: dict) -> list[tuple[str, str, str, bool | None]]:
    out = []
    for r in group["rows"]:
        if r["n"] != 64:
            continue
        if r["size"].startswith("kws"):
            out.append(("stream group N=64 vs 64 streams stepped one by one (keyword-spotting size)",
                        f"{r['group_over_sequential']:.1f}x the aggregate steps/s", ">= 20x",
                        r["group_over_sequential"] >= 20))
        elif "group_x_floor" in r:
            out.append(("stream group N=64 step vs the floor of one batch-64 step (2x256)",
                        f"{r['group_x_floor']:.2f}x", "<= 1.5x", r["group_x_floor"] <= 1.5))
    return out


def step_targets(step: dict) -> list[tuple[str, str, str, bool | None]]:
    out = []
    for r in step["rows"]:
        us = r["us"]
        if r["model"].startswith("kws"):
            out.append(("keyword-spotting step (1x64, 40 in) / its floor",
                        f"{us['stream']:.1f} us / {us['floor']:.1f} us = {r['stream_over_floor']:.2f}x "
                        f"(onnxruntime's call alone: {us['call']:.1f} us)", "<= 2x", r["stream_over_floor"] <= 2))
        out.append((f"{r['model']}: Stream.step / bare io_binding loop",
                    f"{us['stream']:.1f} / {us['bare_iob']:.1f} us = {r['stream_over_bare_iob']:.3f}x", "<= 1.1x",
                    r["stream_over_bare_iob"] <= 1.1))
    return out


def peers_targets(peers: dict) -> list[tuple[str, str, str, bool | None]]:
    out = []
    for r in peers["rows"]:
        e = r["engines"]
        if r["mode"] != "sequence" or r["batch"] == 1 or "pytorch eager" not in e:
            continue
        ratio = e["pytorch eager"]["us"] / e["edgelstm fp32"]["us"]
        out.append((f"peers: {r['model']} {r['batch']}x{r['time']} fp32 vs PyTorch eager",
                    f"{ratio:.2f}x", ">= 1.0x", ratio >= 1.0))
    return out


def table(items: list[tuple[str, str, str, bool | None]], sources: list[str]) -> str:
    lines = [BEGIN, "", "| target | this run | goal | met |", "|---|---|---|---|"]
    for what, got, goal, met in items:
        lines.append(f"| {what} | {got} | {goal} | {'yes' if met else ('no' if met is False else '-')} |")
    lines += ["", "From " + ", ".join(f"`{s}`" for s in sources) + ".", "", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("suite", "group", "step", "peers"):
        ap.add_argument(f"--{name}", default=None)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    items, sources = [], []
    for name, fn in (("suite", suite_targets), ("group", group_targets), ("step", step_targets),
                     ("peers", peers_targets)):
        path = getattr(args, name)
        data = _load(path)
        if data is None:
            items.append((f"{name} results", f"missing ({path})", "-", None))
            continue
        sources.append(str(Path(path).resolve().relative_to(ROOT)) if Path(path).resolve().is_relative_to(ROOT)
                       else path)
        items += fn(data)
    text = table(items, sources)
    print(text)
    if not args.no_readme:
        from edgelstm.fileio import write_text_atomic

        readme = ROOT / "benchmarks" / "README.md"
        body = readme.read_text()
        if BEGIN in body and END in body:
            body = body[:body.index(BEGIN)] + text + body[body.index(END) + len(END):]
        else:
            body = body.rstrip() + "\n\n## Speed targets (the last `make bench`)\n\n" + text + "\n"
        write_text_atomic(readme, body)


if __name__ == "__main__":
    main()
