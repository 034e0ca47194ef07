"""The reproducible benchmark suite behind ``make bench``.

Families lstm, peephole, gru (hidden 64/128/256/512, 1 and 2 layers, input 128, 10 classes) and
attention (the seq2seq decoder step, 1 layer, source length 32); cases: a streaming step at
batch 1, a whole 256-step sequence at batch 1 and at batch 16; backends: PyTorch eager fp32
(the project's own modules), onnxruntime fp32 and int8 (``edgelstm.exporters.quantize``,
int8-dynamic), fp16 when a CUDA provider is present. One thread everywhere, per case a
NumPy/BLAS floor measured in the same run.

Writes ``benchmarks/results/<machine>-<date>.json`` (schema ``edgelstm.bench/1`` plus a
``config`` per row and the ``targets`` block) and rewrites the table between the markers in
``benchmarks/README.md``.

ONNX graphs: built with the project's graph builder (``tests/graphs.py``: fused LSTM/GRU nodes,
``lengths`` wired to ``sequence_lens``, explicit state, manifest) with the same shapes as the
PyTorch modules; timing does not depend on the weight values (no denormals at these scales).

    .venv/bin/python benchmarks/run.py [--quick] [--duration S] [--families lstm,gru] [--no-readme]
"""
from __future__ import annotations

import os

# One thread everywhere, set before NumPy / torch / onnxruntime load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the shared ONNX graph builder

from graphs import RecurrentSpec, Seq2SeqSpec, build_recurrent, save, save_seq2seq  # noqa: E402

from edgelstm.fileio import write_text_atomic  # noqa: E402
from edgelstm.models.attention import Seq2Seq  # noqa: E402
from edgelstm.models.config import ModelConfig  # noqa: E402
from edgelstm.models.sequence import SequenceModel  # noqa: E402
from edgelstm.runtime import bench as core  # noqa: E402

log = logging.getLogger("benchmarks")

INPUT, CLASSES, SRC_LEN, VOCAB = 128, 10, 32, 64
HIDDEN = (64, 128, 256, 512)
LAYERS = (1, 2)
FAMILIES = ("lstm", "peephole", "gru", "attention")
TARGET = dict(family="lstm", hidden=256, layers=2)  # the target case (input 128, 10 classes)
README_BEGIN, README_END = "<!-- bench-results:begin -->", "<!-- bench-results:end -->"


def cases_for(family: str) -> list[core.Case]:
    if family == "attention":  # decoder step: one call = one step; time = source length
        return [core.Case("stream", 1, SRC_LEN), core.Case("stream", 16, SRC_LEN)]
    return [core.Case("stream", 1, 1), core.Case("sequence", 1, 256), core.Case("sequence", 16, 256)]


def build(family: str, hidden: int, layers: int, d: Path) -> tuple[torch.nn.Module, Path]:
    """The PyTorch eager module (project classes) and an ONNX graph of the same shapes."""
    torch.manual_seed(0)
    if family == "attention":
        vocab = ["<pad>", "<bos>", "<eos>"] + [f"t{i}" for i in range(VOCAB - 3)]
        cfg = ModelConfig(family="attention", task="seq2seq", hidden_size=hidden, num_layers=1,
                          vocab_size=VOCAB, emb_size=hidden, max_len=SRC_LEN)
        enc, dec = save_seq2seq(Seq2SeqSpec(vocab=vocab, emb=hidden, hidden=hidden), d, stem=f"attn{hidden}")
        return Seq2Seq(cfg).eval(), dec
    cfg = ModelConfig(family=family, input_size=INPUT, hidden_size=hidden, num_layers=layers,
                      task="classify", num_outputs=CLASSES)
    path = save(build_recurrent(RecurrentSpec(cell=family, layers=layers, input_size=INPUT, hidden=hidden,
                                              classes=CLASSES)), d / f"{family}{layers}x{hidden}.onnx")
    return SequenceModel(cfg).eval(), path


def torch_rows(model, family: str, path: Path, cases, settings, name: str) -> list[dict]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    manifest = core.read_manifest(sess, str(path))
    rows = []
    for case in cases:
        f = {k: torch.from_numpy(v.copy()) for k, v in
             core.build_feeds(sess, manifest, batch=case.batch, time_steps=case.time).items()}
        if family == "attention":
            st = {"h": f["h_in"], "c": f["c_in"]}
            lengths = f["src_lengths"].long()

            def call(st=st, f=f, lengths=lengths) -> None:
                _, st["h"], st["c"], _ = model.decode_step(f["token"], st["h"], st["c"], f["memory"], lengths)
        elif case.mode == "stream":
            st = {"s": tuple(f[k] for k in ("h_in", "c_in") if k in f)}

            def call(st=st, f=f) -> None:
                _, st["s"] = model(f["x"], None, st["s"])
        else:
            init = tuple(f[k] for k in ("h_in", "c_in") if k in f)

            def call(f=f, init=init) -> None:
                model(f["x"], None, init)
        with torch.inference_mode():
            samples = core.measure(call, warmup=settings.warmup, runs=settings.runs, duration=settings.duration)
        stats = core.LatencyStats.from_samples(samples)
        rows.append(core.result_row(
            name=name, backend="pytorch-eager", case=case, stats=stats, settings=settings,
            steps_per_call=1 if family == "attention" else case.time, model=type(model).__name__,
            precision="fp32", family=family, graph="decoder_step" if family == "attention" else "model",
            providers=[f"torch {torch.__version__}"], file_bytes=None,
            parameters=sum(p.numel() for p in model.parameters()), floor=None, x_floor=None))
    return rows


def quantize_int8(src: Path, dst: Path) -> Path:
    from edgelstm.exporters.quantize import quantize

    quantize(src, dst, "int8-dynamic", threads=1, evaluate_error=False)
    return dst


def run_config(family, hidden, layers, d, settings, progress) -> list[dict]:
    model, fp32 = build(family, hidden, layers, d)
    tag = f"{family} L{layers} H{hidden}"
    cases = cases_for(family)
    rows = torch_rows(model, family, fp32, cases, settings, f"{tag} pytorch")
    rows += core.bench_onnx(fp32, cases, settings, name=f"{tag} ort-fp32")
    try:
        int8 = quantize_int8(fp32, d / (fp32.stem + ".int8.onnx"))
        rows += core.bench_onnx(int8, cases, core.Settings(**{**settings.__dict__, "floor": False}),
                                name=f"{tag} ort-int8")
    except Exception as e:  # noqa: BLE001 - record why int8 is missing rather than abort the suite
        log.warning("%s: int8 quantization failed: %s", tag, e)
    fp32_row = {(r["mode"], r["batch"], r["time"]): r for r in rows if r["name"].endswith("ort-fp32")}
    for r in rows:  # one floor per case, shared by every backend of this config
        base = fp32_row.get((r["mode"], r["batch"], r["time"]))
        if base and base.get("floor"):
            r["floor"] = base["floor"]
            r["x_floor"] = r["latency_s"]["p50"] / base["floor"]["floor_s"]
        r["config"] = {"family": family, "hidden": hidden, "layers": layers, "input": INPUT}
    # ratios within this config (baseline = onnxruntime fp32, torch = pytorch eager)
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["mode"], r["batch"], r["time"]), []).append(r)
    for g in groups.values():
        t = next((r for r in g if r["backend"] == "pytorch-eager"), None)
        b = next((r for r in g if r["name"].endswith("ort-fp32")), None)
        for r in g:
            p50 = r["latency_s"]["p50"]
            r["baseline"] = b["name"] if b else None
            r["speedup_vs_baseline"] = b["latency_s"]["p50"] / p50 if b else None
            r["file_size_vs_baseline"] = (r["file_bytes"] / b["file_bytes"]) if b and r.get("file_bytes") else None
            r["speedup_vs_torch"] = t["latency_s"]["p50"] / p50 if t else None
    for r in rows:
        if progress:
            progress(f"{r['name']:28s} {r['mode']:8s} b{r['batch']:<3d} t{r['time']:<4d} "
                     f"p50 {r['latency_s']['p50'] * 1e6:10.1f} us  x_floor {_f(r.get('x_floor'))}  "
                     f"vs torch {_f(r.get('speedup_vs_torch'))}")
    return rows


def _f(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def targets(rows: list[dict]) -> dict:
    """The issue's targets on the 2-layer LSTM (input 128, hidden 256), batch 1 streaming step."""
    sel = [r for r in rows if r.get("config", {}).get("family") == TARGET["family"]
           and r["config"]["hidden"] == TARGET["hidden"] and r["config"]["layers"] == TARGET["layers"]
           and r["mode"] == "stream" and r["batch"] == 1 and r["time"] == 1]
    by = {r["backend"] if r["backend"] == "pytorch-eager" else r["name"].rsplit(" ", 1)[1]: r for r in sel}
    t, f, q = by.get("pytorch-eager"), by.get("ort-fp32"), by.get("ort-int8")
    if not (t and f):
        return {}
    out = {"case": "lstm 2x256, input 128, 10 classes, 1 thread, batch 1, streaming step",
           "torch_p50_us": t["latency_s"]["p50"] * 1e6, "fp32_p50_us": f["latency_s"]["p50"] * 1e6,
           "fp32_vs_torch": t["latency_s"]["p50"] / f["latency_s"]["p50"], "fp32_vs_torch_target": 4.0,
           "fp32_x_floor": f.get("x_floor"), "fp32_x_floor_target": 2.0,
           "floor_us": f["floor"]["floor_s"] * 1e6 if f.get("floor") else None}
    if q:
        out.update({"int8_p50_us": q["latency_s"]["p50"] * 1e6,
                    "int8_vs_torch": t["latency_s"]["p50"] / q["latency_s"]["p50"], "int8_vs_torch_target": 10.0,
                    "int8_file_fraction": q["file_bytes"] / f["file_bytes"], "int8_file_fraction_target": 0.27})
    return out


def readme_block(report: dict) -> str:
    env = report["environment"]
    lines = [README_BEGIN, "",
             f"Last run: `{env['machine']}`, {env['cpu']}, {env['usable_cores']} usable cores, onnxruntime "
             f"{env['onnxruntime']}, torch {torch.__version__}, 1 thread, {env['timestamp']} "
             f"(`benchmarks/results/{report['file']}`).", ""]
    tg = report.get("targets") or {}
    if tg:
        lines += ["Targets (" + tg["case"] + "):", "",
                  "| what | measured | target |", "|---|---|---|",
                  f"| PyTorch eager fp32 step | {tg['torch_p50_us']:.1f} us | |",
                  f"| onnxruntime fp32 step | {tg['fp32_p50_us']:.1f} us ({tg['fp32_vs_torch']:.2f}x torch) | >= 4x |",
                  f"| onnxruntime fp32 vs floor | {_f(tg.get('fp32_x_floor'))}x (floor {_f(tg.get('floor_us'), '.1f')} us) | <= 2x |"]
        if "int8_p50_us" in tg:
            lines += [f"| onnxruntime int8 step | {tg['int8_p50_us']:.1f} us ({tg['int8_vs_torch']:.2f}x torch) | >= 10x |",
                      f"| int8 file / fp32 file | {tg['int8_file_fraction'] * 100:.1f} % | <= 27 % |"]
        lines.append("")
    header = "| family | layers | hidden | case | pytorch us | ort fp32 us | ort int8 us | fp32 x torch | int8 x torch | floor us | fp32 x floor |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    table: dict = {}
    for r in report["results"]:
        c = r["config"]
        key = (c["family"], c["layers"], c["hidden"], f"{r['mode']} b{r['batch']} t{r['time']}")
        kind = "torch" if r["backend"] == "pytorch-eager" else r["name"].rsplit(" ", 1)[1]
        table.setdefault(key, {})[kind] = r
    for key, v in table.items():
        t, f, q = v.get("torch"), v.get("ort-fp32"), v.get("ort-int8")
        us = lambda r: _f(r["latency_s"]["p50"] * 1e6 if r else None, ".1f")  # noqa: E731
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {us(t)} | {us(f)} | {us(q)} | "
                     f"{_f(f and f.get('speedup_vs_torch'))} | {_f(q and q.get('speedup_vs_torch'))} | "
                     f"{_f(f['floor']['floor_s'] * 1e6 if f and f.get('floor') else None, '.1f')} | "
                     f"{_f(f and f.get('x_floor'))} |")
    lines += ["", README_END]
    return "\n".join(lines)


def update_readme(block: str) -> None:
    path = ROOT / "benchmarks" / "README.md"
    text = path.read_text() if path.exists() else ""
    if README_BEGIN in text and README_END in text:
        head, rest = text.split(README_BEGIN, 1)
        tail = rest.split(README_END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    write_text_atomic(path, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Hidden 64 and 256 only, shorter timing.")
    ap.add_argument("--duration", type=float, default=0.2, help="Seconds of timed calls per case and backend.")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--hidden", default=None, help="Comma-separated hidden sizes (default 64,128,256,512).")
    ap.add_argument("--no-readme", action="store_true", help="Do not rewrite benchmarks/README.md.")
    ap.add_argument("--out", default=None, help="Result JSON path (default benchmarks/results/<machine>-<date>.json).")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    families = [f for f in args.families.split(",") if f]
    for f in families:
        if f not in FAMILIES:
            print(f"error: --families | unknown family; expected {list(FAMILIES)}, got {f}", file=sys.stderr)
            return 2
    hidden = [int(h) for h in args.hidden.split(",")] if args.hidden else ([64, 256] if args.quick else list(HIDDEN))
    duration = args.duration / 2 if args.quick else args.duration
    settings = core.Settings(warmup=3, runs=None, duration=duration, threads=1, device="cpu", floor=True)
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgelstm-bench-") as tmp:
        for family in families:
            for layers in (LAYERS if family != "attention" else (1,)):
                for h in hidden:
                    rows += run_config(family, h, layers, Path(tmp), settings, progress)
    env = core.environment(1, ["CPUExecutionProvider"])
    env["torch"] = torch.__version__
    date = dt.date.today().isoformat()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{env['machine']}-{date}.json"
    report = {"schema": core.SCHEMA, "environment": env, "settings": settings.__dict__, "results": rows,
              "file": out.name, "suite_seconds": round(time.perf_counter() - t0, 1), "targets": targets(rows)}
    write_text_atomic(out, json.dumps(report, indent=1) + "\n")
    if not args.no_readme:
        update_readme(readme_block(report))
    progress(f"wrote {out} ({report['suite_seconds']} s)")
    if report["targets"]:
        progress(json.dumps(report["targets"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
