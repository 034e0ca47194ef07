"""Run a set of exported models and save every output: the SAME script on x86 and on ARM.

Imports only the standard library, numpy, onnxruntime and the torch-free ``edgelstm.runtime``:
on the emulated device there is no torch, as on a real one. Every model is loaded with
``edgelstm.runtime.load(path, device=DEVICE, threads=THREADS)`` and, per model:

* ``whole``   ``Model.run(x, lengths)``: the whole sequence with ragged ``lengths``;
* ``full``    ``Model.run(x)``: every sequence full length;
* ``stream``  the same full-length input through ``Model.stream()``: uneven chunks with
  ``Stream.feed`` and single steps with ``Stream.step``, the runtime carrying the state;
  per-step outputs are concatenated over time, the final state read from ``Stream.state``;
* seq2seq (encoder + decoder_step): the encoder once, then greedy decoding step by step
  (decoder-step logits) and ``Seq2SeqModel.generate`` (tokens).

It saves ``<out>/<model>.npz`` (arrays named ``<mode>/<output>``) and prints one JSON line per
model (``RESULT_JSON {...}``) with the providers used, the device planning report and timings.

Usage: python guest_check.py JOB.json OUT_DIR --threads 1 [--device arm]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort

def run_recurrent(model, x: np.ndarray, lengths: np.ndarray, chunks: list[int]) -> dict[str, np.ndarray]:
    """Whole (ragged), full-length, and streamed runs through the runtime's ``Model`` and ``Stream``."""
    res: dict[str, np.ndarray] = {}
    in_to_out = {s.input: s.output for s in model.states}
    modes = (("whole", lengths), ("full", None)) if model.lengths_name else (("full", None),)
    for mode, lens in modes:  # ragged lengths only where the graph takes them
        r = model.run(x, lengths=lens)
        for n, v in r.outputs.items():
            res[f"{mode}/{n}"] = v
        if model.states:
            for k, v in r.state.items():
                res[f"{mode}/{in_to_out.get(k, k)}"] = v
    if not model.streamable:
        return res
    b = x.shape[0]
    stream = model.stream(batch=b)
    pieces: dict[str, list] = {}
    last: dict[str, np.ndarray] = {}
    per_step: set[str] = set()
    start = 0
    for c in chunks:
        if c == 1 and start > 0:  # single steps go through step(), chunks through feed()
            out = {n: (v[:, None] if n in per_step else v) for n, v in stream.step(x[:, start]).outputs.items()}
        else:
            out = stream.feed(x[:, start:start + c]).outputs
            per_step |= {n for n, v in out.items() if v.ndim == 3 and v.shape[1] == c}
        for n, v in out.items():
            if n in per_step:
                pieces.setdefault(n, []).append(v)  # per-step output: concatenate over time
            else:
                last[n] = v  # last-step logits: the last chunk's
        start += c
    for n, v in pieces.items():
        res[f"stream/{n}"] = np.concatenate(v, axis=1)
    for n, v in last.items():
        res[f"stream/{n}"] = v
    for k, v in stream.state.items():
        res[f"stream/{in_to_out.get(k, k)}"] = v
    return res


def run_seq2seq(model, src: np.ndarray, src_lengths: np.ndarray, max_len: int) -> dict:
    """The encoder once, then greedy decoding step by step (the runtime's ``generate`` for the
    tokens, the decoder-step graph driven here for the per-step logits)."""
    enc = model.encoder.run(inputs={"src": src, "src_lengths": src_lengths.astype(np.int32)}).outputs
    res = {f"encoder/{k}": v for k, v in enc.items()}
    dec = model.decoder
    states = {s.input: enc[s.output] for s in dec.states}
    token = np.full(src.shape[0], model.bos, np.int64)
    logits_all = []
    for _ in range(max_len):
        r = dec.run(inputs={"token": token, "memory": enc["memory"], "src_lengths": src_lengths.astype(np.int32),
                            **states})
        logits_all.append(r.outputs["logits"])
        states = dict(r.state)
        # greedy: the argmax feeds the next step. A logit tie could pick different tokens on two
        # machines; tokens and logits are compared separately.
        token = r.outputs["logits"].argmax(-1).astype(np.int64)
    res["decode/logits"] = np.stack(logits_all, 1)
    gen = model.generate(src, max_len=max_len)
    width = max(1, max(len(t) for t in gen.tokens))
    res["generate/tokens"] = np.array([list(t) + [-1] * (width - len(t)) for t in gen.tokens], np.int64)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("job")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="device given to edgelstm.runtime.load (arm on the ARM side)")
    a = ap.parse_args()
    job = json.loads(open(a.job).read())
    base = os.path.dirname(os.path.abspath(a.job))
    os.makedirs(a.out, exist_ok=True)

    from edgelstm import runtime
    from edgelstm.runtime.providers import is_arm_machine, plan_providers

    plan = plan_providers(a.device, fallback=True)  # the product's device planning: what does it pick here?
    plan_info = {"device": a.device, "requested": list(plan.requested), "providers": plan.providers,
                 "primary": plan.primary, "fell_back": plan.fell_back, "is_arm_machine": is_arm_machine()}
    env = {"machine": platform.machine(), "python": platform.python_version(), "onnxruntime": ort.__version__,
           "numpy": np.__version__, "threads": a.threads, "QEMU_CPU": os.environ.get("QEMU_CPU"),
           "available_providers": ort.get_available_providers(), "plan": plan_info,
           "torch_importable": _importable("torch"), "onnx_importable": _importable("onnx"),
           "edgelstm": os.path.dirname(runtime.__file__)}
    print("ENV_JSON " + json.dumps(env), flush=True)

    for m in job["models"]:
        t0 = time.perf_counter()
        inputs = np.load(os.path.join(base, m["inputs"]))
        info = {"name": m["name"]}
        try:
            model = runtime.load(os.path.join(base, m["encoder"] if m["kind"] == "seq2seq" else m["model"]),
                                 device=a.device, threads=a.threads, fallback=True)
            info["providers"] = list(model.providers)
            if m["kind"] == "seq2seq":
                res = run_seq2seq(model, inputs["src"], inputs["src_lengths"], int(m["max_len"]))
            else:
                res = run_recurrent(model, inputs["x"], inputs["lengths"], list(m["chunks"]))
                info["streamable"] = bool(model.streamable)
                info["placement"] = model.placement_summary  # op type -> provider -> node count
        except Exception as e:  # reported per model; the host marks it FAIL with this text
            info["error"] = f"{type(e).__name__}: {e}"
            res = {}
        np.savez(os.path.join(a.out, m["name"] + ".npz"), **res)
        info["seconds"] = round(time.perf_counter() - t0, 3)
        print("RESULT_JSON " + json.dumps(info, default=str), flush=True)
    return 0


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
