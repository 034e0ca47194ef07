"""Streaming step cost: ``Stream.step`` vs a bare ``InferenceSession.run`` on the same inputs.

Model: 2-layer LSTM, input 128, hidden 256, Linear(256, 10), batch 1, fp32, built with
``tests/graphs.py`` (so this script needs onnx; the runtime itself does not). Both loops carry
the state: the bare loop feeds ``h_out``/``c_out`` back as numpy arrays; the stream binds them
as onnxruntime values. Warm-up, then the two loops are measured in alternating rounds (so
machine noise hits both alike); percentiles are reported, not means.

    .venv/bin/python benchmarks/stream_step.py [--threads 1] [--steps 2000] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from graphs import RecurrentSpec, build_recurrent, save  # noqa: E402

from edgelstm import runtime  # noqa: E402
from edgelstm.runtime.session import session_options  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2000, help="measured steps per loop per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    spec = RecurrentSpec(cell="lstm", layers=2, input_size=128, hidden=256, classes=10, labels=None)
    with tempfile.TemporaryDirectory() as d:
        path = save(build_recurrent(spec), Path(d) / "lstm2x256.onnx")
        model = runtime.load(path, device="cpu", threads=args.threads)
        sess = ort.InferenceSession(str(path), session_options(args.threads, record_placement=False),
                                    providers=["CPUExecutionProvider"])
        frames = np.random.default_rng(0).standard_normal((args.steps, 1, 128)).astype(np.float32)
        frames2 = frames[:, 0]  # [steps, 1, 128] -> per-step [1, 128]
        names = [o.name for o in sess.get_outputs()]
        ones = np.ones(1, np.int32)

        def bare(n):
            h = c = np.zeros((2, 1, 256), np.float32)
            ts = np.empty(n)
            for i in range(n):
                t0 = time.perf_counter()
                logits, h, c = sess.run(names, {"x": frames[i:i + 1].reshape(1, 1, 128), "lengths": ones,
                                                "h_in": h, "c_in": c})
                ts[i] = time.perf_counter() - t0
            return ts, logits

        stream = model.stream(batch=1)

        def streamed(n):
            stream.reset()
            ts = np.empty(n)
            for i in range(n):
                f = frames2[i:i + 1]
                t0 = time.perf_counter()
                r = stream.step(f)
                ts[i] = time.perf_counter() - t0
            return ts, r["logits"]

        bare(200), streamed(200)  # warm-up
        tb, ts = [], []
        for _ in range(args.rounds):
            t, lb = bare(args.steps)
            tb.append(t)
            t, ls = streamed(args.steps)
            ts.append(t)
        # same inputs, same graph, same thread count: the two loops give identical bits
        diff = float(np.abs(lb - ls).max())
    tb, ts = np.concatenate(tb) * 1e6, np.concatenate(ts) * 1e6
    pct = lambda a: {p: round(float(np.percentile(a, p)), 1) for p in (10, 50, 90, 99)}  # noqa: E731
    result = {
        "model": "lstm 2x256 in128 + linear 10, batch 1, fp32", "threads": args.threads,
        "steps": int(tb.size), "bare_session_run_us": pct(tb), "stream_step_us": pct(ts),
        "median_ratio_stream_over_bare": round(float(np.median(ts) / np.median(tb)), 3),
        "max_abs_diff_last_logits": diff,
        "env": {"python": platform.python_version(), "onnxruntime": ort.__version__, "numpy": np.__version__,
                "machine": platform.machine(), "processor": platform.processor()},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        from edgelstm.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
