"""edgelstm beside its peers on the same models: ``make bench-peers``.

Engines, all on one thread, CPU:
* ``edgelstm fp32`` / ``edgelstm int8``: the project's export, ``quantize`` default (int8 only for
  the nodes where it pays) and ``edgelstm.runtime`` (``stream(1).step``, ``run``);
* ``onnxruntime naive``: plain ``torch.onnx.export`` (TorchScript exporter) of an ``nn.LSTM`` /
  ``nn.GRU`` + ``nn.Linear`` module with the same weights, run by a default ``InferenceSession``;
* ``openvino``: OpenVINO's CPU plugin on the edgelstm fp32 file, with its default inference
  precision on this CPU (reported: bf16 where the CPU has it, else f32), where it installs;
* ``pytorch eager`` / ``pytorch dynamic int8`` (``torch.ao.quantization.quantize_dynamic``): in a
  child process with no onnxruntime session (a session makes PyTorch's CPU LSTM ~2x faster here).

Every engine's logits are compared with edgelstm fp32 on the same inputs before it is timed
(fp32 engines within ``FP32_ATOL``; reduced-precision engines by SQNR >= ``LOW_PRECISION_SQNR_DB``),
and an engine that disagrees is reported, not timed. Engines are timed in alternating blocks;
the tables give block medians and the ratio to edgelstm's best (fp32 or int8).

Cases: 2x256 LSTM (128 features, 10 classes) and 2x256 GRU: a streaming step at batch 1, a
256-step sequence at batch 1 and 32; the keyword-spotting size, a 1x64 LSTM (40 features, 12
classes): a streaming step and 32 x 256.

    .venv-peers/bin/python benchmarks/peers.py [--blocks 5] [--quick] [--json OUT] [--no-readme]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
README_BEGIN, README_END = "<!-- peers:begin -->", "<!-- peers:end -->"
FP32_ATOL = 1e-4            # fp32 engines: the same maths in other summation orders over 256 steps
LOW_PRECISION_SQNR_DB = 20  # int8 / bf16 engines: logits within 20 dB SQNR of fp32 = the same model

MODELS = {  # name -> (family, layers, hidden, features, classes)
    "lstm-2x256": ("lstm", 2, 256, 128, 10),
    "gru-2x256": ("gru", 2, 256, 128, 10),
    "kws-lstm-1x64": ("lstm", 1, 64, 40, 12),
}
CASES = {  # model -> [(mode, batch, time)]
    "lstm-2x256": [("stream", 1, 1), ("sequence", 1, 256), ("sequence", 32, 256)],
    "gru-2x256": [("stream", 1, 1), ("sequence", 1, 256)],
    "kws-lstm-1x64": [("stream", 1, 1), ("sequence", 32, 256)],
}


class Plain(torch.nn.Module):
    """What a user writes: ``nn.LSTM``/``nn.GRU`` + ``nn.Linear`` on the last layer's final state."""

    def __init__(self, rnn: torch.nn.Module, head: torch.nn.Linear):
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x, h, c=None):
        if c is not None:  # an LSTM (also once quantize_dynamic has replaced nn.LSTM)
            _, (h, c) = self.rnn(x, (h, c))
            return self.head(h[-1]), h, c
        _, h = self.rnn(x, h)
        return self.head(h[-1]), h


def modules(name: str):
    """(edgelstm module, plain module) with the same weights, from seed 0."""
    from edgelstm.models import ModelConfig, build_model

    family, layers, hidden, features, classes = MODELS[name]
    torch.manual_seed(0)
    model = build_model(ModelConfig(family, input_size=features, hidden_size=hidden, num_layers=layers,
                                    task="classify", num_outputs=classes)).eval()
    return model, Plain(model.rnn, model.head).eval()


def _inputs(name: str, batch: int, time_: int) -> dict[str, np.ndarray]:
    family, layers, hidden, features, _ = MODELS[name]
    rng = np.random.default_rng(batch * 1000 + time_)
    d = {"x": rng.standard_normal((batch, time_, features)).astype(np.float32),
         "h": np.zeros((layers, batch, hidden), np.float32)}
    if family == "lstm":
        d["c"] = np.zeros((layers, batch, hidden), np.float32)
    return d


def _sqnr_db(ref, got) -> float:
    noise = float(np.sum((np.asarray(ref, np.float64) - got) ** 2))
    return 200.0 if noise == 0 else 10 * np.log10(float(np.sum(np.asarray(ref, np.float64) ** 2)) / noise)


# ============================================================================ engines
class Engine:
    """``call(inputs)`` -> logits; ``stepper(inputs)`` -> a no-argument function that runs one
    streaming step carrying the state (the timed unit of a stream case)."""

    name = ""
    precision = "fp32"

    def call(self, inp):
        raise NotImplementedError

    def stepper(self, inp):
        return lambda: self.call(inp)


class EdgeLSTM(Engine):
    def __init__(self, path: Path, label: str):
        from edgelstm import runtime

        self.model = runtime.load(path, device="cpu", threads=1)
        self.name = label
        self.precision = self.model.manifest.precision

    def call(self, inp):
        return self.model.run(inp["x"])["logits"]

    def stepper(self, inp):
        stream = self.model.stream(inp["x"].shape[0])
        frame = np.ascontiguousarray(inp["x"][:, 0])
        return lambda: stream.step(frame)


class OrtNaive(Engine):
    name = "onnxruntime naive"

    def __init__(self, path: Path, lstm: bool):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.lstm = lstm

    def _feeds(self, inp):
        return {"x": inp["x"], "h": inp["h"], **({"c": inp["c"]} if self.lstm else {})}

    def call(self, inp):
        return self.sess.run(["logits"], self._feeds(inp))[0]

    def stepper(self, inp):
        feeds = self._feeds({**inp, "x": np.ascontiguousarray(inp["x"][:, :1])})
        names = ["logits", "h_n"] + (["c_n"] if self.lstm else [])

        def step():
            out = self.sess.run(names, feeds)
            feeds["h"] = out[1]
            if self.lstm:
                feeds["c"] = out[2]
        return step


class OpenVINO(Engine):
    name = "openvino"

    def __init__(self, path: Path, lstm: bool):
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1,
                                                              "PERFORMANCE_HINT": "LATENCY"})
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: f32, bf16, f16
        self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.version = ov.__version__ if hasattr(ov, "__version__") else ov.get_version()
        self.lstm = lstm

    def _feeds(self, inp):
        b, t = inp["x"].shape[:2]
        d = {"x": inp["x"], "lengths": np.full(b, t, np.int32), "h_in": inp["h"]}
        if self.lstm:
            d["c_in"] = inp["c"]
        return d

    def call(self, inp):
        req = self.compiled.create_infer_request()
        return np.array(req.infer(self._feeds(inp))["logits"])

    def stepper(self, inp):
        req = self.compiled.create_infer_request()
        feeds = self._feeds({**inp, "x": np.ascontiguousarray(inp["x"][:, :1])})

        def step():
            out = req.infer(feeds)
            feeds["h_in"] = out["h_out"]
            if self.lstm:
                feeds["c_in"] = out["c_out"]
        return step


# ============================================================================ timing
def _block(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def time_engines(fns: dict[str, object], blocks: int, budget_s: float) -> dict[str, float]:
    """Alternating blocks; the median seconds per call of each engine."""
    calls = {}
    for k, fn in fns.items():
        fn()  # warm-up
        probe = _block(fn, 3)
        calls[k] = max(3, int(budget_s / blocks / max(probe, 1e-7)))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(blocks):
        for k, fn in fns.items():
            times[k].append(_block(fn, calls[k]))
    return {k: float(np.median(v)) for k, v in times.items()}


def torch_worker(out_path: Path, blocks: int, budget_s: float, models: list[str]) -> int:
    """PyTorch eager fp32 and dynamic int8, in this (child) process without onnxruntime sessions."""
    torch.set_num_threads(1)
    rows = []
    for name in models:
        _, plain = modules(name)
        q = torch.ao.quantization.quantize_dynamic(plain, {torch.nn.LSTM, torch.nn.GRU, torch.nn.Linear},
                                                   dtype=torch.qint8)
        lstm = MODELS[name][0] == "lstm"
        for mode, b, t in CASES[name]:
            inp = {k: torch.from_numpy(v) for k, v in _inputs(name, b, t).items()}
            fns, logits = {}, {}
            for label, m in (("pytorch eager", plain), ("pytorch dynamic int8", q)):
                with torch.inference_mode():
                    logits[label] = m(inp["x"], inp["h"], inp.get("c"))[0].numpy().tolist()
                if mode == "stream":
                    st = {"h": inp["h"], "c": inp.get("c")}
                    x1 = inp["x"][:, :1]

                    def fn(m=m, st=st, x1=x1):
                        with torch.inference_mode():
                            out = m(x1, st["h"], st["c"])
                        st["h"] = out[1]
                        if lstm:
                            st["c"] = out[2]
                else:
                    def fn(m=m, inp=inp):
                        with torch.inference_mode():
                            m(inp["x"], inp["h"], inp.get("c"))
                fns[label] = fn
            med = time_engines(fns, blocks, budget_s)
            rows.append({"model": name, "mode": mode, "batch": b, "time": t, "seconds": med, "logits": logits})
    Path(out_path).write_text(json.dumps({"torch": torch.__version__, "rows": rows}))
    return 0


# ============================================================================ the suite
def build_files(name: str, d: Path) -> dict[str, Path]:
    from edgelstm.exporters import export_model
    from edgelstm.exporters.quantize import quantize

    model, plain = modules(name)
    fp32, int8, naive = d / f"{name}.onnx", d / f"{name}.int8.onnx", d / f"{name}.naive.onnx"
    lstm = MODELS[name][0] == "lstm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(model, fp32)
        inp = {k: torch.from_numpy(v) for k, v in _inputs(name, 2, 5).items()}
        args = (inp["x"], inp["h"], inp["c"]) if lstm else (inp["x"], inp["h"])
        names_in = ["x", "h", "c"] if lstm else ["x", "h"]
        names_out = ["logits", "h_n", "c_n"] if lstm else ["logits", "h_n"]
        axes = {"x": {0: "batch", 1: "time"}, "h": {1: "batch"}, "c": {1: "batch"}, "logits": {0: "batch"},
                "h_n": {1: "batch"}, "c_n": {1: "batch"}}
        torch.onnx.export(plain, args, str(naive), input_names=names_in, output_names=names_out,
                          dynamic_axes={k: v for k, v in axes.items() if k in names_in + names_out}, dynamo=False)
    report = quantize(fp32, int8, "int8-dynamic", threads=1, evaluate_error=False)
    return {"fp32": fp32, "int8": int8, "naive": naive,
            "int8_nodes": [dd["node"] for dd in report.int8_decisions if dd["int8"]]}


def run(blocks: int, budget_s: float, models: list[str], d: Path) -> dict:
    child = d / "torch.json"
    proc = subprocess.run([sys.executable, __file__, "--torch-worker", str(child), "--blocks", str(blocks),
                           "--budget", str(budget_s), "--models", ",".join(models)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the PyTorch process failed: {proc.stderr[-2000:]}")
    torch_part = json.loads(child.read_text())
    torch_rows = {(r["model"], r["mode"], r["batch"], r["time"]): r for r in torch_part["rows"]}
    rows, notes, versions = [], [], {"torch": torch_part["torch"]}
    import onnxruntime as ort

    versions["onnxruntime"] = ort.__version__
    for name in models:
        files = build_files(name, d)
        lstm = MODELS[name][0] == "lstm"
        engines: dict[str, Engine] = {"edgelstm fp32": EdgeLSTM(files["fp32"], "edgelstm fp32"),
                                      "edgelstm int8": EdgeLSTM(files["int8"], "edgelstm int8"),
                                      "onnxruntime naive": OrtNaive(files["naive"], lstm)}
        try:
            engines["openvino"] = OpenVINO(files["fp32"], lstm)
            versions["openvino"] = engines["openvino"].version
        except ImportError:
            notes.append("openvino is not installed in this environment (make bench-peers installs it)")
        for mode, b, t in CASES[name]:
            inp = _inputs(name, b, t)
            ref = engines["edgelstm fp32"].call(inp)
            fns, precision, check = {}, {}, {}
            for label, e in engines.items():
                got = e.call(inp)
                precision[label] = e.precision
                fp32_like = e.precision in ("fp32", "f32", "float32")
                ok = (float(np.abs(got - ref).max()) <= FP32_ATOL) if fp32_like else _sqnr_db(ref, got) >= LOW_PRECISION_SQNR_DB
                check[label] = (f"max abs {float(np.abs(got - ref).max()):.2g}" if fp32_like
                                else f"SQNR {_sqnr_db(ref, got):.1f} dB")
                if not ok:
                    notes.append(f"{name} {mode} b{b} t{t}: {label} disagrees with edgelstm fp32 ({check[label]}): not timed")
                    continue
                fns[label] = e.stepper(inp) if mode == "stream" else (lambda e=e, inp=inp: e.call(inp))
            med = time_engines(fns, blocks, budget_s)
            tr = torch_rows[(name, mode, b, t)]
            for label, logits in tr["logits"].items():
                check[label] = (f"max abs {float(np.abs(np.array(logits) - ref).max()):.2g}" if label == "pytorch eager"
                                else f"SQNR {_sqnr_db(ref, np.array(logits)):.1f} dB")
                precision[label] = "fp32" if label == "pytorch eager" else "int8"
            med.update(tr["seconds"])
            best = min(v for k, v in med.items() if k.startswith("edgelstm"))
            rows.append({"model": name, "mode": mode, "batch": b, "time": t, "int8_nodes": files["int8_nodes"],
                         "engines": {k: {"us": round(v * 1e6, 1), "vs_edgelstm_best": round(v / best, 2),
                                         "precision": precision[k], "check": check[k]} for k, v in med.items()}})
            print(json.dumps(rows[-1]), flush=True)
    return {"schema": "edgelstm.bench.peers/1", "versions": versions, "rows": rows, "notes": notes}


def markdown(result: dict) -> str:
    order = ["edgelstm fp32", "edgelstm int8", "onnxruntime naive", "openvino", "pytorch eager", "pytorch dynamic int8"]
    head = "| model | case | " + " | ".join(order) + " | leader |"
    lines = [head, "|" + "---|" * (len(order) + 3)]
    for r in result["rows"]:
        e = r["engines"]
        cells = [f"{e[k]['us']:.1f} ({e[k]['vs_edgelstm_best']:.2f}x)" if k in e else "-" for k in order]
        leader = min(e, key=lambda k: e[k]["us"])
        lines.append(f"| {r['model']} | {r['mode']} b{r['batch']} t{r['time']} | " + " | ".join(cells)
                     + f" | {leader} ({e[leader]['precision']}) |")
    v = result["versions"]
    lines += ["", "us per call (a streaming step, or a whole sequence), median of alternating blocks, 1 thread; "
              "(Nx) = time / edgelstm's best of fp32 and int8. Versions: "
              + ", ".join(f"{k} {x}" for k, x in v.items()) + "."] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--budget", type=float, default=1.5, help="seconds per engine and case, over all blocks")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--torch-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    if args.torch_worker:
        return torch_worker(Path(args.torch_worker), args.blocks, args.budget, models)
    with tempfile.TemporaryDirectory() as d:
        result = run(args.blocks, args.budget, models, Path(d))
    from edgelstm.fileio import write_text_atomic

    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / "peers.json"
    write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    print(table)
    if not args.no_readme:
        readme = ROOT / "benchmarks" / "README.md"
        text = readme.read_text()
        block = f"{README_BEGIN}\n{table}\n{README_END}"
        if README_BEGIN in text:
            text = text[:text.index(README_BEGIN)] + block + text[text.index(README_END) + len(README_END):]
        else:
            text += f"\n## edgelstm beside its peers (`make bench-peers`)\n\n{block}\n"
        write_text_atomic(readme, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
