"""Where the int8 GRU's time goes: the variants side by side and onnxruntime's per-node profile.

The suite's GRU int8 graph (``edgelstm.exporters.quantize``, int8-dynamic) rewrites each ``GRU``
node with ``edgelstm.exporters.gru_int8``: the input projection ``X · W^T`` as one ``MatMul``,
then ``If(T == 1)``: the then-branch is the cell once (the streaming step, no loop), the
else-branch a ``Scan`` whose body does ``h @ R^T`` and the gate arithmetic; onnxruntime then
quantizes every product (``EnableSubgraph``). This script measures it on the suite's target
shape (2 layers, input 128, hidden 256 by default, 10 classes, 1 thread):

* variants, each timed with a bare ``InferenceSession.run`` (same feeds, 1 thread):
  ``fp32 GRU`` (the exported graph), ``fp32 rewrite`` (not quantized: what the decomposition
  costs by itself), ``int8 rewrite`` (the shipped int8 graph), and the ``step graphs``: the
  same cell written out once at the top level with no ``If``, no ``Scan`` and no length masks
  (a graph for one streaming step only: the floor for the one-step path);
* the cost of ``Scan`` itself: a ``Scan`` whose body is one ``Identity``, per call and per step;
* the cost of one small node: a chain of 64 ``Add`` nodes on ``[1, 768]``; of an ``If``;
* onnxruntime's profiler on the int8 graph (``SessionOptions.enable_profiling``): kernel time per
  node, grouped into the one-step branch, the Scan bodies, the sequence branch's own nodes
  (lengths, gathers), the control-flow overhead (``If`` and ``Scan`` time minus the kernels
  they ran), the top-level quantized products, and the rest. The profiler adds its own cost
  per node, so its absolute figures are larger than the unprofiled ones; it is read for the
  shares and the kernel counts.

    .venv/bin/python benchmarks/gru_profile.py [--hidden 256] [--layers 2] [--duration 1.0] [--json OUT]

The figures in benchmarks/README.md come from
``benchmarks/gru_profile.py --json benchmarks/results/gru-profile-<machine>-<date>.json``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgelstm.fileio import write_text_atomic  # noqa: E402
from edgelstm.models import ModelConfig, build_model  # noqa: E402
from edgelstm.bench import measure as timing  # noqa: E402

INPUT, CLASSES = 128, 10


def session(path_or_bytes, profile_prefix: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def feeds_for(sess: ort.InferenceSession, batch: int, time: int, hidden: int, layers: int) -> dict:
    rng = np.random.default_rng(0)
    f = {}
    for i in sess.get_inputs():
        if i.name == "x":
            f["x"] = rng.standard_normal((batch, time, INPUT)).astype(np.float32)
        elif i.name == "lengths":
            f["lengths"] = np.full(batch, time, np.int32)
        elif i.name == "h_in":
            f["h_in"] = np.zeros((layers, batch, hidden), np.float32)
    return f


def p50_us(sess: ort.InferenceSession, feeds: dict, duration: float, stream: bool) -> float:
    if stream:  # carry the state, as a streaming application does
        names = [o.name for o in sess.get_outputs()]
        i_h = names.index("h_out")

        def call() -> None:
            feeds["h_in"] = sess.run(names, feeds)[i_h]
    else:
        def call() -> None:
            sess.run(None, feeds)
    return timing.LatencyStats.from_samples(timing.measure(call, warmup=20, runs=None, duration=duration)).p50 * 1e6


# ---------------------------------------------------------------------------- the step graph
def step_graph(fp32: onnx.ModelProto, hidden: int, layers: int) -> onnx.ModelProto:
    """The GRU classifier for ONE step, every layer's cell at the top level (no Scan, no masks):
    x [B, 1, I], h_in [L, B, H] -> logits [B, C], h_out [L, B, H]; ``linear_before_reset=1``."""
    inits = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    grus = [n for n in fp32.graph.node if n.op_type == "GRU"]
    gemm = next(n for n in fp32.graph.node if n.op_type in ("Gemm", "MatMul"))
    H = hidden
    nodes, out_inits = [], []

    def const(name, value):
        out_inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(t, ins, out, **kw):
        nodes.append(helper.make_node(t, ins, [out] if isinstance(out, str) else out, name=f"n{len(nodes)}", **kw))
        return out

    split_2h_h = const("split_2h_h", np.array([2 * H, H], np.int64))
    split_h_h = const("split_h_h", np.array([H, H], np.int64))
    op("Squeeze", ["x", const("ax1", np.array([1], np.int64))], "x0")                      # [B, I]
    h_all = op("Split", ["h_in", const("split_l", np.ones(layers, np.int64))],
               [f"h_in{k}" for k in range(layers)], axis=0) if layers > 1 else ["h_in"]
    inp, h_outs = "x0", []
    for k, g in enumerate(grus):
        W, R = inits[g.input[1]][0], inits[g.input[2]][0]                                   # [3H, I], [3H, H]
        B = inits[g.input[3]][0]                                                             # [6H]
        wb, rb = B[:3 * H], B[3 * H:]
        fold = wb.copy()
        fold[:2 * H] += rb[:2 * H]
        h = op("Squeeze", [h_all[k], const(f"ax0_{k}", np.array([0], np.int64))], f"h{k}")  # [B, H]
        xw = op("Add", [op("MatMul", [inp, const(f"W_T{k}", W.T)], f"xw{k}"), const(f"bx{k}", fold)], f"xwb{k}")
        hr = op("MatMul", [h, const(f"R_T{k}", R.T)], f"hr{k}")                              # [B, 3H]
        x_zr, x_h = op("Split", [xw, split_2h_h], [f"xzr{k}", f"xh{k}"], axis=1)
        h_zr, h_h = op("Split", [hr, split_2h_h], [f"hzr{k}", f"hh{k}"], axis=1)
        zr = op("Sigmoid", [op("Add", [x_zr, h_zr], f"pzr{k}")], f"zr{k}")
        z, r = op("Split", [zr, split_h_h], [f"z{k}", f"r{k}"], axis=1)
        hh_b = op("Add", [h_h, const(f"rbh{k}", rb[2 * H:])], f"hhb{k}")
        n = op("Tanh", [op("Add", [x_h, op("Mul", [r, hh_b], f"rh{k}")], f"pn{k}")], f"n{k}")
        # h' = n + z * (h - n)  ==  (1 - z) * n + z * h
        h_new = op("Add", [n, op("Mul", [z, op("Sub", [h, n], f"hmn{k}")], f"zd{k}")], f"hn{k}")
        h_outs.append(op("Unsqueeze", [h_new, const(f"ax0u_{k}", np.array([0], np.int64))], f"ho{k}"))
        inp = h_new
    op("Concat", h_outs, "h_out", axis=0)
    hw = inits[gemm.input[1]]
    hw = hw.T if any(a.name == "transB" and a.i for a in gemm.attribute) else hw
    op("Add", [op("MatMul", [inp, const("head_W", hw)], "hw"), const("head_b", inits[gemm.input[2]])], "logits")
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "gru_step",
        [helper.make_tensor_value_info("x", f32, ["batch", 1, INPUT]),
         helper.make_tensor_value_info("h_in", f32, [layers, "batch", H])],
        [helper.make_tensor_value_info("logits", f32, ["batch", CLASSES]),
         helper.make_tensor_value_info("h_out", f32, [layers, "batch", H])], initializer=out_inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def scan_identity(width: int) -> onnx.ModelProto:
    """A Scan over x [T, 1, width] whose body is one Identity (state) + one Identity (output)."""
    f32 = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Identity", ["s_in"], ["s_out"]), helper.make_node("Identity", ["x_t"], ["y_t"])], "body",
        [helper.make_tensor_value_info("s_in", f32, [1, width]), helper.make_tensor_value_info("x_t", f32, [1, width])],
        [helper.make_tensor_value_info("s_out", f32, [1, width]), helper.make_tensor_value_info("y_t", f32, [1, width])])
    g = helper.make_graph(
        [helper.make_node("Scan", ["s0", "x"], ["s", "y"], body=body, num_scan_inputs=1)], "scan",
        [helper.make_tensor_value_info("s0", f32, [1, width]), helper.make_tensor_value_info("x", f32, ["T", 1, width])],
        [helper.make_tensor_value_info("s", f32, [1, width]), helper.make_tensor_value_info("y", f32, ["T", 1, width])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def scan_adds(n: int, width: int) -> onnx.ModelProto:
    """A Scan over x [T, 1, width] whose body is a chain of ``n`` Add nodes on the state."""
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("Add", ["s_in" if i == 0 else f"t{i - 1}", "x_t"], [f"t{i}"]) for i in range(n)]
    nodes += [helper.make_node("Identity", [f"t{n - 1}"], ["s_out"]), helper.make_node("Identity", ["x_t"], ["y_t"])]
    body = helper.make_graph(
        nodes, "body",
        [helper.make_tensor_value_info("s_in", f32, [1, width]), helper.make_tensor_value_info("x_t", f32, [1, width])],
        [helper.make_tensor_value_info("s_out", f32, [1, width]), helper.make_tensor_value_info("y_t", f32, [1, width])])
    g = helper.make_graph(
        [helper.make_node("Scan", ["s0", "x"], ["s", "y"], body=body, num_scan_inputs=1)], "scan",
        [helper.make_tensor_value_info("s0", f32, [1, width]), helper.make_tensor_value_info("x", f32, ["T", 1, width])],
        [helper.make_tensor_value_info("s", f32, [1, width]), helper.make_tensor_value_info("y", f32, ["T", 1, width])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def if_identity(width: int) -> onnx.ModelProto:
    """``If(cond)`` whose branches are one Identity each: the fixed cost of a branch on T == 1."""
    f32 = TensorProto.FLOAT

    def branch(name):
        return helper.make_graph([helper.make_node("Identity", ["a"], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", f32, [1, width])])
    g = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"))], "if",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []), helper.make_tensor_value_info("a", f32, [1, width])],
        [helper.make_tensor_value_info("y", f32, [1, width])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def one_matmul(k: int, n: int) -> onnx.ModelProto:
    """``h [1, k] @ R^T [k, n]`` alone (quantized with quantize_dynamic for the int8 figure)."""
    f32 = TensorProto.FLOAT
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32) * 0.05, "w")
    g = helper.make_graph([helper.make_node("MatMul", ["h", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("h", f32, [1, k])],
                          [helper.make_tensor_value_info("y", f32, [1, n])], initializer=[w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def add_chain(n: int, width: int) -> onnx.ModelProto:
    f32 = TensorProto.FLOAT
    one = numpy_helper.from_array(np.ones((1, width), np.float32), "one")
    nodes = [helper.make_node("Add", ["a" if i == 0 else f"t{i - 1}", "one"], [f"t{i}"]) for i in range(n)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("a", f32, [1, width])],
                          [helper.make_tensor_value_info(f"t{n - 1}", f32, [1, width])], initializer=[one])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


# ---------------------------------------------------------------------------- profile
def profile(path: Path, feeds: dict, runs: int, prefix: str, steps: int) -> dict:
    """Mean per-run kernel time by group, from onnxruntime's profiler (microseconds per run)."""
    sess = session(path, prefix)
    for _ in range(runs):
        sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list] = collections.defaultdict(lambda: [None, 0.0, 0])  # op, us, calls
    run_us = 0.0
    for e in events:
        if e.get("cat") == "Session" and e["name"] == "model_run":
            run_us += e["dur"]
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            rec = per_node[e["name"][: -len("_kernel_time")]]
            rec[0] = e["args"].get("op_name")
            rec[1] += e["dur"]
            rec[2] += 1
    def where(k: str) -> str:
        if re.search(r"/b\d+/", k):
            return "scan body"
        if "/t1/" in k:
            return "one-step branch"
        if "/seq/" in k:
            return "sequence branch"
        return "top"

    control = {k: v for k, v in per_node.items() if v[0] in ("Scan", "If")}
    inner = {k: v for k, v in per_node.items() if k not in control and where(k) != "top"}
    groups = collections.Counter()
    for k, (op_name, us, _) in per_node.items():
        if k in control:
            continue
        product = "Quant" in op_name or "MatMul" in op_name
        place = where(k)
        if place == "scan body":
            groups["Scan bodies: " + ("h @ R^T (int8)" if product else "gate math, splits")] += us
        elif place == "one-step branch":
            groups["one-step branch: " + ("h @ R^T (int8)" if product else "gate math, splits, lengths")] += us
        elif place == "sequence branch":
            groups["sequence branch: lengths, Y_h gather, reverses"] += us
        elif product:
            groups["top level: x @ W^T and head (int8 products)"] += us
        else:
            groups["top level: shapes, T == 1 test, transposes, ..."] += us
    groups["If / Scan overhead (their time minus the kernels they ran)"] = sum(v[1] for v in control.values()) - sum(
        v[1] for v in inner.values())
    calls = collections.Counter()
    for k, v in per_node.items():
        calls[where(k) if k not in control else v[0]] += v[2]
    n_ifs = len([k for k, v in per_node.items() if v[0] == "If"])
    return {"model_run_us": run_us / runs,
            "groups_us": {k: v / runs for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
            "kernels_per_run": sum(v[2] for v in per_node.values()) / runs,
            "kernels_per_run_by_place": {k: v / runs for k, v in calls.items()},
            "one_step_branch_kernels_per_layer": calls["one-step branch"] / runs / max(1, n_ifs),
            "scan_body_kernels_per_layer_step": (sum(v[2] for k, v in per_node.items() if where(k) == "scan body")
                                                 / max(1, steps * sum(v[2] for k, v in per_node.items()
                                                                      if v[0] == "Scan"))),
            "scans_per_run": sum(v[2] for k, v in per_node.items() if v[0] == "Scan") / runs,
            "body_ops": dict(collections.Counter(v[0] for k, v in per_node.items() if where(k) == "scan body")),
            "one_step_ops": dict(collections.Counter(v[0] for k, v in per_node.items() if where(k) == "one-step branch")),
            "top_level_ops": dict(collections.Counter(v[0] for k, v in per_node.items() if where(k) == "top"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--duration", type=float, default=1.0, help="Seconds of timed calls per variant and case.")
    ap.add_argument("--json", default=None, help="Write the figures to this JSON file.")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from edgelstm.exporters import export_model
    from edgelstm.exporters.gru_int8 import decompose_gru
    from edgelstm.exporters.quantize import quantize
    from onnxruntime.quantization import QuantType, quantize_dynamic

    H, L = args.hidden, args.layers
    out: dict = {"hidden": H, "layers": L, "input": INPUT, "onnxruntime": ort.__version__}
    with tempfile.TemporaryDirectory(prefix="edgelstm-gru-") as tmp:
        d = Path(tmp)
        torch.manual_seed(0)
        model = build_model(ModelConfig(family="gru", input_size=INPUT, hidden_size=H, num_layers=L,
                                        task="classify", num_outputs=CLASSES)).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_model(model, d / "fp32.onnx")
        quantize(d / "fp32.onnx", d / "int8.onnx", "int8-dynamic", threads=1, evaluate_error=False,
                 force_int8=True)  # the profile is of the GRU int8 rewrite itself
        fp32 = onnx.load(str(d / "fp32.onnx"))
        onnx.save(decompose_gru(fp32)[0], str(d / "fp32_scan.onnx"))
        onnx.save(step_graph(fp32, H, L), str(d / "fp32_step.onnx"))
        quantize_dynamic(str(d / "fp32_step.onnx"), str(d / "int8_step.onnx"), weight_type=QuantType.QInt8)
        variants = {"fp32 GRU (exported)": d / "fp32.onnx",
                    "fp32 rewrite (If + Scan, not quantized)": d / "fp32_scan.onnx",
                    "int8 rewrite (If + Scan, shipped)": d / "int8.onnx",
                    "fp32 step graph (cell once, no If)": d / "fp32_step.onnx",
                    "int8 step graph (cell once, no If)": d / "int8_step.onnx"}
        # the step graphs must compute the same step as the exported graph
        ref, step = session(d / "fp32.onnx"), session(d / "fp32_step.onnx")
        f1 = feeds_for(ref, 1, 1, H, L)
        f1["h_in"] = np.random.default_rng(1).standard_normal((L, 1, H)).astype(np.float32) * 0.5
        a = ref.run(["logits", "h_out"], f1)
        b = step.run(["logits", "h_out"], {"x": f1["x"], "h_in": f1["h_in"]})
        out["step_graph_max_abs_diff"] = float(max(np.abs(a[0] - b[0]).max(), np.abs(a[1] - b[1]).max()))
        rows = {}
        for name, p in variants.items():
            sess = session(p)
            cases = {"step b1": (1, 1, True)} if "step graph" in name else \
                {"step b1": (1, 1, True), "sequence b1 t256": (1, 256, False), "sequence b16 t256": (16, 256, False)}
            rows[name] = {case: p50_us(sess, feeds_for(sess, b, t, H, L), args.duration, stream)
                          for case, (b, t, stream) in cases.items()}
            rows[name]["file_kb"] = p.stat().st_size / 1024
            print(f"{name:40s} " + "  ".join(f"{k} {v:9.1f}" for k, v in rows[name].items()), file=sys.stderr)
        out["variants_p50_us"] = rows
        sc = session(scan_identity(H).SerializeToString())
        s1 = p50_us(sc, {"s0": np.zeros((1, H), np.float32), "x": np.zeros((1, 1, H), np.float32)}, args.duration, False)
        s256 = p50_us(sc, {"s0": np.zeros((1, H), np.float32), "x": np.zeros((256, 1, H), np.float32)},
                      args.duration, False)
        ch = session(add_chain(64, 3 * H).SerializeToString())
        c64 = p50_us(ch, {"a": np.zeros((1, 3 * H), np.float32)}, args.duration, False)
        ch1 = session(add_chain(1, 3 * H).SerializeToString())
        c1 = p50_us(ch1, {"a": np.zeros((1, 3 * H), np.float32)}, args.duration, False)
        out["scan_identity_us"] = {"T=1": s1, "T=256": s256, "per_step": (s256 - s1) / 255}
        x256 = {"s0": np.zeros((1, 3 * H), np.float32), "x": np.zeros((256, 1, 3 * H), np.float32)}
        a1 = p50_us(session(scan_adds(1, 3 * H).SerializeToString()), x256, args.duration, False)
        a16 = p50_us(session(scan_adds(16, 3 * H).SerializeToString()), x256, args.duration, False)
        out["scan_body_node_us"] = (a16 - a1) / 15 / 256
        out["if_identity_us"] = p50_us(session(if_identity(H).SerializeToString()),
                                       {"cond": np.array(True), "a": np.zeros((1, H), np.float32)}, args.duration, False)
        onnx.save(one_matmul(H, 3 * H), str(d / "mm.onnx"))
        quantize_dynamic(str(d / "mm.onnx"), str(d / "mm8.onnx"), weight_type=QuantType.QInt8)
        hfeed = {"h": np.random.default_rng(2).standard_normal((1, H)).astype(np.float32)}
        out["matmul_h_RT_us"] = {"fp32": p50_us(session(d / "mm.onnx"), dict(hfeed), args.duration, False),
                                 "int8": p50_us(session(d / "mm8.onnx"), dict(hfeed), args.duration, False)}
        print(f"one h @ R^T [1,{H}]x[{H},{3 * H}] graph: fp32 {out['matmul_h_RT_us']['fp32']:.1f} us, "
              f"int8 {out['matmul_h_RT_us']['int8']:.1f} us (each includes one session.run)", file=sys.stderr)
        print(f"inside a Scan body, one Add [1,{3 * H}] per step: {out['scan_body_node_us']:.2f} us; "
              f"If(Identity) call: {out['if_identity_us']:.1f} us", file=sys.stderr)
        out["small_node_us"] = (c64 - c1) / 63
        out["session_run_one_add_us"] = c1  # the fixed cost of one session.run (every variant pays it)
        print(f"Scan(Identity body): T=1 {s1:.1f} us, T=256 {s256:.1f} us -> {(s256 - s1) / 255:.2f} us per step; "
              f"one Add [1,{3 * H}] node {out['small_node_us']:.2f} us", file=sys.stderr)
        sess = session(d / "int8.onnx")
        for case, (b, t) in {"step b1": (1, 1), "sequence b1 t256": (1, 256)}.items():
            out.setdefault("profile_int8", {})[case] = profile(
                d / "int8.onnx", feeds_for(sess, b, t, H, L), 2000 if t == 1 else 40, str(d / "prof"), t)
        print(json.dumps(out["profile_int8"], indent=1), file=sys.stderr)
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
