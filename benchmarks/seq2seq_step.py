"""Greedy decoding cost per token: ``Seq2SeqModel.generate`` vs bare ``InferenceSession.run`` loops.

Model: the attention seq2seq family (``edgelstm.models.build_model(ModelConfig(family="attention",
task="seq2seq", ...))``, LSTM encoder + Luong attention decoder) exported with
``edgelstm.exporters.export_model`` to ``X.encoder.onnx`` + ``X.decoder_step.onnx``, fp32, on
the CPU provider. The eos logit's bias is set to -1e4 before export so every decode runs exactly
``--max-len`` decoder steps (a per-token figure then divides by a known count).

Three loops decode the same source greedily, each one encoder run + ``--max-len`` decoder steps:

* ``bare_run``: ``session.run`` with numpy feeds, ``h_out``/``c_out`` fed back as numpy, token
  from ``logits.argmax`` -- the floor a hand-written loop reaches;
* ``ort_values``: ``session.run_with_ort_values`` with the state fed back as onnxruntime values
  (what ``generate`` did before it used IOBinding);
* ``generate``: ``runtime.load(...).generate(src, max_len)``.

Per-token time = one whole decode / ``max_len``. The loops run in alternating rounds so machine
noise hits them alike; percentiles over decodes are reported, not means. All three must produce
the same tokens (checked; the script exits non-zero otherwise).

    .venv/bin/python benchmarks/seq2seq_step.py [--hidden 64] [--batch 1] [--max-len 32] [--json OUT]
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
import torch

from edgelstm import runtime
from edgelstm.exporters import export_model
from edgelstm.models import EOS, ModelConfig, build_model
from edgelstm.runtime.session import session_options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--emb", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=40)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--src-len", type=int, default=12)
    ap.add_argument("--max-len", type=int, default=32, help="decoder steps per decode")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decodes", type=int, default=60, help="decodes per loop per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    cfg = ModelConfig(family="attention", task="seq2seq", vocab_size=args.vocab, emb_size=args.emb,
                      hidden_size=args.hidden, max_len=args.max_len)
    net = build_model(cfg)
    with torch.no_grad():
        net.out.bias[EOS] = -1e4  # never emit eos: every decode runs max_len steps
    rng = np.random.default_rng(0)
    src = rng.integers(3, args.vocab, size=(args.batch, args.src_len)).astype(np.int64)
    lens = np.full(args.batch, args.src_len, np.int32)
    n = args.max_len

    with tempfile.TemporaryDirectory() as d:
        export_model(net, Path(d) / "s2s.onnx")
        model = runtime.load(Path(d) / "s2s.onnx", device="cpu", threads=args.threads)
        so = session_options(args.threads, record_placement=False)
        cpu = ["CPUExecutionProvider"]
        enc = ort.InferenceSession(str(Path(d) / "s2s.encoder.onnx"), so, providers=cpu)
        dec = ort.InferenceSession(str(Path(d) / "s2s.decoder_step.onnx"), so, providers=cpu)
        names = ["logits", "h_out", "c_out"]

        def bare() -> list[list[int]]:
            memory, h, c = enc.run(["memory", "h_out", "c_out"], {"src": src, "src_lengths": lens})
            token = np.full(args.batch, 1, np.int64)
            out = []
            for _ in range(n):
                logits, h, c = dec.run(names, {"token": token, "h_in": h, "c_in": c, "memory": memory,
                                               "src_lengths": lens})
                token = logits.argmax(-1)
                out.append(token)
            return np.stack(out, 1).tolist()

        def ort_values() -> list[list[int]]:
            v = ort.OrtValue.ortvalue_from_numpy
            memory, h, c = enc.run_with_ort_values(["memory", "h_out", "c_out"],
                                                   {"src": v(src), "src_lengths": v(lens)})
            feeds = {"memory": memory, "src_lengths": v(lens), "h_in": h, "c_in": c}
            token = np.full(args.batch, 1, np.int64)
            out = []
            for _ in range(n):
                feeds["token"] = v(token)
                logits, feeds["h_in"], feeds["c_in"] = dec.run_with_ort_values(names, feeds)
                token = logits.numpy().argmax(-1)
                out.append(token)
            return np.stack(out, 1).tolist()

        def generate() -> list[list[int]]:
            return model.generate(src, max_len=n).tokens

        loops = {"bare_run": bare, "ort_values": ort_values, "generate": generate}
        tokens = {k: f() for k, f in loops.items()}  # warm-up, and the tokens to compare
        if not all(t == tokens["bare_run"] for t in tokens.values()):
            sys.exit(f"token mismatch between loops: {tokens}")
        times: dict[str, list[float]] = {k: [] for k in loops}
        for _ in range(args.rounds):
            for k, f in loops.items():
                for _ in range(args.decodes):
                    t0 = time.perf_counter()
                    f()
                    times[k].append((time.perf_counter() - t0) / n)

    us = {k: np.array(v) * 1e6 for k, v in times.items()}
    pct = lambda a: {p: round(float(np.percentile(a, p)), 1) for p in (10, 50, 90)}  # noqa: E731
    med = {k: float(np.median(v)) for k, v in us.items()}
    result = {
        "model": f"attention seq2seq (luong general), hidden {args.hidden}, emb {args.emb}, vocab {args.vocab}, "
                 f"fp32, exported", "batch": args.batch, "src_len": args.src_len, "decoder_steps": n,
        "threads": args.threads, "decodes_per_loop": len(times["generate"]),
        "per_token_us": {k: pct(v) for k, v in us.items()},
        "median_ratio_generate_over_bare": round(med["generate"] / med["bare_run"], 3),
        "median_ratio_ort_values_over_bare": round(med["ort_values"] / med["bare_run"], 3),
        "env": {"python": platform.python_version(), "onnxruntime": ort.__version__, "numpy": np.__version__,
                "machine": platform.machine()},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        from edgelstm.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
