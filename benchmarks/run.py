"""The reproducible benchmark suite behind ``make bench``.

Every model goes the project's own path: ``edgelstm.models.build_model(ModelConfig(...))``
(random init: latency does not depend on the weight values), exported by the real exporter
(``edgelstm.exporters.export_model``), quantized by ``edgelstm.exporters.quantize`` (int8-dynamic;
GRU through its MatMul + Scan rewrite), and timed through ``edgelstm.runtime`` as an application
calls it (``edgelstm.bench.drivers.bench_runtime``: ``model.stream(1).step`` for a streaming step,
``model.run`` for whole sequences, one token of ``Seq2SeqModel.decode_steps`` for the seq2seq decoder step).

Families lstm, peephole, gru (hidden 32/64/128/256/512, 1 and 2 layers, input 128, 10 classes) and
attention (seq2seq, 1 layer, source length 32: the decoder step at batch 1 and 16, the encoder
over the source at batch 1 and 16); recurrent cases: a streaming step at batch 1, a whole
256-step sequence at batch 1 and at batch 16. Backends: PyTorch eager fp32 (the same module),
onnxruntime fp32 and int8 (fp16 only with a CUDA provider). One thread everywhere, per case a
NumPy/BLAS floor measured in the same run. PyTorch is timed first, in a child process of its own
where no onnxruntime session is created (``--torch-worker``): a session in the same process makes
PyTorch's CPU LSTM about 2x faster here, which is not how users run PyTorch. The int8 file is what
``quantize`` writes by default: int8 only for the nodes where it pays, otherwise the fp32 graph.

The digits accuracy target: the 2-layer LSTM (hidden 256) is trained on the bundled digits data
(15 epochs, about 10 s on one core) or taken from ``--digits-run``, exported, quantized, and
the test accuracy of fp32 and int8 is measured through the runtime.

Writes ``benchmarks/results/<machine>-<date>.json`` (schema ``edgelstm.bench/1`` plus a
``config`` per row and the ``targets`` block) and rewrites the table between the markers in
``benchmarks/README.md``.

    .venv/bin/python benchmarks/run.py [--quick] [--duration S] [--families lstm,gru] [--hidden 64,256]
                                       [--digits-run RUN_DIR | --no-digits] [--no-readme] [--out FILE]
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
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgelstm.errors import EdgeLSTMError, UsageError  # noqa: E402
from edgelstm.fileio import write_text_atomic  # noqa: E402
from edgelstm.models import ModelConfig, build_model  # noqa: E402
from edgelstm.bench.cases import Case, Settings, result_row  # noqa: E402
from edgelstm.bench.drivers import bench_runtime, paired_ratio  # noqa: E402
from edgelstm.bench.measure import LatencyStats, environment, measure  # noqa: E402
from edgelstm.bench.report import SCHEMA  # noqa: E402
from edgelstm.bench.suite import int_list  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("benchmarks")

INPUT, CLASSES, SRC_LEN, VOCAB = 128, 10, 32, 64
HIDDEN = (32, 64, 128, 256, 512)  # 32 and 64: where int8 does not pay (the plan must keep fp32)
MAX_HIDDEN = 8192  # --hidden: beyond this one model no longer fits the suite's time budget
LAYERS = (1, 2)
FAMILIES = ("lstm", "peephole", "gru", "attention")
TARGET = dict(family="lstm", hidden=256, layers=2)  # the target case (input 128, 10 classes)
DIGITS = dict(hidden=256, layers=2, epochs=15, seed=0)  # the digits accuracy target model
DIGITS_TARGET_POINTS = 0.5  # int8 test accuracy within this many points of fp32
README_BEGIN, README_END = "<!-- bench-results:begin -->", "<!-- bench-results:end -->"


# ============================================================================ models
@dataclass
class Graph:
    """One timed graph of a configuration: its fp32 file, int8 file (or why there is none), cases."""

    role: str                 # model | decoder_step | encoder
    fp32: Path
    int8: Path | None
    cases: list[Case]
    int8_error: str | None = None


def model_config(family: str, hidden: int, layers: int) -> ModelConfig:
    if family == "attention":
        return ModelConfig(family="attention", task="seq2seq", hidden_size=hidden, num_layers=1,
                           vocab_size=VOCAB, emb_size=hidden, max_len=SRC_LEN).validate()
    return ModelConfig(family=family, input_size=INPUT, hidden_size=hidden, num_layers=layers,
                       task="classify", num_outputs=CLASSES).validate()


def quantize_int8(src: Path, dst: Path, force: bool = False) -> Path:
    """``quantize``'s default (int8 only for the nodes where it pays), or every node with ``force``."""
    from edgelstm.exporters.quantize import quantize

    quantize(src, dst, "int8-dynamic", threads=1, evaluate_error=False, force_int8=force)
    return dst


def graph_cases(family: str) -> list[tuple[str, list[Case]]]:
    """The timed graphs of a family (by role) and their cases, in the order they are reported."""
    if family == "attention":
        return [("decoder_step", [Case("stream", 1, SRC_LEN), Case("stream", 16, SRC_LEN)]),
                ("encoder", [Case("sequence", 1, SRC_LEN), Case("sequence", 16, SRC_LEN)])]
    return [("model", [Case("stream", 1, 1), Case("sequence", 1, 256), Case("sequence", 16, 256)])]


def torch_module(family: str, hidden: int, layers: int) -> torch.nn.Module:
    """The configuration's PyTorch module: the same seed, so the same weights in every process."""
    torch.manual_seed(0)
    return build_model(model_config(family, hidden, layers)).eval()


def build(family: str, hidden: int, layers: int, d: Path) -> tuple[torch.nn.Module, list[Graph]]:
    """The PyTorch module and its exported fp32 / int8 graphs (the project's exporter and quantizer)."""
    from edgelstm.exporters import export_model
    from edgelstm.runtime.interface import pair_paths

    model = torch_module(family, hidden, layers)
    stem = f"{family}{layers}x{hidden}"
    fp32 = d / f"{stem}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        export_model(model, fp32)
    # the int8 files keep the fp32 file names in their own folder: a seq2seq pair finds its
    # companion by the name in the manifest
    qdir = d / "int8"
    qdir.mkdir(exist_ok=True)
    files = dict(zip(("encoder", "decoder_step"), pair_paths(fp32))) if family == "attention" else {"model": fp32}
    graphs = [Graph(role, files[role], None, cases) for role, cases in graph_cases(family)]
    for g in graphs:
        try:
            g.int8 = quantize_int8(g.fp32, qdir / g.fp32.name)
        except EdgeLSTMError as e:  # record why int8 is missing rather than abort the suite
            g.int8_error = str(e)
            log.warning("%s %s: int8 quantization failed: %s", stem, g.role, e)
    return model, graphs


# ============================================================================ PyTorch eager
def torch_rows(model, family: str, graph: Graph, settings: Settings, name: str) -> list[dict]:
    """PyTorch eager on the same cases: the streaming step carries the state, as the runtime does."""
    rng = np.random.default_rng(settings.seed)
    rows = []
    for case in graph.cases:
        b, t = case.batch, case.time
        if graph.role == "decoder_step":
            src = torch.from_numpy(rng.integers(3, VOCAB, size=(b, t)))
            lens = torch.full((b,), t, dtype=torch.int64)
            with torch.inference_mode():
                memory, h, c = model.encode(src, lens)
            st = {"tok": torch.full((b,), 1, dtype=torch.int64), "h": h, "c": c}

            def call(st=st, memory=memory, lens=lens) -> None:  # one greedy token
                logits, st["h"], st["c"], _ = model.decode_step(st["tok"], st["h"], st["c"], memory, lens)
                st["tok"] = logits.argmax(-1)
        elif graph.role == "encoder":
            src = torch.from_numpy(rng.integers(3, VOCAB, size=(b, t)))
            lens = torch.full((b,), t, dtype=torch.int64)

            def call(src=src, lens=lens) -> None:
                model.encode(src, lens)
        elif case.mode == "stream":
            x = torch.from_numpy(rng.standard_normal((b, t, INPUT)).astype(np.float32))
            st = {"s": None}

            def call(st=st, x=x) -> None:
                _, st["s"] = model(x, None, st["s"])
        else:
            x = torch.from_numpy(rng.standard_normal((b, t, INPUT)).astype(np.float32))

            def call(x=x) -> None:
                model(x, None, None)
        with torch.inference_mode():
            samples = measure(call, warmup=settings.warmup, runs=settings.runs, duration=settings.duration)
        stats = LatencyStats.from_samples(samples)
        rows.append(result_row(
            name=name, backend="pytorch-eager", case=case, stats=stats, settings=settings,
            steps_per_call=1 if graph.role == "decoder_step" else case.time, api=f"torch {type(model).__name__}",
            model=type(model).__name__, precision="fp32", family=family, graph=graph.role,
            providers=[f"torch {torch.__version__}"], file_bytes=None,
            parameters=sum(p.numel() for p in model.parameters()), floor=None, x_floor=None))
    return rows


def _tag(family: str, hidden: int, layers: int, role: str) -> str:
    return f"{family} L{layers} H{hidden}" + ("" if role == "model" else f" {role}")


def torch_worker(jobs_path: Path, out_path: Path) -> int:
    """``--torch-worker``: PyTorch eager rows for every job, in a process where no onnxruntime
    session is ever created (creating one makes PyTorch's CPU LSTM about 2x faster here:
    ../shared/FINDINGS.md; importing onnxruntime alone does not, measured with a 2x256 step)."""
    spec = json.loads(jobs_path.read_text())
    settings = Settings(**spec["settings"])
    rows = []
    for family, hidden, layers in spec["jobs"]:
        model = torch_module(family, hidden, layers)
        for role, cases in graph_cases(family):
            rows += torch_rows(model, family, Graph(role, Path(), None, cases), settings,
                               f"{_tag(family, hidden, layers, role)} pytorch")
    for r in rows:
        r["process"] = "own (no onnxruntime session)"
    write_text_atomic(out_path, json.dumps(rows))
    return 0


def torch_in_own_process(jobs: list[tuple[str, int, int]], settings: Settings, d: Path) -> dict[str, list[dict]]:
    """Run :func:`torch_worker` in a child process; its rows by graph tag."""
    import subprocess

    jobs_path, out_path = d / "torch-jobs.json", d / "torch-rows.json"
    jobs_path.write_text(json.dumps({"settings": settings.__dict__, "jobs": jobs}))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--torch-worker", str(jobs_path),
                           "--torch-out", str(out_path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the PyTorch timing process failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    by_tag: dict[str, list[dict]] = {}
    for r in json.loads(out_path.read_text()):
        by_tag.setdefault(r["name"].rsplit(" ", 1)[0], []).append(r)
    return by_tag


# ============================================================================ one configuration
def run_config(family, hidden, layers, d, settings, progress, torch_by_tag) -> list[dict]:
    _, graphs = build(family, hidden, layers, d)
    rows: list[dict] = []
    for g in graphs:
        tag = _tag(family, hidden, layers, g.role)
        part = list(torch_by_tag.get(tag, []))
        part += bench_runtime(g.fp32, g.cases, settings, name=f"{tag} ort-fp32")
        if g.int8 is not None:
            part += bench_runtime(g.int8, g.cases, Settings(**{**settings.__dict__, "floor": False}),
                                       name=f"{tag} ort-int8")
        fp32_row = {(r["mode"], r["batch"], r["time"]): r for r in part if r["name"].endswith("ort-fp32")}
        for r in part:  # one floor per case, shared by every backend of this graph
            base = fp32_row.get((r["mode"], r["batch"], r["time"]))
            if base and base.get("floor"):
                r["floor"] = base["floor"]
                r["x_floor"] = r["latency_s"]["p50"] / base["floor"]["floor_s"]
            r["config"] = {"family": family, "hidden": hidden, "layers": layers, "input": INPUT, "graph": g.role}
            if g.int8_error:
                r["int8_error"] = g.int8_error
            if r["name"].endswith("ort-int8") and r.get("precision") != "fp32":
                # int8 against fp32 timed side by side (alternating blocks): the two medians above
                # were taken minutes apart, which on a shared VM differ by more than int8 changes
                case = next(c for c in g.cases if (c.mode, c.batch, c.time) == (r["mode"], r["batch"], r["time"]))
                r["int8_vs_fp32_paired"] = paired_ratio(g.fp32, g.int8, case, settings)
        _ratios(part)
        rows += part
    for r in rows:
        if progress:
            progress(f"{r['name']:36s} {r['mode']:8s} b{r['batch']:<3d} t{r['time']:<4d} "
                     f"p50 {r['latency_s']['p50'] * 1e6:10.1f} us  x_floor {_f(r.get('x_floor'))}  "
                     f"vs torch {_f(r.get('speedup_vs_torch'))}")
    return rows


def _ratios(rows: list[dict]) -> None:
    """Ratios within one graph: baseline = onnxruntime fp32, torch = PyTorch eager."""
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


def _f(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def _kind(r: dict) -> str:
    return "torch" if r["backend"] == "pytorch-eager" else r["name"].rsplit(" ", 1)[1]


# ============================================================================ digits accuracy
def digits_accuracy(run_dir: Path | None, d: Path, progress) -> dict:
    """Test accuracy of the digits LSTM in fp32 and int8, both through ``edgelstm.runtime``.

    ``run_dir`` None: train the target model here (2 layers, hidden 256, 15 epochs, seed 0).
    """
    from edgelstm import runtime
    from edgelstm.checkpoint import load_run
    from edgelstm.data import load_dataset
    from edgelstm.exporters import export_run

    train_s = None
    source = str(run_dir) if run_dir else None
    if run_dir is None:
        from edgelstm.training import TrainConfig, train_run

        cfg = TrainConfig(family="lstm", hidden_size=DIGITS["hidden"], num_layers=DIGITS["layers"],
                          epochs=DIGITS["epochs"], seed=DIGITS["seed"])
        t0 = time.perf_counter()
        train_run("digits", cfg, d / "digits_run", progress=False)
        train_s = time.perf_counter() - t0
        run_dir = d / "digits_run"
        source = (f"trained in the suite: lstm {DIGITS['layers']}x{DIGITS['hidden']}, {DIGITS['epochs']} epochs, "
                  f"seed {DIGITS['seed']}, 1 thread")
    model, rc = load_run(run_dir)
    mc = rc.model
    if rc.dataset != "digits" or mc.family != "lstm" or mc.task != "classify":
        raise UsageError("--digits-run", "not a digits LSTM classifier run", expected="family lstm, dataset digits",
                         got=f"family {mc.family}, dataset {rc.dataset}, task {mc.task}")
    bundle = load_dataset("digits", seed=rc.seed if rc.seed is not None else 0)
    fp32, int8 = d / "digits.onnx", d / "int8" / "digits.onnx"
    int8.parent.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_run(run_dir, fp32)
    quantize_int8(fp32, int8, force=True)  # int8 accuracy is the question here, whatever the size
    everything = np.concatenate([bundle.train.x, bundle.val.x, bundle.test.x])
    preds = {}
    for kind, path in (("fp32", fp32), ("int8", int8)):
        m = runtime.load(path, device="cpu", threads=1)  # int8 recurrent outputs depend on the thread count
        preds[kind] = {"test": m.run(bundle.test.x, lengths=bundle.test.lengths)["logits"].argmax(-1),
                       "all": m.run(everything)["logits"].argmax(-1)}
    y = bundle.test.y
    acc = {k: float((p["test"] == y).mean()) * 100 for k, p in preds.items()}
    out = {
        "model": f"lstm {mc.num_layers}x{mc.hidden_size}, input {mc.input_size}, {mc.num_outputs} classes",
        "run": source, "train_seconds": round(train_s, 1) if train_s is not None else None,
        "test_sequences": int(len(y)),
        "torch_test_accuracy_pct": (rc.metrics.get("test_accuracy") * 100) if rc.metrics.get("test_accuracy") is not None else None,
        "fp32_test_accuracy_pct": acc["fp32"], "int8_test_accuracy_pct": acc["int8"],
        "int8_minus_fp32_points": acc["int8"] - acc["fp32"], "target_points": DIGITS_TARGET_POINTS,
        "met": abs(acc["int8"] - acc["fp32"]) <= DIGITS_TARGET_POINTS,
        # every sequence of the data set (1,797): how many predictions int8 changes
        "int8_fp32_agreement_all_pct": float((preds["int8"]["all"] == preds["fp32"]["all"]).mean()) * 100,
        "all_sequences": int(len(everything)),
        "fp32_file_bytes": fp32.stat().st_size, "int8_file_bytes": int8.stat().st_size,
    }
    if progress:
        progress(f"digits: fp32 {acc['fp32']:.2f} %, int8 {acc['int8']:.2f} % on {len(y)} test sequences "
                 f"(agreement {out['int8_fp32_agreement_all_pct']:.2f} % over {len(everything)})")
    return out


# ============================================================================ report
def targets(rows: list[dict]) -> dict:
    """The issue's targets on the 2-layer LSTM (input 128, hidden 256), batch 1 streaming step."""
    sel = [r for r in rows if r.get("config", {}).get("family") == TARGET["family"]
           and r["config"]["hidden"] == TARGET["hidden"] and r["config"]["layers"] == TARGET["layers"]
           and r["mode"] == "stream" and r["batch"] == 1 and r["time"] == 1]
    by = {_kind(r): r for r in sel}
    t, f, q = by.get("torch"), by.get("ort-fp32"), by.get("ort-int8")
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
             f"Last run: `{env['machine']}`, {env['cpu']}, {env['usable_cores']} usable cores, load average "
             f"{env.get('load_average')}, onnxruntime {env['onnxruntime']}, torch {env.get('torch')}, 1 thread, "
             f"{env['timestamp']}, {report['suite_seconds']} s (`benchmarks/results/{report['file']}`; "
             f"`{report.get('command', 'make bench')}`).", ""]
    tg = report.get("targets") or {}
    dg = tg.get("digits")
    if tg.get("case"):
        lines += ["Targets (" + tg["case"] + "):", "",
                  "| what | measured | target |", "|---|---|---|",
                  f"| PyTorch eager fp32 step | {tg['torch_p50_us']:.1f} us | |",
                  f"| onnxruntime fp32 step | {tg['fp32_p50_us']:.1f} us ({tg['fp32_vs_torch']:.2f}x torch) | >= 4x |",
                  f"| onnxruntime fp32 vs floor | {_f(tg.get('fp32_x_floor'))}x (floor {_f(tg.get('floor_us'), '.1f')} us) | <= 2x |"]
        if "int8_p50_us" in tg:
            lines += [f"| onnxruntime int8 step | {tg['int8_p50_us']:.1f} us ({tg['int8_vs_torch']:.2f}x torch) | >= 10x |",
                      f"| int8 file / fp32 file | {tg['int8_file_fraction'] * 100:.1f} % | <= 27 % |"]
        if dg:
            lines.append(f"| digits test accuracy, {dg['model']} | fp32 {dg['fp32_test_accuracy_pct']:.2f} %, int8 "
                         f"{dg['int8_test_accuracy_pct']:.2f} % ({dg['int8_minus_fp32_points']:+.2f} points; "
                         f"{dg['test_sequences']} test sequences; int8 = fp32 on "
                         f"{dg['int8_fp32_agreement_all_pct']:.2f} % of all {dg['all_sequences']}) | within 0.5 points |")
        lines.append("")
        if dg:
            lines += [f"Digits model: {dg['run']}" + (f" ({dg['train_seconds']} s)" if dg.get("train_seconds") else "")
                      + (f"; PyTorch test accuracy {dg['torch_test_accuracy_pct']:.2f} %."
                         if dg.get("torch_test_accuracy_pct") is not None else "."), ""]
    header = ("| family | layers | hidden | graph | case | pytorch us | ort fp32 us | ort int8 us | fp32 x torch | "
              "int8 x torch | int8 x fp32 | floor us | fp32 x floor |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    table: dict = {}
    for r in report["results"]:
        c = r["config"]
        key = (c["family"], c["layers"], c["hidden"], c.get("graph", "model"), f"{r['mode']} b{r['batch']} t{r['time']}")
        table.setdefault(key, {})[_kind(r)] = r
    for key, v in table.items():
        t, f, q = v.get("torch"), v.get("ort-fp32"), v.get("ort-int8")
        us = lambda r: _f(r["latency_s"]["p50"] * 1e6 if r else None, ".1f")  # noqa: E731
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {us(t)} | {us(f)} | {us(q)} | "
                     f"{_f(f and f.get('speedup_vs_torch'))} | {_f(q and q.get('speedup_vs_torch'))} | "
                     f"{_f(q and q.get('speedup_vs_baseline'))} | "
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
    ap.add_argument("--digits-run", default=None, help="Run directory of a digits LSTM to measure instead of "
                    "training one (edgelstm train --family lstm --dataset digits --hidden 256 --layers 2).")
    ap.add_argument("--no-digits", action="store_true", help="Skip the digits accuracy target.")
    ap.add_argument("--no-readme", action="store_true", help="Do not rewrite benchmarks/README.md.")
    ap.add_argument("--out", default=None, help="Result JSON path (default benchmarks/results/<machine>-<date>.json).")
    ap.add_argument("--torch-worker", default=None, help=argparse.SUPPRESS)  # internal: PyTorch in its own process
    ap.add_argument("--torch-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.torch_worker:
        torch.set_num_threads(1)
        return torch_worker(Path(args.torch_worker), Path(args.torch_out))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        families = [f for f in args.families.split(",") if f]
        for f in families:
            if f not in FAMILIES:
                raise UsageError("--families", "unknown family", expected=list(FAMILIES), got=f)
        hidden = int_list("--hidden", args.hidden, MAX_HIDDEN, "64,256") if args.hidden else ([64, 256] if args.quick else list(HIDDEN))
        if args.digits_run and args.no_digits:
            raise UsageError("--digits-run", "contradicts --no-digits", expected="one of them", got="both")
        if args.digits_run and not Path(args.digits_run).is_dir():
            raise UsageError("--digits-run", "run directory not found", expected="a directory from edgelstm train",
                             got=args.digits_run)
        duration = args.duration / 2 if args.quick else args.duration
        settings = Settings(warmup=3, runs=None, duration=duration, threads=1, device="cpu", floor=True)
    except EdgeLSTMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    rows: list[dict] = []
    digits = None
    with tempfile.TemporaryDirectory(prefix="edgelstm-bench-") as tmp:
        if not args.no_digits:
            digits = digits_accuracy(Path(args.digits_run) if args.digits_run else None, Path(tmp), progress)
        jobs = [(family, h, layers) for family in families
                for layers in (LAYERS if family != "attention" else (1,)) for h in hidden]
        progress(f"PyTorch eager: {len(jobs)} configurations in a process of its own")
        try:
            torch_by_tag = torch_in_own_process(jobs, settings, Path(tmp))
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for family, h, layers in jobs:
            rows += run_config(family, h, layers, Path(tmp), settings, progress, torch_by_tag)
    env = environment(1, ["CPUExecutionProvider"])
    env["torch"] = torch.__version__
    date = dt.date.today().isoformat()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{env['machine']}-{date}.json"
    tg = targets(rows)
    if digits is not None:
        tg["digits"] = digits
    report = {"schema": SCHEMA, "environment": env, "settings": settings.__dict__, "results": rows,
              "file": out.name, "command": " ".join([".venv/bin/python benchmarks/run.py", *(argv or sys.argv[1:])]),
              "suite_seconds": round(time.perf_counter() - t0, 1), "targets": tg}
    write_text_atomic(out, json.dumps(report, indent=1) + "\n")
    if not args.no_readme:
        update_readme(readme_block(report))
    progress(f"wrote {out} ({report['suite_seconds']} s)")
    if report["targets"]:
        progress(json.dumps(report["targets"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
