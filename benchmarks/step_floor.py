"""Where a small model's streaming step goes: onnxruntime's fixed cost per call, the graph's
kernels, and the runtime's own work, against the arithmetic floor.

For each size (the keyword-spotting 1x64 LSTM with 40 features, and the 2x256 LSTM with 128),
exported by the real exporter, batch 1, one thread, in one process, alternating blocks, medians:

* ``call``: ``run_with_iobinding`` on a graph of Identity nodes with the same inputs and outputs
  bound the same way: what onnxruntime costs per call before any kernel runs;
* ``bare_iob``: the exported graph through io_binding with the state bound once, as a hand-written
  loop would (the frame copied into a bound buffer, the state ping-ponged between two bindings);
* ``stream``: ``model.stream(1).step(frame)``, the runtime's call (input checks included);
* ``floor``: the step's matrix products in NumPy/BLAS (``edgelstm.bench`` floor model).

It prints the ratios the speed issue asks for: stream / bare_iob (the runtime's overhead, goal
<= 1.1) and stream / floor (goal <= 2 for the keyword-spotting size), and the share of the fixed
call cost in the step. Outputs are checked before timing: the stream's logits equal the bare
loop's over the same frames.

    .venv/bin/python benchmarks/step_floor.py [--blocks 9] [--calls 2000] [--json OUT]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

SIZES = {"kws-lstm-1x64": (1, 64, 40, 12), "lstm-2x256": (2, 256, 128, 10)}  # layers, hidden, features, classes


def export(name: str, d: Path) -> Path:
    import torch

    from edgelstm.exporters import export_model
    from edgelstm.models import ModelConfig, build_model

    layers, hidden, features, classes = SIZES[name]
    torch.manual_seed(0)
    model = build_model(ModelConfig("lstm", input_size=features, hidden_size=hidden, num_layers=layers,
                                    task="classify", num_outputs=classes)).eval()
    path = d / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(model, path)
    return path


def identity_twin(sess: ort.InferenceSession, d: Path) -> Path:
    """A graph with the session's inputs and outputs, each output an Identity of an input of
    its shape (states of themselves, data outputs of a zero-cost stand-in): the call, no work."""
    import onnx
    from onnx import TensorProto, helper

    from edgelstm.manifest import DEFAULT_OPSET
    from edgelstm.runtime.interface import pair_states

    def info(a, batch=1):
        return helper.make_tensor_value_info(a.name, TensorProto.FLOAT if "float" in a.type else TensorProto.INT32,
                                             [x if isinstance(x, int) and x > 0 else batch for x in a.shape])

    ins = [info(a) for a in sess.get_inputs()]
    outs, nodes = [], []
    state_of = {out: inp for inp, out in pair_states([a.name for a in sess.get_inputs()],
                                                      [o.name for o in sess.get_outputs()])}
    for o in sess.get_outputs():
        src = state_of.get(o.name)
        if src is None:  # a data output: a constant of its shape stands in (no input has it)
            shape = [x if isinstance(x, int) and x > 0 else 1 for x in o.shape]
            nodes.append(helper.make_node("Constant", [], [o.name], value=helper.make_tensor(
                o.name + "_c", TensorProto.FLOAT, shape, np.zeros(shape, np.float32).ravel().tolist())))
        else:
            nodes.append(helper.make_node("Identity", [src], [o.name]))
        outs.append(info(o))
    model = helper.make_model(helper.make_graph(nodes, "call", ins, outs), opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)])
    model.ir_version = 8
    path = d / "identity.onnx"
    onnx.save(model, str(path))
    return path


class BareLoop:
    """The hand-written io_binding loop: two bindings, state ping-pong, frame into a bound buffer."""

    def __init__(self, sess: ort.InferenceSession, features: int):
        self.sess = sess
        self.x = np.zeros((1, 1, features), np.float32)
        from edgelstm.runtime.interface import pair_states

        ins = {a.name: a for a in sess.get_inputs()}
        outs = [o.name for o in sess.get_outputs()]
        pairs = dict(pair_states(list(ins), outs))  # state input -> its output
        vals = [{n: ort.OrtValue.ortvalue_from_numpy(np.zeros([x if isinstance(x, int) else 1 for x in ins[n].shape],
                                                              np.float32)) for n in pairs} for _ in range(2)]
        self.out = {o: np.zeros([x if isinstance(x, int) and x > 0 else 1 for x in sess.get_outputs()[i].shape],
                                np.float32) for i, o in enumerate(outs) if o not in pairs.values()}
        self.binds = []
        for p in range(2):
            b = sess.io_binding()
            b.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(self.x))
            if "lengths" in ins:
                b.bind_cpu_input("lengths", np.ones(1, np.int32))
            for n, out in pairs.items():
                b.bind_ortvalue_input(n, vals[p][n])
                b.bind_ortvalue_output(out, vals[1 - p][n])
            for o, buf in self.out.items():
                b.bind_ortvalue_output(o, ort.OrtValue.ortvalue_from_numpy(buf))
            self.binds.append(b)
        self.p = 0

    def step(self, frame: np.ndarray) -> None:
        self.x[0] = frame
        self.sess.run_with_iobinding(self.binds[self.p])
        self.p ^= 1


def run_size(name: str, d: Path, blocks: int, calls: int) -> dict:
    from edgelstm import runtime
    from edgelstm.bench.floor import file_facts, measure_floor
    from edgelstm.runtime.session import session_options

    layers, hidden, features, classes = SIZES[name]
    path = export(name, d)
    so = session_options(1, record_placement=False)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    twin = ort.InferenceSession(str(identity_twin(sess, d)), so, providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(0).standard_normal((64, 1, features)).astype(np.float32)
    bare, call = BareLoop(sess, features), BareLoop(twin, features)
    stream = runtime.load(path, device="cpu", threads=1).stream(1)
    for f in frames:  # the same frames through both: the same logits, bit for bit
        bare.step(f)
        got = stream.step(f)["logits"]
    if not np.array_equal(got, bare.out["logits"]):
        raise SystemExit(f"{name}: the stream's logits differ from the bare loop's")
    frame = frames[0]
    fns = {"call": lambda: call.step(frame), "bare_iob": lambda: bare.step(frame),
           "stream": lambda: stream.step(frame)}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(blocks):
        for k, fn in fns.items():
            for _ in range(calls // 20):
                fn()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[k].append((time.perf_counter() - t0) / calls * 1e6)
    floor = measure_floor(file_facts(path), batch=1, time_steps=1, per_step_head=True)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    med["floor"] = floor.floor_s * 1e6
    return {"model": name, "us": {k: round(v, 2) for k, v in med.items()},
            "stream_over_bare_iob": round(med["stream"] / med["bare_iob"], 3),
            "stream_over_floor": round(med["stream"] / med["floor"], 2),
            "call_share_of_bare_step": round(med["call"] / med["bare_iob"], 2),
            "spread_us": {k: [round(min(v), 2), round(max(v), 2)] for k, v in samples.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows = [run_size(n, Path(d), args.blocks, args.calls) for n in args.sizes.split(",")]
    result = {"rows": rows, "threads": 1, "onnxruntime": ort.__version__, "machine": platform.machine(),
              "processor": platform.processor() or platform.machine()}
    print(json.dumps(result, indent=1))
    if args.json:
        from edgelstm.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
