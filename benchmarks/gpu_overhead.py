"""Runtime overhead on large batches: ``model.run`` vs a bare ``session.run`` vs IO binding vs PyTorch.

Model: 2-layer LSTM, input 128, hidden 256, Linear(256, 10) (``edgelstm.models`` lstm family,
seed 0, exported with ``edgelstm.exporters.export_model``), fp32, zero initial state. Shapes:
batch 32 x 256 steps on the CPU provider, batch 1024 x 256 steps on the CUDA provider (when
onnxruntime-gpu sees a GPU). Per device, four onnxruntime variants on one file:

* ``bare``: ``session.run`` with numpy feeds from host memory (on CUDA: host -> device copies
  of the inputs and device -> host of the outputs are included);
* ``iobinding``: ``run_with_iobinding`` with the inputs already bound as values on the device
  and the outputs bound to the device: the graph's own cost;
* ``model.run``: ``edgelstm.runtime`` ``Model.run(x)`` with its checks (NaN/Inf, shapes);
* ``model.run nan=pass``: the same without the NaN/Inf pass (the opt-out);
* on CUDA also ``model.run device``: ``x`` an OrtValue already on the GPU, ``output_device="cuda"``.

PyTorch (``nn.LSTM`` eager; cuDNN on CUDA) runs in its own subprocess: creating an onnxruntime
session in a process makes PyTorch's CPU LSTM about 2x faster there (FINDINGS.md), so timing it
next to onnxruntime would flatter it. The subprocess also exports the model, so this process
never imports torch.

Outputs are checked before timing: every onnxruntime variant equals ``bare`` (same session
settings: bit-identical on the CPU, 1e-6 on CUDA), PyTorch agrees with onnxruntime to the fp32
export tolerance (1e-4; the ``tf32`` profile's 1.95e-3 on CUDA, where both use TF32). Timing:
warm-up, then ``--rounds`` alternating blocks of ``--calls`` calls per variant (machine noise
hits every variant alike); medians over all calls; ratios are median / median of ``bare``.

    .venv/bin/python benchmarks/gpu_overhead.py [--threads 1] [--rounds 5] [--calls 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"cpu": (32, 256), "cuda": (1024, 256)}   # (batch, time) per device
FEATURES, HIDDEN, LAYERS, CLASSES = 128, 256, 2, 10
TORCH_ATOL = {"cpu": 1e-4, "cuda": 1.953125e-3}   # fp32 export parity; TF32 profile (4 * 2^-11) on CUDA


def _inputs(batch: int, time_steps: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, time_steps, FEATURES)).astype(np.float32)


# ---------------------------------------------------------------------------------- PyTorch worker
def torch_worker(args) -> None:
    """In its own process: export the model (once), then time PyTorch on each requested device."""
    import torch

    from edgelstm.exporters import export_model
    from edgelstm.models import ModelConfig, build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig("lstm", input_size=FEATURES, hidden_size=HIDDEN, num_layers=LAYERS,
                                    task="classify", num_outputs=CLASSES)).eval()
    onnx_path = Path(args.dir) / "lstm2x256.onnx"
    if not onnx_path.exists():
        export_model(model, onnx_path)
    out = {}
    for device in filter(None, args.devices.split(",")):
        if device == "cuda" and not torch.cuda.is_available():
            out[device] = {"skipped": "torch has no CUDA here"}
            continue
        batch, steps = SHAPES[device]
        dev = torch.device(device)
        m = model.to(dev)
        x = torch.from_numpy(_inputs(batch, steps)).to(dev)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        with torch.inference_mode():
            logits, _ = m(x)
            sync()
            for _ in range(args.warmup):
                m(x)
            sync()
            ts = []
            for _ in range(args.rounds * args.calls):
                t0 = time.perf_counter()
                m(x)
                sync()
                ts.append(time.perf_counter() - t0)
        out[device] = {"median_s": float(np.median(ts)), "min_s": float(np.min(ts)), "calls": len(ts),
                       "logits": logits.cpu().numpy().tolist(),
                       "torch": torch.__version__,
                       "tf32": bool(torch.backends.cudnn.allow_tf32) if device == "cuda" else None}
    Path(args.dir, "torch.json").write_text(json.dumps(out))


def run_torch(tmp: Path, devices: list[str], args) -> dict:
    cmd = [sys.executable, __file__, "--torch-worker", "--dir", str(tmp), "--devices", ",".join(devices),
           "--threads", str(args.threads), "--rounds", str(args.rounds), "--calls", str(args.calls),
           "--warmup", str(args.warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(cmd, check=True, env=env)
    return json.loads((tmp / "torch.json").read_text())


# ---------------------------------------------------------------------------------- onnxruntime
def ort_variants(path: Path, device: str, threads: int):
    """The variants for one device: name -> zero-argument call returning the logits (numpy)."""
    import onnxruntime as ort

    from edgelstm import runtime
    from edgelstm.runtime.session import session_options

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), session_options(threads, record_placement=False), providers=providers)
    model = runtime.load(path, device=device, threads=threads, fallback=False)
    model_pass = runtime.load(path, device=device, threads=threads, fallback=False, nan="pass")
    batch, steps = SHAPES[device]
    x = _inputs(batch, steps)
    feeds = {"x": x, "lengths": np.full(batch, steps, np.int32),
             "h_in": np.zeros((LAYERS, batch, HIDDEN), np.float32),
             "c_in": np.zeros((LAYERS, batch, HIDDEN), np.float32)}
    names = [o.name for o in sess.get_outputs()]
    bnd = sess.io_binding()
    for k, v in feeds.items():
        bnd.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v, device, 0))
    for n in names:
        bnd.bind_output(n, device)

    def bound():
        sess.run_with_iobinding(bnd)
        return bnd.get_outputs()[0]

    variants = {
        "bare session.run": lambda: sess.run(names, feeds)[0],
        "iobinding on device": bound,
        "model.run": lambda: model.run(x)["logits"],
        "model.run nan=pass": lambda: model_pass.run(x)["logits"],
    }
    if device == "cuda":
        x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        variants["model.run device"] = lambda: model.run(x_dev, output_device="cuda")["logits"]
    return variants, sess.get_providers()


def _host_work(path: Path, device: str, args) -> dict:
    """Median ms of ``Model.run``'s checks and preparation alone (x: NaN/Inf pass, lengths, zero
    state), with ``nan="raise"`` and ``nan="pass"``; and the float64 sum the NaN check used before."""
    from edgelstm import runtime

    batch, steps = SHAPES[device]
    x = _inputs(batch, steps)
    out = {}
    for nan in ("raise", "pass"):
        model = runtime.load(path, device="cpu", threads=args.threads, nan=nan)

        def prep(model=model):
            model.prepare_x(x)
            model.prepare_lengths(None, batch, steps)
            model.prepare_state(None, batch)
        out[f"model.run checks nan={nan}"] = _median_ms(prep)
    out["float64 sum (the check before)"] = _median_ms(lambda: x.sum(dtype=np.float64))
    return out


def _median_ms(fn, n: int = 30) -> float:
    fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return round(float(np.median(ts)) * 1e3, 3)


def host(v) -> np.ndarray:
    return v.numpy() if hasattr(v, "numpy") and not isinstance(v, np.ndarray) else np.asarray(v)


def time_device(path: Path, device: str, args) -> dict:
    variants, providers = ort_variants(path, device, args.threads)
    ref = host(variants["bare session.run"]())
    for name, call in variants.items():  # check before timing
        diff = float(np.abs(host(call()) - ref).max())
        if diff > (0.0 if device == "cpu" else 1e-6):
            raise SystemExit(f"{device}: {name} differs from bare session.run by {diff:g}")
    for _ in range(args.warmup):
        for call in variants.values():
            call()
    samples: dict[str, list[float]] = {n: [] for n in variants}
    order = list(variants.items())
    for r in range(args.rounds):  # alternating blocks, the order rotated each round (no position bias)
        for name, call in order[r % len(order):] + order[:r % len(order)]:
            for _ in range(args.calls):
                t0 = time.perf_counter()
                host(call()) if name != "iobinding on device" else call()
                samples[name].append(time.perf_counter() - t0)
    med = {n: float(np.median(s)) for n, s in samples.items()}
    # the runtime's own host-side work in isolation (what model.run adds before session.run):
    # far below the run-to-run noise of a whole call on a shared machine, so timed on its own
    host_work = _host_work(path, device, args)
    return {"runtime_host_work_ms": host_work, "providers": providers, "shape": list(SHAPES[device]) + [FEATURES],
            "calls_per_variant": len(samples["bare session.run"]),
            "median_ms": {n: round(v * 1e3, 3) for n, v in med.items()},
            # the fastest call: on a shared machine less sensitive to other processes than the median
            "min_ms": {n: round(float(np.min(s)) * 1e3, 3) for n, s in samples.items()},
            "ratio_to_bare": {n: round(v / med["bare session.run"], 3) for n, v in med.items()},
            "logits": ref}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3, help="calls per variant per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--devices", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        torch_worker(args)
        return

    import onnxruntime as ort

    devices = ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    result = {"model": f"lstm {LAYERS}x{HIDDEN} in{FEATURES} + linear {CLASSES}, fp32, zero state",
              "threads": args.threads, "rounds": args.rounds, "devices": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        torch_res = run_torch(tmp, [] if args.no_torch else devices, args)  # also exports tmp/lstm2x256.onnx
        for device in devices:
            r = time_device(tmp / "lstm2x256.onnx", device, args)
            t = torch_res.get(device, {})
            if "median_s" in t:
                diff = float(np.abs(np.asarray(t["logits"], np.float32) - r["logits"]).max())
                if diff > TORCH_ATOL[device]:
                    raise SystemExit(f"{device}: PyTorch and onnxruntime logits differ by {diff:g}")
                r["median_ms"]["pytorch (own process)"] = round(t["median_s"] * 1e3, 3)
                r["ratio_to_bare"]["pytorch (own process)"] = round(
                    t["median_s"] * 1e3 / r["median_ms"]["bare session.run"], 3)
                r["min_ms"]["pytorch (own process)"] = round(t["min_s"] * 1e3, 3)
                r["pytorch"] = {"torch": t["torch"], "tf32": t["tf32"], "max_abs_diff_vs_ort": diff}
            elif "skipped" in t:
                r["pytorch"] = t
            del r["logits"]
            result["devices"][device] = r
    if "cuda" not in devices:
        result["devices"]["cuda"] = {"skipped": "no CUDAExecutionProvider in this onnxruntime build"}
    result["env"] = {"python": platform.python_version(), "onnxruntime": ort.__version__, "numpy": np.__version__,
                     "machine": platform.machine(), "cpus": os.cpu_count()}
    for device, r in result["devices"].items():
        if "median_ms" not in r:
            print(f"{device}: skipped ({r['skipped']})")
            continue
        print(f"{device} batch {r['shape'][0]} x {r['shape'][1]} steps ({r['providers'][0]}, "
              f"{args.threads} thread(s)):")
        for name, ms in r["median_ms"].items():
            mn = r["min_ms"][name]
            print(f"  {name:24s} {ms:10.2f} ms  {r['ratio_to_bare'][name]:6.2f}x bare   "
                  f"(min {mn:.2f} ms, {mn / r['min_ms']['bare session.run']:.2f}x)")
        for name, ms in r["runtime_host_work_ms"].items():
            print(f"  {name:32s} {ms:10.3f} ms alone")
    print(json.dumps(result, indent=1))
    if args.json:
        sys.path.insert(0, str(ROOT))
        from edgelstm.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
